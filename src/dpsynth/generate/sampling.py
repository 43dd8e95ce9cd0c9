"""What sampling means in every engine, and the Hugging Face ``generate`` engine (the fallback that always works).

Every engine gets the same inputs: the prompts as token ids (built once by
:func:`dpsynth.data.format.encode_prompt`), the stop ids (:func:`stop_token_ids`) and one
:class:`SamplingSettings`. Each returns, per prompt, the new token ids up to and excluding the first stop token and
at most ``max_new_tokens`` of them (:func:`cut_at_stop`); one decoding step (:func:`decode`) turns them into text.
Top-k keeps the ``top_k`` most likely tokens (0: all), temperature divides the logits, then top-p keeps the smallest
set of most likely tokens whose probability reaches ``top_p``; transformers' warpers and CTranslate2's sampler both do
exactly this (top-k commutes with the temperature). ``top_k`` defaults to 50, the value transformers applied
implicitly on the HF path before it was a setting. Seeds make a run reproducible within an engine; engines draw
different random numbers, so the same seed gives different (equally distributed) texts in two engines.

HF prompts are left-padded so that every row's continuation starts at the same position; transformers derives
position ids from the attention mask, so padding does not shift a row's positions. Each HF batch is seeded from the
run's seed and its index, so a run is reproducible and independent of how many batches ran before it in another
process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SamplingSettings:
    """One meaning of the sampling knobs for every engine (``generate.*`` in the config)."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 50
    seed: int = 0
    batch_size: int = 64
    guidance_scale: float = 1.0  # classifier-free guidance (dpsynth.generate.guidance); HF engine only

    @classmethod
    def from_config(cls, g: Any) -> SamplingSettings:
        """From a :class:`dpsynth.generate.config.GenerateConfig` (or anything with the same fields)."""
        return cls(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            seed=g.seed,
            batch_size=g.batch_size,
            guidance_scale=getattr(g, "guidance_scale", 1.0),
        )


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn and end-of-sequence ids: generation stops at either."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def cut_at_stop(ids: Sequence[int], stops: Sequence[int], max_new_tokens: int) -> list[int]:
    """The tokens before the first stop token, at most ``max_new_tokens`` of them.

    >>> cut_at_stop([5, 6, 2, 7, 2], stops=[2], max_new_tokens=10)
    [5, 6]
    >>> cut_at_stop([5, 6, 7], stops=[2], max_new_tokens=2)
    [5, 6]
    """
    out: list[int] = []
    stop_set = set(stops)
    for t in ids[:max_new_tokens]:
        if t in stop_set:
            break
        out.append(int(t))
    return out


def decode(tokenizer: Any, outputs: Sequence[Sequence[int]]) -> list[str]:
    """Texts of the new tokens (special tokens dropped, whitespace stripped): the same step for every engine."""
    return [t.strip() for t in tokenizer.batch_decode([list(o) for o in outputs], skip_special_tokens=True)]


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists; returns (input_ids, attention_mask).

    >>> ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, t - len(p) :] = 1
    return ids, mask


def batch_spans(n: int, batch_size: int, parts: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` of each batch of ``n`` prompts: at most ``batch_size`` each, in order.

    With ``parts`` = 1, fixed chunks of ``batch_size`` (the last one shorter). With ``parts`` > 1 workers taking the
    batches in rounds of ``parts`` (CTranslate2's replicas), the number of batches is rounded up to a multiple of
    ``parts`` and the sizes evened out, so that no round leaves a worker idle or waits on one long batch: 100 prompts
    at 64 for 2 workers are 50 + 50, not 64 + 36; at 16 they would be 8 batches of 12-13 in 4 rounds.

    >>> batch_spans(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> batch_spans(100, 64, parts=2)
    [(0, 50), (50, 100)]
    >>> [b - a for a, b in batch_spans(10, 4, parts=2)]
    [3, 3, 2, 2]
    >>> batch_spans(1, 64, parts=2)
    [(0, 1)]
    """
    if batch_size < 1 or parts < 1:
        raise ValueError(f"batch_size and parts must be at least 1, got {batch_size} and {parts}")
    if parts == 1:
        return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    batches = -(-n // batch_size)
    count = min(n, -(-batches // parts) * parts)
    size, extra = divmod(n, count) if count else (0, 0)
    spans, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        spans.append((start, end))
        start = end
    return spans


def collect_batches(batches: Iterator[list[list[int]]], total: int, progress: bool, desc: str) -> list[list[int]]:
    """Every engine's ``generate``: its lazy batches flattened, behind one progress bar of ``total`` steps (one
    per batch)."""
    return [ids for batch in tqdm(batches, desc=desc, total=total, disable=not progress) for ids in batch]


class BatchedEngine:
    """What every local engine shares: ``generate`` is its lazy ``iter_batches`` flattened behind a progress bar."""

    def spans(self, n: int, s: SamplingSettings) -> list[tuple[int, int]]:
        """How ``n`` prompts are cut into batches (:func:`batch_spans`): fixed chunks of ``s.batch_size`` unless
        an engine runs its batches on several workers."""
        return batch_spans(n, s.batch_size)

    def iter_batches(
        self, prompts: Sequence[list[int]], stops: Sequence[int], s: SamplingSettings
    ) -> Iterator[list[list[int]]]:
        raise NotImplementedError

    def generate(
        self,
        prompts: Sequence[list[int]],
        stops: Sequence[int],
        s: SamplingSettings,
        *,
        progress: bool = False,
        desc: str = "generate",
    ) -> list[list[int]]:
        total = len(self.spans(len(prompts), s))
        return collect_batches(self.iter_batches(prompts, stops, s), total, progress, desc)


class HFEngine(BatchedEngine):
    """transformers' ``generate`` on the (peft) model as loaded: works for every model, device and dtype."""

    name = "hf"

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id

    def iter_batches(
        self,
        prompts: Sequence[list[int]],
        stops: Sequence[int],
        s: SamplingSettings,
        negatives: Sequence[list[int]] | None = None,
    ) -> Iterator[list[list[int]]]:
        """The outputs batch by batch, computed lazily (the benchmark interleaves engines this way). With
        ``s.guidance_scale`` other than 1, ``negatives`` (one negative prompt per prompt) are required:
        :mod:`dpsynth.generate.guidance`."""
        guided = s.guidance_scale != 1.0
        if guided and (negatives is None or len(negatives) != len(prompts)):
            raise ValueError("guidance_scale other than 1 needs one negative prompt per prompt")
        device = next(self.model.parameters()).device
        for b, (start, end) in enumerate(self.spans(len(prompts), s)):
            ids, mask = left_pad(prompts[start:end], self.pad_id)
            extra: dict[str, Any] = {}
            if guided:
                assert negatives is not None
                neg_ids, neg_mask = left_pad(negatives[start:end], self.pad_id)
                extra = {
                    "guidance_scale": s.guidance_scale,
                    "negative_prompt_ids": neg_ids.to(device),
                    "negative_prompt_attention_mask": neg_mask.to(device),
                }
            torch.manual_seed(s.seed * 1_000_003 + b)
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=True,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    top_k=s.top_k,  # explicit: otherwise transformers' default (50) or the model's generation_config
                    max_new_tokens=s.max_new_tokens,
                    eos_token_id=list(stops),
                    pad_token_id=self.pad_id,
                    **extra,
                )
            yield [cut_at_stop(row, stops, s.max_new_tokens) for row in out[:, ids.shape[1] :].tolist()]

    def generate(
        self,
        prompts: Sequence[list[int]],
        stops: Sequence[int],
        s: SamplingSettings,
        *,
        progress: bool = False,
        desc: str = "generate",
        negatives: Sequence[list[int]] | None = None,
    ) -> list[list[int]]:
        total = len(self.spans(len(prompts), s))
        return collect_batches(self.iter_batches(prompts, stops, s, negatives), total, progress, desc)


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    top_k: int = 50,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Sample one continuation per prompt with HF ``generate``; returns the continuations only (never the prompt).

    ``desc`` labels the progress bar (the stage passes ``generate dp`` or ``generate no_dp``).
    """
    stops = stop_token_ids(tokenizer)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
    s = SamplingSettings(max_new_tokens, temperature, top_p, top_k, seed, batch_size)
    return decode(tokenizer, HFEngine(model, pad_id).generate(prompts, stops, s, progress=progress, desc=desc))
