"""Held-out loss of LoRA adapters on a run's TEST split: did a DP training move the model at all?

Why: a DP arm's training loss is measured on its own noisy Poisson batches (about 0.03 nats of batch-to-batch
spread at 256 records), so a flat training curve cannot tell "learned nothing" from "learned a little". This scores
every given adapter (and the base model) on the same held-out units, the loss training minimises (the mean NLL per
labelled token of each unit, :class:`dpsynth.evaluate.model_privacy.UnitScorer`), and prints the mean with its
standard error and each adapter's paired difference against the first one named. Used on PUBLIC proxy runs to choose
a recipe; on a reported set it is an evaluation (it reads the test split), not a release.

    python bench/heldout_nll.py --run runs/proxy-gemma/rows/eps4 --units 300 \\
        warm=runs/gemma-home-eos/no_dp/adapter dp=runs/proxy-gemma/rows/eps4/dp/adapter
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a prepared run directory (its config.yaml and data/test.jsonl)")
    ap.add_argument("--units", type=int, default=300, help="the first N test units (the split is already shuffled)")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--json", default=None)
    ap.add_argument("adapters", nargs="+", help="NAME=FOLDER of each adapter (same base model and LoRA blocks)")
    args = ap.parse_args()

    import numpy as np
    from peft import PeftModel

    from dpsynth.config import load_config
    from dpsynth.data.prepare import load_prepare_info
    from dpsynth.data.records import group_by_unit, read_records
    from dpsynth.evaluate.model_privacy import UnitScorer, scoring_setup
    from dpsynth.models.loader import load_model, load_tokenizer
    from dpsynth.rundir import RunDir

    run = RunDir(Path(args.run))
    cfg = load_config(Path(args.run) / "config.yaml", [])
    named = dict(a.split("=", 1) for a in args.adapters)
    start = time.perf_counter()
    model_cfg, _, _ = scoring_setup(cfg)
    tokenizer = load_tokenizer(cfg.model)
    names = list(named)
    model = PeftModel.from_pretrained(load_model(model_cfg), named[names[0]], adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(named[n], adapter_name=n, is_trainable=False)
    model.eval()
    units = list(group_by_unit(read_records(run.test)).values())[: args.units]
    scorer = UnitScorer(tokenizer, units, load_prepare_info(run), args.batch_tokens)
    losses = dict(zip(["base", *names], scorer.losses_under(model, [None, *names]), strict=True))
    seconds = round(time.perf_counter() - start, 1)
    first = losses[names[0]]
    rows = []
    print(f"{len(units)} test units of {args.run}; model {cfg.model.name}; {seconds} s")
    print(f"| model | mean NLL per token | standard error | minus {names[0]} (paired) | its standard error |")
    print("|---|---|---|---|---|")
    for name, v in losses.items():
        d = v - first
        row = {
            "model": name,
            "nll": float(np.mean(v)),
            "se": float(np.std(v, ddof=1) / math.sqrt(len(v))),
            "diff": float(np.mean(d)),
            "diff_se": float(np.std(d, ddof=1) / math.sqrt(len(d))),
        }
        rows.append(row)
        print(f"| {name} | {row['nll']:.4f} | {row['se']:.4f} | {row['diff']:+.4f} | {row['diff_se']:.4f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join(sys.argv), "run": args.run, "units": len(units), "seconds": seconds, "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
