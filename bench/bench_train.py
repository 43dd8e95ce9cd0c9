"""DP vs non-DP training step: time and peak memory on the same batch, side by side in one run.

    python bench/bench_train.py                      # SmolLM2-135M, batch 16 x 64 tokens, LoRA q,v
    python bench/bench_train.py --batch 8 --tokens 128 --targets q_proj,k_proj,v_proj,o_proj --steps 5

Each configuration runs in its own child process (so its peak memory is its own): load the model, add LoRA, one warm-up
step, then ``--steps`` timed steps on the same fixed batch; the median step time is reported. Peak memory is the child's
peak resident set size minus its size after loading the model (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA).
Ratios are against the non-DP step measured in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


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
    import torch

    from dpsynth.config import LoraSettings, ModelConfig
    from dpsynth.models.loader import load_model, resolve_device
    from dpsynth.train.lora import add_lora, trainable_parameters
    from dpsynth.train.objective import per_sequence_loss
    from dpsynth.train.private import make_private

    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    base = load_model(ModelConfig(name=args.model), device=device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = add_lora(base, LoraSettings(target_modules=args.targets.split(",")), seed=0)
    model.train()
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4)
    batch = {k: v.to(device) for k, v in _batch(model.config.vocab_size, args.batch, args.tokens, 0).items()}
    private = None
    if mode != "no_dp":
        private = make_private(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=args.batch,
            mode=mode,  # type: ignore[arg-type]
            noise_generator=torch.Generator(device=device).manual_seed(0),
        )
        optimizer = private.optimizer

    def step() -> None:
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        )
        if private is not None:
            loss = private.criterion(out.logits, batch["labels"])
        else:
            loss = per_sequence_loss(out.logits, batch["labels"]).mean()
        loss.backward()
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
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # ru_maxrss is in KiB on Linux
    queue.put(
        {
            "mode": mode,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "peak_mb": peak_mb,
            "params": sum(p.numel() for p in params.values()),
            "device": str(device),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--modes", default="no_dp,hooks,ghost")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    rows = []
    for mode in args.modes.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(mode, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{mode}: child process failed with exit code {proc.exitcode}")
        rows.append(queue.get())
    base = next((r for r in rows if r["mode"] == "no_dp"), rows[0])
    print(
        f"\ntraining step, batch {args.batch} x {args.tokens} tokens, LoRA on {args.targets} "
        f"({rows[0]['params']:,} trainable), {rows[0]['device']}, median of {args.steps} steps\n"
    )
    print("| mode | step (s) | x non-DP | tokens/s | peak memory over model (MB) | x non-DP |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['median_s']:.2f} | {r['median_s'] / base['median_s']:.2f} | "
            f"{args.batch * args.tokens / r['median_s']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] / base['peak_mb']:.2f} |"
        )


if __name__ == "__main__":
    main()
