"""The frontier driver: prepare once, make every row with the ordinary stages, score them, write the outputs.

>>> from dpsynth.config import load_config                                          # doctest: +SKIP
>>> from dpsynth.frontier.run import run_frontier                                    # doctest: +SKIP
>>> doc = run_frontier(load_config(None, ["frontier.eps=[0,4,inf]"]), "runs/frontier")  # doctest: +SKIP

Layout of ``DIR``::

    DIR/config.yaml  DIR/data/ (prepared once: the same split for every row)
    DIR/rows/<key>/  a run directory per row (adapter, privacy.json, generated records), records.jsonl, row.json,
                     scores.json
    DIR/frontier.json  DIR/frontier.md  DIR/frontier.html

Resuming: a finished row (``row.json``) and its scores (``scores.json``) are kept when the configuration is the same
(``frontier.mauve_repeats`` and ``evaluate.*`` change the scores alone: a new value scores the kept rows again);
an interrupted DP row resumes its training from the last checkpoint, under the ledger entry it reserved. Changing only
``generate.*``, ``frontier.n_synthetic`` or ``frontier.draws`` keeps the trained arms and generates again
(:func:`dpsynth.frontier.rows.check_reuse`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpsynth import machine
from dpsynth.allocator import release_freed_memory
from dpsynth.config import Config
from dpsynth.data.prepare import prepared_cut_rule
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.frontier.fingerprint import LENGTH_KEYS, evaluate_section, scores_key
from dpsynth.frontier.metrics import load_reference, score_draws, score_row
from dpsynth.frontier.output import write_outputs
from dpsynth.frontier.rows import check_reuse, load_records, make_row, name_kept_row, row_config
from dpsynth.frontier.spec import RowSpec, row_specs
from dpsynth.rundir import RunDir, read_json, write_json, write_text
from dpsynth.train import warm_start

log = logging.getLogger(__name__)


def _data_fingerprint(cfg: Config) -> str:
    # the token cut is the rule from before the key existed: left out then, sweeps prepared since keep their data
    exclude = {"cut_responses"} if cfg.data.cut_responses == "token" else set()
    if cfg.data.max_tokens != "auto":  # the length release's settings, read only by auto: as before they existed
        exclude |= set(LENGTH_KEYS)
    return hashlib.sha256(cfg.data.model_dump_json(by_alias=True, exclude=exclude).encode()).hexdigest()[:16]


def _prepare(cfg: Config, root: RunDir) -> dict[str, Any]:
    """Prepare the data once; a rerun keeps it if the data configuration is unchanged, and refuses otherwise."""
    from dpsynth.data.prepare import load_prepare_info, prepare_data

    state_path = root.root / "frontier_state.json"
    fp = _data_fingerprint(cfg)
    if root.prepare_json.is_file() and state_path.is_file():
        if read_json(state_path).get("data_fingerprint") != fp:
            raise DPSynthError(f"{root.root} was prepared with another data configuration: use a new --out directory")
        return load_prepare_info(root)
    info = prepare_data(cfg.data, root)
    write_json(state_path, {"data_fingerprint": fp})
    return info


def _dataset_name(info: dict[str, Any]) -> str:
    """The source file with its folder (``yelp/dev.csv.gz``): a bare ``dev.csv.gz`` says nothing of the data set."""
    path = str(info.get("source", {}).get("path", "demo"))
    if "/" not in path and "\\" not in path:
        return path
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def run_frontier(
    cfg: Config,
    out: Path | str,
    *,
    command: str = "",
    progress: bool = True,
    on_row: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep configured in ``cfg.frontier`` in ``out``; returns the frontier.json document."""
    if cfg.model.api_base is not None:
        raise ConfigError(
            "frontier: model.api_base is not supported yet (the eps 0 row and the evaluation run model.name on this "
            "machine, so the rows would compare two models); run the sweep with model.name"
        )
    if cfg.generator == "pe" and "inf" in cfg.frontier.eps:
        row_config(cfg, RowSpec("epsinf", "inf"))  # refused before anything is written, with the reason
    if cfg.generator == "pe" and cfg.frontier.draws > 1:
        raise ConfigError(
            "frontier.draws > 1 needs records drawn independently one by one; Private Evolution's are selected "
            "together (frontier.draws=1)"
        )
    root = RunDir(Path(out))
    specs = row_specs(cfg.frontier.eps, real_all=cfg.frontier.real_all)
    warm_start.check(cfg, root.root, None)
    earlier = evaluate_section(root.config)  # how the kept rows were scored: a row made before 2026-12-04 may not say
    for spec in specs:
        check_reuse(cfg, root, spec, sweep_evaluate=earlier)  # every refusal before anything is written or row touched
    for spec in specs:
        name_kept_row(cfg, root, spec, earlier)  # before DIR/config.yaml, the fallback, is overwritten
    root.root.mkdir(parents=True, exist_ok=True)
    write_text(root.config, cfg.to_yaml())
    start = time.perf_counter()
    info = _prepare(cfg, root)
    warm_start.check(cfg, root.root, (info.get("source") or {}).get("fingerprint"))  # before any row or charge
    ref = load_reference(cfg, root)
    rows: list[dict[str, Any]] = []
    bounds: dict[str, Any] = {}
    for spec in specs:
        log.info("frontier: row %s", spec.key)
        made = make_row(cfg, root, spec, progress=progress, sweep_evaluate=earlier)
        scores_path = root.root / "rows" / spec.key / "scores.json"
        cached = read_json(scores_path) if scores_path.is_file() else None
        scored = scores_key(cfg, made["fingerprint"], made.get("evaluate"))
        if cached is not None and cached.get("fingerprint") == scored:
            entries = cached["entries"]
        else:
            t0 = time.perf_counter()
            records = load_records(root, root.root / made["records"])
            if spec.eps != "real" and cfg.frontier.draws > 1:
                entries = score_draws(cfg, ref, made, records, draws=cfg.frontier.draws)
            else:
                entries = score_row(cfg, ref, made, records, synthetic=spec.eps != "real")
            seconds = round(time.perf_counter() - t0, 1)
            for e in entries:
                e["seconds_evaluate"] = seconds
                e["seconds"] = round(e["seconds"] + seconds, 1)  # the row's train + generate + evaluate
            write_json(scores_path, {"fingerprint": scored, "entries": entries})
        if made.get("length_bound") is not None:
            bounds[spec.key] = made["length_bound"]
        release_freed_memory()  # each row starts from its own peak, not the sweep's highest (dpsynth.allocator)
        for e in entries:
            e["privacy"] = made.get("privacy")
            # the records a side of each MAUVE draw (mauve_over_draws: all the row's records against the test split,
            # the smaller side's size): MAUVE depends on it, and a real_all row's differs from the others'
            per_draw = int(made["n_records"]) // (cfg.frontier.draws if spec.eps != "real" else 1)
            e["mauve_n"] = None if e.get("mauve") is None else min(per_draw, len(ref.test_texts))
        rows.extend(entries)
        if on_row is not None:
            on_row(spec.key, entries)
    counts = info["counts"]
    doc: dict[str, Any] = {
        "dataset": _dataset_name(info),
        "generator": cfg.generator,
        "model": cfg.model.name,
        "init_adapter": None if cfg.train.init_adapter is None else str(cfg.train.init_adapter),
        **({"merged_warm_start": merged} if (merged := warm_start.merged_stamp(cfg)) is not None else {}),
        "n_private": int(counts["train_units"]),
        "n_synthetic": cfg.frontier.n_synthetic,
        "draws": cfg.frontier.draws,  # of n_synthetic records per generated row (frontier.draws)
        "candidates": cfg.generate.candidates,
        "select_by": list(cfg.generate.select_by),
        "n_test": len(ref.test_texts),
        # the length budget of the rows' mauve_bounded (dpsynth.frontier.metrics)
        "length_bound": {"tokens": cfg.generate.max_new_tokens, "cut": prepared_cut_rule(info)},
        # data.max_tokens=auto: each row's training cut and generation budget (dpsynth.train.length)
        "row_length_bounds": bounds or None,
        "labels": ref.labels,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.summary(),
        "seconds_total": round(time.perf_counter() - start, 1),  # this invocation's: short when rows were kept
        "peak_rss_gib": machine.peak_resident_gib(),  # this process's peak resident set (dpsynth.machine)
        # the rows' own time (training and generation when made, their latest scoring), kept rows included
        "seconds_rows": round(sum({r["row"]: r["seconds"] for r in rows}.values()), 1),
        "rows": rows,
    }
    doc["paths"] = write_outputs(root, doc)
    return doc
