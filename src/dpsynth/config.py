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
from dpsynth.models.config import DEFAULT_MODEL, ModelConfig
from dpsynth.pe.config import PEConfig
from dpsynth.privacy.config import AuditConfig, LedgerConfig, PrivacyConfig
from dpsynth.tracking.config import TrackingConfig
from dpsynth.train.config import NO_DP_KEYS, LoraSettings, TrainConfig

# Every stage's settings live beside the stage (dpsynth.<stage>.config); this module joins them into one Config and
# is where the library and its users import them from.
__all__ = [
    "DEFAULT_MODEL",
    "NO_DP_KEYS",
    "AuditConfig",
    "Config",
    "DataConfig",
    "EvaluateConfig",
    "FrontierConfig",
    "GenerateConfig",
    "LedgerConfig",
    "LoraSettings",
    "ModelConfig",
    "PEConfig",
    "PrivacyConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
]


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
