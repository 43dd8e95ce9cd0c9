"""Checkpoints for ``--resume``: adapter, optimizer, random generators, step count and the privacy plan.

A checkpoint is a directory replaced atomically, so a crash while writing one leaves the previous one intact. It
holds the state needed to continue *the same* mechanism: the Poisson sampler's and the noise generator's states
continue where they stopped (a resumed run draws fresh noise, never the noise of earlier steps again), and the step
count is what the accountant charges. ``meta.json`` carries numbers only, never training text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpsynth.rundir import aside_path, atomic_path, dumps, read_json

STATE = "state.pt"
META = "meta.json"


@dataclass
class Checkpoint:
    """Everything a training run needs to continue exactly where it stopped.

    ``generators``: the Poisson sampler's and the DP noise's generator states, and on CUDA ``device_rng``, the GPU's
    own random state (dropout); ``torch_rng``: the CPU's; ``meta``: what the run checks before resuming (its plan,
    steps, warm start, and the device type the states belong to)."""

    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generators: dict[str, torch.Tensor]
    torch_rng: torch.Tensor
    meta: dict[str, Any]


def save_checkpoint(directory: Path, ckpt: Checkpoint) -> None:
    """Write ``directory`` atomically (a temporary directory renamed into place)."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        torch.save(
            {
                "step": ckpt.step,
                "trainable": ckpt.trainable,
                "optimizer": ckpt.optimizer,
                "generators": ckpt.generators,
                "torch_rng": ckpt.torch_rng,
            },
            tmp / STATE,
        )
        (tmp / META).write_text(dumps({"step": ckpt.step, **ckpt.meta}) + "\n", encoding="utf-8")


def _complete(directory: Path) -> Path | None:
    """``directory`` when it holds a whole checkpoint, else the previous one that a replacement interrupted between
    its two renames left aside (:func:`dpsynth.rundir.atomic_path`), else None."""
    for candidate in (directory, aside_path(directory)):
        if (candidate / STATE).is_file() and (candidate / META).is_file():
            return candidate
    return None


def checkpoint_step(directory: Path) -> int:
    """The step of the checkpoint :func:`load_checkpoint` would load (0 when there is none)."""
    found = _complete(Path(directory))
    return int(read_json(found / META)["step"]) if found is not None else 0


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None when there is none."""
    found = _complete(Path(directory))
    if found is None:
        return None
    directory = found
    state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    meta = read_json(directory / META)
    meta.pop("step", None)
    return Checkpoint(
        step=int(state["step"]),
        trainable=state["trainable"],
        optimizer=state["optimizer"],
        generators=state["generators"],
        torch_rng=state["torch_rng"],
        meta=meta,
    )
