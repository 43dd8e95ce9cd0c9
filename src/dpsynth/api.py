"""The Python API: one function per stage, each reading and writing one run directory.

>>> from dpsynth.api import run_pipeline          # doctest: +SKIP
>>> from dpsynth.config import load_config        # doctest: +SKIP
>>> run_pipeline(load_config(None, ["train.max_steps=5"]), "runs/demo")  # doctest: +SKIP

The CLI (:mod:`dpsynth.cli`) is a thin layer over these functions. Each stage saves the resolved configuration as
``DIR/config.yaml`` before it starts, so a run directory always says how it was made. A stage (or ``run_pipeline``)
that fails in a directory it created removes that directory again (:func:`dpsynth.rundir.removed_on_failure`), so bad
input leaves nothing behind.

Importing this module is cheap: every stage imports its heavy libraries (torch, transformers, opacus) when it runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dpsynth.allocator import release_freed_memory
from dpsynth.config import Config, load_config
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.rundir import ARMS, Arm, RunDir, read_json, read_jsonl, removed_on_failure, write_text
from dpsynth.tracking import tracked

StageCallback = Callable[[str, Any], None]
"""``on_stage(stage, result)``: called by :func:`run_pipeline` as each stage ends, with what that stage returned."""

log = logging.getLogger(__name__)


def open_run(out: Path | str) -> RunDir:
    return RunDir(Path(out))


def save_config(cfg: Config, run: RunDir) -> None:
    write_text(run.config, cfg.to_yaml())


def load_run_config(out: Path | str, config: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a run: ``config`` if given, else the run's saved ``config.yaml``, else defaults; plus overrides."""
    run = open_run(out)
    if config is None and run.config.is_file():
        config = run.config
    return load_config(config, overrides or [])


def prepare(cfg: Config, out: Path | str) -> dict[str, Any]:
    """Read, clean, bound and split the private data into ``DIR/data``; returns prepare.json (counts only)."""
    from dpsynth.data.prepare import prepare_data

    _one_process("prepare")
    run = open_run(out)
    with removed_on_failure(run.root):
        save_config(cfg, run)
        info = prepare_data(cfg.data, run)
        if cfg.data.max_tokens == "auto":  # the DP length bound, charged when drawn (dpsynth.train.length)
            from dpsynth.train import warm_start
            from dpsynth.train.length import arm_mode, resolve_length_bound

            # a warm start that training would refuse is refused before the length is charged (PE configs have none)
            warm_start.check(cfg, run.root, (info.get("source") or {}).get("fingerprint"))

            info = resolve_length_bound(cfg, run, arm_mode(cfg))
        return info


def source_fingerprint(cfg: Config) -> str:
    """The fingerprint that :func:`prepare` records for ``cfg.data``'s source, which the ledger charges releases to.

    Reads the whole source exactly as ``prepare`` does (same reader, schema, field mapping and normalisation) and
    writes nothing; ``dpsynth budget set FILE`` uses it to find the source a file is.
    """
    from dpsynth.data.prepare import read_source

    return read_source(cfg.data).fingerprint.hexdigest()


def train(cfg: Config, out: Path | str, *, resume: bool = False, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train every arm in ``cfg.train.arms``; returns each arm's privacy.json.

    Under ``torchrun`` every rank calls this; rank 0 writes every file and returns the results, the other ranks
    return ``{}`` (:mod:`dpsynth.train.distributed`).
    """
    from dpsynth.train import distributed
    from dpsynth.train.prefix import kept_between_arms
    from dpsynth.train.stage import commit_release, train_arm

    if cfg.generator == "pe":
        raise ConfigError(
            "generator=pe trains nothing (Private Evolution only calls the model): run `dpsynth generate` or "
            "`dpsynth run` with generator=pe, or train with generator=finetune"
        )
    run = open_run(out)
    if not run.train.is_file():
        raise DPSynthError(f"{run.train} is missing: run `dpsynth prepare --out {run.root}` first")
    if resume:  # before a torchrun launch too: the launcher saves the new settings over the old ones
        _check_resumable(cfg, run)
    if cfg.train.distributed and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(cfg, run, resume=resume, progress=progress)
    dist = distributed.init_from_env()
    if dist.is_main:
        save_config(cfg, run)
    results: dict[str, dict[str, Any]] = {}
    with tracked(cfg, run, "train", enabled=dist.is_main) as tracker, kept_between_arms():
        for arm in cfg.train.arms:
            if resume and _arm_finished(run, arm):
                # Retraining a finished arm would be a second release from the same data: resume never does that.
                log.info("resume: the %s arm already finished (%s), not training it again", arm, run.privacy_json(arm))
                if dist.is_main:  # finishes a crashed commit of the DP arm (the non-DP arm has none)
                    done = read_json(run.privacy_json(arm))
                    results[arm] = commit_release(cfg, run, done) if arm == "dp" else done
            else:
                results[arm] = train_arm(
                    cfg, run, arm, resume=resume, progress=progress, on_step=partial(tracker.log_step, arm)
                )
            if dist.is_main:
                tracker.log_privacy(arm, results[arm])
    distributed.shutdown()
    return results if dist.is_main else {}


def _launch_torchrun(cfg: Config, run: RunDir, *, resume: bool, progress: bool) -> dict[str, dict[str, Any]]:
    """``train.distributed``: run ``dpsynth train`` under torchrun (PyTorch's launcher, not a home-made one) with
    ``train.nproc_per_node`` ranks on this machine and the run's saved configuration; returns each arm's privacy.json.

    Rank 0 prints the progress; a failed rank fails the launch, and the checkpoints it left resume with ``--resume``
    (no ledger release is committed before an arm has finished)."""
    import subprocess
    import sys

    save_config(cfg, run)
    n = cfg.train.nproc_per_node
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    cmd += ["-m", "dpsynth", "train", "--out", str(run.root), "--config", str(run.config)]
    cmd += (["--resume"] if resume else []) + ([] if progress else ["--quiet"])
    from dpsynth.machine import usable_cores

    cores = usable_cores()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, cores // n)))}
    env[LAUNCHED_ENV] = "1"  # the ranks leave the summary to this process, which prints it once
    log.info("train.distributed: %s", " ".join(cmd))
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        raise DPSynthError(
            f"torchrun with {n} training processes exited with status {done.returncode}; finished arms are kept, "
            f"and an interrupted one continues from its checkpoint, under the ledger reservation it made, with "
            f"`dpsynth train --out {run.root} --resume` (or give the reservation up: `dpsynth budget show`, then "
            "`dpsynth budget abandon`)"
        )
    return {arm: read_json(run.privacy_json(arm)) for arm in cfg.train.arms}


LAUNCHED_ENV = "DPSYNTH_TORCHRUN_CHILD"  # set for the ranks that `train.distributed` launches


def _one_process(stage: str) -> None:
    """Only training runs on several ranks: N copies of another stage would write the same files at once."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DPSynthError(f"`dpsynth {stage}` runs in one process: only `dpsynth train` runs under torchrun")


def _check_resumable(cfg: Config, run: RunDir) -> None:
    """Refuse ``--resume`` under other training settings than those of the arms already trained or checkpointed:
    the kept arm (a release, for the DP arm) would be labelled with settings it was not made with."""
    from dpsynth.config_diff import training_changes

    started = [a for a in ARMS if _arm_finished(run, a) or (run.arm(a) / "checkpoints").is_dir()]
    if not started or not run.config.is_file():
        return
    try:
        before = load_config(run.config)
    except DPSynthError as exc:
        raise DPSynthError(f"--resume: cannot read the settings {', '.join(started)} trained with ({exc})") from exc
    from dpsynth.train import warm_start

    changed = training_changes(before, cfg, started)
    changed += [
        f"train.init_adapter or model.name's merged warm start (the {a} arm started from other weights)"
        for a in warm_start.changed(cfg, run, started)
    ]
    if changed:
        raise DPSynthError(
            f"--resume: the {', '.join(started)} arm(s) in {run.root} were trained with other settings of "
            f"{', '.join(changed)} (saved in {run.config}); resume with those, or train into a new directory"
        )


def _arm_finished(run: RunDir, arm: Arm) -> bool:
    """privacy.json is written last, after the adapter was saved and verified: its presence means done."""
    return run.privacy_json(arm).is_file() and (run.adapter(arm) / "adapter_config.json").is_file()


def generate(cfg: Config, out: Path | str, *, progress: bool = True, resume: bool = False) -> dict[str, dict[str, Any]]:
    """Generate synthetic records for every arm in ``cfg.generate.arms``; with ``generator: pe``, run Private
    Evolution instead (``DIR/pe``, a DP release charged to the ledger; ``resume`` continues an interrupted run)."""
    _one_process("generate")
    run = open_run(out)
    if cfg.generator == "pe":
        from dpsynth.pe.run import ARM, run_pe

        with removed_on_failure(run.root):
            save_config(cfg, run)
            run_pe(cfg, run, resume=resume, progress=progress)
            return {ARM: {"arm": ARM, "records": len(read_jsonl(run.generated(ARM))), "path": str(run.generated(ARM))}}
    from dpsynth.generate.stage import generate_arm

    with removed_on_failure(run.root):
        save_config(cfg, run)
        return {arm: generate_arm(cfg, run, arm, progress=progress) for arm in cfg.generate.arms}


def audit(cfg: Config, out: Path | str, *, progress: bool = True) -> dict[str, Any]:
    """One-run privacy audit of the run's training in ``DIR/audit`` (trains its own arms); returns audit.json."""
    from dpsynth.privacy.audit_run import run_audit

    if cfg.generator == "pe":
        raise ConfigError(
            "the one-run audit tests DP-SGD training (canaries in the training set); generator=pe trains nothing, "
            "so auditing it would fine-tune and release a model the run never used"
        )
    run = open_run(out)
    if not run.prepare_json.is_file():
        raise DPSynthError(f"{run.prepare_json} is missing: run `dpsynth prepare --out {run.root}` first")
    return run_audit(cfg, run, progress=progress)


def evaluate(cfg: Config, out: Path | str, *, progress: bool = True) -> dict[str, Any]:
    """Privacy, fidelity, utility and quality of every arm -> ``DIR/eval/metrics.json`` (and the report); returns
    the metrics document."""
    from dpsynth.evaluate.run import evaluate_run

    _one_process("evaluate")
    run = open_run(out)
    with removed_on_failure(run.root) as keep, tracked(cfg, run, "evaluate") as tracker:
        save_config(cfg, run)
        metrics = evaluate_run(cfg, run, progress=progress)
        keep()  # metrics.json is written: a failing report leaves it there
        tracker.log_metrics(metrics)
        try:
            from dpsynth.report import build_report
        except ImportError:
            log.warning("the report builder is not available yet: wrote %s only", run.metrics_json)
        else:
            build_report(run)
            tracker.log_report(run.report_html)
    return metrics


def run_pipeline(
    cfg: Config,
    out: Path | str,
    *,
    resume: bool = False,
    progress: bool = True,
    stages: tuple[str, ...] | None = None,
    on_stage: StageCallback | None = None,
) -> dict[str, Any]:
    """prepare -> train -> generate -> evaluate; ``resume`` skips finished stages' work. With ``generator: pe``
    there is nothing to train: generate runs Private Evolution.

    Returns each stage's result by name; ``on_stage(name, result)`` is also called as each stage ends (the CLI
    prints the stage's summary then, not after the whole run).
    """
    run = open_run(out)
    results: dict[str, Any] = {}
    wanted = stages or ("prepare", "train", "generate", "evaluate")
    steps: dict[str, Callable[[], Any]] = {
        "prepare": lambda: prepare(cfg, out),
        "train": lambda: train(cfg, out, resume=resume, progress=progress),
        "generate": lambda: generate(cfg, out, progress=progress, resume=resume),
        "evaluate": lambda: evaluate(cfg, out, progress=progress),
    }
    with removed_on_failure(run.root) as keep:
        for stage, step in steps.items():
            if stage not in wanted or (stage == "train" and cfg.generator == "pe"):
                continue
            if stage == "prepare" and resume and run.prepare_json.is_file():
                log.info("resume: %s exists, keeping the prepared data", run.prepare_json)
                continue
            results[stage] = step()
            release_freed_memory()  # the next stage starts from its own peak (dpsynth.allocator)
            keep()  # a finished stage is worth keeping (and resuming from) whatever happens next
            if on_stage is not None:
                on_stage(stage, results[stage])
    return results
