"""How much of a model's output vocabulary PUBLIC text uses: the lead for trimming gemma-3-270m's 262,144-token output
layer, which is most of its DP training step on a CPU (``bench/results/vocab-trim-2026-12-07/``).

    python bench/vocab_coverage.py --model google/gemma-3-270m

Counts the vocabulary entries made only of printable ASCII (and SentencePiece's word marker), then tokenizes public
text only (Amazon Home_and_Kitchen 2014 reviews, the public warm start's data, and AG News) and reports the distinct
ids it uses and the share of its tokens inside the ASCII entries. Reads no private data set; prints no text.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
from pathlib import Path

from dpsynth.models.config import ModelConfig
from dpsynth.models.loader import load_tokenizer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def public_texts(data: Path) -> list[str]:
    texts = []
    with gzip.open(data / "amazon/categories_2014/Home_and_Kitchen.csv.gz", "rt", encoding="utf-8", newline="") as f:
        texts += [row["reviewText"] for row in csv.DictReader(f)]
    with gzip.open(data / "ag_news/test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        texts += [row[1] + " " + row[2] for row in csv.reader(f)]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="google/gemma-3-270m")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    tok = load_tokenizer(ModelConfig(name=args.model))
    vocab = tok.get_vocab()
    ascii_ids = {i for t, i in vocab.items() if all(32 <= ord(c) < 127 or c == "\u2581" for c in t)}
    counts: collections.Counter[int] = collections.Counter()
    texts = public_texts(args.data)
    for text in texts:
        counts.update(tok(text, add_special_tokens=False)["input_ids"])
    total = sum(counts.values())
    inside = sum(c for i, c in counts.items() if i in ascii_ids)
    print(f"vocabulary: {len(vocab):,} entries, {len(ascii_ids):,} of printable ASCII")
    print(f"public text: {len(texts):,} texts, {total:,} tokens, {len(counts):,} distinct ids")
    print(f"share of its tokens among the ASCII entries: {inside / total:.4f}")


if __name__ == "__main__":
    main()
