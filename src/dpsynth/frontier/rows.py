"""The rows of a frontier: where each row's training records come from (synthetic at a privacy level, or real).

Every row is one run directory under ``DIR/rows/<key>`` made by the ordinary stages of :mod:`dpsynth.api`, so a row
of the frontier and a ``dpsynth run`` at the same settings produce their synthetic records with the same code:

* ``eps0``: no private data. The pretrained model, no adapter, prompted with control codes drawn uniformly from
  their public domains (the prompt format of every other row). This is the floor any DP method must beat.
* ``eps<x>`` (``x > 0``): the DP release at ``privacy.target_epsilon = x`` (charged to the ledger), codes drawn from
  its DP code release: the DP fine-tuned arm, or with ``generator: pe`` a Private Evolution run (:mod:`dpsynth.pe`).
* ``epsinf``: the non-DP fine-tuned arm (a baseline that must not be released; the ledger does not record it). A PE
  sweep has no such row: PE without noise is not a baseline this sweep defines, and it is refused.
* ``real`` and ``real_all``: ``n_synthetic`` real training records drawn without replacement (seeded), and all of them
  (stored as positions in ``DIR/data/train.jsonl``: private text is never copied out of ``DIR/data``).

Each finished row writes ``row.json`` (its records' path, timings and the config fingerprint); a rerun with the same
configuration skips it, and a crashed DP row resumes its training from its checkpoint (never charging twice).

A rerun that changes only ``evaluate.*`` (more real test records, another seed for their draw) keeps every row and
scores it again. One that changes what comes after training (``generate.*``, ``frontier.n_synthetic``: more records,
other sampling) keeps every fine-tuned row's trained arm and DP release and generates again from it
(post-processing: no new charge, no new training); eps 0 and real rows are remade. Any other change, or any change to
a Private Evolution row (whose release *is* its generation), is refused before a row is touched.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.canaries import read_canaries
from dpsynth.data.prepare import generation_budget, load_code_specs, load_prepare_info
from dpsynth.data.records import read_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.frontier.fingerprint import fingerprint, kept_evaluate
from dpsynth.frontier.spec import RowSpec
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)
_DATA_FILES = ("train.jsonl", "test.jsonl", "prepare.json", "canaries.jsonl", "privacy.json")


def check_reuse(cfg: Config, root: RunDir, row: RowSpec, *, sweep_evaluate: dict[str, Any] | None = None) -> None:
    """Refuse, before any row is touched, a rerun whose change would mix two configurations in one frontier.

    A fine-tuned row that has started (finished, or crashed before its ``row.json``) is kept only when its run's
    training settings (``rows/<key>/config.yaml``) are the new ones (:func:`dpsynth.config_diff.training_changes`); a
    Private Evolution row only when nothing but scoring changed. eps 0 and real rows hold no release and train
    nothing: they are remade. A trained arm that records another prompt format than its tokenizer renders today
    (:mod:`dpsynth.train.prompt_format`: a chat template or prompt wording changed, which no setting shows) is
    refused, kept row or not.
    """
    run = RunDir(root.root / "rows" / row.key)
    done = run.root / "row.json"
    if done.is_file() and kept_evaluate(cfg, row, read_json(done), run.config, sweep_evaluate) is not None:
        _check_format(cfg, run, row)
        return
    if row.eps in (0.0, "real") or not run.config.is_file():
        return
    from dpsynth.config import load_config
    from dpsynth.config_diff import LAYOUT_KEYS, flat_view, training_changes

    try:
        before = load_config(run.config)
    except DPSynthError as exc:
        raise DPSynthError(f"{run.config} cannot be read by this version ({exc}): use a new --out directory") from exc
    new = row_config(cfg, row, prefix_cache_dir=root.root / "prefix_cache")
    if cfg.generator == "pe":
        # PE's release is its generation: only scoring may change (a finished run is then kept by its resume)
        drop = ("evaluate", "tracking", "ledger", "audit")
        ignore = (*LAYOUT_KEYS, ("frontier", "eps"), ("frontier", "mauve_repeats"))
        a, b = (flat_view(c, drop, ignore) for c in (before, new))
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    else:
        from dpsynth.train import warm_start

        changed = training_changes(before, new)
        changed += [
            f"train.init_adapter (its {a} arm started from other weights)"
            for a in warm_start.changed(new, run, new.train.arms)
        ]
    if changed:
        raise DPSynthError(
            f"{run.root} was made with other settings of {', '.join(changed)}: use a new --out directory (or delete "
            "that row) rather than mixing rows of two configurations in one frontier (a fine-tuned row is kept, and "
            "generated again, when only generate.*, frontier.n_synthetic or frontier.draws changed; every row is "
            "kept, and scored again, when only evaluate.* changed)"
        )
    _check_format(cfg, run, row)


def _check_format(cfg: Config, run: RunDir, row: RowSpec) -> None:
    """Refuse a fine-tuned row whose arm records another prompt format than today's
    (:mod:`dpsynth.train.prompt_format`): its kept records, or the arm they would be generated from again, came from a
    format no setting shows."""
    if row.eps in (0.0, "real") or cfg.generator == "pe":
        return
    from dpsynth.train import prompt_format

    arm = "no_dp" if row.eps == "inf" else "dp"
    if (why := prompt_format.stale(cfg.model, run, arm)) is not None:
        raise DPSynthError(f"frontier row {row.key}: {why}; use a new --out directory (or delete that row)")


def name_kept_row(cfg: Config, root: RunDir, row: RowSpec, sweep_evaluate: dict[str, Any] | None) -> None:
    """Write into a finished row's ``row.json`` the evaluate section it was made under, when it is kept through a
    fallback (:func:`~dpsynth.frontier.fingerprint.kept_evaluate`). Called after every :func:`check_reuse` passed and
    before the sweep's config is overwritten, so that a crash in the scoring that follows leaves a rerun able to keep
    the row."""
    run = RunDir(root.root / "rows" / row.key)
    done = run.root / "row.json"
    if not done.is_file():
        return
    info = read_json(done)
    made = kept_evaluate(cfg, row, info, run.config, sweep_evaluate)
    if made is not None and info.get("evaluate") != made:
        write_json(done, {**info, "evaluate": made})


def copy_prepared(src: RunDir, dst: RunDir) -> None:
    """Give a row's run directory the frontier's prepared data (the same split for every row)."""
    dst.data_dir.mkdir(parents=True, exist_ok=True)
    for name in _DATA_FILES:
        if (src.data_dir / name).is_file() and not (dst.data_dir / name).is_file():
            shutil.copy2(src.data_dir / name, dst.data_dir / name)


def row_config(cfg: Config, row: RowSpec, *, prefix_cache_dir: Path | None = None) -> Config:
    """The run configuration of a generated row: one arm (or PE), ``n_synthetic`` records, the row's epsilon."""
    if cfg.generator == "pe" and row.eps == "inf":
        raise ConfigError(
            "frontier: a generator=pe sweep has no eps=inf row (PE without noise is not its non-DP baseline); "
            "drop inf from frontier.eps, and read the non-DP fine-tuned row from a generator=finetune sweep"
        )
    arm = "no_dp" if row.eps == "inf" else "dp"
    raw = cfg.model_dump(mode="json", by_alias=True)
    raw["train"]["arms"] = [arm]
    raw["generate"]["arms"] = [arm]
    raw["generate"]["num_records"] = cfg.frontier.n_synthetic * cfg.frontier.draws  # the draws: disjoint slices
    raw["pe"]["candidates"] = None  # PE writes generate.num_records: every row has n_synthetic x draws records
    if raw["train"].get("prefix_cache_dir") is None and prefix_cache_dir is not None:
        raw["train"]["prefix_cache_dir"] = str(prefix_cache_dir)  # every trained row, the same examples: one cache
    if isinstance(row.eps, float):
        raw["privacy"]["target_epsilon"] = row.eps
        raw["privacy"]["noise_multiplier"] = None
    return Config.model_validate(raw)


def make_row(
    cfg: Config, root: RunDir, row: RowSpec, *, progress: bool, sweep_evaluate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Produce a row's training records (synthetic or real) and write ``row.json``; returns it. Skips a finished row
    (:func:`~dpsynth.frontier.fingerprint.kept_evaluate`; ``sweep_evaluate``: the previous run's evaluate section)."""
    run = RunDir(root.root / "rows" / row.key)
    done = run.root / "row.json"
    fp = fingerprint(cfg, row)
    if done.is_file():
        info: dict[str, Any] = read_json(done)
        made = kept_evaluate(cfg, row, info, run.config, sweep_evaluate)
        now = _prompted_format(cfg, root, info) if made is not None and row.eps == 0.0 else None
        if now is not None and now != info["prompt_format"]:
            log.warning("frontier: row eps0 was prompted in another prompt format than today's; remade")
            made = None
        if made is not None:
            log.info("frontier: row %s already finished, kept", row.key)
            return {**info, "evaluate": made}  # row.json names it already (name_kept_row, run before any row)
        check_reuse(cfg, root, row, sweep_evaluate=sweep_evaluate)
        trained = row.eps not in (0.0, "real")
        log.warning(
            "frontier: row %s: %s",
            row.key,
            "only settings after training changed; its trained arm and release are kept and it generates again"
            if trained
            else "its configuration changed; remade (it holds no release)",
        )
        # row.json stays until the new one replaces it: check_reuse reads the row's config.yaml either way. Its
        # cached scores go: a row remade under an unchanged fingerprint (eps 0 in another prompt format) would keep them
        (run.root / "scores.json").unlink(missing_ok=True)
    copy_prepared(root, run)
    row_info = _length_bound(cfg, run, row)
    timings: dict[str, float] = {}
    records_path = run.root / "records.jsonl"
    extra: dict[str, Any] = {}
    if row.eps == "real":
        # Real rows store which training records they use, never the records: private text stays in DIR/data only.
        keep = _real_indices(root, None if row.real_n is None else cfg.frontier.n_synthetic, cfg.data.seed)
        write_json(run.root / "real_indices.json", {"indices": keep})
        records_path = run.root / "real_indices.json"
    elif row.eps == 0.0:
        start = time.perf_counter()
        budget = generation_budget(row_info, cfg.generate.max_new_tokens)
        g = cfg.generate.model_copy(update={"max_new_tokens": budget})
        rows = _prompted_rows(cfg.model_copy(update={"generate": g}), root, progress=progress)
        timings["generate"] = time.perf_counter() - start
        write_jsonl(records_path, rows)
        if cfg.generator != "pe":
            from dpsynth.train import prompt_format

            extra["prompt_format"] = prompt_format.current(cfg.model, root)
    else:
        extra = _trained_row(cfg, run, row, records_path, timings, progress=progress)
    info = {
        "key": row.key,
        "eps": row.eps,
        "fingerprint": fp,
        "evaluate": cfg.evaluate.model_dump(mode="json"),  # scoring only: another one keeps the row (kept_evaluate)
        "records": str(records_path.relative_to(root.root)),
        "n_records": len(load_records(root, records_path)),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        **extra,
    }
    if "length_release" in row_info:  # data.max_tokens=auto: the row's own bound and how it was read
        info["length_bound"] = {k: row_info["length_release"][k] for k in ("mode", "max_tokens")}
    write_json(done, info)
    return info


def _prompted_format(cfg: Config, root: RunDir, info: dict[str, Any]) -> str | None:
    """Today's prompt format (:mod:`dpsynth.train.prompt_format`) where a kept eps-0 row recorded the one it was
    prompted in; None where it recorded none (made before the key, or by a PE sweep): it is kept as before."""
    if not info.get("prompt_format"):
        return None
    from dpsynth.train import prompt_format

    return prompt_format.current(cfg.model, root)


def _length_bound(cfg: Config, run: RunDir, row: RowSpec) -> dict[str, Any]:
    """The row's ``prepare.json`` with ``data.max_tokens=auto`` resolved for it (:mod:`dpsynth.train.length`): a DP
    row releases the bound at its own epsilon, within its arm's target and charged when drawn; eps inf reads it
    exactly (never released); eps 0 and real rows read no private data for it (``data.max_tokens_public``). A row
    resolved before keeps its bound."""
    from dpsynth.train.length import resolve_length_bound

    if cfg.data.max_tokens != "auto":
        return load_prepare_info(run)
    if row.eps in (0.0, "real"):
        return resolve_length_bound(cfg, run, "public")
    return resolve_length_bound(row_config(cfg, row), run, "exact" if row.eps == "inf" else "dp")


def _train_seconds(run: RunDir, stamp: Path) -> float | None:
    """The training time of the row's arm: its stamp, else (rows made before stamps) the time in its old row.json,
    else unknown (None)."""
    if stamp.is_file():
        return float(read_json(stamp)["seconds"])
    before = read_json(run.root / "row.json") if (run.root / "row.json").is_file() else {}
    seconds = before.get("seconds", {}).get("train")
    return None if seconds is None else float(seconds)


def _checkpoint_step(run: RunDir, arm: str) -> int:
    """The step a crashed training attempt of ``arm`` left its checkpoint at (0 when there is none)."""
    from dpsynth.train.checkpoint import checkpoint_step

    return checkpoint_step(run.checkpoints(arm))


def _logged_seconds(run: RunDir, arm: str, *, through_step: int) -> float:
    """The step times that ``train_log.jsonl`` records for steps 1..``through_step``: what an earlier, interrupted
    attempt spent on the steps it finished (not its set-up: model load, the code histogram's release, building a
    prefix cache, which a crash may cost again)."""
    if through_step <= 0 or not run.train_log(arm).is_file():
        return 0.0
    rows = read_jsonl(run.train_log(arm))
    return float(sum(r.get("seconds", 0.0) for r in rows if int(r["step"]) <= through_step))


def _real_training(root: RunDir) -> list[Any]:
    canaries = {c.unit for c in read_canaries(root.canaries)} if root.canaries.is_file() else set()
    return [r for r in read_records(root.train) if r.unit not in canaries]


def _real_indices(root: RunDir, n: int | None, seed: int) -> list[int]:
    """Positions of ``n`` real training records (canaries excluded), drawn without replacement (seeded), or all."""
    total = len(_real_training(root))
    if n is not None and n < total:
        return sorted(random.Random(f"dpsynth-frontier-real-{seed}").sample(range(total), n))
    return list(range(total))


def load_records(root: RunDir, path: Path) -> list[dict[str, Any]]:
    """A row's training records as ``{"text", "codes"}``: its generated file, or the real records it names."""
    if path.name == "real_indices.json":
        records = _real_training(root)
        return [{"text": records[i].text, "codes": dict(records[i].codes)} for i in read_json(path)["indices"]]
    return [{"text": r["text"], "codes": r["codes"]} for r in read_jsonl(path)]


def _prompted_rows(cfg: Config, root: RunDir, *, progress: bool) -> list[dict[str, Any]]:
    """eps = 0: the pretrained model with no private data (no adapter, or the public warm start
    ``train.init_adapter`` that every trained row starts from), codes uniform over their public domains, sampled by
    the same engine and settings as every other row (:func:`dpsynth.generate.engine.generate_from_codes`)."""
    from dpsynth.data.format import parse_response
    from dpsynth.generate.engine import generate_from_codes

    info = load_prepare_info(root)
    specs = load_code_specs(root)
    rng = np.random.default_rng(cfg.generate.seed)
    n = cfg.frontier.n_synthetic * cfg.frontier.draws  # the draws: disjoint slices, codes drawn one by one
    codes = [{s.name: s.values[int(rng.integers(len(s.values)))] for s in specs} for _ in range(n)]
    texts = generate_from_codes(
        cfg.model,
        cfg.train.init_adapter,
        codes,
        info["system_prompt"],
        cfg.generate,
        domains={s.name: list(s.values) for s in specs},
        progress=progress,
        desc="generate eps0",
    )
    include_title = bool(info.get("include_title", False))
    return [{"text": parse_response(t, include_title)[1], "codes": c} for t, c in zip(texts, codes, strict=True)]


def _trained_row(
    cfg: Config, run: RunDir, row: RowSpec, records_path: Path, timings: dict[str, float], *, progress: bool
) -> dict[str, Any]:
    """A fine-tuned row: train the one arm (resuming a crashed one), generate, keep text and codes."""
    from dpsynth import api

    rcfg = row_config(cfg, row, prefix_cache_dir=run.root.parent.parent / "prefix_cache")
    reused = False
    if rcfg.generator == "pe":
        # Training-free: the whole Private Evolution run is generation (model calls, votes, selection); an
        # interrupted run continues from its last iteration under the ledger entry it reserved.
        arm = "pe"
        start = time.perf_counter()
        api.generate(rcfg, run.root, progress=progress, resume=True)
        timings["generate"] = time.perf_counter() - start
        privacy = read_json(run.privacy_json(arm))
    else:
        arm = rcfg.train.arms[0]
        stamp = run.root / "train_seconds.json"
        reused = api._arm_finished(run, arm)
        resumed_at = _checkpoint_step(run, arm)
        start = time.perf_counter()
        privacy = api.train(rcfg, run.root, resume=True, progress=progress)[arm]
        # a kept arm reports the training time it cost when it was trained, not the moment it took to find it: kept
        # beside the arm, since a row that crashed after training (while generating) has no row.json to carry it
        if not reused:
            earlier = _logged_seconds(run, arm, through_step=resumed_at)
            write_json(stamp, {"seconds": time.perf_counter() - start + earlier})
        seconds = _train_seconds(run, stamp)
        if seconds is not None:
            timings["train"] = seconds
        start = time.perf_counter()
        api.generate(rcfg, run.root, progress=progress)
        timings["generate"] = time.perf_counter() - start
    rows = [{"text": r["text"], "codes": r["codes"]} for r in read_jsonl(run.generated(arm))]
    write_jsonl(records_path, rows)
    out: dict[str, Any] = {"arm": arm}
    if arm != "pe":
        out["reused_training"] = reused
    if privacy.get("dp"):
        ledger = privacy.get("ledger") or {}
        out["privacy"] = {
            "epsilon": privacy["epsilon"],
            "delta": privacy["delta"],
            "noise_multiplier": privacy["noise_multiplier"],
            "steps": privacy["steps"],
            "ledger_entry": ledger.get("entry"),
        }
    return out
