"""Training step speed and peak memory, today's path against the fast path, side by side in one run.

    python bench/bench_train.py                      # SmolLM2-135M, batch 16 x 64 tokens, LoRA q,v
    python bench/bench_train.py --json train.json    # also write the figures as JSON
    python bench/bench_train.py --batch 8 --tokens 128 --modes no_dp,dp,ghost --steps 5
    python bench/bench_train.py --modes no_dp_fast,dp_fast --profile dp_fast   # and where a dp_fast step goes

Modes (each in its own child process, so that its peak memory is its own):

- ``no_dp``, ``dp``: the path before issue 8: the model's full logits (all positions), float32, Opacus hooks, and
  (as that DP loop did) the logged per-sequence losses computed a second time; ``ghost``: the same, ghost clipping;
- ``dp_bf16``: the fast forward with ``train.precision=bfloat16`` forced, on every block (bf16 alone: slower than
  float32 on a CPU without native bf16);
- ``dp_prefix``: ``dp_fast`` with LoRA on the top ``--top-k`` blocks and the frozen-prefix cache (built once over the
  batch before timing; its build time is printed);
- ``no_dp_fast``, ``dp_fast``: the defaults of ``TrainConfig`` (``train.precision``, ``train.lora.top_k_layers``):
  the training loop's forward (:class:`dpsynth.train.forward.TrainForward`, logits only at labelled positions);
- ``dp_fast_nodrop``: ``dp_fast`` with ``train.lora.dropout=0`` (no random masks to draw: what dropout costs a step);
- ``dp_fast_ffa``: ``dp_fast`` with ``train.lora.freeze_a=true`` (B trains, A stays: no per-example gradients of A);
- ``MODE_sysmalloc`` (e.g. ``dp_fast_sysmalloc``): a fast mode with glibc's default allocator. The fast modes, like
  every ``dpsynth`` command, keep freed memory in the heap (:mod:`dpsynth.allocator`); ``no_dp``, ``dp`` and
  ``ghost``, the path before issue 8, run with glibc's default. The table's ``malloc`` column says which ran;
- ``MODE_autograd`` (e.g. ``dp_fast_autograd``): a fast mode with the frozen output layer's loss through autograd,
  as before 2026-12-06, instead of a chunk of positions at a time (:func:`dpsynth.train.objective.head_sequence_loss`;
  without the suffix, chunks only above ``AUTOGRAD_MAX_ELEMENTS`` logits: gemma-3-270m here, not SmolLM2 at 32 x 112);
  ``MODE_chunked`` (e.g. ``dp_fast_chunked``): in chunks at any batch size;
- ``MODE_vocabNk`` (e.g. ``dp_fast_vocab32k``): a fast mode whose frozen output layer keeps its first N x 1,024
  rows, the batch's tokens drawn below them: what trimming the output vocabulary would save a step (a timing, not a
  model: which rows a trimmed model keeps is a separate question);
- ``MODE_ascii`` (e.g. ``dp_fast_ascii``): the mode on the model cut to its ASCII entries (``model.vocabulary=ascii``,
  :mod:`dpsynth.models.vocab`), the batch's tokens drawn from its vocabulary: the trimmed model itself;
- ``MODE_f32w``, ``MODE_bf16w`` (e.g. ``dp_fast_f32w``): a fast mode with the base model's weights loaded in float32
  or bfloat16. Without a suffix the fast modes load them as training does (``model.dtype=auto``,
  :func:`dpsynth.train.precision.training_model_config`): bfloat16 wherever training runs under bf16 autocast (CUDA;
  a CPU with native bf16 since 2026-12-04), else float32; ``_f32w`` is the CPU's default before that.

Each child loads the model, adds LoRA, runs one warm-up step, then ``--steps`` timed steps on the same fixed batch; the
median step time is reported. Peak memory is the child's peak resident set size minus its size after loading the model
(CPU), or ``torch.cuda.max_memory_allocated`` (CUDA). Ratios are against modes measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DEFAULT_MODES = "no_dp,dp,dp_bf16,dp_prefix,no_dp_fast,dp_fast"
# bfloat16 emulated on a CPU without bf16 instructions ran a step several times slower than float32 (AVX2 only): the
# default run skips dp_bf16 there (name it in --modes to force it).
NATIVE_BF16_ONLY = {"dp_bf16"}


def _batch(vocab: int, batch: int, tokens: int, seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 1, (batch, tokens), generator=g)
    labels = ids.clone()
    labels[:, : tokens // 4] = -100  # a prompt whose tokens are not in the loss
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": torch.ones_like(ids),
        "position_ids": torch.arange(tokens).expand(batch, tokens).clone(),
    }


def _child(mode: str, args: argparse.Namespace, queue: Any) -> None:
    from dpsynth.allocator import keep_freed_memory

    name, mode = mode, re.sub(r"(_sysmalloc|_bf16w|_f32w|_autograd|_chunked|_vocab\d+k|_ascii)+$", "", mode)
    trim = re.search(r"_vocab(\d+)k", name)
    fast = mode not in ("no_dp", "dp", "ghost")
    if trim and not fast:  # the path before issue 8 runs the model's own output layer, which the trim does not reach
        raise SystemExit(f"{name}: _vocabNk applies to the fast modes only")
    malloc = keep_freed_memory() if fast and "_sysmalloc" not in name else "system"  # before any tensor, as the CLI
    weights = "bfloat16" if "_bf16w" in name else "float32" if "_f32w" in name else "auto"

    import torch

    from dpsynth.config import LoraSettings, ModelConfig, TrainConfig
    from dpsynth.models.loader import load_model, resolve_device
    from dpsynth.train.batching import Collator, indexed
    from dpsynth.train.forward import TrainForward
    from dpsynth.train.lora import add_lora, num_layers, trainable_parameters
    from dpsynth.train.objective import HeadLoss, SequenceLoss, per_sequence_loss
    from dpsynth.train.precision import resolve_precision, training_model_config
    from dpsynth.train.prefix import PrefixCache
    from dpsynth.train.private import make_private

    if "_autograd" in name or "_chunked" in name:  # the frozen output layer's loss one way, whatever the batch size
        from dpsynth.train import objective

        if "_autograd" in name:
            objective.CHUNK_ELEMENTS = 0
        else:
            objective.AUTOGRAD_MAX_ELEMENTS = 0
    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    defaults = TrainConfig()
    dropout = 0.0 if mode == "dp_fast_nodrop" else defaults.lora.dropout
    # dp_bf16 isolates bf16 on every block; dp_fast / no_dp_fast take whatever the defaults are (top 8 since 2026-12-03)
    top_k = {"dp_prefix": args.top_k, "dp_bf16": None}.get(mode, defaults.lora.top_k_layers if fast else None)
    precision = {"dp_bf16": "bfloat16"}.get(mode, defaults.precision if fast else "float32")
    vocabulary = "ascii" if "_ascii" in name else "full"
    model_cfg = ModelConfig(name=args.model, attn_implementation=args.attn, dtype=weights, vocabulary=vocabulary)
    if fast:  # the weights' dtype training loads (bf16 under bf16 autocast, unless a suffix names one)
        model_cfg = training_model_config(model_cfg, precision, device)  # type: ignore[arg-type]
    base = load_model(model_cfg, device=device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    freeze_a = mode == "dp_fast_ffa"
    lora = LoraSettings(target_modules=args.targets.split(","), top_k_layers=top_k, dropout=dropout, freeze_a=freeze_a)
    model = add_lora(base, lora, seed=0)
    model.train()
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4)
    vocab = int(trim.group(1)) * 1024 if trim else model.config.vocab_size
    raw = _batch(min(vocab, model.config.vocab_size), args.batch, args.tokens, 0)
    batch = {k: v.to(device) for k, v in raw.items()}
    batch["index"] = torch.arange(args.batch)
    forward = TrainForward(model, device, resolve_precision(precision, device))  # type: ignore[arg-type]
    if trim:  # the output layer's first rows alone (a timing of a trimmed vocabulary; inputs and labels drawn below it)
        full = forward.head.weight
        rows = min(vocab, full.shape[0])
        forward.head = torch.nn.Linear(full.shape[1], rows, bias=False, device=device)
        forward.head.weight = torch.nn.Parameter(full[:rows].detach().clone(), requires_grad=False)
    cache_s = None
    if top_k is not None and defaults.prefix_cache and top_k < (num_layers(base) or 0):
        examples = [
            SimpleNamespace(input_ids=ids.tolist(), labels=lab.tolist())
            for ids, lab in zip(raw["input_ids"], raw["labels"], strict=True)
        ]
        t0 = time.perf_counter()
        forward.cache = PrefixCache.build(
            model,
            indexed(examples),
            start=(num_layers(base) or 0) - top_k,
            collate=Collator(pad_id=0),
            batch_size=args.batch,
            device=device,
            context=forward.context,
        )
        cache_s = time.perf_counter() - t0
    private = None
    dp = mode not in ("no_dp", "no_dp_fast")
    if dp:
        private = make_private(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=args.batch,
            mode="ghost" if mode == "ghost" else "hooks",
            noise_generator=torch.Generator(device=device).manual_seed(0),
            loss=HeadLoss(forward.head) if fast else SequenceLoss(),
        )
        optimizer = private.optimizer

    def step() -> None:
        if fast:
            losses = forward.losses(batch)
            losses.mean().backward()
        else:
            out = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
            )
            if private is not None:
                loss = private.criterion(out.logits, batch["labels"])
                loss.backward()
                with torch.no_grad():  # the DP loop before issue 8 computed the logged losses a second time
                    per_sequence_loss(out.logits.detach(), batch["labels"])
            else:
                per_sequence_loss(out.logits, batch["labels"]).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    profile = None
    if args.profile == name:  # one more step under torch.profiler: where its time goes, by operator
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profiler(activities=activities) as prof:
            step()
        averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in averages) or 1.0
        profile = [
            {
                "op": e.key,
                "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
                "share": round(e.self_cpu_time_total / total, 3),
                "calls": e.count,
            }
            for e in averages[: args.profile_top]
        ]
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # ru_maxrss is in KiB on Linux
    queue.put(
        {
            "mode": name,
            "vocabulary": vocabulary,
            "vocab_rows": int(base.get_output_embeddings().weight.shape[0]),
            "malloc": malloc,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "peak_mb": peak_mb,
            "params": sum(p.numel() for p in params.values()),
            "device": str(device),
            "precision": str(forward.autocast_dtype or "float32").replace("torch.", ""),
            # as loaded: bfloat16 on CUDA, and in the fast modes on a CPU with native bf16 (training_model_config)
            "base_weights": str(base.dtype).replace("torch.", ""),
            "top_k_layers": top_k,
            "lora_dropout": dropout,
            "freeze_a": freeze_a,
            "cache_s": cache_s,
            "profile": profile,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--modes", default=DEFAULT_MODES)
    parser.add_argument("--top-k", type=int, default=8, help="LoRA blocks in the dp_prefix mode (of 30 in SmolLM2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="model.attn_implementation")
    parser.add_argument("--profile", default=None, help="profile one more step of this mode (e.g. dp_fast)")
    parser.add_argument("--profile-top", type=int, default=15, help="operators listed by --profile")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    rows = []
    modes = args.modes.split(",")
    if args.modes == DEFAULT_MODES:
        from dpsynth.models.loader import resolve_device
        from dpsynth.train.precision import resolve_precision

        if resolve_precision("auto", resolve_device("auto")) is None:
            print(f"skipping {', '.join(sorted(NATIVE_BF16_ONLY))}: no native bf16 here (auto precision: float32)")
            modes = [m for m in modes if m not in NATIVE_BF16_ONLY]
    for mode in modes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(mode, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{mode}: child process failed with exit code {proc.exitcode}")
        rows.append(queue.get())
        print(f"{mode}: median step {rows[-1]['median_s']:.2f} s, peak {rows[-1]['peak_mb']:.0f} MB", flush=True)
    # A mode named more than once in --modes (interleaved rounds, e.g. dp_fast,dp_fast_nodrop,dp_fast,dp_fast_nodrop)
    # is summarised by the median of its rounds' step times and the largest of their peaks; every round stays in the
    # table and in the JSON.
    by_mode: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["mode"] for r in rows):
        rounds = [r for r in rows if r["mode"] == name]
        by_mode[name] = {
            **rounds[-1],
            "median_s": statistics.median(r["median_s"] for r in rounds),
            "peak_mb": max(r["peak_mb"] for r in rounds),
        }
    tokens = args.batch * args.tokens
    print(
        f"\ntraining step, batch {args.batch} x {args.tokens} tokens, LoRA on {args.targets}, {rows[0]['device']}, "
        f"{args.threads} threads, median of {args.steps} steps\n"
    )
    print(
        "| mode | base weights | autocast | LoRA blocks | malloc | step (s) | tokens/s | x no_dp step | x dp tokens/s "
        "| peak MB | x dp |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ref_step = by_mode.get("no_dp", rows[0])["median_s"]
    dp = by_mode.get("dp", rows[0])
    for r in rows:
        blocks = "all" if r["top_k_layers"] is None else f"top {r['top_k_layers']}"
        print(
            f"| {r['mode']} | {r['base_weights']} | {'none' if r['precision'] == 'float32' else r['precision']} "
            f"| {blocks} | {r['malloc']} | {r['median_s']:.2f} | {tokens / r['median_s']:.0f} | "
            f"{r['median_s'] / ref_step:.2f} | {dp['median_s'] / r['median_s']:.2f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] / max(dp['peak_mb'], 1e-9):.2f} |"
        )
    for r in rows:
        if r["cache_s"] is not None:
            print(f"\n{r['mode']}: prefix cache built once in {r['cache_s']:.2f} s for {args.batch} examples")
    for r in rows:
        if r["profile"]:
            print(f"\n{r['mode']}: one step under torch.profiler, top operators by self CPU time\n")
            print("| operator | self CPU ms | share | calls |\n|---|---|---|---|")
            for e in r["profile"]:
                print(f"| {e['op']} | {e['self_cpu_ms']} | {e['share']:.1%} | {e['calls']} |")
    pairs = [
        ("dp_fast", "dp", "tokens/s, target >= 3"),
        ("dp_fast", "no_dp_fast", "step time, target <= 1.10"),
        ("dp_fast_nodrop", "dp_fast", "tokens/s, LoRA dropout 0 against 0.05"),
        ("dp_fast_ffa", "dp_fast", "tokens/s, LoRA's A frozen against both factors trained"),
        ("dp_fast", "dp_fast_sysmalloc", "tokens/s, freed memory kept against glibc's default"),
        ("no_dp_fast", "no_dp_fast_sysmalloc", "tokens/s, freed memory kept against glibc's default"),
        ("dp_fast_f32w", "dp_fast_f32w_sysmalloc", "tokens/s, freed memory kept against glibc's default"),
        ("dp_fast", "dp_fast_f32w", "tokens/s, the base weights as training loads them against float32"),
        ("no_dp_fast", "no_dp_fast_f32w", "tokens/s, the base weights as training loads them against float32"),
        ("dp_fast_bf16w", "dp_fast_f32w", "tokens/s, bfloat16 base weights against float32"),
        ("dp_fast", "dp_fast_autograd", "tokens/s, the output layer's loss in chunks against through autograd"),
        ("no_dp_fast", "no_dp_fast_autograd", "tokens/s, the output layer's loss in chunks against through autograd"),
        ("dp_fast_chunked", "dp_fast_autograd", "tokens/s, the loss in chunks at any size against through autograd"),
        ("no_dp_fast_chunked", "no_dp_fast_autograd", "tokens/s, the loss in chunks at any size against autograd"),
    ]
    for a in ("dp_fast", "no_dp_fast", "dp_fast_chunked", "no_dp_fast_chunked"):
        b = a.removesuffix("_chunked") + "_autograd"
        if a in by_mode and b in by_mode:
            print(f"{a} / {b} (peak memory): {by_mode[a]['peak_mb'] / max(by_mode[b]['peak_mb'], 1e-9):.2f}")
    for a, b, what in pairs:
        if a in by_mode and b in by_mode:
            ratio = (
                by_mode[b]["median_s"] / by_mode[a]["median_s"]
                if "tokens" in what
                else (by_mode[a]["median_s"] / by_mode[b]["median_s"])
            )
            print(f"{a} / {b} ({what}): {ratio:.2f}")
    if args.json is not None:
        from dpsynth import machine

        figures = {
            "modes": {
                r["mode"]: {
                    "tokens_per_s": tokens / r["median_s"],
                    "step_s": r["median_s"],
                    "peak_mb": r["peak_mb"],
                    "precision": r["precision"],
                    "base_weights": r["base_weights"],
                    "top_k_layers": r["top_k_layers"],
                    "lora_dropout": r["lora_dropout"],
                    "freeze_a": r["freeze_a"],
                    "trainable_params": r["params"],
                    "malloc": r["malloc"],
                    "prefix_cache_build_s": r["cache_s"],
                    **({"profile": r["profile"]} if r["profile"] else {}),
                }
                for r in by_mode.values()
            },
            "rounds": [
                {
                    "mode": r["mode"],
                    "step_s": r["median_s"],
                    "tokens_per_s": tokens / r["median_s"],
                    "peak_mb": r["peak_mb"],
                }
                for r in rows
            ],
            "machine": machine.describe(),
            "settings": {
                "model": args.model,
                "batch": args.batch,
                "tokens": args.tokens,
                "targets": args.targets,
                "steps": args.steps,
                "threads": args.threads,
                "device": rows[0]["device"],
            },
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
