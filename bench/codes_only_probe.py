"""How much of a DP row's score comes from its released control codes, and how much from DP-SGD? A probe, not a recipe.

The public warm-start adapter (fitted without DP on another category's reviews) is prompted with the very codes a DP
row of a finished frontier released, and its records are scored exactly as the frontier scores that row. Nothing
private is read to generate: the codes are a DP release already in the ledger and the adapter is public, so this is
post-processing and spends nothing. What separates it from the row is DP-SGD alone: the probe generates as many
records as the row did, with its ``generate.seed``, so the codes come out the same and in the same order (checked:
it stops if they differ; codes are drawn a column at a time, so a shorter draw would not give the same ones), and
scores the first ``frontier.n_synthetic``, the row's first draw. The scoring reads the real test split, like every
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
    args = ap.parse_args()
    src = args.sweep / "rows" / args.row
    row = json.loads((src / "row.json").read_text())
    out, sweep, adapter = (p.resolve() for p in (args.out, args.sweep, args.adapter))
    if out in (sweep, adapter) or sweep in out.parents or adapter in out.parents or out in adapter.parents:
        raise SystemExit(f"--out {args.out} would replace the sweep or the adapter: name a new folder")
    if out.exists():
        shutil.rmtree(out)
    (out / "dp").mkdir(parents=True)
    # the row's prepared metadata, not its records: generation reads neither split, so no private record is copied
    shutil.copytree(src / "data", out / "data", ignore=shutil.ignore_patterns("*.jsonl"))
    shutil.copy(src / "config.yaml", out / "config.yaml")
    for name in ("control_codes.json", "privacy.json"):  # the row's release, as it was written (privacy.json: its
        shutil.copy(src / "dp" / name, out / "dp" / name)  # accounting, which generation checks; no DP-SGD here)
    shutil.copytree(adapter, out / "dp" / "adapter")  # the public adapter in place of the DP-trained one
    # the row's prompt_format (dpsynth.train.prompt_format) is the DP arm's, not the public adapter's, and that one's
    # digest was made on another run's data (its codes and system prompt): not comparable here, so none is checked
    privacy = json.loads((out / "dp" / "privacy.json").read_text())
    privacy.pop("prompt_format", None)
    (out / "dp" / "privacy.json").write_text(json.dumps(privacy, indent=2))
    generate = [sys.executable, "-m", "dpsynth.cli", "generate", "--run", str(out), "-q"]
    subprocess.run([*generate, f"generate.num_records={row['n_records']}"], check=True)
    cfg = load_config(sweep / "config.yaml", [])
    (generated,) = (out / "dp").glob("generated*.jsonl")
    records = [{"text": r["text"], "codes": r["codes"]} for r in read_jsonl(generated)]
    row_codes = [r["codes"] for r in read_jsonl(sweep / row["records"])]
    if [r["codes"] for r in records] != row_codes:
        raise SystemExit(f"the probe drew other codes than row {args.row}: not comparable (seed or settings differ)")
    records = records[: cfg.frontier.n_synthetic]  # the row's first draw
    ref = load_reference(cfg, RunDir(sweep))
    made = {"key": f"{args.row}-codes-only", "eps": row["eps"]}  # the codes' row; DP-LR is the row's, not rerun
    entries = score_row(cfg, ref, made, records, synthetic=True, dp_logreg=False)
    (out / "scores.json").write_text(json.dumps(entries, indent=1))
    for e in entries:
        if e["classifier"] == "embedding":
            figures = {k: "-" if e[k] is None else f"{e[k]:.3f}" for k in ("accuracy", "macro_f1", "mauve")}
            print(
                f"{args.row} codes only, {e['label']}: accuracy {figures['accuracy']}, macro-F1 "
                f"{figures['macro_f1']}, MAUVE {figures['mauve']}, well-formed {e['well_formed']}"
            )


if __name__ == "__main__":
    main()
