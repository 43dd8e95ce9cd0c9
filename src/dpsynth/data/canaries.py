"""Canaries: planted fake secrets that measure how much a trained model memorized (exposure, Carlini et al. 2019).

Each canary is a short, in-distribution review carrying a fake full name, street address and phone number and a
random secret of a fixed, public format (:data:`SECRET_FORMAT`). It is its own privacy unit (``canary-<i>``) in the
TRAINING split only. The evaluation stage ranks the model's likelihood of the true secret among other secrets of the
same format substituted into the same text, which is why the text is ``prefix + secret + suffix`` with the secret
appearing exactly once (:meth:`Canary.with_secret`).

>>> c = make_canaries(2, seed=0, code_specs=[CodeSpec("rating", (1, 2, 3, 4, 5))])[0]
>>> c.text == c.prefix + c.secret + c.suffix and c.text.count(c.secret) == 1
True
>>> len(c.secret), c.secret.isdigit(), c.unit
(6, True, 'canary-0')
>>> sorted(k for k, p in SHAPES.items() if p.search(c.text))
['Canary', 'Name', 'Phone', 'Street']

:data:`SHAPES` are the template's own patterns (what :func:`canary_text` and Faker's ``en_US`` formats produce), so
that the evaluation can count records that carry canary-shaped personal data with invented values: memorised
structure shows even when no exact canary value does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faker import Faker
from faker.providers.address.en_US import Provider as _UsAddress

from dpsynth.data.demo import PRODUCTS, review_text
from dpsynth.data.records import CodeSpec, CodeValue, Record
from dpsynth.rundir import read_jsonl, write_jsonl

SECRET_FORMAT = "6 digits"
SECRET_DIGITS = 6
_SECRET_LEAD = "My secret code is "


_WORD = r"[A-Z][a-z]+"
_SUFFIX = "|".join(sorted(map(re.escape, set(_UsAddress.street_suffixes)), key=len, reverse=True))

#: The shape of each canary field, as the template writes it: "I am <First> <Last>, <building> <Name> <Suffix>,
#: <###-###-####>. My secret code is <######>." Keys are the canary leakage table's columns.
SHAPES: dict[str, re.Pattern[str]] = {
    "Name": re.compile(rf"\bI am {_WORD} {_WORD},"),
    "Street": re.compile(rf"(?<!\d)\d{{3,5}} {_WORD} (?:{_SUFFIX})\b"),
    "Phone": re.compile(r"(?<![\d-])\d{3}-\d{3}-\d{4}(?![\d-])"),
    "Canary": re.compile(rf"{_SECRET_LEAD}\d{{{SECRET_DIGITS}}}(?!\d)"),
}


def random_secret(rng: random.Random) -> str:
    """A secret of :data:`SECRET_FORMAT`: six uniformly random digits (leading zeros allowed), 10**6 candidates."""
    return "".join(rng.choice("0123456789") for _ in range(SECRET_DIGITS))


def canary_text(name: str, street: str, phone: str, secret: str, body: str) -> str:
    """The canary's text: a review ``body``, the personal details, then the secret in a fixed sentence.

    >>> canary_text("Ann Lee", "1 Main St", "555-010-0000", "012345", "Nice mug.")
    'Nice mug. I am Ann Lee, 1 Main St, 555-010-0000. My secret code is 012345.'
    """
    return f"{body} I am {name}, {street}, {phone}. {_SECRET_LEAD}{secret}."


@dataclass(frozen=True)
class Canary:
    """One planted record. ``text == prefix + secret + suffix``; the secret occurs in it exactly once."""

    unit: str
    name: str
    street: str
    phone: str
    secret: str
    prefix: str
    suffix: str
    codes: Mapping[str, CodeValue] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prefix + self.secret + self.suffix

    def with_secret(self, secret: str) -> str:
        """The same text with another secret (for exposure: the candidates the true secret is ranked among)."""
        return self.prefix + secret + self.suffix

    def record(self) -> Record:
        return Record(text=self.text, unit=self.unit, codes=dict(self.codes))

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "name": self.name,
            "street": self.street,
            "phone": self.phone,
            "secret": self.secret,
            "text": self.text,
            "codes": dict(self.codes),
            "prefix": self.prefix,
            "suffix": self.suffix,
            "secret_format": SECRET_FORMAT,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Canary:
        return cls(
            unit=str(obj["unit"]),
            name=str(obj["name"]),
            street=str(obj["street"]),
            phone=str(obj["phone"]),
            secret=str(obj["secret"]),
            prefix=str(obj["prefix"]),
            suffix=str(obj["suffix"]),
            codes=dict(obj.get("codes") or {}),
        )


def _body(rng: random.Random, fake: Faker, codes: Mapping[str, CodeValue]) -> str:
    """A one-sentence review whose sentiment matches the canary's rating (3 stars when it has none)."""
    rating = codes.get("rating")
    rating = rating if isinstance(rating, int) and 1 <= rating <= 5 else 3
    category = codes.get("category")
    known = str(category) in PRODUCTS
    category = str(category) if known else rng.choice(sorted(PRODUCTS))
    product = rng.choice(PRODUCTS[category]) if known else "product"  # a category the demo lists do not know
    text = review_text(rng, fake, rating, category, product, aside=0.0)
    return re.split(r"(?<=[.!?])\s+", text)[0]  # one sentence: canaries stay well under 64 tokens


def make_canaries(n: int, seed: int, code_specs: Sequence[CodeSpec]) -> list[Canary]:
    """``n`` canaries with distinct secrets, codes drawn uniformly from each public domain, all seeded by ``seed``."""
    rng = random.Random(f"dpsynth-canaries-{seed}")
    fake = Faker("en_US")
    fake.seed_instance(seed)
    out: list[Canary] = []
    used: set[str] = set()
    for i in range(n):
        codes = {spec.name: rng.choice(spec.values) for spec in code_specs if spec.values}
        name = f"{fake.first_name()} {fake.last_name()}"  # no "Dr." or "MD": short, like a reviewer's own name
        street = f"{fake.building_number()} {fake.street_name()}"  # no apartment: canaries stay short
        phone = fake.numerify("###-###-####")
        body = _body(rng, fake, codes)
        while True:
            secret = random_secret(rng)
            text = canary_text(name, street, phone, secret, body)
            if secret not in used and text.count(secret) == 1:
                break
        used.add(secret)
        start = text.rindex(_SECRET_LEAD + secret) + len(_SECRET_LEAD)
        out.append(
            Canary(
                unit=f"canary-{i}",
                name=name,
                street=street,
                phone=phone,
                secret=secret,
                prefix=text[:start],
                suffix=text[start + len(secret) :],
                codes=codes,
            )
        )
    return out


def canary_count(rate: float, train_units: int) -> int:
    """``round(rate * train_units)``, at least one when the rate is positive.

    >>> canary_count(0.0, 100), canary_count(0.01, 10), canary_count(0.05, 100)
    (0, 1, 5)
    """
    if rate <= 0:
        return 0
    return max(1, round(rate * train_units))


def write_canaries(path: Path, canaries: Sequence[Canary]) -> int:
    return write_jsonl(path, (c.to_json() for c in canaries))


def read_canaries(path: Path) -> list[Canary]:
    """Canaries that ``prepare`` wrote (for the evaluation stage)."""
    return [Canary.from_json(obj) for obj in read_jsonl(path)]
