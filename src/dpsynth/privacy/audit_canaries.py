"""Audit canaries: planted records whose membership a one-run audit tries to guess (Steinke, Nasr, Jagielski 2023).

The audit's statistics rest on two facts this module provides:

* every canary is included in training independently, by a fair coin seeded from ``audit.seed``
  (:func:`inclusion_coins`); which canaries were drawn is fixed before training and never depends on the data;
* the canaries are distinct, unlike any real record, and each is its own privacy unit, so that a DP guarantee per
  privacy unit is a guarantee per canary (:func:`check_canaries_unseen`).

Two kinds, both with control codes drawn uniformly from the run's public code domains:

* ``random_tokens``: the response is ``canary_tokens`` words drawn uniformly from the tokenizer's vocabulary (words
  that are one token each, with their leading space). Nothing in pretraining or in the real data predicts them, so a
  member's loss can drop far below a non-member's: the easiest canary to detect, the usual choice for auditing.
* ``prefix_suffix``: a one-sentence, in-distribution review (from the demo generator, never from private data)
  followed by the same kind of random words. Closer to what a real record looks like; the random suffix keeps it
  unique and hard to predict.

Canaries are synthetic: their text is not private and may be stored and shown.

>>> coins = inclusion_coins(1000, seed=0)
>>> 400 < int(coins.sum()) < 600, bool((coins == inclusion_coins(1000, seed=0)).all())
(True, True)
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from faker import Faker

from dpsynth.data.demo import PRODUCTS, review_text
from dpsynth.data.format import CutRule, cut_response
from dpsynth.data.records import CodeSpec, CodeValue, Record
from dpsynth.errors import DPSynthError

CanaryKind = Literal["random_tokens", "prefix_suffix"]
UNIT_PREFIX = "audit-canary-"
_WORD = re.compile(r" [a-z]{3,12}")  # a plain lower-case word with its leading space: one token, no markup


@dataclass(frozen=True)
class AuditCanary:
    """One audit canary: its own privacy unit, one record, a response of ``text`` after the prompt for ``codes``."""

    index: int
    unit: str
    text: str
    kind: str
    codes: Mapping[str, CodeValue] = field(default_factory=dict)

    def record(self) -> Record:
        return Record(text=self.text, unit=self.unit, codes=dict(self.codes))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "unit": self.unit, "kind": self.kind, "text": self.text, "codes": dict(self.codes)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditCanary:
        return cls(
            index=int(obj["index"]),
            unit=str(obj["unit"]),
            text=str(obj["text"]),
            kind=str(obj["kind"]),
            codes=dict(obj.get("codes") or {}),
        )


def word_token_ids(tokenizer: Any) -> list[int]:
    """Ids of vocabulary tokens that decode to one plain lower-case word with a leading space (e.g. ``" lamp"``).

    Restricting to such tokens keeps the canary's text re-tokenizing into (almost exactly) the drawn tokens, so that
    ``canary_tokens`` means what it says, and keeps markup and special tokens out of the canaries.
    """
    ids = [i for i in range(len(tokenizer)) if _WORD.fullmatch(tokenizer.decode([i]))]
    if len(ids) < 100:
        raise DPSynthError(f"the tokenizer has only {len(ids)} plain-word tokens; random-token canaries need more")
    return ids


def _random_words(rng: random.Random, tokenizer: Any, vocab: Sequence[int], n: int) -> str:
    return "".join(tokenizer.decode([i]) for i in rng.choices(vocab, k=n)).strip()


def _prefix(rng: random.Random, fake: Faker, codes: Mapping[str, CodeValue]) -> str:
    """One in-distribution sentence: the opener of a demo review matching the canary's rating and category."""
    rating = codes.get("rating")
    rating = rating if isinstance(rating, int) and 1 <= rating <= 5 else 3
    category = str(codes.get("category"))
    product = rng.choice(PRODUCTS[category]) if category in PRODUCTS else "product"
    if category not in PRODUCTS:  # a category the demo generator does not know: borrow its phrasing from another
        category = rng.choice(sorted(PRODUCTS))
    text = review_text(rng, fake, rating, category, product, aside=0.0)
    return re.split(r"(?<=[.!?])\s+", text)[0]


def make_audit_canaries(
    m: int, *, kind: CanaryKind, seed: int, code_specs: Sequence[CodeSpec], tokenizer: Any, num_tokens: int
) -> list[AuditCanary]:
    """``m`` distinct canaries, everything drawn from ``seed`` (the same seed gives the same canaries)."""
    if m <= 0 or num_tokens <= 0:
        raise ValueError("need at least one canary and one token per canary")
    rng = random.Random(f"dpsynth-audit-canaries-{seed}")
    fake = Faker("en_US")
    fake.seed_instance(seed)
    vocab = word_token_ids(tokenizer)
    out: list[AuditCanary] = []
    seen: set[str] = set()
    for i in range(m):
        codes = {spec.name: rng.choice(spec.values) for spec in code_specs if spec.values}
        while True:
            text = _random_words(rng, tokenizer, vocab, num_tokens)
            if kind == "prefix_suffix":
                text = f"{_prefix(rng, fake, codes)} {text}"
            elif kind != "random_tokens":
                raise ValueError(f"unknown canary kind {kind!r}")
            if text not in seen:
                break
        seen.add(text)
        out.append(AuditCanary(index=i, unit=f"{UNIT_PREFIX}{i}", text=text, kind=kind, codes=codes))
    return out


def inclusion_coins(m: int, seed: int) -> np.ndarray:
    """Which canaries are trained on: ``m`` independent fair coins, reproducible from ``seed``.

    A stream of its own (not the canaries' text stream), so that changing the canary kind or length does not change
    which canaries are in, and the coins are independent of the canaries' content as the audit's analysis assumes.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4A0D17]))
    return rng.random(m) < 0.5


def check_canaries_unseen(canaries: Sequence[AuditCanary], records: Iterable[Record]) -> None:
    """Refuse canaries that collide with the real data: a shared unit id, or a canary text inside a real record.

    Either would break the audit's premise that including a canary is a change of exactly one privacy unit that
    nothing else in the data imitates. The error names the canary's index only, never a record's text.
    """
    units = {c.unit for c in canaries}
    if len(units) != len(canaries) or len({c.text for c in canaries}) != len(canaries):
        raise DPSynthError("audit canaries are not distinct")
    for r in records:
        if r.unit in units:
            raise DPSynthError(f"a training record's privacy unit is named like an audit canary ({r.unit})")
        for c in canaries:
            if c.text in r.text:
                raise DPSynthError(f"audit canary #{c.index} occurs in the real data; choose another audit.seed")


def response_ids(tokenizer: Any, canary: AuditCanary, max_tokens: int, cut: CutRule = "token") -> list[int]:
    """The canary's response tokens exactly as training sees them: tokenized alone, cut to ``max_tokens`` by the
    run's rule (``data.cut_responses``, :func:`dpsynth.data.format.cut_response`).

    Must match :func:`dpsynth.data.format.encode_unit` (tests check it), or the audit would score another sequence
    than the one trained on.
    """
    return cut_response(tokenizer, canary.text, max_tokens, cut)[0]
