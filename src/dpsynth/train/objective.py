"""The training objective: mean token loss of each sequence's response tokens, then the mean over the batch.

The model's built-in loss averages over all tokens of a batch, which weighs long sequences more and ties examples
together: a per-sample gradient of that loss depends on the other examples' lengths. DP-SGD needs each example's
gradient to depend on that example alone, so the loss is computed per sequence first (prompt and padding tokens carry
label -100 and count for nothing).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from dpsynth.train.batching import IGNORE_INDEX


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over each row's labelled positions: shape ``[batch]``.

    >>> logits = torch.zeros(2, 3, 4)  # uniform predictions: loss log(4) wherever a label is set
    >>> labels = torch.tensor([[-100, 1, 2], [-100, -100, 3]])
    >>> per_sequence_loss(logits, labels).tolist() == [torch.log(torch.tensor(4.0)).item()] * 2
    True
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    b, t, v = shift_logits.shape
    token_loss = F.cross_entropy(
        shift_logits.reshape(b * t, v), shift_labels.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, t)
    mask = (shift_labels != IGNORE_INDEX).to(token_loss.dtype)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SequenceLoss:
    """:func:`per_sequence_loss` as a criterion with a ``reduction`` attribute, as Opacus ghost clipping expects.

    ``reduction="none"`` returns the per-sequence losses (Opacus switches to it to get per-sample losses);
    ``"mean"`` their batch mean.
    """

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = reduction

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = per_sequence_loss(logits, labels)
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.mean()


CHUNK_ELEMENTS = 1 << 25
"""Logits held at once by :func:`head_sequence_loss`: 32M floats (128 MB in float32), 128 positions of gemma-3-270m's
262,144-token vocabulary, 682 of SmolLM2's 49,152. Read at each call; 0 sends a frozen layer through autograd as
before (``bench/bench_train.py``'s ``_autograd`` modes measure what the chunks buy)."""

AUTOGRAD_MAX_ELEMENTS = 1 << 27
"""Up to this many logits (128M, 512 MB in float32) a frozen layer's loss still goes through autograd, whose speed the
chunks did not beat for SmolLM2 (0.90-0.95x in the runs of ``bench/results/head-loss-2026-12-06/``); above it the
memory autograd keeps is the larger cost. SmolLM2 at 32 x 84 labelled positions (132M) stays below; gemma-3-270m
passes it from 513 positions (a DP physical batch of 16 rows of 60 labelled tokens is 960). ``bench/bench_train.py``'s
``_chunked`` modes set it to 0."""


def head_sequence_loss(
    hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, *, chunk_elements: int | None = None
) -> torch.Tensor:
    """:func:`per_sequence_loss` from the last hidden states, with the output layer applied only where it counts.

    The output layer is as wide as the vocabulary (49,152 for SmolLM2), and prompt and padding positions (label -100)
    make up much of a batch: their logits cost a full matmul and softmax each and are thrown away. Here the hidden
    states of the labelled positions are gathered first, so the result is the same per-sequence loss (a row's loss
    still depends on that row alone) for a fraction of the work. Logits are cast to float32 before the softmax.

    A frozen output layer (LoRA never trains it) with more than ``AUTOGRAD_MAX_ELEMENTS`` logits to compute, or any
    number when a positive ``chunk_elements`` is given, goes through :class:`_FrozenHeadLoss`, a chunk of positions at
    a time: autograd would keep every labelled position's vocabulary-wide float32 log-softmax until the backward
    pass, and make the logits, their float32 copy and their gradient as wide again on the way. A training step's peak
    above the model was 12.5-13.6 GiB for gemma-3-270m (262,144 tokens) at 32 x 112 tokens, and is 0.9-1.4 GiB this
    way, as fast or faster (``bench/results/head-loss-2026-12-06/``). The gradient is autograd's up to rounding: each
    position's ``(softmax - one-hot) @ W`` is computed in the forward pass, chunk by chunk, and scaled by the loss's
    gradient in the backward (autograd scales before the matmul).

    >>> head = torch.nn.Linear(4, 5, bias=False)
    >>> hidden, labels = torch.randn(2, 3, 4), torch.tensor([[-100, 1, 2], [-100, -100, 3]])
    >>> torch.allclose(head_sequence_loss(hidden, labels, head), per_sequence_loss(head(hidden), labels))
    True
    >>> _ = head.requires_grad_(False)
    >>> chunked = head_sequence_loss(hidden, labels, head, chunk_elements=5)  # one position at a time
    >>> torch.allclose(chunked, per_sequence_loss(head(hidden), labels))
    True
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)[0]
    picked, targets = hidden[:, :-1][mask], shift_labels[mask]
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    if chunk_elements is None:  # the module's settings: chunks only where autograd's logits would be large
        large = picked.shape[0] * getattr(weight, "shape", (0,))[0] > AUTOGRAD_MAX_ELEMENTS
        chunk_elements = CHUNK_ELEMENTS if large else 0
    frozen = (
        chunk_elements > 0
        and isinstance(head, torch.nn.Linear)
        and not weight.requires_grad  # type: ignore[union-attr]
        and (bias is None or not bias.requires_grad)
    )
    if frozen:
        need_grad = torch.is_grad_enabled() and picked.requires_grad
        token_loss = _FrozenHeadLoss.apply(picked, weight, bias, targets, need_grad, chunk_elements)
    else:
        logits = head(picked).float()
        token_loss = F.cross_entropy(logits, targets, reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=token_loss.dtype, device=token_loss.device).index_add(0, rows, token_loss)
    return sums / mask.sum(dim=1).clamp(min=1).to(sums.dtype)


class _FrozenHeadLoss(torch.autograd.Function):
    """Cross-entropy of ``F.linear(hidden, weight, bias)`` per position, the logits made and dropped a chunk at a time.

    Why by hand: the fused linear cross-entropy kernels that do this (Liger's) are Triton, GPU only, and train the
    layer too; here it is frozen, so the only gradient is the hidden states', ``(softmax - one-hot) @ weight`` per
    position: ``hidden``-wide, kept in float32 from the forward pass and scaled by the loss's gradient in float32 in the
    backward, then cast to the hidden states' dtype. Under autocast the inputs are cast to its dtype once, as
    autocast would cast them for each matmul; the softmax is float32, as autograd's. The forward pays the gradient's
    matmul once, where autograd pays it in every backward pass (ghost clipping runs two).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        need_grad: bool,
        chunk_elements: int,
    ) -> torch.Tensor:
        ctx.hidden_dtype = hidden.dtype
        device = hidden.device.type
        if torch.is_autocast_enabled(device):  # once here: autocast keeps no cast copy of a frozen weight
            low = torch.get_autocast_dtype(device)
            hidden, weight = hidden.to(low), weight.to(low)
            bias = None if bias is None else bias.to(low)
        n = hidden.shape[0]
        step = max(1, chunk_elements // weight.shape[0])
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grads = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_grad else None
        for i in range(0, n, step):
            logits = F.linear(hidden[i : i + step], weight, bias).float()
            t = targets[i : i + step]
            lse = torch.logsumexp(logits, dim=-1)
            losses[i : i + step] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if grads is not None:
                soft = logits.sub_(lse[:, None]).exp_()  # in place: one chunk-sized float32 tensor at a time
                soft[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                grads[i : i + step] = torch.matmul(soft.to(weight.dtype), weight)
        if grads is not None:
            ctx.save_for_backward(grads)
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grads,) = ctx.saved_tensors
        scaled = (grads * grad_losses[:, None].float()).to(ctx.hidden_dtype)
        return (scaled, None, None, None, None, None)


class HeadLoss(SequenceLoss):
    """:func:`head_sequence_loss` as a criterion on hidden states (for Opacus ghost clipping, like SequenceLoss)."""

    def __init__(self, head: torch.nn.Module, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.head = head

    def __call__(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = head_sequence_loss(hidden, labels, self.head)
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.mean()
