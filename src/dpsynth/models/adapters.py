"""Loading a trained LoRA adapter on top of its base model, for generation and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dpsynth.errors import DPSynthError
from dpsynth.models.loader import load_model, load_tokenizer

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from dpsynth.config import ModelConfig


def attach_adapter(base: PreTrainedModel, adapter_dir: Path) -> PeftModel:
    """Put the saved adapter in ``adapter_dir`` on ``base`` (in eval mode)."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise DPSynthError(f"{adapter_dir}: no trained adapter here (run `dpsynth train` first)")
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    model.eval()
    return model


def load_with_adapter(cfg: ModelConfig, adapter_dir: Path) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model + adapter and the tokenizer."""
    tokenizer = load_tokenizer(cfg)
    model = attach_adapter(load_model(cfg), adapter_dir)
    return model, tokenizer
