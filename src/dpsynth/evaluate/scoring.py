"""Per-example negative log-likelihood under a causal LM: the raw score of membership inference, exposure and audits.

:func:`response_nll` scores each response given its prompt (the loss the model was trained on, when prompts are the
control-code prompts); :func:`sequence_nll` scores plain texts. Both must give each example the same value whatever
else is in its batch, or an attack's scores would depend on batching. They therefore pad on the right with an
attention mask: under causal attention a real token never attends to a later (pad) position, and position ids count
from 0 in every row, so a row's logits are those it would get alone (up to floating-point summation order, ~1e-6).
Examples are sorted by length before batching to waste little compute on padding; results come back in input order.
The model is put in eval mode (no dropout, including LoRA dropout) for the call and restored afterwards; a peft model
works the same as a plain one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Reduction = Literal["mean", "sum"]


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def response_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    batch_size: int = 8,
    *,
    reduction: Reduction = "mean",
) -> np.ndarray:
    """NLL (nats) of each response's tokens given its prompt: mean per token (default) or sum; shape ``(n,)``.

    ``prompts`` and ``responses`` are token-id lists; every prompt needs at least one token (e.g. BOS or a chat
    prefix), since the first token of a sequence is never predicted, and every response at least one.
    """
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    if reduction not in ("mean", "sum"):
        raise ValueError("reduction must be 'mean' or 'sum'")
    for p, r in zip(prompts, responses, strict=True):
        if len(p) == 0 or len(r) == 0:
            raise ValueError("every prompt and every response needs at least one token")
    n = len(prompts)
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    device, pad = _device(model), _pad_id(tokenizer)
    order = sorted(range(n), key=lambda i: -(len(prompts[i]) + len(responses[i])))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                seqs = [list(prompts[i]) + list(responses[i]) for i in rows]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                target = torch.zeros((len(rows), width - 1), dtype=torch.bool)
                for b, (i, s) in enumerate(zip(rows, seqs, strict=True)):
                    ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[b, : len(s)] = 1
                    # logits at position t predict token t + 1: response tokens sit at [len(prompt), len(s)).
                    target[b, len(prompts[i]) - 1 : len(s) - 1] = True
                ids, mask, target = ids.to(device), mask.to(device), target.to(device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                nll = F.cross_entropy(logits[target].float(), ids[:, 1:][target], reduction="none")
                row_of = target.nonzero()[:, 0]
                totals = torch.zeros(len(rows), dtype=torch.float64, device=device)
                totals.index_add_(0, row_of, nll.double())
                counts = target.sum(dim=1).double()
                values = totals / counts if reduction == "mean" else totals
                out[rows] = values.cpu().numpy()
    finally:
        model.train(was_training)
    return out


def sequence_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 8,
    *,
    reduction: Reduction = "mean",
    prefix_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """NLL of each whole text (tokenized without special tokens) after ``prefix_ids``; shape ``(n,)``.

    ``prefix_ids`` defaults to the tokenizer's BOS token; without one, the first token of each text is the prompt
    and is not scored (a text must then have two tokens).
    """
    if prefix_ids is None:
        bos = getattr(tokenizer, "bos_token_id", None)
        prefix_ids = [] if bos is None else [int(bos)]
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    prompts: list[list[int]] = []
    responses: list[list[int]] = []
    for ids in encoded:
        if prefix_ids:
            prompts.append(list(prefix_ids))
            responses.append(list(ids))
        else:
            prompts.append(list(ids[:1]))
            responses.append(list(ids[1:]))
    return response_nll(model, tokenizer, prompts, responses, batch_size, reduction=reduction)
