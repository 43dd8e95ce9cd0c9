"""LoRA adapters through peft: only the low-rank matrices train, the base model stays frozen and public."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        peft_model = get_peft_model(model, config)
    if settings.freeze_a:
        freeze_lora_a(peft_model)
    return peft_model


def freeze_lora_a(model: torch.nn.Module) -> int:
    """Keep every LoRA ``A`` matrix as initialised and train the ``B`` matrices only; return how many froze.

    Why (FFA-LoRA, Sun et al., ICLR 2024): under DP-SGD the noise norm grows with the square root of the trained
    coordinates while the clipped signal does not, and noise on both factors of ``B @ A`` compounds. With ``A`` fixed
    the update ``dB @ A`` is linear in what trains: on SmolLM2's q,v (576 -> 576 and 576 -> 192) at rank 8 this
    trains 40% of LoRA's coordinates instead of all. ``A`` is the seed's random projection, or with
    ``train.init_adapter`` the one fitted to public data (then the DP steps move the public adapter inside its own
    subspace). Nothing in the privacy analysis changes: frozen weights are public (the seed or the public adapter),
    and DP-SGD clips and noises what trains. A checkpoint holds the trainable weights only; a resume rebuilds ``A``
    from the same seed or adapter, so it stays exact. Linear LoRA layers only (``lora_A``): an embedding among the
    target modules would keep training its ``lora_embedding_A``.
    """
    frozen = 0
    for name, param in model.named_parameters():
        if ".lora_A." in name and param.requires_grad:
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise ConfigError("train.lora.freeze_a: the model has no LoRA A matrix to freeze")
    return frozen


def load_init_adapter(model: PeftModel, folder: Path) -> str:
    """Set ``model``'s LoRA matrices to the adapter saved in ``folder`` (``train.init_adapter``); return its digest.

    A warm start: both arms then train on from weights fitted to PUBLIC data (a non-DP arm of another data set). It
    adds nothing to the privacy analysis only because it does not depend on the private records, which dpsynth cannot
    check: the digest goes into ``privacy.json`` so that a release names the adapter it started from. Rank, alpha and
    blocks must match exactly (an adapter on blocks that this run freezes would break the prefix cache's premise). The
    adapter may cover some of the arm's target modules only (a q,v warm start for a non-DP arm on every linear module,
    ``train.no_dp_target_modules``): the others keep their fresh initialisation, whose B is zero, so the arm still
    starts as exactly the adapter's model; which modules start fresh is logged. Every module the adapter names must
    load in full.
    """
    from peft.utils import set_peft_model_state_dict

    from dpsynth.models.convert import adapter_digest

    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for f in (config_path, weights_path):
        if not f.is_file():
            raise ConfigError(f"train.init_adapter: {f} not found (a folder `dpsynth train` wrote: DIR/ARM/adapter)")
    saved = json.loads(config_path.read_text())
    ours: Any = model.peft_config["default"]  # a LoraConfig
    differ = shape_differences(saved, r=ours.r, alpha=ours.lora_alpha, target_modules=ours.target_modules)
    want, got = _layers(ours.layers_to_transform), _layers(saved.get("layers_to_transform"))
    if got != want:
        differ.append(f"layers_to_transform: {got} in the adapter, {want} in train.lora")
    saved_targets, our_targets = set(saved.get("target_modules") or []), set(ours.target_modules)
    if differ:
        raise ConfigError(f"train.init_adapter: {config_path} has another LoRA shape ({'; '.join(differ)})")
    from safetensors.torch import load_file

    state = load_file(str(weights_path))
    try:
        result: Any = set_peft_model_state_dict(model, state)  # torch's _IncompatibleKeys
    except RuntimeError as exc:  # same names, other sizes: an adapter of another base model
        raise ConfigError(f"train.init_adapter: {weights_path} does not fit this model ({exc})") from exc
    lora_keys = {n for n, _ in model.named_parameters() if "lora_" in n and _targeted(n, saved_targets)}
    missing = sorted(k for k in result.missing_keys if k in lora_keys)
    if result.unexpected_keys or missing or not state:
        raise ConfigError(
            f"train.init_adapter: {weights_path} does not fit this model's LoRA "
            f"(unexpected: {list(result.unexpected_keys)[:3]}, missing: {missing[:3]})"
        )
    fresh = sorted(our_targets - saved_targets)
    if fresh:
        log.info("train.init_adapter covers %s; %s start fresh (B = 0)", sorted(saved_targets), fresh)
    return adapter_digest(folder)


def shape_differences(saved: dict[str, Any], *, r: int, alpha: int, target_modules: Iterable[str]) -> list[str]:
    """What keeps a saved adapter (its ``adapter_config.json``) from warm-starting an arm of this rank, alpha and
    target modules: another rank or alpha, or a target module the arm does not have (blocks are checked with the
    model, :func:`load_init_adapter`). Empty when it fits.

    >>> shape_differences({"r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}, r=8, alpha=16,
    ...                   target_modules=["q_proj", "k_proj", "v_proj"])
    []
    >>> for line in shape_differences({"r": 4, "lora_alpha": 16, "target_modules": ["o_proj"]}, r=8, alpha=16,
    ...                               target_modules=["q_proj", "v_proj"]):
    ...     print(line)
    r: 4 in the adapter, 8 in train.lora
    target_modules: ['o_proj'] in the adapter, not among ['q_proj', 'v_proj']
    """
    differ = [
        f"{key}: {saved.get(key)} in the adapter, {value} in train.lora"
        for key, value in (("r", r), ("lora_alpha", alpha))
        if saved.get(key) != value
    ]
    saved_targets, our_targets = set(saved.get("target_modules") or []), set(target_modules)
    if not saved_targets or not saved_targets <= our_targets:
        differ.append(f"target_modules: {sorted(saved_targets)} in the adapter, not among {sorted(our_targets)}")
    return differ


def _targeted(param_name: str, targets: Iterable[str]) -> bool:
    """Whether a LoRA parameter (``...self_attn.q_proj.lora_A.default.weight``) sits in a module that one of
    ``targets`` names, matched as peft matches them: the module's whole path or a dotted suffix of it."""
    path = param_name.partition(".lora_")[0]
    return any(path == t or path.endswith(f".{t}") for t in targets)


def _layers(layers: int | list[int] | None) -> list[int] | None:
    return [layers] if isinstance(layers, int) else (sorted(layers) if layers else None)


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
