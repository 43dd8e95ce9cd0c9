"""Generation throughput (new tokens per second) at batch sizes 1, 8 and 32, side by side in one run.

    python bench/bench_generate.py                   # SmolLM2-135M + a fresh LoRA adapter on q,v; 64 new tokens
    python bench/bench_generate.py --batches 1,8,32 --new-tokens 64 --dtype bfloat16

Uses dpsynth's own sampling path (:func:`dpsynth.generate.sampling.generate_texts`) on review prompts built by
:func:`dpsynth.data.format.encode_prompt`. ``min_new_tokens`` equals ``max_new_tokens`` so that every row produces the
same number of tokens and the rate is comparable across batch sizes. Ratios are against batch 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from dpsynth.config import LoraSettings, ModelConfig
    from dpsynth.data.format import encode_prompt
    from dpsynth.models.loader import load_model, load_tokenizer
    from dpsynth.train.lora import add_lora

    torch.set_num_threads(args.threads)
    cfg = ModelConfig(name=args.model, dtype=args.dtype)
    tokenizer = load_tokenizer(cfg)
    model = add_lora(load_model(cfg), LoraSettings(), seed=0)
    model.eval()
    device = next(model.parameters()).device
    system = "You write realistic customer product reviews."
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        prompts = [encode_prompt(tokenizer, {"rating": 1 + i % 5}, system) for i in range(b)]
        width = max(len(p) for p in prompts)
        ids = torch.full((b, width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        kwargs = dict(
            attention_mask=mask.to(device),
            do_sample=True,
            top_p=0.95,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.no_grad():
            model.generate(input_ids=ids.to(device), **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
            t0 = time.perf_counter()
            out = model.generate(input_ids=ids.to(device), **kwargs)
            dt = time.perf_counter() - t0
        new = (out.shape[1] - width) * b
        rows.append((b, new, dt, new / dt))
    print(f"\ngeneration, {args.new_tokens} new tokens per row, sampling top-p 0.95, {device}, dtype {model.dtype}\n")
    print("| batch | new tokens | seconds | tokens/s | x batch 1 |")
    print("|---|---|---|---|---|")
    for b, new, dt, rate in rows:
        print(f"| {b} | {new} | {dt:.1f} | {rate:.1f} | {rate / rows[0][3]:.2f} |")


if __name__ == "__main__":
    main()
