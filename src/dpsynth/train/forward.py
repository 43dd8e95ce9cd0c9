"""The training forward pass shared by both arms: precision, prefix cache, and logits only where labels are set.

:class:`TrainForward` turns a collated batch into per-sequence losses. Three savings over ``model(...).logits``, each
leaving every example's loss and gradient a function of that example alone:

- the output layer runs only on labelled positions (:func:`dpsynth.train.objective.head_sequence_loss`);
- the pass runs under bfloat16 autocast when ``train.precision`` resolves to it (:mod:`dpsynth.train.precision`);
- with ``train.lora.top_k_layers`` the frozen blocks come from a :class:`~dpsynth.train.prefix.PrefixCache`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpsynth.config import Config
from dpsynth.errors import DPSynthError
from dpsynth.train.batching import Collator
from dpsynth.train.lora import top_layers
from dpsynth.train.objective import HeadLoss, head_sequence_loss
from dpsynth.train.precision import autocast
from dpsynth.train.prefix import PrefixCache, cache_key, cached_hidden, full_hidden, remembered, self_check

log = logging.getLogger(__name__)


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
        config = getattr(base.config, "text_config", None) or base.config
        if getattr(config, "final_logit_softcapping", None):
            # Gemma 2 squashes its logits after the output layer; the loss here applies the layer alone
            raise DPSynthError(
                f"{type(base).__name__}: final_logit_softcapping is set; dpsynth's training loss (the output layer "
                "on labelled positions) does not apply it, so this model cannot be trained here"
            )
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


def attach_prefix_cache(
    forward: TrainForward,
    cfg: Config,
    *,
    top_k: int | None,
    examples: list[Any],
    collate: Collator,
    spill_dir: Path,
) -> None:
    """With LoRA on the top ``top_k`` blocks only, give ``forward`` the frozen blocks' output for ``examples``,
    computed once (:class:`~dpsynth.train.prefix.PrefixCache`): in memory, where the other arm of the same
    ``dpsynth train`` may reuse it, or shared on disk under ``train.prefix_cache_dir``. Checked against the full model
    on an example before use; an architecture the cache does not fit trains without it."""
    train = cfg.train
    if top_k is None or not train.prefix_cache:
        return
    model: Any = forward.model
    layers = top_layers(model.get_base_model(), top_k)
    if not layers or layers[0] == 0:
        return  # LoRA on every block: nothing is frozen below
    start = layers[0]
    m = cfg.model
    weights = model.get_base_model().dtype  # as loaded: model.dtype=auto is bf16 or float32 by device and precision
    vocab = "" if m.vocabulary == "full" else f"/{m.vocabulary}"  # as before the key existed when full
    key = cache_key(f"{m.name}@{m.revision}{vocab}:{weights}", start, str(forward.autocast_dtype), examples)

    def check(cache: PrefixCache) -> None:
        self_check(forward.model, cache, examples, collate, forward.device, forward.context)

    def build() -> PrefixCache | None:
        if not _cache_fits(forward, start, examples[:1], collate):
            return None  # an architecture the cache does not fit: the same training, without the speed-up
        return PrefixCache.build(
            forward.model,
            examples,
            start=start,
            collate=collate,
            batch_size=train.physical_batch_size,
            device=forward.device,
            context=forward.context,
            memory_mb=train.prefix_cache_memory_mb,
            spill_dir=spill_dir,
        )

    if train.prefix_cache_dir is None:
        forward.cache = remembered(key, build, check)
    else:
        forward.cache = PrefixCache.shared(train.prefix_cache_dir, key, build, check)
    if forward.cache is not None:
        log.info(
            "prefix cache: blocks 0-%d of %s examples, %.0f MB", start - 1, len(examples), forward.cache.nbytes / 2**20
        )


def _cache_fits(forward: TrainForward, start: int, probe: list[Any], collate: Collator) -> bool:
    """Whether the prefix cache reproduces the full model on one example, checked before the whole build: an
    architecture it does not fit (e.g. one that rescales ``inputs_embeds``) trains without the cache, with a warning,
    instead of failing after building it (the cache only saves time; the gradients are the same either way)."""
    try:
        PrefixCache.build(
            forward.model,
            probe,
            start=start,
            collate=collate,
            batch_size=1,
            device=forward.device,
            context=forward.context,
        )
    except DPSynthError as exc:
        log.warning("prefix cache not used: %s", exc)
        return False
    return True
