"""Checks after training that the adapter really learned and really saved.

A known silent failure of Opacus with peft: the optimizer updates copies, or the saved adapter carries renamed keys
(``_module.`` prefixes) that peft ignores on load, so the "fine-tuned" model is the base model and nothing says so.
These checks make that failure loud: every LoRA B matrix (initialised at zero) must have moved, and the adapter
reloaded from disk onto a fresh base model must reproduce the trained model's logits, differ from the base model's,
and generate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpsynth.errors import PrivacyCheckError
from dpsynth.models.adapters import attach_adapter
from dpsynth.train.lora import trainable_parameters


def check_weights_changed(before: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """Every LoRA B matrix must differ from its value before training; returns the relative change per tensor."""
    after = trainable_parameters(model)
    if set(after) != set(before):
        raise PrivacyCheckError("the trainable parameters changed names during training (adapter not the one trained)")
    changes = {
        n: ((after[n].detach().float() - before[n].float()).norm() / (before[n].float().norm() + 1e-12)).item()
        for n in before
    }
    unchanged = [n for n in before if "lora_B" in n and torch.equal(after[n].detach().cpu(), before[n].cpu())]
    if unchanged or not any(v > 0 for v in changes.values()):
        raise PrivacyCheckError(f"training did not change the LoRA weights: {unchanged or list(before)}")
    return {
        "tensors": len(changes),
        "max_abs_change": max((after[n].detach().float() - before[n].float()).abs().max().item() for n in before),
    }


@torch.no_grad()
def check_adapter_roundtrip(
    trained: torch.nn.Module,
    adapter_dir: Path,
    load_base: Callable[[], torch.nn.Module],
    probe_ids: list[int],
    *,
    eos_token_id: int | None,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Reload the saved adapter on a fresh base model and compare with the trained model on a public probe prompt."""
    device = next(trained.parameters()).device
    ids = torch.tensor([probe_ids], device=device)
    trained.eval()
    expected = trained(input_ids=ids).logits.float()
    base = load_base()
    base_logits = base(input_ids=ids.to(next(base.parameters()).device)).logits.float().to(device)
    reloaded = attach_adapter(base, adapter_dir)  # type: ignore[arg-type]
    got = reloaded(input_ids=ids.to(next(reloaded.parameters()).device)).logits.float().to(device)
    max_diff = (got - expected).abs().max().item()
    if max_diff > atol * max(1.0, expected.abs().max().item()):
        raise PrivacyCheckError(
            f"the adapter saved in {adapter_dir} does not reproduce the trained model "
            f"(max logit difference {max_diff:.3g})"
        )
    effect = (expected - base_logits).abs().max().item()
    if effect == 0.0:
        raise PrivacyCheckError(f"the adapter saved in {adapter_dir} has no effect on the base model's outputs")
    out = reloaded.generate(
        input_ids=ids.to(next(reloaded.parameters()).device),
        attention_mask=torch.ones_like(ids),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=eos_token_id,
    )
    if out.shape[1] <= ids.shape[1]:
        raise PrivacyCheckError(f"the adapter reloaded from {adapter_dir} did not generate")
    return {
        "reload_max_logit_diff": max_diff,
        "adapter_max_logit_effect": effect,
        "generated_tokens": out.shape[1] - ids.shape[1],
    }
