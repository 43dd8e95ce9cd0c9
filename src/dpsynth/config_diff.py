"""Which settings two configurations differ in, as dotted keys: what a resume or a frontier rerun may change.

A finished DP arm is a release; a run resumed (or a frontier row remade) under other *training* settings would label
that release with settings it was not made with. :func:`training_changes` names the keys that decide what training
produced, so that such a resume is refused with the keys to restore. Left out: what happens after training
(``generate``, ``evaluate``, ``frontier``), where runs are tracked and budgeted (``tracking``, ``ledger``, ``audit``),
and keys that change how training is laid out on this machine but not its result (:data:`LAYOUT_KEYS`).

>>> from dpsynth.config import load_config
>>> training_changes(load_config(None), load_config(None, ["generate.num_records=5", "train.checkpoint_every=9"]))
[]
>>> training_changes(load_config(None), load_config(None, ["train.learning_rate=0.1"]))
['train.learning_rate']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpsynth.config import NO_DP_KEYS, Config

AFTER_TRAINING = ("generate", "evaluate", "frontier", "tracking", "ledger", "audit")
LAYOUT_KEYS = (
    ("train", "prefix_cache_dir"),
    ("train", "prefix_cache_memory_mb"),
    ("train", "checkpoint_every"),
    ("train", "distributed"),
    ("train", "nproc_per_node"),
    ("model", "api_base"),
    ("model", "api_model"),
    ("model", "api_key_env"),
    ("model", "api_concurrency"),
    ("model", "api_timeout"),
)


def flat_view(cfg: Config, drop_sections: tuple[str, ...] = (), drop_keys: tuple[tuple[str, str], ...] = ()) -> dict:
    """``cfg`` as ``{"section.key": repr(value)}`` without the given sections and keys (and without the settings of
    the generator it does not run: ``pe`` when fine-tuning)."""
    dump = cfg.model_dump(mode="json", by_alias=True)
    for section in drop_sections:
        dump.pop(section, None)
    for section, key in drop_keys:
        dump.get(section, {}).pop(key, None)
    if dump.get("generator", "finetune") == "finetune":
        dump.pop("generator", None)
        dump.pop("pe", None)
    return dict(_flatten(dump))


def training_changes(old: Config, new: Config, arms: Sequence[str] | None = None) -> list[str]:
    """The dotted keys whose values differ between ``old`` and ``new`` in what decides the training of ``arms``
    (default: the arms either configuration lists), sorted.

    The non-DP arm's own settings (:data:`~dpsynth.config.NO_DP_KEYS`: its batch, learning rate, target modules)
    count only when ``arms`` holds that arm: a resume passes the arms already trained or checkpointed, since those are
    what a changed setting would mislabel. ``train.lora.freeze_a`` counts only when ``arms`` holds the DP arm.

    >>> from dpsynth.config import load_config
    >>> training_changes(load_config(None, []), load_config(None, ["train.lora.freeze_a=true"]), arms=["no_dp"])
    []
    >>> training_changes(load_config(None, []), load_config(None, ["train.lora.freeze_a=true"]), arms=["dp"])
    ['train.lora.freeze_a']
    """
    if arms is None:
        arms = [*old.train.arms, *new.train.arms]
    drop: tuple[tuple[str, str], ...] = LAYOUT_KEYS
    if "no_dp" not in arms:
        drop = (*drop, *(("train", key) for key in NO_DP_KEYS))
    a = flat_view(old, AFTER_TRAINING, drop)
    b = flat_view(new, AFTER_TRAINING, drop)
    for view, cfg in ((a, old), (b, new)):
        if cfg.train.init_adapter is not None:  # one folder, however it is spelled (its weights are checked apart)
            view["train.init_adapter"] = repr(str(Path(cfg.train.init_adapter).expanduser().resolve()))
    if "dp" not in arms:  # the non-DP arm trains both LoRA factors whatever train.lora.freeze_a says
        for view in (a, b):
            view.pop("train.lora.freeze_a", None)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), repr(obj))]
