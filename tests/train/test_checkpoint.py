"""Checkpoint files: replacing one is safe at every instant, and the step a resume would start from is readable."""

from __future__ import annotations

import os

import pytest
import torch

from dpsynth.rundir import aside_path
from dpsynth.train.checkpoint import Checkpoint, checkpoint_step, load_checkpoint, save_checkpoint


def _ckpt(step: int) -> Checkpoint:
    return Checkpoint(
        step=step,
        trainable={"w": torch.full((2,), float(step))},
        optimizer={},
        generators={},
        torch_rng=torch.get_rng_state(),
        meta={"log": [{"step": s, "seconds": 1.0} for s in range(1, step + 1)]},
    )


def test_a_replacement_interrupted_between_its_renames_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """The old directory is renamed aside before the new one moves in; a crash in between must not lose both."""
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, _ckpt(1))
    save_checkpoint(directory, _ckpt(2))  # an ordinary replacement leaves nothing aside
    assert not aside_path(directory).exists() and checkpoint_step(directory) == 2

    real_replace = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old one is aside, the new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, _ckpt(3))
    monkeypatch.undo()
    assert not directory.exists() and aside_path(directory).is_dir()
    assert checkpoint_step(directory) == 2
    loaded = load_checkpoint(directory)
    assert loaded is not None and loaded.step == 2 and loaded.trainable["w"].tolist() == [2.0, 2.0]
    save_checkpoint(directory, _ckpt(4))  # the next save replaces the stale copy aside
    assert checkpoint_step(directory) == 4 and load_checkpoint(directory).step == 4


def test_a_half_written_checkpoint_counts_as_none(tmp_path):
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, _ckpt(3))
    (directory / "state.pt").unlink()  # meta.json alone: load_checkpoint ignores it, so must the step
    assert load_checkpoint(directory) is None and checkpoint_step(directory) == 0
    assert checkpoint_step(tmp_path / "missing") == 0
