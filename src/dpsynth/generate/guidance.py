"""Classifier-free guidance over the control codes: records that follow their code more closely.

A DP fine-tuned model learns the codes' effect weakly: on the public proxy, records asked for 1 or 2 stars mostly
read as positive. Classifier-free guidance (Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance")
samples each token from

    log p_w(x) = log p(x | prompt) + (w - 1) * (log p(x | prompt) - log p(x | negative prompt)), renormalised,

so at ``w = generate.guidance_scale = 1`` sampling is unchanged and above 1 the difference the codes make is
amplified. The negative prompt is the same chat prompt without the guided codes (``generate.guidance_codes``; all
of them by default, so it asks for "a review" with no code), built here; transformers' ``generate`` does the rest
(``guidance_scale`` with ``negative_prompt_ids``: its ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` runs the
negative branch beside the batch with its own cache, before temperature and top-p). Its negative branch derives no
position ids from the padding mask, so a left-padded negative prompt's positions are offset by its padding; the
models here use rotary positions, for which a constant offset leaves attention unchanged (a test checks that a row
guided alone and in a padded batch gets the same tokens, and that the guided token is the hand-computed argmax).

Privacy: guidance reads only the released model, the released codes and public prompt text: post-processing of
the release, no privacy cost. Cost: a second forward pass per token, and only the HF engine can do it (CTranslate2's
Python API takes no logits processor; vLLM's run per request and cannot decode a second prompt). On 2 cores, 1,000
SmolLM2 records took 1,121-1,126 s guided (partly beside tests) against 690 s unguided on HF, and 229-244 s on
CTranslate2 in float32 (133-146 s in int8).

What it buys, measured on the public proxy (bench/results/recipe-search/, "int8 weights at generation, and
guidance over the codes"): guiding the rating alone at scale 2 raised the eps-4 row's rating and sentiment macro-F1
by 5-7 points over the same engine unguided, with MAUVE 0.08 lower; guiding every code lowered MAUVE by 0.19. Off by
default.

>>> negative_codes({"rating": 1, "category": "Toys"}, None)
{}
>>> negative_codes({"rating": 1, "category": "Toys"}, ["rating"])
{'category': 'Toys'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def negative_codes(codes: Mapping[str, Any], guided: Sequence[str] | None) -> dict[str, Any]:
    """The codes the negative prompt keeps: ``codes`` without the guided ones (``None``: without any)."""
    if guided is None:
        return {}
    return {name: value for name, value in codes.items() if name not in set(guided)}
