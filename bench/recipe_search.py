"""Hyperparameter search for the DP recipe, on PUBLIC proxy data only, scored by the frontier's own metrics.

Choosing hyperparameters by looking at the private set that a run then reports on is itself a leak (and an
optimistic bias), so dpsynth's defaults are chosen here, on a public proxy (another Amazon category, AG News), and
written down with the numbers (bench/results/recipe-search/). Each grid point is a one-level frontier
(``frontier.eps=[EPS]``, no eps-0 row) in its own directory, so a rerun skips finished points.

    python bench/recipe_search.py --config bench/proxy_electronics.yaml --out runs/recipe \\
        --grid train.learning_rate=1e-3,4e-3 --grid train.batch_size=32,64 --eps 4

Prints one line per grid point: accuracy and macro-F1 of each (label, classifier), MAUVE and code agreement at the
chosen epsilon, and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML config of the PUBLIC proxy data set and the fixed recipe")
    ap.add_argument("--out", required=True, help="directory holding one frontier directory per grid point")
    ap.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeat for more keys)")
    ap.add_argument("--eps", default="4", help="the privacy level to tune at")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("overrides", nargs="*", help="fixed key=value overrides")
    args = ap.parse_args()

    from dpsynth.config import load_config
    from dpsynth.frontier.run import run_frontier

    logging.basicConfig(level=logging.WARNING)
    keys, values = [], []
    for item in args.grid:
        key, _, vals = item.partition("=")
        keys.append(key)
        values.append(vals.split(","))
    results = []
    for point in itertools.product(*values):
        sets = [f"{k}={v}" for k, v in zip(keys, point, strict=True)]
        name = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in zip(keys, point, strict=True)) or "default"
        cfg = load_config(
            args.config, [*args.overrides, *sets, f"frontier.eps=[{args.eps}]", "frontier.real_all=false"]
        )
        start = time.perf_counter()
        doc = run_frontier(cfg, Path(args.out) / name, command=" ".join(sys.argv), progress=False)
        rows = [r for r in doc["rows"] if r["eps"] not in ("real",)]
        summary = {
            "point": dict(zip(keys, point, strict=True)),
            "seconds": round(time.perf_counter() - start, 1),
            "rows": [
                {k: r[k] for k in ("label", "classifier", "accuracy", "macro_f1", "mauve", "code_agreement")}
                for r in rows
            ],
            "real": [
                {k: r[k] for k in ("label", "classifier", "accuracy", "macro_f1")}
                for r in doc["rows"]
                if r["eps"] == "real"
            ],
        }
        results.append(summary)
        cells = "  ".join(
            f"{r['label']}/{r['classifier']} {r['accuracy']:.3f}" for r in summary["rows"] if r["accuracy"] is not None
        )
        mauve = summary["rows"][0]["mauve"] if summary["rows"] else None
        print(f"{name}: {cells}  MAUVE {mauve}  ({summary['seconds']:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"eps": args.eps, "config": args.config, "results": results}, indent=1))


if __name__ == "__main__":
    main()
