"""Response NLL under several adapters of one model, the blocks no adapter touches run once for all of them.

Why: membership inference scores every sampled unit under the reference model and under each arm (three passes of
the whole model in a default run). With ``train.lora.top_k_layers=K`` (the default) every adapter lives in the top K
blocks, so the embeddings and the blocks below them compute the same hidden states under every adapter. Here they
run once per batch (:func:`dpsynth.train.prefix.bottom_hidden`, as the training's prefix cache does), and only the
top blocks, the final norm and the output layer run per adapter; the output layer only on the scored positions. On
SmolLM2-135M with K = 8 that is 22 + 3 x 8 blocks instead of 3 x 30.

The result is :func:`dpsynth.evaluate.scoring.response_nll` under each adapter, up to floating-point summation order,
with its guarantees: right padding, an attention mask and per-row position ids make a row's value independent of its
batch; rows are sorted by length and batched under a token budget; the model is in eval mode for the call. It is
checked once per call against the model's own forward on one row (:func:`_agrees`); where it differs (a model that
transforms its logits after the output layer, say) or where an adapter reaches the embeddings or the first block,
the caller's per-adapter path runs instead (:func:`shared_bottom_start` returns None).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dpsynth.errors import DPSynthError
from dpsynth.evaluate.prefix_nll import _batches
from dpsynth.evaluate.scoring import Reduction, _device, _pad_id, response_nll
from dpsynth.train.batching import IGNORE_INDEX, Collator
from dpsynth.train.prefix import bottom_hidden, decoder_of, top_hidden

Adapter = str | None
"""An adapter's name on a peft model, or None: every adapter disabled (the base model)."""


@contextlib.contextmanager
def active_adapter(model: Any, name: Adapter) -> Iterator[Any]:
    """``model`` with adapter ``name`` active, or with every adapter disabled (the base model) for ``None``."""
    if name is None:
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(name)
        yield model


def shared_bottom_start(model: Any) -> int | None:
    """The lowest decoder block holding a LoRA layer of any loaded adapter, when that is above block 0 and nothing
    below it (the embeddings included) is adapted; else None (nothing to share)."""
    try:
        decoder = decoder_of(model)
    except (DPSynthError, AttributeError):  # not a decoder stack with a `layers` list
        return None

    def adapted(module: torch.nn.Module) -> bool:
        return any(len(getattr(m, "lora_A", {}) or {}) > 0 for m in module.modules())

    if adapted(decoder.get_input_embeddings()):
        return None
    for i, block in enumerate(decoder.layers):
        if adapted(block):
            return i if i > 0 else None
    return None


def adapters_response_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    adapters: Sequence[Adapter],
    *,
    start: int,
    max_batch_tokens: int = 1024,
    reduction: Reduction = "mean",
) -> list[np.ndarray] | None:
    """NLL of each response given its prompt under each of ``adapters`` (one array per adapter, shape ``(n,)``), the
    blocks below ``start`` (see :func:`shared_bottom_start`) run once; None when the check on one row fails."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if any(len(p) == 0 or len(r) == 0 for p, r in zip(prompts, responses, strict=True)):
        raise ValueError("every prompt and every response needs at least one token")
    n = len(prompts)
    out = [np.zeros(n, dtype=np.float64) for _ in adapters]
    if n == 0:
        return out
    device, decoder = _device(model), decoder_of(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    collate = Collator(pad_id=_pad_id(tokenizer))
    rows = [_Row(list(p) + list(r), [IGNORE_INDEX] * len(p) + list(r)) for p, r in zip(prompts, responses, strict=True)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if not _agrees(model, tokenizer, prompts, responses, adapters[0], start, collate, rows, head, device):
                return None
            for chunk in _batches([len(r.input_ids) for r in rows], max_batch_tokens):
                batch = collate([rows[i] for i in chunk])
                hidden = bottom_hidden(decoder, start, batch, device)
                for k, name in enumerate(adapters):
                    with active_adapter(model, name):
                        last = top_hidden(decoder, start, hidden, batch, device)
                        out[k][chunk] = _sums(last, batch["labels"].to(device), head)
    finally:
        model.train(was_training)
    if reduction == "mean":
        counts = np.array([len(r) for r in responses], dtype=np.float64)
        out = [values / counts for values in out]
    return out


class _Row:
    """A scored sequence in the shape :class:`~dpsynth.train.batching.Collator` takes (labels on the response)."""

    def __init__(self, input_ids: list[int], labels: list[int]) -> None:
        self.input_ids = input_ids
        self.labels = labels


def _sums(last: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> np.ndarray:
    """Summed NLL of each row's labelled tokens from the last hidden states; the output layer only where scored."""
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    nll = F.cross_entropy(head(last[:, :-1][mask]).float(), target[mask], reduction="none")
    totals = torch.zeros(labels.shape[0], dtype=torch.float64, device=labels.device)
    totals.index_add_(0, mask.nonzero()[:, 0], nll.double())
    return totals.cpu().numpy()


def _agrees(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    name: Adapter,
    start: int,
    collate: Collator,
    rows: list[_Row],
    head: torch.nn.Module,
    device: torch.device,
) -> bool:
    """Whether the split pass gives the model's own forward's value on the first row: relative 1e-4, or one unit of
    rounding of the compute dtype when that is coarser (bf16 autocast or weights: 2**-7; two kernel shapes may round a
    bf16 product apart, which is not the structural difference this check is for)."""
    batch = collate(rows[:1])
    with active_adapter(model, name):
        split = _sums(
            top_hidden(decoder_of(model), start, bottom_hidden(decoder_of(model), start, batch, device), batch, device),
            batch["labels"].to(device),
            head,
        )[0]
        whole = response_nll(model, tokenizer, prompts[:1], responses[:1], reduction="sum")[0]
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    else:
        dtype = next(model.parameters()).dtype
    tolerance = max(1e-4, torch.finfo(dtype).eps)
    return bool(np.isfinite(split) and abs(split - whole) <= tolerance * max(1.0, abs(whole)))
