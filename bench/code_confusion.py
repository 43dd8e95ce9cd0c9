"""How a frontier row's records read against their codes, code by code: the confusion behind ``code_agreement``.

The frontier's ``code_agreement`` is one share for all values of a code; a row that writes positive text for every
rating scores well on a mostly-positive data set while ignoring its 1- and 2-star codes. This fits the same
real-trained classifier as ``dpsynth.evaluate.agreement`` (sentence embeddings + logistic regression on the sweep's
training split), labels the row's records, and prints, per code value, how many records were asked for it and how
they read. An evaluation that reads the sweep's training split: run it on PUBLIC proxy sweeps, not on a private set
whose numbers you then choose settings by. Prints counts only, never a record.

    python bench/code_confusion.py --sweep runs/proxy-model/smol-cfg2r --row eps4 --label sentiment
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="a frontier output folder")
    parser.add_argument("--row", required=True, help="a row folder under DIR/rows, e.g. eps4")
    parser.add_argument("--label", default="sentiment", help="a code, or sentiment (derived from rating)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np

    from dpsynth.evaluate.agreement import code_reader
    from dpsynth.evaluate.embeddings import embed
    from dpsynth.evaluate.labels import derive_labels

    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def labelled(records: list[dict]) -> tuple[list[str], list[object]]:
        pairs = [(r["text"], derive_labels(r["codes"], [args.label]).get(args.label)) for r in records]
        kept = [(t, y) for t, y in pairs if y is not None]
        return [t for t, _ in kept], [y for _, y in kept]

    train_texts, train_y = labelled(read(args.sweep / "data" / "train.jsonl"))
    row_texts, row_y = labelled(read(args.sweep / "rows" / args.row / "records.jsonl"))
    clf = code_reader(np.asarray(embed(train_texts)), train_y)
    pred = clf.predict(np.asarray(embed(row_texts)))
    values = sorted(set(train_y) | set(row_y), key=str)
    table = {
        str(v): {str(p): int(sum(1 for y, q in zip(row_y, pred, strict=True) if y == v and q == p)) for p in values}
        for v in values
    }
    print(f"{args.sweep}/rows/{args.row}: {args.label}, rows = asked for, columns = read as (real-trained classifier)")
    print("asked\\read " + " ".join(f"{p!s:>10}" for p in values) + "   agree")
    for v in values:
        n = sum(table[str(v)].values())
        share = table[str(v)][str(v)] / n if n else float("nan")
        print(f"{v!s:>10} " + " ".join(f"{table[str(v)][str(p)]:>10}" for p in values) + f"   {share:.2f}")
    if args.json:
        out = {"sweep": str(args.sweep), "row": args.row, "label": args.label, "confusion": table}
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
