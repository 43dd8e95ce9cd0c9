"""How much of MAUVE's gap could the 64-token generation cut explain?

Real training texts of a PUBLIC data set, cut to the first K tokens (the generation budget is 64 new tokens), scored
with MAUVE against its test split, beside the uncut texts: if cut real text still scores high, short records are not
what keeps the DP rows' MAUVE low.

    python bench/mauve_length_probe.py runs/proxy-warm/epochs-2/data   # a prepared DIR/data of public data
"""

from __future__ import annotations

import sys

import numpy as np

from dpsynth.config import ModelConfig
from dpsynth.data.records import read_records
from dpsynth.evaluate.collect import sample
from dpsynth.evaluate.embeddings import embed
from dpsynth.evaluate.fidelity import mauve_score
from dpsynth.models.loader import load_tokenizer


def main(data_dir: str, n: int = 500) -> None:
    tok = load_tokenizer(ModelConfig())
    train = [r.text for r in read_records(f"{data_dir}/train.jsonl")]
    test = [r.text for r in sample(read_records(f"{data_dir}/test.jsonl"), n, 0, "test")]
    rng = np.random.default_rng(0)
    pick = [train[i] for i in rng.choice(len(train), n, replace=False)]
    lens = np.array([len(tok(t, add_special_tokens=False)["input_ids"]) for t in train])
    print(
        f"train reviews: median {np.median(lens):.0f} tokens; over 64: {(lens > 64).mean():.2f}; over 128: "
        f"{(lens > 128).mean():.2f}"
    )
    q = embed(test)
    for cut in (None, 128, 64, 48):
        texts = pick if cut is None else [tok.decode(tok(t, add_special_tokens=False)["input_ids"][:cut]) for t in pick]
        label = "uncut" if cut is None else f"first {cut} tokens"
        print(f"| {label} | {mauve_score(embed(texts), q):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
