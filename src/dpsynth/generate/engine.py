"""Choosing and running a generation engine: one entry point from (model, adapter, prompts, settings) to texts.

``generate.engine``:

- ``auto`` (default): CTranslate2 on CPU when the ``ctranslate2`` package is importable, else HF ``generate``
  (HF too when sampling is guided: :mod:`dpsynth.generate.guidance`). On
  2 CPU cores CTranslate2 generated several times as many tokens per second as HF ``generate`` at batch 32
  (``bench/bench_generate.py``; the README has the figures). On CUDA ``auto`` means HF (not measured there).
- ``hf``: transformers' ``generate`` on the peft model; works for every model, device and dtype.
- ``ctranslate2``: the adapter merged into the base model and converted once (:mod:`dpsynth.models.convert`).
- ``vllm``: vLLM on a GPU with the adapter as a ``LoRARequest`` (:mod:`dpsynth.generate.vllm_engine`; optional).

:func:`generate_from_codes` is the whole path for control codes (also without an adapter: the base model alone).
:func:`sample_texts` takes token-id prompts. Both return one text per prompt, in order.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from dpsynth.generate.sampling import HFEngine, SamplingSettings, decode, stop_token_ids
from dpsynth.models.loader import load_tokenizer, resolve_device

if TYPE_CHECKING:
    from dpsynth.config import ModelConfig

log = logging.getLogger(__name__)

EngineName = Literal["auto", "hf", "ctranslate2", "vllm"]


class Engine(Protocol):
    """Token ids in, new token ids out (cut before the first stop, at most ``max_new_tokens``)."""

    name: str

    def generate(
        self,
        prompts: Sequence[list[int]],
        stops: Sequence[int],
        s: SamplingSettings,
        *,
        progress: bool = False,
        desc: str = "generate",
    ) -> list[list[int]]: ...

    def iter_batches(
        self, prompts: Sequence[list[int]], stops: Sequence[int], s: SamplingSettings
    ) -> Iterator[list[list[int]]]: ...


def resolve_engine(engine: str, model_cfg: ModelConfig, *, guided: bool = False) -> str:
    """``auto`` -> ``ctranslate2`` on CPU when installed, else ``hf``; ``hf`` when sampling is guided (only it can
    guide: :mod:`dpsynth.generate.guidance`); an explicit choice is kept."""
    if engine != "auto":
        return engine
    if guided:
        log.info("generate.guidance_scale other than 1: generating with HF generate (the one engine that guides)")
        return "hf"
    if resolve_device(model_cfg.device).type != "cpu":
        return "hf"
    if importlib.util.find_spec("ctranslate2") is None:
        log.info("generate.engine=auto: ctranslate2 is not installed, using HF generate (slower on CPU)")
        return "hf"
    return "ctranslate2"


def load_engine(
    model_cfg: ModelConfig,
    adapter_dir: Path | None,
    tokenizer: Any,
    *,
    engine: str = "auto",
    quantization: str = "float32",
    replicas: int | None = None,
    guided: bool = False,
) -> Engine:
    """The engine for base model + ``adapter_dir`` (``None``: the base model alone), ready to generate.

    With ``engine=auto``, a model that CTranslate2 cannot convert falls back to HF ``generate`` with a warning; an
    explicit ``engine=ctranslate2`` raises instead. ``replicas`` (CTranslate2 only; ``generate.ctranslate2_replicas``):
    copies of the model run side by side, ``None`` meaning one per torch thread up to 2 on CPU and one on CUDA
    (:mod:`dpsynth.generate.ct2_engine` says why).
    """
    name = resolve_engine(engine, model_cfg, guided=guided)
    if guided and name != "hf":
        from dpsynth.errors import ConfigError

        raise ConfigError(f"generate.guidance_scale other than 1 needs the hf engine, not {name}")
    if name == "vllm":
        from dpsynth.generate.vllm_engine import VLLMEngine
        from dpsynth.models.loader import model_source

        source, kwargs = model_source(model_cfg)
        return VLLMEngine(source, adapter_dir, revision=kwargs.get("revision"))
    if name == "ctranslate2":
        from dpsynth.errors import ConfigError
        from dpsynth.generate.ct2_engine import CT2Engine
        from dpsynth.models.convert import ctranslate2_model

        try:
            folder = ctranslate2_model(model_cfg, adapter_dir, quantization, tokenizer=tokenizer)
        except ConfigError as exc:
            if engine != "auto":
                raise
            log.warning("%s; using HF generate", exc)
        else:
            device = resolve_device(model_cfg.device).type
            threads = torch.get_num_threads()
            if replicas is None:  # measured on 2 cores only: past 2 copies, memory grows and nothing says speed does
                replicas = min(threads, 2) if device == "cpu" else 1
            return CT2Engine(folder, tokenizer, device=device, threads=threads, replicas=replicas)
    from dpsynth.models.adapters import attach_adapter
    from dpsynth.models.loader import load_model

    model: Any = load_model(model_cfg)
    if adapter_dir is not None:
        model = attach_adapter(model, adapter_dir)
    stops = stop_token_ids(tokenizer)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
    return HFEngine(model, pad_id)


def sample_texts(
    model_cfg: ModelConfig,
    adapter_dir: Path | None,
    prompts: Sequence[list[int]],
    settings: SamplingSettings,
    *,
    engine: str = "auto",
    quantization: str = "float32",
    replicas: int | None = None,
    tokenizer: Any = None,
    progress: bool = False,
    desc: str = "generate",
    negatives: Sequence[list[int]] | None = None,
) -> list[str]:
    """One sampled continuation per token-id prompt, with the chosen engine; texts only (never the prompt).
    ``negatives``: the negative prompts of guided sampling (``settings.guidance_scale`` other than 1)."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    guided = settings.guidance_scale != 1.0
    eng = load_engine(
        model_cfg, adapter_dir, tokenizer, engine=engine, quantization=quantization, replicas=replicas, guided=guided
    )
    stops = stop_token_ids(tokenizer)
    note = f", guidance {settings.guidance_scale}" if guided else ""
    log.info("generating %d texts with %s%s", len(prompts), eng.name, note)
    label = f"{desc} ({eng.name})"
    if guided:
        if not isinstance(eng, HFEngine):
            raise TypeError(f"guided sampling needs the HF engine, got {eng.name}")
        out = eng.generate(prompts, stops, settings, progress=progress, desc=label, negatives=negatives)
    else:
        out = eng.generate(prompts, stops, settings, progress=progress, desc=label)
    return decode(tokenizer, out)


def generate_from_codes(
    model_cfg: ModelConfig,
    adapter_dir: Path | None,
    codes: Sequence[Mapping[str, Any]],
    system_prompt: str,
    gen_cfg: Any,
    *,
    domains: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Raw model texts for control codes (one per dict), as the generate stage samples them.

    ``gen_cfg`` is a :class:`dpsynth.generate.config.GenerateConfig` (engine, quantization and sampling settings);
    ``adapter_dir=None`` samples from the base model alone. Split titles from bodies with
    :func:`dpsynth.data.format.parse_response`. With ``gen_cfg.candidates = m > 1``, ``m`` texts are sampled per
    code (the codes repeated ``m`` times, in one pass) and the best is kept (:mod:`dpsynth.generate.select`), reading
    the codes against their public ``domains`` (needed for ``select_by`` codes).
    """
    from dpsynth.data.format import encode_prompt

    m = gen_cfg.candidates
    if m > 1 and "codes" in gen_cfg.select_by and domains is None:
        raise ValueError("best-of-m by codes needs the codes' public domains")
    tokenizer = load_tokenizer(model_cfg)
    prompts = [encode_prompt(tokenizer, c, system_prompt) for c in codes] * m
    negatives = None
    if gen_cfg.guidance_scale != 1.0:
        from dpsynth.errors import ConfigError
        from dpsynth.generate.guidance import negative_codes

        guided = gen_cfg.guidance_codes
        names = {name for c in codes for name in c}
        unknown = sorted(set(guided or ()) - names)
        if not names:
            # no code to remove: every negative prompt would equal its prompt
            raise ConfigError("generate.guidance_scale other than 1 needs control codes; these records have none")
        if unknown:
            # a negative prompt equal to its prompt would make guidance a no-op that still costs HF generation
            raise ConfigError(
                f"generate.guidance_codes names {', '.join(unknown)}, not among the control codes "
                f"({', '.join(sorted(names))})"
            )
        negatives = [encode_prompt(tokenizer, negative_codes(c, guided), system_prompt) for c in codes] * m
    texts = sample_texts(
        model_cfg,
        adapter_dir,
        prompts,
        SamplingSettings.from_config(gen_cfg),
        engine=gen_cfg.engine,
        quantization=gen_cfg.ctranslate2_quantization,
        replicas=gen_cfg.ctranslate2_replicas,
        tokenizer=tokenizer,
        progress=progress,
        desc=desc,
        negatives=negatives,
    )
    if m == 1:
        return texts
    from dpsynth.generate.select import choose

    log.info("best-of-%d: choosing %d of %d texts by %s", m, len(codes), len(texts), ", ".join(gen_cfg.select_by))
    keep = choose(texts, codes, m, domains or {}, gen_cfg.select_by)
    return [texts[k] for k in keep]
