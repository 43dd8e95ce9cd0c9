"""The checkpoint of a PE run: written after the code release and after every iteration, read by ``--resume``.

What it holds: the plan (a resume must find the same one, so a changed configuration can never silently change what
was accounted), the released code distribution, how many vote histograms have been released, the current population
(synthetic text only) and the state of the noise generator. A resume continues from the last finished iteration:
finished iterations are never voted on again, and the noise generator continues from where it stood, so no noise is
drawn twice. The ledger reservation is the run directory's pending entry, which ``Ledger.begin`` hands back instead
of charging again.

The file is **private** (the noise generator's state would let its reader subtract the noise from the released
counts): it lives in ``DIR/pe/checkpoints/`` beside the DP arm's checkpoints and is deleted when the run finishes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.rundir import read_json, write_json


@dataclass
class PEState:
    """Everything a resume needs (see the module docstring)."""

    plan: dict[str, Any]
    names: list[str]
    code_release: dict[str, Any]
    quota: list[list[Any]]  # [[cell as a list of code values, selected per iteration], ...]
    noise_state: dict[str, Any]  # numpy bit generator state of the vote noise
    iteration: int = 0  # vote histograms released so far
    population: list[dict[str, Any]] = field(default_factory=list)  # {"text", "title", "codes"}
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per finished iteration

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PEState:
        return cls(**obj)

    def noise_rng(self) -> np.random.Generator:
        """The vote-noise generator, continuing exactly where the last checkpoint left it."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.noise_state
        return rng


def save_state(path: Path, state: PEState) -> None:
    write_json(path, state.to_json())


def load_state(path: Path) -> PEState | None:
    return PEState.from_json(read_json(path)) if Path(path).is_file() else None
