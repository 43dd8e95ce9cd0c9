"""LoRA adapters through peft: only the low-rank matrices train, the base model stays frozen and public."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from dpsynth.errors import ConfigError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from dpsynth.config import LoraSettings

log = logging.getLogger(__name__)


def add_lora(model: PreTrainedModel, settings: LoraSettings, *, seed: int, task_type: str = "CAUSAL_LM") -> PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter (initialised from ``seed``; B starts at zero, as in the paper).

    ``task_type`` is peft's: ``CAUSAL_LM`` for the generators, ``SEQ_CLS`` for the evaluation's LLM classifier (peft
    then also trains the classification head in full).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType(task_type),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=top_layers(model, settings.top_k_layers),
        bias="none",
    )
    # peft only complains when no target matches at all; a partly misspelt list must fail too.
    missing = [m for m in settings.target_modules if not any(n.endswith(m) for n, _ in model.named_modules())]
    if missing:
        raise ConfigError(f"train.lora.target_modules: {missing} not found in the model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def num_layers(model: torch.nn.Module) -> int | None:
    """The number of transformer blocks (``config.num_hidden_layers``, or its ``text_config``'s), None if unknown."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        n = getattr(getattr(config, "text_config", None), "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def top_layers(model: torch.nn.Module, k: int | None) -> list[int] | None:
    """Indices of the top ``k`` blocks (peft's ``layers_to_transform``), or None for all blocks.

    Training only the top blocks lets :mod:`dpsynth.train.prefix` compute the frozen blocks below once per example.
    A model with ``k`` blocks or fewer gets LoRA on all of them (None), so that the default ``k`` suits small
    models too, and so does a model whose block count is unknown (with a warning): the result is a valid, larger
    adapter, never a failure at the default.
    """
    if k is None:
        return None
    n = num_layers(model)
    if n is None:
        log.warning("the model's config has no num_hidden_layers: LoRA on every block (train.lora.top_k_layers)")
        return None
    if k >= n:
        return None
    return list(range(n - k, n))


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that train (the LoRA matrices), by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable parameters, to check later that training changed them."""
    return {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
