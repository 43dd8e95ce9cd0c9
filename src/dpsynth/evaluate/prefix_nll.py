"""Response NLL when every sequence starts with the same tokens: the shared prefix is run through the model once.

Why: evaluation scores many sequences that share a long beginning. Exposure ranks a canary among R candidates that
differ only in six digits near the end (the training prompt and the canary's words before the secret, ~80 tokens,
are common to all R + 1 texts); membership inference scores every training and test record after the same system
prompt. On 2 CPU cores SmolLM2-135M scores ~150-300 tokens/s, so recomputing the common part for each of 1,000
candidates made exposure cost minutes per canary. Here the prefix's key/value cache is computed once and repeated
along the batch, and only the differing tails are run.

The result is :func:`dpsynth.evaluate.scoring.response_nll` of ``(prefix + prompt, response)`` for each item, up to
floating-point summation order, with the same guarantees: right padding and an attention mask make each item's value
independent of its batch (a real token never attends to a later pad; positions continue from the prefix in every
row); items are sorted by length and batched under a token budget; the model is put in eval mode for the call.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dpsynth.evaluate.scoring import Reduction, _device, _pad_id


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token lists.

    >>> common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for j in range(shortest):
        if any(s[j] != first[j] for s in sequences):
            return j
    return shortest


def _batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices sorted by decreasing length, cut into batches with ``rows * longest <= max_tokens`` (at least one)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def shared_prefix_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    prefix: Sequence[int],
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    max_batch_tokens: int = 1024,
    reduction: Reduction = "mean",
) -> np.ndarray:
    """NLL (nats) of each response given ``prefix + prompt``: mean per token (default) or sum; shape ``(n,)``.

    ``prefix`` needs at least one token; a prompt may be empty (its response is then predicted from the prefix's last
    position); every response needs at least one token.
    """
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if not prefix:
        raise ValueError("the shared prefix needs at least one token")
    if any(len(r) == 0 for r in responses):
        raise ValueError("every response needs at least one token")
    if reduction not in ("mean", "sum"):
        raise ValueError("reduction must be 'mean' or 'sum'")
    n = len(prompts)
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    device, pad = _device(model), _pad_id(tokenizer)
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # Only the prefix's last position predicts anything scored here (logits_to_keep=1 skips the others).
            head = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, logits_to_keep=1)
            cache, last = _output_cache(head), head.logits[0, -1].float()
            for rows in _batches([len(s) for s in seqs], max_batch_tokens):
                out[rows] = _score_batch(
                    model, cache, last, [seqs[i] for i in rows], [len(prompts[i]) for i in rows], pad, device
                )
    finally:
        model.train(was_training)
    if reduction == "mean":
        out /= np.array([len(r) for r in responses], dtype=np.float64)
    return out


def _score_batch(
    model: torch.nn.Module,
    cache: Any,
    last: torch.Tensor,
    seqs: list[list[int]],
    starts: list[int],
    pad: int,
    device: torch.device,
) -> np.ndarray:
    """Summed NLL of ``seq[start:]`` for each row, after the cached prefix whose last logits are ``last``."""
    b, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    target = torch.zeros((b, width), dtype=torch.bool)  # target[r, j]: token j of row r is scored
    for r, (s, start) in enumerate(zip(seqs, starts, strict=True)):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
        target[r, start : len(s)] = True
    ids, mask, target = ids.to(device), mask.to(device), target.to(device)
    totals = torch.zeros(b, dtype=torch.float64, device=device)
    first = target[:, 0]
    if first.any():  # token 0 of a row is predicted by the prefix's last position
        logp = F.log_softmax(last, dim=-1)
        totals[first] -= logp[ids[first, 0]].double()
    if width > 1:
        past = copy.deepcopy(cache)  # the forward appends to the cache: keep the prefix's own intact
        past.batch_repeat_interleave(b)
        prefix_mask = torch.ones((b, past.get_seq_length()), dtype=torch.long, device=device)
        logits = model(
            input_ids=ids[:, :-1],  # the last column is only ever predicted, never a predictor
            attention_mask=torch.cat([prefix_mask, mask[:, :-1]], dim=1),
            use_cache=True,
            **{_cache_argument(model): past},
        ).logits
        sel = target[:, 1:]  # logits at column j predict token j + 1
        nll = F.cross_entropy(logits[sel].float(), ids[:, 1:][sel], reduction="none")
        totals.index_add_(0, sel.nonzero()[:, 0], nll.double())
    return totals.cpu().numpy()


def _cache_argument(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before.

    Why not just one: the older name still works in 5.24 but warns at every call (and goes in 5.40), the newer one
    does not exist before 5.24, and pyproject admits the whole 5.x line.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name (see :func:`_cache_argument`)."""
    return output["cache"] if "cache" in output else output["past_key_values"]
