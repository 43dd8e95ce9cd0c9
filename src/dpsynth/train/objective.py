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
