"""What a finished frontier row depends on, as a hash: a rerun keeps a row whose fingerprint is unchanged.

Apart from :mod:`dpsynth.frontier.rows` because the spelling here is a compatibility contract: every committed
sweep's ``row.json`` holds a fingerprint made by these functions, and any change to what they read or how they
spell it would make those sweeps generate their rows again.
"""

from __future__ import annotations

import hashlib
from typing import Any

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
)


def fingerprint(cfg: Config, row: RowSpec) -> str:
    """What a finished row depends on: the whole configuration except the list of levels, and the row itself.

    Left out too: where runs are tracked (``tracking``), how training is laid out on this machine (the shared prefix
    cache, torchrun ranks: the same mechanism and numbers), the served-model keys (refused by the frontier), and the
    settings of a generator the sweep does not run (``generator`` when it is the default fine-tuning, ``pe``): a new
    key that cannot change a row must not make every finished sweep refuse its rows. Checkpoint spacing reads as 50
    (:func:`fingerprints`).
    """
    return _fingerprint(cfg, row, checkpoint_every=50)


def fingerprints(cfg: Config, row: RowSpec) -> tuple[str, str]:
    """:func:`fingerprint`, and the one a row made before checkpoint spacing was pinned had (its configured value):
    a finished row matching either is kept."""
    return fingerprint(cfg, row), _fingerprint(cfg, row, checkpoint_every=None)


def _fingerprint(cfg: Config, row: RowSpec, *, checkpoint_every: int | None) -> str:
    text = repr((_view(cfg, row, checkpoint_every), row.key, row.eps, row.real_n))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _view(cfg: Config, row: RowSpec, checkpoint_every: int | None) -> list[tuple[str, str]]:
    dump = cfg.model_dump(mode="json", by_alias=True)
    dump.get("frontier", {}).pop("eps", None)
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
    if gen.get("ctranslate2_replicas") is None:
        # auto: resolved on the machine (its threads), like engine auto; popped so that sweeps made before the key keep
        # their rows, though their texts came from one replica and a rerun elsewhere may draw with two
        gen.pop("ctranslate2_replicas", None)
    if dump.get("data", {}).get("cut_responses") == "token":
        dump["data"].pop("cut_responses")  # the rule before the key existed
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
    depends on the adapter's weights, not on where they lie, so a retrained adapter at the same path is noticed."""
    from dpsynth.train import warm_start

    train = dump.get("train", {})
    if cfg.train.init_adapter is None:
        train.pop("init_adapter", None)
    else:
        train["init_adapter"] = warm_start.digest(cfg)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix, repr(obj))]
