"""Batched sampling from a causal LM (base model + adapter), one prompt per synthetic record.

Prompts are left-padded so that every row's continuation starts at the same position; transformers derives position
ids from the attention mask, so padding does not shift a row's positions. Each batch is seeded from the run's seed and
its index, so a run is reproducible and independent of how many batches ran before it in another process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn and end-of-sequence ids: generation stops at either."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


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


@torch.no_grad()
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
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Sample one continuation per prompt; returns the continuations only (the prompt is never repeated).

    ``desc`` labels the progress bar (the stage passes ``generate dp`` or ``generate no_dp``).
    """
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
    texts: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress)):
        ids, mask = left_pad(prompts[start : start + batch_size], pad_id)
        torch.manual_seed(seed * 1_000_003 + b)
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
        texts.extend(tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True))
    return [t.strip() for t in texts]
