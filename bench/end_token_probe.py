"""Where a fine-tuned model's probability goes at the end of a complete response: its end token, or look-alikes.

A base model's turn markers may be untrained embeddings (gemma-3-270m's ``<end_of_turn>`` lies within cosine 0.98 of
6,021 other tokens: ``<unusedN>``, "DrvGPIO", cuneiform). With a tied output head, a model taught to end its turn on
such a token spreads that choice over all of its look-alikes, and sampling writes glitch tokens instead of stopping.
This reads, for the first records of a JSONL file that end within the length bound (cut after their last sentence,
as training cuts them), the next-token distribution after the response under the base model plus an adapter, and
prints the mean probability of each candidate end token and of that token's look-alikes. Run it on PUBLIC data; the
defaults (system prompt, 64 tokens, sentence cut) are the public proxy's (``bench/proxy_categories.yaml``).

    python bench/end_token_probe.py --model google/gemma-3-270m --data runs/proxy-model/gemma-warm/data/test.jsonl \\
        --adapter runs/proxy-model/gemma-warm/rows/eps4/dp/adapter
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="google/gemma-3-270m")
    parser.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter folder (default: the base model)")
    parser.add_argument("--data", type=Path, required=True, help="JSONL records with text and codes (public)")
    parser.add_argument("--records", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--tokens", default="<end_of_turn>,<eos>", help="candidate end tokens, comma-separated")
    parser.add_argument("--system-prompt", default="You write realistic customer product reviews.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from dpsynth.config import ModelConfig
    from dpsynth.data.format import cut_response, encode_prompt
    from dpsynth.models.loader import load_model, load_tokenizer

    cfg = ModelConfig(name=args.model, dtype="float32")
    tok, model = load_tokenizer(cfg), load_model(cfg)
    if args.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(args.adapter))
    model.eval()
    emb = model.get_input_embeddings().weight.detach().float()
    ends = {t: tok.convert_tokens_to_ids(t) for t in args.tokens.split(",")}
    unknown = [t for t, i in ends.items() if i is None or i == tok.unk_token_id]
    if unknown:
        parser.error(f"--tokens: {unknown} not in the tokenizer of {args.model}")
    alike = {}
    for t, i in ends.items():
        cos = torch.nn.functional.cosine_similarity(emb, emb[i][None], dim=1)
        alike[t] = cos > 0.98
        alike[t][i] = False
    sums = {f"p({t})": 0.0 for t in ends} | {f"p(look-alikes of {t})": 0.0 for t in ends}
    n = 0
    with open(args.data) as f:
        records = [json.loads(line) for _, line in zip(range(10 * args.records), f, strict=False)]
    for r in records:
        ids, cut = cut_response(tok, r["text"], args.max_tokens, "sentence")
        if n == args.records or (cut is None and len(ids) >= args.max_tokens) or not ids:
            continue  # a response cut at the bound has no end to predict
        x = torch.tensor([encode_prompt(tok, r.get("codes", {}), args.system_prompt) + ids], device=emb.device)
        with torch.inference_mode():
            probs = torch.softmax(model(input_ids=x).logits[0, -1].float(), -1)
        for t, i in ends.items():
            sums[f"p({t})"] += float(probs[i])
            sums[f"p(look-alikes of {t})"] += float(probs[alike[t]].sum())
        n += 1
    means = {k: round(v / max(n, 1), 4) for k, v in sums.items()}
    looks = {t: int(a.sum()) for t, a in alike.items()}
    print(f"{n} records; look-alikes (cosine > 0.98): {looks}")
    for k, v in means.items():
        print(f"  {k}: {v:.3f}")
    if args.json is not None:
        doc = {"command": " ".join(["python", *sys.argv]), "records": n, "look_alikes": looks, "mean": means}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
