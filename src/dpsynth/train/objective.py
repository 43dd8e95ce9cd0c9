"""The training objective: mean token loss of each sequence's response tokens, then the mean over the batch.

The model's built-in loss averages over all tokens of a batch, which weighs long sequences more and ties examples
together: a per-sample gradient of that loss depends on the other examples' lengths. DP-SGD needs each example's
gradient to depend on that example alone, so the loss is computed per sequence first (prompt and padding tokens carry
label -100 and count for nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def head_sequence_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """:func:`per_sequence_loss` from the last hidden states, with the output layer applied only where it counts.

    The output layer is as wide as the vocabulary (49,152 for SmolLM2), and prompt and padding positions (label -100)
    make up much of a batch: their logits cost a full matmul and softmax each and are thrown away. Here the hidden
    states of the labelled positions are gathered first, so the result is the same per-sequence loss (a row's loss
    still depends on that row alone) for a fraction of the work. Logits are cast to float32 before the softmax.

    >>> head = torch.nn.Linear(4, 5, bias=False)
    >>> hidden, labels = torch.randn(2, 3, 4), torch.tensor([[-100, 1, 2], [-100, -100, 3]])
    >>> torch.allclose(head_sequence_loss(hidden, labels, head), per_sequence_loss(head(hidden), labels))
    True
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)[0]
    logits = head(hidden[:, :-1][mask]).float()
    token_loss = F.cross_entropy(logits, shift_labels[mask], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=token_loss.dtype, device=token_loss.device).index_add(0, rows, token_loss)
    return sums / mask.sum(dim=1).clamp(min=1).to(sums.dtype)


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
