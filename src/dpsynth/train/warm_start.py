"""The public warm start (``train.init_adapter``): checks before anything is charged, and what a release records.

A warm start adds nothing to the privacy analysis only if the adapter depends on no private record. dpsynth cannot
prove that, but it refuses the two mistakes it can see: an adapter inside the run's own directory (a non-DP arm of
this very data), and one whose run read the same data file (its ``prepare.json`` names the same source
fingerprint). Everything else is the user's declaration, and ``privacy.json`` says so (``declared_public``). The same
two checks apply to a warm start merged into the base model's weights (``model.name`` a folder that
``bench/merge_warmstart.py`` wrote), by the stamp the folder carries (:data:`MERGED_STAMP`).

Runs remember the adapter by its digest, not its path: a retrained adapter at the same path is another warm start,
and an arm trained (or checkpointed) from the old one must not be kept as if made from the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpsynth.errors import ConfigError
from dpsynth.rundir import RunDir, read_json

if TYPE_CHECKING:
    from dpsynth.config import Config

log = logging.getLogger(__name__)

FILES = ("adapter_config.json", "adapter_model.safetensors")
MERGED_STAMP = "dpsynth_warm_start.json"
"""What a model folder with a warm start merged into its weights says it holds (``bench/merge_warmstart.py``)."""


def digest(cfg: Config) -> str | None:
    """The configured warm start's digest (:func:`dpsynth.models.convert.adapter_digest`), None without one."""
    if cfg.train.init_adapter is None:
        return None
    from dpsynth.models.convert import adapter_digest

    return adapter_digest(cfg.train.init_adapter)


def check(cfg: Config, root: Path, source_fingerprint: str | None) -> None:
    """Refuse a merged warm start in ``model.name`` fitted inside ``root`` or to this data (:func:`check_merged`);
    then a missing adapter, one that does not fit an arm's LoRA (rank, alpha, target modules), one inside
    ``root`` (this run's or sweep's directory), one fitted to the data whose source fingerprint is
    ``source_fingerprint``, or one fitted in another prompt format than today's (:func:`_stale_format`): before any
    ledger reservation or row."""
    check_merged(cfg, root, source_fingerprint)
    folder = cfg.train.init_adapter
    if folder is None:
        return
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise ConfigError(
                f"train.init_adapter: {folder / name} not found (a folder `dpsynth train` wrote: DIR/ARM/adapter)"
            )
    from dpsynth.train.lora import shape_differences  # torch and peft only where a warm start is set

    saved = read_json(folder / "adapter_config.json")
    for arm in cfg.train.arms:  # every arm's shape now, not when the non-DP arm starts after a DP release
        lora = cfg.train.arm_lora(arm)
        differ = shape_differences(saved, r=lora.r, alpha=lora.alpha, target_modules=lora.target_modules)
        if differ:
            raise ConfigError(
                f"train.init_adapter: {folder / 'adapter_config.json'} does not fit the {arm} arm's LoRA "
                f"({'; '.join(differ)})"
            )
    if folder.resolve().is_relative_to(Path(root).resolve()):
        raise ConfigError(
            f"train.init_adapter: {folder} lies inside {root}, so it was fitted to this run's private data; a warm "
            "start must come from public data (another run directory, another data set)"
        )
    fitted = origin(folder)
    if fitted and source_fingerprint and fitted.get("fingerprint") == source_fingerprint:
        raise ConfigError(
            f"train.init_adapter: {folder} was fitted to {fitted.get('path')}, the same data this run protects; a warm "
            "start must come from public data"
        )
    if (why := _stale_format(cfg, folder)) is not None:
        raise ConfigError(f"train.init_adapter: {why}")


def merged_stamp(cfg: Config) -> dict[str, Any] | None:
    """The stamp of a model folder (``model.name``) with a public warm start merged into its weights, or None.

    ``bench/merge_warmstart.py`` writes it: the adapter, its digest and the data it was fitted to. A folder merged by
    other means carries none, and is a base model like any other."""
    path = Path(cfg.model.name).expanduser() / MERGED_STAMP
    if not path.is_file():
        return None
    try:
        stamp = read_json(path)
    except ValueError as exc:
        raise ConfigError(f"model.name: {path} is not valid JSON ({exc})") from exc
    if not isinstance(stamp, dict) or not isinstance(stamp.get("fitted_to") or {}, dict):
        raise ConfigError(f"model.name: {path} is not a warm-start stamp (an object whose fitted_to is an object)")
    return stamp


def check_merged(cfg: Config, root: Path, source_fingerprint: str | None) -> None:
    """Refuse a merged model whose warm start, by its own stamp, was fitted inside ``root`` or to this run's data:
    the merge makes such an adapter's non-DP fit part of the "public" base model, a leak no epsilon accounts for.
    Called by :func:`check` (training, the frontier) and by generation and Private Evolution, which load
    ``model.name`` too."""
    stamp = merged_stamp(cfg)
    if stamp is None:
        return
    where = f"model.name: {cfg.model.name} holds the warm start {stamp.get('adapter')} ({MERGED_STAMP})"
    adapter = stamp.get("adapter")  # written absolute; a relative one is read from the model folder
    if adapter and (Path(cfg.model.name).expanduser() / adapter).resolve().is_relative_to(Path(root).resolve()):
        raise ConfigError(f"{where}, which lies inside {root}, so it was fitted to this run's private data")
    fitted = stamp.get("fitted_to") or {}
    if source_fingerprint and fitted.get("fingerprint") == source_fingerprint:
        raise ConfigError(
            f"{where}, fitted to {fitted.get('path')}, the same data this run protects; a warm start must come from "
            "public data"
        )


def record(cfg: Config, adapter_digest: str | None) -> dict[str, Any]:
    """The ``privacy.json`` entry: what the weights started from, declared public by the user."""
    folder = Path(str(cfg.train.init_adapter))
    return {
        "path": str(folder.resolve()),  # absolute: evaluate and audit find it from any working directory
        "digest": adapter_digest,
        "declared_public": True,
        "fitted_to": origin(folder),
    }


def changed(cfg: Config, run: RunDir, arms: Sequence[str]) -> list[str]:
    """The finished arms among ``arms`` that started from another warm start than the configured one: another
    ``train.init_adapter``, or another warm start merged into ``model.name`` (by its stamp's digest)."""
    want = digest(cfg)
    merged = merged_stamp(cfg)
    want_merged = None if merged is None else merged.get("adapter_digest")
    out = []
    for arm in arms:
        path = run.privacy_json(arm)
        if not path.is_file():
            continue
        privacy = read_json(path)
        if (privacy.get("init_adapter") or {}).get("digest") != want or (
            (privacy.get("merged_warm_start") or {}).get("adapter_digest") != want_merged
        ):
            out.append(arm)
    return out


BASE = "the base model without adapter"


def reference(run: RunDir, arms: Sequence[str]) -> tuple[Path | None, str]:
    """The reference model of the membership attacks on ``arms``: the public warm start they began from, if any.

    A reference attack scores ``reference loss - trained loss``; the reference should be the model as it was before
    the private data, so that the score shows what the private records did and nothing else. Without a warm start that
    is the base model. With one it is the base model with the warm start: against the bare base model, the warm
    start's public fitting would lower every record's loss alike, noise that blunts the attack (a weaker audit, not an
    invalid one). Returns the adapter folder (None for the bare base model) and the words that say which model it is.
    The folder is used only while it still holds the weights the arms recorded (their digest): otherwise the bare base
    model, and the words say why.
    """
    from dpsynth.models.convert import adapter_digest

    recorded: list[dict[str, Any]] = []
    for arm in arms:
        path = run.privacy_json(arm)
        recorded.append((read_json(path).get("init_adapter") if path.is_file() else None) or {})
    digests = {r.get("digest") for r in recorded}
    if digests <= {None}:
        return None, BASE
    if len(digests) > 1:
        why = f"{BASE} (the arms began from different weights, so no one model is the reference for all of them)"
        log.warning("membership reference: %s", why)
        return None, why
    want = digests.pop()
    for folder in dict.fromkeys(Path(str(r.get("path"))) for r in recorded):
        if all((folder / name).is_file() for name in FILES) and adapter_digest(folder) == want:
            return folder, f"the base model with the public warm start {folder} (the weights every arm began from)"
    folder = Path(str(recorded[0].get("path")))
    if (folder / FILES[1]).is_file():
        why = f"{BASE} (the arms' warm start {folder} no longer holds the weights they began from; a weaker attack)"
    else:
        why = f"{BASE} (the arms' warm start {folder} is not found from {Path.cwd()}; a weaker attack)"
    log.warning("membership reference: %s", why)
    return None, why


def _stale_format(cfg: Config, folder: Path) -> str | None:
    """Why the warm start must not be trained on today, or None: the run that fitted it (``RUN/ARM/adapter``)
    recorded a prompt format other than the one ``cfg.model``'s tokenizer renders for that run now
    (:func:`dpsynth.train.prompt_format.mismatch`; gemma-3-270m's turn came to end in ``<eos>`` on 2026-12-05). The
    comparison re-renders the warm start's own probe (its system prompt and codes), so it needs that run's
    ``prepare.json`` and ``privacy.json``: an adapter copied out of its run, or fitted before the key existed, is
    trusted as before."""
    folder = folder.resolve()  # a symlink or a ``..`` names its run by where it points
    run, arm = RunDir(folder.parent.parent), folder.parent.name
    if folder.name != "adapter" or not run.prepare_json.is_file():
        return None
    from dpsynth.train import prompt_format  # the tokenizer loads only where a warm start's run can be compared

    if (differ := prompt_format.mismatch(cfg.model, run, arm)) is None:
        return None
    theirs = run_model(run)
    other = f", fitted with {theirs}" if theirs and theirs != cfg.model.name else ""
    if (vocabulary := run_model(run, "vocabulary") or "full") != cfg.model.vocabulary:  # token ids renumbered
        other += f", fitted with model.vocabulary={vocabulary} (this run: {cfg.model.vocabulary})"
    return (
        f"{folder}{other} records prompt format {differ[0]} ({run.privacy_json(arm)}), but {cfg.model.name}'s "
        f"tokenizer renders that run's probe as {differ[1]} today: the chat template or its end-of-turn token, "
        "dpsynth's prompt wording, the model, or that run's data/prepare.json changed since it was fitted. Every arm "
        "started from it would spend its steps, and a DP arm its privacy budget, unlearning that format: fit the "
        "warm start again in a new directory (`dpsynth prepare` and `dpsynth train` with its config; public data, "
        "no privacy cost)"
    )


def run_model(run: RunDir, key: str = "name") -> str | None:
    """The ``model.name`` (or another ``model`` key) that ``run``'s saved ``config.yaml`` names, when it is there."""
    import yaml

    if not run.config.is_file():
        return None
    saved = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    name = (saved.get("model") or {}).get(key)
    return str(name) if name else None


def origin(folder: Path) -> dict[str, Any] | None:
    """The data source of the run that wrote ``folder`` (``RUN/ARM/adapter``), when its ``prepare.json`` is there."""
    prepare = folder.resolve().parent.parent / "data" / "prepare.json"
    if not prepare.is_file():
        return None
    source = read_json(prepare).get("source") or {}
    return {"path": source.get("path"), "fingerprint": source.get("fingerprint")}
