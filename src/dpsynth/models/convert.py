"""The base model with a LoRA adapter merged into it, converted once for CTranslate2 and cached.

CTranslate2 runs a plain (merged) Llama, so the adapter is folded into the base weights with peft's
``merge_and_unload`` and the result goes straight to ctranslate2's own Transformers converter, in memory (no merged
safetensors copy is written). The converted folder is cached:

- with an adapter, beside it (``DIR/dp/adapter`` -> ``DIR/dp/adapter.ctranslate2-float32``), so that it lives and dies
  with the run directory and a model derived from the non-DP baseline is never copied out of it;
- without one (the base model alone), in the model cache beside the dequantized GGUF folder.

``source.json`` in the folder records what it was built from (hashes of the adapter files, the base model's
identity, the quantization and ctranslate2's version); when any of these changes, it is rebuilt. The folder is
written atomically, so a crash never leaves a half-converted model that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from unittest import mock

import torch

from dpsynth.errors import ConfigError
from dpsynth.models.loader import default_cache_dir, file_sha256, load_model, model_slug, model_source
from dpsynth.rundir import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from dpsynth.config import ModelConfig

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
INSTALL_HINT = "pip install ctranslate2 (a dependency of dpsynth; reinstall it with `pip install -e .`)"


def adapter_digest(adapter_dir: Path) -> str:
    """SHA-256 over the adapter's config and weights: a new adapter in the same folder gets a new conversion."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        f = Path(adapter_dir) / name
        if f.is_file():
            h.update(name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def _base_identity(cfg: ModelConfig) -> dict[str, Any]:
    """Name, revision and (for a local folder) the weight files' sizes and times: enough to notice a swapped base."""
    source, _ = model_source(cfg)
    ident: dict[str, Any] = {"name": cfg.name, "revision": cfg.revision}
    if cfg.vocabulary != "full":  # left out when full, so conversions made before the key stay current
        ident["vocabulary"] = cfg.vocabulary
    folder = Path(source)
    if folder.is_dir():
        ident["files"] = sorted(
            [p.name, p.stat().st_size, int(p.stat().st_mtime)]
            for p in folder.iterdir()
            if p.suffix in {".safetensors", ".bin", ".json"}
        )
    return ident


def converted_dir(cfg: ModelConfig, adapter_dir: Path | None, quantization: str) -> Path:
    """Where the converted model for (base, adapter, quantization) is cached."""
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        return adapter_dir.with_name(f"{adapter_dir.name}.ctranslate2-{quantization}")
    return (cfg.cache_dir or default_cache_dir()) / f"{model_slug(cfg)}.ctranslate2-{quantization}"


def _expected_source(cfg: ModelConfig, adapter_dir: Path | None, quantization: str) -> dict[str, Any]:
    import ctranslate2

    return {
        "base": _base_identity(cfg),
        "adapter_sha256": adapter_digest(adapter_dir) if adapter_dir is not None else None,
        "quantization": quantization,
        "ctranslate2": ctranslate2.__version__,
    }


def _merged_model(cfg: ModelConfig, adapter_dir: Path | None) -> torch.nn.Module:
    """Base model (on CPU) with the adapter's LoRA weights added into the base weights."""
    from dpsynth.models.adapters import attach_adapter

    base = load_model(cfg, device=torch.device("cpu"))
    if adapter_dir is None:
        return base
    return attach_adapter(base, adapter_dir).merge_and_unload()


def _convert(cfg: ModelConfig, adapter_dir: Path | None, quantization: str, target: Path, tokenizer: Any) -> None:
    from ctranslate2.converters import TransformersConverter
    from ctranslate2.converters import transformers as ct2_transformers

    source, _ = model_source(cfg)
    model = _merged_model(cfg, adapter_dir)

    class _InMemory(TransformersConverter):
        """ctranslate2's converter, given the merged model (and the tokenizer) instead of loading them again."""

        def load_model(self, model_class: Any, model_name_or_path: Any, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: Any, **kwargs: Any) -> Any:
            return tokenizer if tokenizer is not None else super().load_tokenizer(tokenizer_class, model_name_or_path)

    # The converter runs a full gc.collect() after each layer; in a process holding many objects (the CLI after
    # training, pytest) each took 0.3-2.6 s here, most of a conversion. Refcounting frees the deleted layers anyway.
    no_gc = SimpleNamespace(collect=lambda *a: 0)
    try:
        with atomic_path(target) as tmp, mock.patch.object(ct2_transformers, "gc", no_gc):
            _InMemory(str(source)).convert(str(tmp), quantization=quantization)
            write_json(tmp / SOURCE_FILE, _expected_source(cfg, adapter_dir, quantization))
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"ctranslate2 cannot convert model.name={cfg.name!r}: {exc}") from exc


def ctranslate2_model(
    cfg: ModelConfig, adapter_dir: Path | None, quantization: str = "float32", *, tokenizer: Any = None
) -> Path:
    """The CTranslate2 folder for base + ``adapter_dir`` (or the base alone), converted on first use.

    ``tokenizer`` (the model's, from :func:`dpsynth.models.loader.load_tokenizer`) saves loading it again.
    """
    try:
        import ctranslate2  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"generate.engine=ctranslate2 needs the ctranslate2 package: {INSTALL_HINT}") from exc
    target = converted_dir(cfg, adapter_dir, quantization)
    expected = json.loads(json.dumps(_expected_source(cfg, adapter_dir, quantization)))
    if (target / "model.bin").is_file() and (target / SOURCE_FILE).is_file():
        if read_json(target / SOURCE_FILE) == expected:
            return target
        log.info("%s is out of date (adapter, base model or ctranslate2 changed): converting again", target)
    log.info("merging the adapter and converting for ctranslate2 (%s) into %s (once)", quantization, target)
    _convert(cfg, adapter_dir, quantization, target, tokenizer)
    return target
