"""Best-of-m sampling: draw several candidates per control code and keep the one that reads most like its code.

A fine-tuned model may ignore its control code (on Yelp, records asked for a minority category read as that
category only about a quarter of the time) or break off mid-sentence. ``generate.candidates = m`` samples ``m``
texts for each drawn code and keeps one, chosen by rules and a model that know nothing private:

* ``codes``: a zero-shot reading of each code with the public sentence-embedding model
  (:mod:`dpsynth.evaluate.embeddings`): every value of a code's public domain gets a short public description
  (:func:`code_description`, e.g. "A very negative review." for 1 star, "A review of Restaurants." for a category),
  and a candidate scores, per code, the cosine similarity to its own value's description minus the highest
  similarity to any other value's. The scores of the selected codes add up.
* ``well_formed``: the rules of :mod:`dpsynth.evaluate.quality` (not gibberish, not cut off, not repetitive); a
  well-formed candidate beats every one that is not, the code score breaks ties.

Privacy: the candidates are post-processing of the release (the adapter and the released codes), and the choice
reads only them, the public code domains and public models, so it costs no privacy budget. The codes themselves
are unchanged: slot ``i`` keeps the code drawn for it, so the code distribution is exactly the released one.

Cost: ``m`` times the generation, plus one embedding per candidate. The evaluation's code agreement and
well-formed share are then measured on selected text (the frontier's table says so; a run's ``config.yaml`` records
the setting), and the code-agreement classifier reads the same embedding model as the selection: it is trained on
real data and the selection is zero-shot, but the two are not independent, so agreement flatters best-of-m somewhat;
the TSTR classifiers and MAUVE, tested against real text, are the fairer judges.

>>> code_description("rating", 1), code_description("category", "Beauty_and_Spas"), code_description("lang", "en")
('A very negative review.', 'A review of Beauty and Spas.', 'lang: en.')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

SelectBy = Literal["codes", "well_formed"]


def code_description(name: str, value: Any) -> str:
    """A short public description of one code value, for the zero-shot reading (the prompt's own wording of it)."""
    from dpsynth.data.categories import category_label
    from dpsynth.data.format import RATING_WORDS

    if name == "rating" and value in RATING_WORDS:
        return f"A {RATING_WORDS[value]} review."
    if name == "category":
        return f"A review of {category_label(value)}."
    return f"{name}: {value}."


def code_margins(
    text_vectors: np.ndarray,
    codes: Sequence[Mapping[str, Any]],
    domains: Mapping[str, Sequence[Any]],
    embed_fn: Any,
) -> np.ndarray:
    """Per text, the summed zero-shot margin of its codes (see the module docstring); codes without a domain of at
    least two values add nothing. ``text_vectors`` are unit vectors; ``embed_fn`` embeds a list of strings."""
    total = np.zeros(len(codes))
    for name, values in domains.items():
        if len(values) < 2:
            continue
        protos = np.asarray(embed_fn([code_description(name, v) for v in values]))
        sims = np.asarray(text_vectors) @ protos.T  # (n, values)
        index = {v: j for j, v in enumerate(values)}
        for i, c in enumerate(codes):
            j = index.get(c.get(name))
            if j is None:
                continue
            others = np.delete(sims[i], j)
            total[i] += sims[i, j] - others.max()
    return total


def choose(
    texts: Sequence[str],
    codes: Sequence[Mapping[str, Any]],
    m: int,
    domains: Mapping[str, Sequence[Any]],
    select_by: Sequence[SelectBy],
    *,
    embed_fn: Any = None,
) -> list[int]:
    """For ``n = len(codes)`` slots with ``m`` candidates each (candidate ``j`` of slot ``i`` at ``texts[j * n + i]``),
    the index into ``texts`` of the candidate kept for each slot. Ties go to the earliest candidate.

    >>> choose(["It broke after a", "Works well."], [{}], 2, {}, ["well_formed"])
    [1]
    """
    n = len(codes)
    if len(texts) != m * n:
        raise ValueError(f"expected {m} candidates for each of {n} codes, got {len(texts)} texts")
    score = np.zeros(len(texts))
    if "codes" in select_by and domains:
        if embed_fn is None:
            from dpsynth.evaluate.embeddings import embed as embed_fn
        score += code_margins(embed_fn(list(texts)), list(codes) * m, domains, embed_fn)
    if "well_formed" in select_by:
        from dpsynth.evaluate.quality import classify, default_dictionary

        words = default_dictionary()
        # a margin lies in [-2, 2] per code; 100 puts every well-formed candidate above every other one
        score += 100.0 * np.array([classify(t, words)["well_formed"] for t in texts], dtype=float)
    grid = score.reshape(m, n)  # row j: candidate j of every slot
    best = np.argmax(grid, axis=0)  # first maximum: the earliest candidate on ties
    return [int(j * n + i) for i, j in enumerate(best)]
