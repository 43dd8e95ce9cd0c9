"""Private Evolution's two model calls: RANDOM_API (a sample for control codes) and VARIATION_API (a rewrite of one).

Both run on the configured base model (no adapter: PE never trains) through the generation engine of
:mod:`dpsynth.generate.engine` (CTranslate2 on CPU when installed, else HF ``generate``), loaded once per run and
reused for every call. RANDOM_API is exactly the prompt of the other arms (:func:`dpsynth.data.format.encode_prompt`:
system prompt, then the codes in words). VARIATION_API asks, under the same system prompt and codes, for a new
version of a sample: a paraphrase, or Aug-PE's fill-in-the-blanks on a copy with words blanked out, at a length near
the parent's (Aug-PE's adaptive length: the parent's word count plus Gaussian jitter). The model only ever sees
synthetic text and public codes; nothing here reads private data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dpsynth.data.format import parse_response, prompt_messages, user_prompt
from dpsynth.generate.engine import load_engine
from dpsynth.generate.sampling import SamplingSettings, decode, stop_token_ids
from dpsynth.models.loader import load_tokenizer

BLANK = "_"


def blank_words(text: str, probability: float, rng: np.random.Generator) -> str:
    """``text`` with each word replaced by ``_`` with the given probability (Aug-PE's blanking, by words).

    >>> blank_words("a b c d", 0.999999, np.random.default_rng(0))
    '_ _ _ _'
    """
    words = text.split()
    mask = rng.random(len(words)) < probability
    return " ".join(BLANK if m else w for w, m in zip(words, mask, strict=True))


def target_words(text: str, std: float | None, min_words: int, rng: np.random.Generator) -> int | None:
    """Aug-PE's adaptive length: the parent's word count plus ``N(0, std^2)``, at least ``min_words`` (None: off)."""
    if std is None:
        return None
    jitter = round(float(rng.normal(0.0, std))) if std > 0 else 0
    return max(min_words, len(text.split()) + jitter)


def variation_request(
    codes: Mapping[str, Any], text: str, *, mode: str, words: int | None, blanked: str | None = None
) -> str:
    """The user turn of VARIATION_API for a sample generated for ``codes``.

    >>> variation_request({"rating": 5}, "Great food.", mode="paraphrase", words=20)
    'Write a very positive 5-star review. Write it as a new version of this review, in different words, in about 20 words:\\n\\nGreat food.'
    """  # noqa: E501
    length = f", in about {words} words" if words is not None else ""
    if mode == "blanks":
        return (
            f"{user_prompt(codes)} Fill in the blanks (_) of this review{length}, and write out the whole review:"
            f"\n\n{blanked if blanked is not None else text}"
        )
    return f"{user_prompt(codes)} Write it as a new version of this review, in different words{length}:\n\n{text}"


class PEModel:
    """The model behind both APIs, loaded (or connected to) once: a local engine on token ids, or with
    ``model.api_base`` an OpenAI-compatible endpoint on messages. Both get the same messages: the local path renders
    them with the tokenizer's chat template, a server with its own."""

    def __init__(self, cfg: Any, system_prompt: str, include_title: bool, *, progress: bool = False) -> None:
        self.cfg = cfg
        self.system_prompt = system_prompt
        self.include_title = include_title
        self.progress = progress
        self.settings = SamplingSettings.from_config(cfg.generate)
        m = cfg.model
        if m.api_base is not None:
            from dpsynth.generate.api_engine import OpenAIChatEngine

            self.api: Any = OpenAIChatEngine(
                m.api_base,
                m.api_model or m.name,
                api_key_env=m.api_key_env,
                concurrency=m.api_concurrency,
                timeout=m.api_timeout,
            )
            return
        self.api = None
        self.tokenizer = load_tokenizer(m)
        self.engine = load_engine(
            m,
            None,
            self.tokenizer,
            engine=cfg.generate.engine,
            quantization=cfg.generate.ctranslate2_quantization,
            replicas=cfg.generate.ctranslate2_replicas,
        )
        self.stops = stop_token_ids(self.tokenizer)

    @property
    def engine_name(self) -> str:
        return str(self.api.name if self.api is not None else self.engine.name)

    def _tokens(self, messages: list[dict[str, str]]) -> list[int]:
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(str(rendered), add_special_tokens=False)["input_ids"])

    def _generate(
        self, conversations: Sequence[list[dict[str, str]]], seed: int, desc: str
    ) -> list[tuple[str | None, str]]:
        s = replace(self.settings, seed=seed)
        label = f"{desc} ({self.engine_name})"
        if self.api is not None:
            texts = self.api.complete(conversations, s, progress=self.progress, desc=label)
        else:
            prompts = [self._tokens(m) for m in conversations]
            ids = self.engine.generate(prompts, self.stops, s, progress=self.progress, desc=label)
            texts = decode(self.tokenizer, ids)
        return [parse_response(t, self.include_title) for t in texts]

    def random_api(self, codes: Sequence[Mapping[str, Any]], seed: int) -> list[tuple[str | None, str]]:
        """One sample (title or None, body) per code combination: the prompt every arm uses."""
        return self._generate([prompt_messages(c, self.system_prompt) for c in codes], seed, "PE random")

    def variation_api(
        self, texts: Sequence[str], codes: Sequence[Mapping[str, Any]], seed: int
    ) -> list[tuple[str | None, str]]:
        """One variation (title or None, body) of each ``texts[i]``, generated for ``codes[i]``."""
        pe = self.cfg.pe
        rng = np.random.default_rng([seed, 7])  # blanks and lengths: public randomness, seeded for reproducibility
        conversations = []
        for text, c in zip(texts, codes, strict=True):
            words = target_words(text, pe.length_std, pe.min_words, rng)
            blanked = blank_words(text, pe.blank_probability, rng) if pe.variation == "blanks" else None
            request = variation_request(c, text, mode=pe.variation, words=words, blanked=blanked)
            conversations.append(
                [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": request}]
            )
        return self._generate(conversations, seed, "PE variation")
