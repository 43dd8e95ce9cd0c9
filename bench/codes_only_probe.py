"""How much of a DP row's score comes from its released control codes, and how much from DP-SGD? A probe, not a recipe.

The public warm-start adapter (fitted without DP on another category's reviews) is prompted with the very codes a DP
row of a finished frontier released, and its records are scored exactly as the frontier scores that row. Nothing
private is read to generate: the codes are a DP release already in the ledger and the adapter is public, so this is
post-processing and spends nothing. What separates it from the row is DP-SGD alone (the same codes in the same
order: the row's first draw, with ``generate.seed`` unchanged). The scoring reads the real test split, like every
frontier table: it is an evaluation, not a choice of settings.

    python bench/codes_only_probe.py --sweep runs/amazon-elec --row eps4 \\
        --adapter runs/public-electronics/no_dp/adapter --out runs/codes-only-elec
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from dpsynth.config import load_config
from dpsynth.frontier.metrics import load_reference, score_row
from dpsynth.rundir import RunDir, read_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, required=True, help="a finished frontier folder")
    ap.add_argument("--row", required=True, help="a fine-tuned DP row of it, e.g. eps4")
    ap.add_argument("--adapter", type=Path, required=True, help="the public warm-start adapter its rows started from")
    ap.add_argument("--out", type=Path, required=True, help="a new run folder (replaced if present)")
    ap.add_argument("--records", type=int, default=1000, help="records to generate (the row's first draw: 1,000)")
    args = ap.parse_args()
    src = args.sweep / "rows" / args.row
    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "dp").mkdir(parents=True)
    shutil.copytree(src / "data", args.out / "data")
    shutil.copy(src / "config.yaml", args.out / "config.yaml")
    for name in ("control_codes.json", "privacy.json"):  # the row's release, as it was written
        shutil.copy(src / "dp" / name, args.out / "dp" / name)
    shutil.copytree(args.adapter, args.out / "dp" / "adapter")  # the public adapter in place of the DP-trained one
    generate = [sys.executable, "-m", "dpsynth.cli", "generate", "--run", str(args.out), "-q"]
    subprocess.run([*generate, f"generate.num_records={args.records}"], check=True)
    cfg = load_config(args.sweep / "config.yaml", [])
    ref = load_reference(cfg, RunDir(args.sweep))
    (generated,) = (args.out / "dp").glob("generated*.jsonl")
    records = [{"text": r["text"], "codes": r["codes"]} for r in read_jsonl(generated)]
    entries = score_row(cfg, ref, {"key": f"{args.row}-codes-only", "eps": 0.0}, records, synthetic=True)
    (args.out / "scores.json").write_text(json.dumps(entries, indent=1))
    for e in entries:
        if e["classifier"] == "embedding":
            print(
                f"{args.row} codes only, {e['label']}: accuracy {e['accuracy']:.3f}, macro-F1 {e['macro_f1']:.3f}, "
                f"MAUVE {e['mauve']:.3f} (at the bound {e['mauve_bounded']:.3f}), well-formed {e['well_formed']:.2f}"
            )


if __name__ == "__main__":
    main()
