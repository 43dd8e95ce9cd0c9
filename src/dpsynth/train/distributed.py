"""Several training processes (``torchrun``): one DP mechanism, computed by N ranks.

``torchrun --nproc_per_node N -m dpsynth train --out DIR`` starts N copies of the train stage. Each rank holds the
model and computes the clipped per-example gradients of its share of every logical batch; the mechanism is the same as
in one process, and so is its accounting:

- **Sampling.** Every rank draws the same global Poisson batch (rate ``q = batch_size / n`` over all ``n`` units,
  Opacus's ``UniformWithReplacementSampler`` with a generator seeded identically on every rank: rank 0's seed,
  broadcast) and takes every N-th example of it . So the union of the ranks' batches is
  exactly the one-process batch, and every rank takes every step, empty share or not (Opacus's
  ``DistributedUniformWithReplacementSampler`` skips a rank's empty batch, which leaves the ranks' collective calls out
  of step). The sampler is :class:`dpsynth.train.batching.ShardedPoissonSampler`.
- **Noise.** Opacus's ``DistributedDPOptimizer``: each rank clips and sums its share, rank 0 alone adds Gaussian noise
  of standard deviation ``sigma * C``, and the sum over ranks is all-reduced; dividing by each rank's expected batch
  ``B / N`` and averaging over N ranks gives ``(sum of clipped gradients + noise) / B``, the one-process update.
- **Release.** One plan and one accountant (computed identically on every rank from public settings); rank 0 alone
  reserves and commits the ledger entry, releases the control-code histogram, writes checkpoints, the adapter,
  ``privacy.json`` and the log, and shows progress.

The process group is made from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), with ``gloo``
on CPU and ``nccl`` on CUDA (one device per local rank).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from dpsynth.errors import DPSynthError

log = logging.getLogger(__name__)
T = TypeVar("T")


def launched_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Dist:
    """This process's place among the training ranks (rank 0 of 1 in a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (for logging: the global batch's loss and size)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.tolist()

    def run_on_main(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 alone; if it raises there, every rank raises (the others instead of waiting forever)."""
        result: T | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:
                error = exc
        message = self.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if message is not None:
            raise DPSynthError(f"rank 0 stopped: {message}")
        return result

    def shared_seed(self, seed: int | None) -> int:
        """``seed``, or fresh OS entropy drawn by rank 0; the same value on every rank."""
        return int(self.broadcast(seed if seed is not None else secrets.randbits(63)))

    def device(self, device: torch.device) -> torch.device:
        """One CUDA device per local rank; CPU stays CPU."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device


_CURRENT = Dist()


def current() -> Dist:
    """The distributed context of this process (set by :func:`init_from_env`)."""
    return _CURRENT


def init_from_env() -> Dist:
    """Join torchrun's process group if this process was started by torchrun; otherwise a single rank."""
    global _CURRENT
    world = launched_world_size()
    if world <= 1:
        _CURRENT = Dist()
        return _CURRENT
    if not torch_dist.is_available():
        raise DPSynthError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and torch_dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(_local_rank())  # one GPU per rank (nccl refuses two ranks on one device)
        torch_dist.init_process_group(backend=backend)
    _CURRENT = Dist(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(), local_rank=_local_rank())
    if not _CURRENT.is_main:  # one copy of every notice: rank 0's
        logging.getLogger("dpsynth").setLevel(logging.WARNING)
    log.info("distributed training: %d ranks (%s)", world, torch_dist.get_backend())
    return _CURRENT


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def shutdown() -> None:
    """Leave the process group (after every rank has finished)."""
    global _CURRENT
    if _CURRENT.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
    _CURRENT = Dist()


def all_reduce_sum_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every rank's gradients (the non-DP baseline's data parallelism: each rank computes its share of the sum)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch_dist.all_reduce(p.grad, op=torch_dist.ReduceOp.SUM)
