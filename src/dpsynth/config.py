"""Configuration: one validated pydantic model per stage, loaded from YAML, overridden from the command line.

>>> cfg = load_config(None, ["train.max_steps=10", "privacy.target_epsilon=4", "data.schema=amazon2014"])
>>> cfg.train.max_steps, cfg.privacy.target_epsilon, cfg.data.schema_
(10, 4.0, 'amazon2014')

Overrides are ``dotted.key=value`` with the value parsed as YAML (``lora.target_modules=[q_proj,v_proj]`` gives a list,
``privacy.delta=null`` gives None). Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from dpsynth._base import Section
from dpsynth.data.config import DataConfig
from dpsynth.errors import ConfigError
from dpsynth.evaluate.config import EvaluateConfig
from dpsynth.frontier.config import FrontierConfig
from dpsynth.generate.config import GenerateConfig
from dpsynth.pe.config import PEConfig
from dpsynth.privacy.config import AuditConfig, LedgerConfig, PrivacyConfig
from dpsynth.rundir import ARMS
from dpsynth.tracking.config import TrackingConfig

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

NO_DP_KEYS = ("no_dp_batch_size", "no_dp_learning_rate", "no_dp_target_modules")
"""The ``train`` keys that shape the non-DP arm only: fingerprints, resumes and audit stamps of DP work ignore them."""


class ModelConfig(Section):
    """The pretrained causal LM: a built-in name, a local folder, a GGUF file, or a hub id (needs internet)."""

    name: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: float32 on CPU, bfloat16 on CUDA; training under bf16 autocast (train.precision) loads "
        "the frozen weights in bfloat16 on a CPU too, and so does the evaluation's scoring (evaluate.precision)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    cache_dir: Path | None = Field(None, description="where converted models are cached (default: user cache)")
    api_base: str | None = Field(
        None,
        pattern=r"^https?://",
        description="an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) that serves the model: "
        "generator=pe calls it instead of loading the model here (dpsynth.generate.api_engine)",
    )
    api_model: str | None = Field(None, description="the model's name on the endpoint (default: model.name)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's key")
    api_concurrency: int = Field(4, gt=0, description="requests in flight at once")
    api_timeout: float = Field(600.0, gt=0, description="seconds before one request fails")


class LoraSettings(Section):
    """LoRA adapter shape (peft). Alpha 16 and dropout 0.05 follow the reference setting."""

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    freeze_a: bool = Field(
        False,
        description="the DP arm trains B only and keeps every A as initialised (FFA-LoRA, Sun et al. 2024): fewer "
        "noisy coordinates under DP-SGD, and with train.init_adapter a subspace fitted to public data "
        "(dpsynth.train.lora.freeze_lora_a); the non-DP arm trains both",
    )
    top_k_layers: int | None = Field(
        8,
        gt=0,
        description="LoRA on the top K transformer blocks only (none: every block; K at least the model's blocks: "
        "all); with train.prefix_cache the frozen blocks below run once per example per run "
        "(dpsynth.train.prefix). 8 (every block until 2026-12-03), for a 2-core CPU's time budget. "
        "Every block learns more from the same steps (the 690-user demo, generator seed 1, 44 DP steps: MAUVE "
        "0.68 against 0.30) at 3.6x the training time; from half the steps (22, still 1.85x the time) not clearly "
        "better (0.36; bench/results/demo-recipe/). On the public proxy 8 has more signal per unit of DP noise "
        "(bench/results/dp-snr/electronics-topk.md), and every 5,000-record frontier uses it: with time to spare "
        "(a GPU), set none",
    )


class TrainConfig(Section):
    """The training loop, shared by the DP arm and the non-DP baseline arm."""

    arms: list[Literal["dp", "no_dp"]] = Field(default_factory=lambda: list(ARMS))
    batch_size: int = Field(32, gt=0, description="expected logical batch (DP: sample rate = batch_size / n)")
    no_dp_batch_size: int | None = Field(
        None,
        gt=0,
        description="the non-DP arm's batch (none: batch_size); DP wants few large batches, which leave a non-DP "
        "baseline a handful of steps for the same tokens (bench/frontier_amazon_cellphones_5k.yaml sets 32, the "
        "library default)",
    )
    physical_batch_size: int = Field(8, gt=0, description="largest batch held in memory at once")
    learning_rate: float = Field(
        1e-2,
        gt=0,
        description="the DP arm's AdamW learning rate (and the non-DP arm's when no_dp_learning_rate is none); 1e-2 "
        "(2e-3 until 2026-12-03): chosen on the public proxy at batch 256 (bench/results/recipe-search/, "
        "'Learning rate') and on the demo generator's seed 1 at batch 32 (bench/results/demo-recipe/)",
    )
    no_dp_learning_rate: float | None = Field(
        2e-3,
        gt=0,
        description="the non-DP arm's learning rate (none: learning_rate); 2e-3, the library's rate before DP's was "
        "raised: a rate goes with the noise and the batch, and the noiseless arm does not need DP's "
        "(bench/results/recipe-search/, 'Learning rate')",
    )
    no_dp_target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="the non-DP arm's LoRA target modules (none: lora.target_modules; same blocks, rank and alpha); "
        "a larger adapter needs no noise averaged away, and the baseline is the ceiling that DP rows are read under "
        "(bench/results/recipe-search/, 'LoRA on every linear module': on the public proxy all seven lifted the "
        "non-DP arm's MAUVE 0.43 -> 0.73; under DP they did not help)",
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(
        2.0,
        gt=0,
        description="passes over the training units (DP: expected passes under Poisson sampling); 2 (3 until "
        "2026-12-03): the demo's DP arm on the demo generator's seed 1 (bench/results/demo-recipe/); the 5,000-record "
        "frontiers set 1",
    )
    max_steps: int | None = Field(None, gt=0, description="stop after this many (logical) steps")
    clipping_mode: Literal["hooks", "ghost"] = Field(
        "hooks", description="per-sample gradient mode; hooks was faster on a 2-core CPU (bench/bench_train.py)"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    init_adapter: Path | None = Field(
        None,
        description="start both arms' LoRA from this adapter folder (one `dpsynth train` wrote, e.g. "
        "DIR/no_dp/adapter) instead of zero: a warm start trained on PUBLIC data only (another data set, never "
        "these private records), so it costs no privacy; same r, alpha and blocks as train.lora, on the arm's "
        "target modules or some of them (the others start fresh, B at zero: the arm starts as the adapter's model). "
        "The frontier's eps-0 row generates from it too (bench/public_warmstart_amazon.yaml)",
    )
    distributed: bool = Field(
        False,
        description="train under torchrun with nproc_per_node ranks on this machine (dpsynth train and run launch "
        "it; Opacus's distributed DP, dpsynth.train.distributed); several machines: call torchrun yourself",
    )
    nproc_per_node: int = Field(2, gt=0, description="ranks that train.distributed launches")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="forward/backward under bfloat16 autocast (LoRA weights, per-sample gradients, clipping, noise "
        "and optimizer stay float32); auto: bfloat16 where the CPU has native bf16 (avx512_bf16/amx) or on CUDA",
    )
    prefix_cache: bool = Field(True, description="with lora.top_k_layers: compute the frozen blocks once per example")
    prefix_cache_memory_mb: int = Field(
        2048,
        ge=0,
        description="a larger prefix cache is memory-mapped from a file (unlinked at once) in the arm's folder",
    )
    prefix_cache_dir: Path | None = Field(
        None,
        description="keep the prefix cache in this folder and reuse it in any run over the same examples and model "
        "(a frontier's rows share DIR/prefix_cache); it holds the training examples' hidden states: private, "
        "keep it beside the data",
    )
    checkpoint_every: int = Field(
        1,
        gt=0,
        description="steps between checkpoints (for --resume); every step by default: a LoRA checkpoint is about "
        "half a megabyte, while a DP step of a large batch costs tens of seconds on a CPU (a 16-step frontier row "
        "never reached the old 50); on a GPU with sub-second steps, a larger value saves the synchronous writes",
    )
    seed: int = Field(0, description="LoRA initialisation and the non-DP arm's shuffling")
    noise_seed: int | None = Field(
        None, description="seed of DP noise and Poisson sampling; none (default) draws fresh OS entropy per run"
    )

    @model_validator(mode="after")
    def _no_dp_batch_as_default(self) -> TrainConfig:
        """A non-DP batch (or learning rate, or target modules) equal to the DP arm's is the default, stored as none:
        the same arm is the same setting to resumes, frontier fingerprints and audit stamps."""
        if self.no_dp_batch_size == self.batch_size:
            self.no_dp_batch_size = None
        if self.no_dp_learning_rate == self.learning_rate:
            self.no_dp_learning_rate = None
        modules = self.no_dp_target_modules
        if modules is not None:  # a set of modules: one order for fingerprints and stamps
            canonical = None if sorted(set(modules)) == sorted(set(self.lora.target_modules)) else sorted(set(modules))
            if canonical != modules:  # assigned only on change: assignment validates again
                self.no_dp_target_modules = canonical
        return self

    def arm_batch_size(self, arm: str) -> int:
        """The logical batch of ``arm``: ``no_dp_batch_size`` for the non-DP arm when set, else ``batch_size``.

        >>> TrainConfig(batch_size=256, no_dp_batch_size=32).arm_batch_size("no_dp")
        32
        >>> TrainConfig(batch_size=256, no_dp_batch_size=32).arm_batch_size("dp")
        256
        """
        if arm == "no_dp" and self.no_dp_batch_size is not None:
            return self.no_dp_batch_size
        return self.batch_size

    def arm_learning_rate(self, arm: str) -> float:
        """The learning rate of ``arm``: ``no_dp_learning_rate`` for the non-DP arm when set, else ``learning_rate``.

        >>> TrainConfig(learning_rate=1e-2, no_dp_learning_rate=2e-3).arm_learning_rate("no_dp")
        0.002
        >>> TrainConfig(learning_rate=1e-2, no_dp_learning_rate=2e-3).arm_learning_rate("dp")
        0.01
        """
        if arm == "no_dp" and self.no_dp_learning_rate is not None:
            return self.no_dp_learning_rate
        return self.learning_rate

    def arm_lora(self, arm: str) -> LoraSettings:
        """The LoRA shape of ``arm``: ``lora`` with ``no_dp_target_modules`` for the non-DP arm when set; the non-DP
        arm trains both LoRA factors (``lora.freeze_a`` answers DP noise, which it has none of).

        >>> TrainConfig(no_dp_target_modules=["q_proj", "o_proj"]).arm_lora("no_dp").target_modules
        ['o_proj', 'q_proj']
        >>> TrainConfig(no_dp_target_modules=["q_proj", "o_proj"]).arm_lora("dp").target_modules
        ['q_proj', 'v_proj']
        >>> lora = LoraSettings(freeze_a=True)
        >>> TrainConfig(lora=lora).arm_lora("dp").freeze_a, TrainConfig(lora=lora).arm_lora("no_dp").freeze_a
        (True, False)
        """
        if arm != "no_dp":
            return self.lora
        update: dict[str, Any] = {"freeze_a": False}
        if self.no_dp_target_modules is not None:
            update["target_modules"] = list(self.no_dp_target_modules)
        return self.lora.model_copy(update=update)


class Config(Section):
    """Everything a run needs. Saved resolved as ``DIR/config.yaml``."""

    generator: Literal["finetune", "pe"] = Field(
        "finetune",
        description="finetune: DP fine-tuning (train, then generate the dp/no_dp arms); pe: Private Evolution, "
        "inference only (DIR/pe, dpsynth.pe)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    frontier: FrontierConfig = Field(default_factory=FrontierConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pe: PEConfig = Field(default_factory=PEConfig)

    @model_validator(mode="after")
    def _warm_start_is_for_fine_tuning(self) -> Config:
        if self.train.init_adapter is not None and self.generator == "pe":
            raise ValueError(
                "train.init_adapter is a warm start for fine-tuning; Private Evolution samples the base model "
                "(its eps-0 floor would start from the adapter and its rows not)"
            )
        return self

    @model_validator(mode="after")
    def _best_of_m_is_for_fine_tuning(self) -> Config:
        if self.generate.candidates > 1 and self.generator == "pe":
            raise ValueError(
                "generate.candidates (best-of-m) selects among a fine-tuned model's samples; Private Evolution "
                "selects its records by DP votes (pe.*)"
            )
        return self

    @model_validator(mode="after")
    def _guidance_is_for_fine_tuning(self) -> Config:
        if self.generate.guidance_scale != 1.0 and self.generator == "pe":
            raise ValueError(
                "generate.guidance_scale guides a fine-tuned model's sampling by its codes; Private Evolution "
                "samples and selects its records by DP votes (pe.*)"
            )
        return self

    @model_validator(mode="after")
    def _length_release_is_for_fine_tuning(self) -> Config:
        if self.data.max_tokens == "auto" and self.generator == "pe":
            raise ValueError(
                "data.max_tokens=auto is released with the fine-tuned DP arm (dpsynth.train.length); generator=pe "
                "needs a number"
            )
        return self

    @model_validator(mode="after")
    def _api_base_serves_pe(self) -> Config:
        if self.model.api_base is not None and self.generator != "pe":
            raise ValueError(
                "model.api_base serves generator=pe only: fine-tuning needs the model's weights here (use "
                "model.name), and generation needs the trained adapter"
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` pairs in a nested dict (values parsed as YAML). Returns the same dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key!r}: value {value!r} is not valid YAML ({exc})") from exc
    return raw


def _section(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also through ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        model = _section(arg)
        if model is not None:
            return model
    return None


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The keys a section accepts (by alias where a field has one, e.g. ``schema``) -> the field's annotation."""
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def _unknown_key(loc: tuple[Any, ...], value: Any) -> str:
    """An unknown key's message: the key as written, and the nearest valid key (``trian.max_steps`` -> "did you mean
    train.max_steps?", ``train.max_step`` -> ``train.max_steps``), else the keys valid there."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        model = _section(_keys(model).get(str(part))) if model is not None else None
    written = [str(p) for p in loc]
    below = value
    while isinstance(below, dict) and len(below) == 1:  # what was written under a misspelt section
        ((key, below),) = below.items()
        written.append(str(key))
    if model is None:
        return f"{'.'.join(written)}: unknown key"
    keys = _keys(model)
    match = difflib.get_close_matches(str(loc[-1]), list(keys), n=1, cutoff=0.6)
    if not match:
        return f"{'.'.join(written)}: unknown key (valid here: {', '.join(keys)})"
    suggestion = [*written[: len(loc) - 1], match[0]]
    sub = _section(keys[match[0]])
    for key in written[len(loc) :]:  # carry on below the corrected section while the keys fit
        if sub is None:
            break
        sub_keys = _keys(sub)
        fixed = key if key in sub_keys else next(iter(difflib.get_close_matches(key, list(sub_keys), n=1)), None)
        if fixed is None:
            break
        suggestion.append(fixed)
        sub = _section(sub_keys[fixed])
    return f"{'.'.join(written)}: unknown key (did you mean {'.'.join(suggestion)}?)"


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            lines.append(f"  {_unknown_key(err['loc'], err.get('input'))}")
            continue
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path | str | None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults), apply overrides, validate. Errors name the file and the key."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = path.read_bytes()
        try:
            loaded = yaml.safe_load(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            column = len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8")) + 1  # characters
            raise ConfigError(
                f"{path}, line {line}, column {column}: not UTF-8 text (a byte {data[exc.start]:#04x}); "
                "save it as UTF-8"
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        raw = loaded
    if overrides:
        source += " + command-line overrides"
    apply_overrides(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc
