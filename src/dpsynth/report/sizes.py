"""Sample sizes: shown next to every metric, with a caution when a sample is too small for its number to mean much.

Why thresholds at all: a run with 5 synthetic records per arm printed "MAUVE real 1.000 vs DP synthetic 1.000" and a
majority-class accuracy of 0, numbers that read as findings but are noise. The thresholds are orders of magnitude,
not tests, and the same for every run:

* **MAUVE: 100 records per side.** MAUVE quantises the pooled embeddings into about n/10 k-means clusters; below 100
  records there are fewer than ten, and two small samples land in the same few clusters, so the score sits near 1
  whatever the text is.
* **A classifier's accuracy: 50 real test records.** At 50 the 95% interval of an accuracy near 0.5 is about +-0.14,
  the size of the differences the utility table is read for; fewer and the ranking of the sources is chance.
* **Everything else (divergences, similarities, distances, rates, counts): 30 records.** At 30 a share near 0.5 has a
  95% interval of about +-0.18, and a histogram over a handful of values has a few records per bar.

The effective size of a metric that compares an arm with real data is the smaller of the two samples.

>>> too_small("fidelity.mauve", 5, 200), too_small("fidelity.mauve", 300, 200), too_small("quality.x.rate", 30)
(True, False, False)
>>> size_note(5, 200), size_note(40, None)
('n=5 vs 200 real', 'n=40')
"""

from __future__ import annotations

#: Minimum sample size per metric family (first matching prefix wins; "" is the default).
MIN_SAMPLE: tuple[tuple[str, int], ...] = (("fidelity.mauve", 100), ("utility.", 50), ("", 30))
#: The mark next to a number whose sample is too small.
CAUTION = "⚠"


def min_sample(name: str) -> int:
    """The threshold for metric ``name``."""
    return next(n for prefix, n in MIN_SAMPLE if name.startswith(prefix))


def effective(n: int | None, n_real: int | None = None) -> int | None:
    sizes = [x for x in (n, n_real) if x is not None]
    return min(sizes) if sizes else None


def too_small(name: str, n: int | None, n_real: int | None = None) -> bool:
    """Whether the sample behind metric ``name`` is below its threshold (unknown sizes are not flagged)."""
    size = effective(n, n_real)
    return size is not None and size < min_sample(name)


def size_note(n: int, n_real: int | None) -> str:
    return f"n={n:,}" if n_real is None else f"n={n:,} vs {n_real:,} real"


def caution_text(name: str) -> str:
    """What the caution mark means for metric ``name``."""
    return f"{CAUTION}: fewer than {min_sample(name)} records, too few for this number to mean much"


THRESHOLDS_NOTE = (
    f"{CAUTION} marks a number resting on too small a sample to mean much: fewer than 100 records per side for "
    "MAUVE, 50 real test records for a classifier's accuracy, 30 records for anything else (n: the arm's records; "
    "vs … real: the real sample it is compared with)."
)
