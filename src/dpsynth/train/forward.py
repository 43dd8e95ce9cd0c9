"""The training forward pass shared by both arms: precision, prefix cache, and logits only where labels are set.

:class:`TrainForward` turns a collated batch into per-sequence losses. Three savings over ``model(...).logits``, each
leaving every example's loss and gradient a function of that example alone:

- the output layer runs only on labelled positions (:func:`dpsynth.train.objective.head_sequence_loss`);
- the pass runs under bfloat16 autocast when ``train.precision`` resolves to it (:mod:`dpsynth.train.precision`);
- with ``train.lora.top_k_layers`` the frozen blocks come from a :class:`~dpsynth.train.prefix.PrefixCache`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from dpsynth.train.objective import HeadLoss, head_sequence_loss
from dpsynth.train.precision import autocast
from dpsynth.train.prefix import PrefixCache, cached_hidden, full_hidden


@dataclass
class TrainForward:
    """Per-sequence losses of a batch under the run's precision, through the prefix cache when there is one."""

    model: torch.nn.Module
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    cache: PrefixCache | None = None

    def __post_init__(self) -> None:
        model: Any = self.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.head: torch.nn.Module = base.get_output_embeddings()
        self.criterion = HeadLoss(self.head)

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.autocast_dtype)

    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last hidden states (final norm applied), ``[batch, time, hidden]``."""
        with self.context():
            if self.cache is not None:
                return cached_hidden(self.model, self.cache, batch, self.device)
            return full_hidden(self.model, batch, self.device)

    def losses(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sequence losses, float32, ``[batch]``."""
        hidden = self.hidden(batch) if hidden is None else hidden
        with self.context():
            return head_sequence_loss(hidden, batch["labels"].to(self.device), self.head)
