"""What a finished frontier row depends on, as a hash: a rerun keeps a row whose fingerprint is unchanged.

Apart from :mod:`dpsynth.frontier.rows` because the spelling here is a compatibility contract: every committed
sweep's ``row.json`` holds a fingerprint made by these functions, and any change to what they read or how they
spell it would make those sweeps generate their rows again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dpsynth.config import NO_DP_KEYS, Config
from dpsynth.frontier.spec import RowSpec

# Kept apart from dpsynth.config_diff.LAYOUT_KEYS on purpose: these keys (and _flatten's spelling) define the
# fingerprints of finished sweeps, so changing them would make every committed sweep generate its rows again.
_NEUTRAL_KEYS = (
    ("train", "prefix_cache_dir"),
    ("train", "distributed"),
    ("train", "nproc_per_node"),
    ("model", "api_base"),
    ("model", "api_model"),
    ("model", "api_key_env"),
    ("model", "api_concurrency"),
    ("model", "api_timeout"),
    ("frontier", "mauve_repeats"),  # scoring only: the scores' fingerprint has it (dpsynth.frontier.run)
    ("evaluate", "mauve_repeats"),  # the run report's MAUVE draws: the frontier reads frontier.mauve_repeats
    ("evaluate", "precision"),  # the privacy attacks' arithmetic: the frontier scores no attack (2026-12-05)
)

# data.max_tokens=auto's settings (dpsynth.train.length): left out of every fingerprint unless auto reads them
LENGTH_KEYS = ("max_tokens_grid", "max_tokens_quantile", "max_tokens_public")


def fingerprint(cfg: Config, row: RowSpec) -> str:
    """What a finished row depends on: the whole configuration except the list of levels and whether the sweep has
    a row of every real record (``frontier.real_all``, read as its default: it adds or drops that row, no other), and
    the row itself.

    Left out too: where runs are tracked (``tracking``), how training is laid out on this machine (the shared prefix
    cache, torchrun ranks: the same mechanism and numbers), the served-model keys (refused by the frontier), and the
    settings of a generator the sweep does not run (``generator`` when it is the default fine-tuning, ``pe``): a new
    key that cannot change a row must not make every finished sweep refuse its rows. Checkpoint spacing reads as 50
    (:func:`fingerprints`).
    """
    return _fingerprint(cfg, row, checkpoint_every=50)


def fingerprints(cfg: Config, row: RowSpec) -> tuple[str, ...]:
    """:func:`fingerprint`, the one a row made before checkpoint spacing was pinned had (its configured value), and
    both again as a row made under ``frontier.real_all=false`` before that key left the fingerprint (2026-12-07)
    spelled them: a finished row matching any is kept, so adding the real-all row to a finished sweep remakes none."""
    found = [fingerprint(cfg, row), _fingerprint(cfg, row, checkpoint_every=None)]
    for every in (50, None):
        found.append(_fingerprint(cfg, row, checkpoint_every=every, real_all=False))
    return tuple(dict.fromkeys(found))


def kept_evaluate(
    cfg: Config, row: RowSpec, info: dict[str, Any], run_config: Path, sweep_evaluate: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``evaluate`` section a finished row was made under, when the row is kept under ``cfg``; else None.

    No row reads ``evaluate.*`` (training, generation and the DP releases come first; the sample of real test records,
    its seed and every metric setting only score the rows), so a row matches when its fingerprint is ``cfg``'s with the
    evaluate section it was made under: the one ``row.json`` names (rows made since 2026-12-04), else its run config's
    (fine-tuned rows made before), else the sweep's previous ``DIR/config.yaml``'s (``sweep_evaluate``: eps 0 and real
    rows made before, which have no run config). A candidate is trusted only if the stored fingerprint, which covers
    every other setting, is reproduced with it. The spelling of every fingerprint stays as it was: finished sweeps keep
    their rows. The caller scores a kept row again when the returned section is not ``cfg``'s (:func:`scores_key`).
    """
    stored = info.get("fingerprint")
    if stored in fingerprints(cfg, row):
        return cfg.evaluate.model_dump(mode="json")
    for made in (info.get("evaluate"), evaluate_section(run_config), sweep_evaluate):
        if not isinstance(made, dict):
            continue
        try:
            then = Config.model_validate({**cfg.model_dump(mode="json", by_alias=True), "evaluate": made})
        except ValidationError:
            continue  # an evaluate key this version does not know
        if stored in fingerprints(then, row):
            return then.evaluate.model_dump(mode="json")
    return None


def evaluate_section(config_path: Path) -> dict[str, Any] | None:
    """The ``evaluate`` section of a saved configuration, or None (no file, unreadable, none there)."""
    if not config_path.is_file():
        return None
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    section = raw.get("evaluate") if isinstance(raw, dict) else None
    return section if isinstance(section, dict) else None


def scores_key(cfg: Config, row_fingerprint: str, made_evaluate: dict[str, Any] | None) -> str:
    """What a row's cached scores depend on: the row, the scores it holds (``/mauve_bounded``: scores cached before
    the length-matched MAUVE existed lack it and are made again; the row itself is kept), and how it is scored where
    that differs from how rows were scored before the setting existed (``frontier.mauve_repeats`` other than 1; an
    ``evaluate`` section other than the one the row was made under, e.g. more real test records)."""
    key = row_fingerprint + "/mauve_bounded"
    if cfg.frontier.mauve_repeats != 1:
        key += f"/mauve_repeats={cfg.frontier.mauve_repeats}"
    now = cfg.evaluate.model_dump(mode="json")
    if made_evaluate is not None and made_evaluate != now:
        key += "/evaluate=" + hashlib.sha256(repr(sorted(_flatten(now))).encode()).hexdigest()[:16]
    return key


def _fingerprint(cfg: Config, row: RowSpec, *, checkpoint_every: int | None, real_all: bool = True) -> str:
    text = repr((_view(cfg, row, checkpoint_every, real_all), row.key, row.eps, row.real_n))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _view(cfg: Config, row: RowSpec, checkpoint_every: int | None, real_all: bool = True) -> list[tuple[str, str]]:
    dump = cfg.model_dump(mode="json", by_alias=True)
    dump.get("frontier", {}).pop("eps", None)
    if "frontier" in dump:
        # which rows exist, not what one is: pinned (to the default, which rows made before spelled) so that adding
        # or dropping the real-all row keeps the others (fingerprints: rows made under false spelled that)
        dump["frontier"]["real_all"] = real_all
    if dump.get("frontier", {}).get("draws", 1) == 1 or row.eps == "real":
        dump["frontier"].pop("draws", None)  # one draw, as before the key existed; real rows are one draw
    for key in NO_DP_KEYS:
        if row.eps != "inf" or dump.get("train", {}).get(key) is None:
            dump.get("train", {}).pop(key, None)  # only the non-DP row trains with it
    gen = dump.get("generate", {})
    if gen.get("code_power", 1.0) == 1.0 or row.eps in ("real", 0.0):
        gen.pop("code_power", None)  # the released codes as drawn before the key existed; eps 0 and real ignore it
    if gen.get("candidates", 1) == 1 or row.eps == "real":
        # one text per code, as before best-of-m existed (select_by is then unused); real rows generate nothing
        gen.pop("candidates", None)
        gen.pop("select_by", None)
    if row.eps == "real" or gen.get("engine") in ("hf", "vllm") or gen.get("guidance_scale", 1.0) != 1.0:
        # CTranslate2's weights cannot change a row it does not generate: read as the default of the sweeps made
        # before float32 became the default (2026-12-05), so that those rows are kept
        gen["ctranslate2_quantization"] = "int8"
    if gen.get("guidance_scale", 1.0) == 1.0 or row.eps == "real":
        gen.pop("guidance_scale", None)  # unguided sampling, as before the keys existed; real rows generate nothing
        gen.pop("guidance_codes", None)
    if gen.get("ctranslate2_replicas") is None:
        # auto: resolved on the machine (its threads), like engine auto; popped so that sweeps made before the key keep
        # their rows, though their texts came from one replica and a rerun elsewhere may draw with two
        gen.pop("ctranslate2_replicas", None)
    lora = dump.get("train", {}).get("lora", {})
    if not lora.get("freeze_a") or row.eps in ("real", 0.0, "inf") or dump.get("generator") == "pe":
        lora.pop("freeze_a", None)  # both LoRA factors train, as before the key existed; only a DP-SGD row reads it
    if dump.get("data", {}).get("cut_responses") == "token":
        dump["data"].pop("cut_responses")  # the rule before the key existed
    if dump.get("data", {}).get("max_tokens") != "auto":  # settings only data.max_tokens=auto reads: as before them
        for key in LENGTH_KEYS:
            dump["data"].pop(key, None)
        dump.get("privacy", {}).pop("length_epsilon_fraction", None)
    if dump.get("model", {}).get("vocabulary") == "full":
        dump["model"].pop("vocabulary")  # the whole vocabulary, as before the key existed
    dump.pop("tracking", None)
    _pin_init_adapter(dump, cfg)
    if checkpoint_every is not None:
        # checkpoint spacing cannot change a row; read as its default when fingerprints began (50), so that sweeps
        # finished then keep their rows now that the default is every step
        dump.get("train", {})["checkpoint_every"] = checkpoint_every
    for section, key in _NEUTRAL_KEYS:
        dump.get(section, {}).pop(key, None)
    if dump.get("generator", "finetune") == "finetune":
        dump.pop("generator", None)
        dump.pop("pe", None)
    return sorted(_flatten(dump))


def _pin_init_adapter(dump: dict[str, Any], cfg: Config) -> None:
    """Without a warm start the key is left out (fingerprints made before it existed still match); with one, a row
    depends on the adapter's weights, not on where they lie, so a retrained adapter at the same path is noticed. The
    same for a warm start merged into ``model.name``'s weights, by the digest its folder's stamp records."""
    from dpsynth.train import warm_start

    train = dump.get("train", {})
    if cfg.train.init_adapter is None:
        train.pop("init_adapter", None)
    else:
        train["init_adapter"] = warm_start.digest(cfg)
    if (merged := warm_start.merged_stamp(cfg)) is not None:  # a model folder merged again under the same name
        dump.setdefault("model", {})["merged_warm_start"] = merged.get("adapter_digest")


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix, repr(obj))]
