"""Text quality: automatic counts of well-formed and broken synthetic records.

A small LM fine-tuned under DP often produces broken text; these counts say how often, by category. The categories
are defined by precise, cheap rules (below) so that the report can print the definitions next to the numbers.
``gibberish``, ``abrupt_ending`` and ``repetitive`` may overlap; ``well_formed`` means none of them. Run the same
function on the real test split for a base rate (real reviews also often end without punctuation); only counts leave
this module for real text.

Definitions (defaults in brackets):

* **gibberish**: the text has no alphabetic word, or fewer than ``min_letter_share`` [50%] of its non-space characters
  are letters, or more than ``max_oov_share`` [30%] of its alphabetic words (maximal runs of ``a-z`` after
  lower-casing) are not in the dictionary. The dictionary is the whole-word entries of the embedding model's
  (BERT uncased) word-piece vocabulary, about 21,700 English words: local and fixed. On real Amazon phone reviews
  the out-of-dictionary share is under 17% for 99% of reviews, hence the 30% threshold.
* **abrupt_ending**: after stripping trailing spaces and closing quotes or brackets, the text does not end with
  sentence-final punctuation (``.``, ``!``, ``?`` or an ellipsis), e.g. it stops mid-sentence at the token limit.
* **repetitive**: some word ``ngram`` [3]-gram (lower-cased words) occurs at least ``min_repeats`` [3] times.
* **well_formed**: none of the above.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from dpsynth.evaluate.describe import MetricInfo

CATEGORIES = ("well_formed", "gibberish", "abrupt_ending", "repetitive")

DESCRIPTIONS: dict[str, MetricInfo] = {
    "quality_well_formed": MetricInfo("share of records that are not gibberish, abrupt or repetitive", "higher"),
    "quality_gibberish": MetricInfo(
        "share of records with no word, <50% letters among non-space characters, or >30% non-dictionary words", "lower"
    ),
    "quality_abrupt_ending": MetricInfo("share of records not ending with . ! ? or an ellipsis", "lower"),
    "quality_repetitive": MetricInfo("share of records in which some word 3-gram occurs 3 or more times", "lower"),
}

_ALPHA_RE = re.compile(r"[a-z]+")
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CLOSERS = "\"'”’»)]}*_"
_FINAL = (".", "!", "?", "…")


@functools.lru_cache(maxsize=1)
def default_dictionary() -> frozenset[str]:
    """Whole-word, purely alphabetic entries of the bundled all-MiniLM-L6-v2 (BERT uncased) vocabulary."""
    from dpsynth.evaluate.embeddings import model_path

    lines = (model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in (line.strip() for line in lines) if _ALPHA_RE.fullmatch(w))


def is_gibberish(
    text: str, dictionary: frozenset[str], *, max_oov_share: float = 0.3, min_letter_share: float = 0.5
) -> bool:
    """See the module docstring.

    >>> d = frozenset({"this", "case", "is", "great"})
    >>> is_gibberish("This case is great.", d), is_gibberish("xqzt vbnm case", d), is_gibberish("#$%^ 1234 a", d)
    (False, True, True)
    """
    alpha = _ALPHA_RE.findall(text.lower())
    if not alpha:
        return True
    chars = [c for c in text if not c.isspace()]
    if sum(c.isalpha() for c in chars) < min_letter_share * len(chars):
        return True
    oov = sum(w not in dictionary for w in alpha)
    return oov > max_oov_share * len(alpha)


def is_abrupt(text: str) -> bool:
    """See the module docstring.

    >>> is_abrupt("Works well."), is_abrupt('He said "great!"'), is_abrupt("It broke after a"), is_abrupt("")
    (False, False, True, True)
    """
    stripped = text.rstrip().rstrip(_CLOSERS).rstrip()
    return not stripped.endswith(_FINAL)


def is_repetitive(text: str, *, ngram: int = 3, min_repeats: int = 3) -> bool:
    """See the module docstring.

    >>> is_repetitive("so good, so good, so good, so good"), is_repetitive("great case, I love this case")
    (True, False)
    """
    tokens = _WORD_RE.findall(text.lower())
    grams = Counter(tuple(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1))
    return bool(grams) and max(grams.values()) >= min_repeats


def classify(
    text: str,
    dictionary: frozenset[str],
    *,
    max_oov_share: float = 0.3,
    min_letter_share: float = 0.5,
    ngram: int = 3,
    min_repeats: int = 3,
) -> dict[str, bool]:
    """The category flags of one text (``well_formed`` is true when no other flag is)."""
    flags = {
        "gibberish": is_gibberish(text, dictionary, max_oov_share=max_oov_share, min_letter_share=min_letter_share),
        "abrupt_ending": is_abrupt(text),
        "repetitive": is_repetitive(text, ngram=ngram, min_repeats=min_repeats),
    }
    return {"well_formed": not any(flags.values()), **flags}


def quality_counts(
    texts: Iterable[str],
    *,
    max_records: int | None = None,
    dictionary: Iterable[str] | None = None,
    max_oov_share: float = 0.3,
    min_letter_share: float = 0.5,
    ngram: int = 3,
    min_repeats: int = 3,
) -> dict[str, Any]:
    """Counts and rates of each category over the first ``max_records`` texts.

    Returns ``{"n", "counts", "rates", "examples", "definitions", "parameters"}``; ``examples`` maps each category to
    the indices (into ``texts``) of the records in it, so a report can show a few synthetic examples.
    """
    items: Sequence[str] = list(texts)[:max_records] if max_records is not None else list(texts)
    words = frozenset(w.lower() for w in dictionary) if dictionary is not None else default_dictionary()
    counts = dict.fromkeys(CATEGORIES, 0)
    examples: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    for i, text in enumerate(items):
        flags = classify(
            text,
            words,
            max_oov_share=max_oov_share,
            min_letter_share=min_letter_share,
            ngram=ngram,
            min_repeats=min_repeats,
        )
        for cat, flagged in flags.items():
            if flagged:
                counts[cat] += 1
                examples[cat].append(i)
    n = len(items)
    return {
        "n": n,
        "counts": counts,
        "rates": {c: (counts[c] / n if n else None) for c in CATEGORIES},
        "examples": examples,
        "definitions": {
            "gibberish": f"no alphabetic word, <{min_letter_share:.0%} letters among non-space characters, or "
            f">{max_oov_share:.0%} of alphabetic words outside the {len(words)}-word dictionary",
            "abrupt_ending": "does not end with . ! ? or an ellipsis (closing quotes and brackets ignored)",
            "repetitive": f"some word {ngram}-gram occurs {min_repeats} or more times",
            "well_formed": "none of gibberish, abrupt_ending, repetitive",
        },
        "parameters": {
            "max_oov_share": max_oov_share,
            "min_letter_share": min_letter_share,
            "ngram": ngram,
            "min_repeats": min_repeats,
            "dictionary_size": len(words),
        },
    }
