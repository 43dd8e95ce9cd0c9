"""MAUVE of a finished frontier's rows in a second feature space: the base model's own hidden states.

The frontier's MAUVE (and its embedding classifier) read one sentence embedding, all-MiniLM-L6-v2, which is also the
space Private Evolution votes in (``bench/pe_select_probe.py`` showed a vote there lifting that MAUVE and not this
one). This scores every row's records (``rows/*/records.jsonl``; each draw of a ``frontier.draws`` sweep on its own,
the row's figure their mean, as the frontier's) and the first N real training records against the sweep's real test
split on the mean-pooled last hidden states of ``model.name`` (float32, no adapter), beside the
row's MiniLM MAUVE from ``frontier.json``. Like the frontier's table it reads the sweep's real splits: an evaluation,
not DP, and not a basis for choosing settings on a private set.

    python bench/mauve_features.py --sweep runs/frontier-yelp-bf16 \
        --json bench/results/frontier-yelp-5k-bf16/mauve-lm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

_LM: dict[str, Any] = {}


def lm_features(cfg: Any, texts: list[str], batch: int = 32) -> Any:
    """Mean-pooled last hidden states of the base model (``model.name``, float32, no adapter): features for a second
    MAUVE that shares nothing with the sentence embedding that the votes and the frontier's MAUVE use."""
    import numpy as np
    import torch

    from dpsynth.models.loader import load_model, load_tokenizer

    if not _LM:
        m = cfg.model.model_copy(update={"dtype": "float32"})
        _LM["tok"], _LM["model"] = load_tokenizer(m), load_model(m)
    tok, model = _LM["tok"], _LM["model"]
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, truncation=True, max_length=128)
            enc = enc.to(model.device)
            hidden = model.get_decoder()(**enc).last_hidden_state  # the decoder's: no logits over the vocabulary
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="a finished frontier directory")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--features-model",
        default=None,
        help="the model whose hidden states are the features (default: the sweep's model.name); name one model to "
        "compare sweeps of different base models in one feature space",
    )
    args = parser.parse_args()

    from dpsynth import machine
    from dpsynth.config import load_config
    from dpsynth.evaluate.mauve_metric import mauve_over_draws
    from dpsynth.frontier.metrics import load_reference
    from dpsynth.rundir import RunDir, read_json, read_jsonl

    cfg = load_config(args.sweep / "config.yaml", [])
    if args.features_model is not None:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": args.features_model})})
    ref = load_reference(cfg, RunDir(args.sweep))
    done = read_json(args.sweep / "frontier.json")
    minilm = {str(r["row"]): (r.get("mauve"), r.get("mauve_sd")) for r in done["rows"]}
    n = int(done["n_synthetic"])
    repeats = cfg.frontier.mauve_repeats
    test = lm_features(cfg, ref.test_texts)
    sets: dict[str, list[str]] = {}
    for row in sorted((args.sweep / "rows").iterdir()):
        if (row / "records.jsonl").is_file():
            sets[row.name] = [str(r["text"]) for r in read_jsonl(row / "records.jsonl")]
    sets[f"real[:{n}]"] = ref.train_texts[:n]  # the first n of the training split (the real row draws its own n)
    out = []
    print("| row | records | MAUVE, sentence embedding (frontier.json) | MAUVE, base-LM features |\n|---|---|---|---|")
    for name, texts in sets.items():
        t0 = time.perf_counter()
        # a row of a frontier.draws sweep holds its draws as consecutive equal slices: each is scored on its own,
        # as the frontier scores them, and the row's figure is their mean (pooling them would score 2n records)
        draws = 1 if name.startswith("real") else cfg.frontier.draws
        if len(texts) % draws:
            raise SystemExit(f"row {name} holds {len(texts)} records, not {draws} draws of equal size")
        size = len(texts) // draws  # as the frontier splits them (dpsynth.frontier.metrics.score_draws)
        slices = [texts[i * size : (i + 1) * size] for i in range(draws)]
        per = [mauve_over_draws(lm_features(cfg, s), test, repeats=repeats, seed=cfg.evaluate.seed) for s in slices]
        mean, sd = sum(d.mean for d in per) / len(per), sum(d.sd for d in per) / len(per)
        mini = minilm.get(name if not name.startswith("real") else "real", (None, None))
        mini_cell = "-" if mini[0] is None else f"{mini[0]:.3f} ± {mini[1] or 0:.3f}"
        each = "" if len(per) == 1 else " (" + " / ".join(f"{d.mean:.3f}" for d in per) + ")"
        print(f"| {name} | {len(texts)} | {mini_cell} | {mean:.3f} ± {sd:.3f}{each} |", flush=True)
        out.append(
            {
                "row": name,
                "records": len(texts),
                "mauve_minilm": mini[0],
                "mauve_minilm_sd": mini[1],
                "mauve_lm": mean,
                "mauve_lm_sd": sd,
                **({"mauve_lm_draws": [d.mean for d in per]} if len(per) > 1 else {}),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join(["python", *sys.argv]),
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine.describe(),
            "sweep": str(args.sweep),
            "features": f"{cfg.model.name}, mean-pooled last hidden states, float32, 128 tokens",
            "n_test": len(ref.test_texts),
            "repeats": repeats,
            "rows": out,
        }
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
