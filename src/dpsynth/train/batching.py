"""Batches: Poisson sampling for the DP arm, shuffled fixed-size batches for the baseline, and padding.

The accountant's guarantee for DP-SGD assumes Poisson sampling: every step includes each privacy unit independently
with probability ``q``, so batch sizes vary (and can be zero). ``q`` is computed here from the number of training
examples (``expected_batch_size / n``), never from a data loader's length: Opacus's ``make_private`` derives it as
``1 / len(data_loader)``, which differs from ``B / n`` whenever ``n`` is not a multiple of ``B``; that is why dpsynth
builds the sampler itself (:func:`poisson_loader`) and :func:`check_poisson` refuses any other loader under DP.

Each example is one privacy unit (one person's records, never several people packed into one sequence). Sequences
are right-padded; labels of padding are -100 and position ids restart at 0 on every row, so a sequence's loss and
gradient do not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = -100


class ExampleLike(Protocol):
    """A tokenized training example (see :func:`dpsynth.data.format.encode_unit`)."""

    input_ids: list[int]
    labels: list[int]


class ExampleDataset(Dataset[ExampleLike]):
    """A list of tokenized examples, one per privacy unit."""

    def __init__(self, examples: Sequence[ExampleLike]) -> None:
        if not examples:
            raise ValueError("no training examples")
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> ExampleLike:
        return self.examples[i]


@dataclass
class Collator:
    """Right-pads a list of examples into tensors. An empty list gives tensors with a batch dimension of 0.

    >>> from types import SimpleNamespace as E
    >>> b = Collator(pad_id=0)([E(input_ids=[5, 6, 7], labels=[-100, 6, 7]), E(input_ids=[8], labels=[8])])
    >>> b["input_ids"].tolist(), b["labels"].tolist(), b["position_ids"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[-100, 6, 7], [8, -100, -100]], [[0, 1, 2], [0, 1, 2]])
    >>> Collator(pad_id=0)([])["input_ids"].shape
    torch.Size([0, 0])
    """

    pad_id: int

    def __call__(self, examples: Sequence[ExampleLike]) -> dict[str, torch.Tensor]:
        b = len(examples)
        t = max((len(e.input_ids) for e in examples), default=0)
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((b, t), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            if len(e.labels) != n:
                raise ValueError("input_ids and labels differ in length")
            input_ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[i, :n] = torch.tensor(e.labels, dtype=torch.long)
            attention_mask[i, :n] = 1
        position_ids = torch.arange(t, dtype=torch.long).expand(b, t).clone()
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        index = [e.index for e in examples if isinstance(e, IndexedExample)]
        if examples and len(index) == b:
            batch["index"] = torch.tensor(index, dtype=torch.long)
        return batch


@dataclass
class IndexedExample:
    """An example with its position in the data set, so that per-example caches (the prefix cache) can be found."""

    input_ids: list[int]
    labels: list[int]
    index: int


def indexed(examples: Sequence[ExampleLike]) -> list[IndexedExample]:
    """The examples with their positions (the collated batch then carries an ``index`` tensor)."""
    return [IndexedExample(list(e.input_ids), list(e.labels), i) for i, e in enumerate(examples)]


def sample_rate(expected_batch_size: int, n: int) -> float:
    """Poisson sample rate ``q = B / n`` from the data set's size (capped at 1).

    >>> sample_rate(32, 1000)
    0.032
    """
    if n <= 0:
        raise ValueError("the training set is empty")
    return min(1.0, expected_batch_size / n)


def total_steps(*, n: int, expected_batch_size: int, epochs: float, max_steps: int | None) -> int:
    """Logical steps of a run: ``epochs * n / B`` rounded up, capped by ``max_steps``.

    >>> total_steps(n=1000, expected_batch_size=32, epochs=2, max_steps=None)
    63
    >>> total_steps(n=1000, expected_batch_size=32, epochs=2, max_steps=10)
    10
    """
    steps = max(1, math.ceil(epochs * n / expected_batch_size))
    return steps if max_steps is None else min(steps, max_steps)


class LengthSortedPoissonSampler(UniformWithReplacementSampler):
    """Opacus's Poisson sampler, with each batch's indices ordered by sequence length.

    The draws are the parent's, unchanged (same generator calls, same sets of examples): only the order within a
    batch changes, so that when a logical batch is split into physical batches, sequences of similar length are padded
    together. The clipped gradients are summed over the whole logical batch, so the order does not change the update
    (up to floating-point summation order) nor the privacy analysis.
    """

    def __init__(self, *, lengths: Sequence[int], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.lengths = list(lengths)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield sorted(batch, key=self.lengths.__getitem__)


class ShardedPoissonSampler(LengthSortedPoissonSampler):
    """The global Poisson batch (drawn identically on every rank), of which this rank takes every N-th example.

    The draws are the parent's (Opacus's sampler over all ``n`` units at rate ``q``), so the accountant's sampling is
    unchanged; the batch is ordered by length first, so the ranks' shares are alike in length and size.
    """

    def __init__(self, *, rank: int, world_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield batch[self.rank :: self.world_size]


def by_length(indices: Sequence[int], dataset: ExampleDataset) -> list[int]:
    """``indices`` ordered by sequence length (for less padding when a batch is split)."""
    return sorted(indices, key=lambda i: len(dataset[i].input_ids))


def poisson_loader(
    dataset: ExampleDataset,
    *,
    q: float,
    steps: int,
    generator: torch.Generator,
    collate: Collator,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[ExampleLike]:
    """A loader yielding ``steps`` Poisson-sampled batches (each unit included independently with probability q).

    With ``world_size > 1``, this rank's share of each global batch (:class:`ShardedPoissonSampler`); the generator
    must then be seeded identically on every rank.
    """
    kwargs: dict[str, Any] = {
        "lengths": [len(e.input_ids) for e in dataset.examples],
        "num_samples": len(dataset),
        "sample_rate": q,
        "generator": generator,
        "steps": steps,
    }
    sampler = (
        ShardedPoissonSampler(rank=rank, world_size=world_size, **kwargs)
        if world_size > 1
        else LengthSortedPoissonSampler(**kwargs)
    )
    # The loader's own generator only seeds worker processes; giving it one keeps iterator creation from consuming the
    # global RNG, so dropout masks after a resume are the ones an uninterrupted run would have drawn.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator().manual_seed(0))


def check_poisson(loader: DataLoader[ExampleLike], *, q: float, n: int) -> None:
    """Refuse a loader whose sampling is not the Poisson sampling the accountant is told about.

    Shuffled or fixed-size batches, a sampler over a different number of examples, or a different rate would make
    the reported epsilon wrong, silently. This is called before DP training starts.
    """
    sampler = loader.batch_sampler
    if not isinstance(sampler, UniformWithReplacementSampler):
        raise ValueError(
            f"DP accounting assumes Poisson sampling, but the loader uses {type(sampler).__name__} "
            "(shuffled or fixed-size batches are refused)"
        )
    if sampler.num_samples != n:
        raise ValueError(f"the Poisson sampler covers {sampler.num_samples} examples, the data set has {n}")
    if not math.isclose(sampler.sample_rate, q, rel_tol=1e-12):
        raise ValueError(f"the Poisson sampler's rate {sampler.sample_rate} differs from the accounted rate {q}")


def fixed_batches(n: int, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[list[int]]:
    """Shuffled fixed-size batches for the non-DP baseline, reproducible from ``seed`` and resumable at any step.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; batches do not cross epochs (the last one of an epoch
    may be smaller).

    >>> it = fixed_batches(5, 2, seed=0)
    >>> sorted(i for _ in range(3) for i in next(it))
    [0, 1, 2, 3, 4]
    """
    per_epoch = math.ceil(n / batch_size)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        yield perm[k * batch_size : (k + 1) * batch_size]
        step += 1


def physical_chunks(indices: Sequence[int], max_size: int) -> list[list[int]]:
    """Split a logical batch into physical batches of at most ``max_size`` (for gradient accumulation)."""
    return [list(indices[i : i + max_size]) for i in range(0, len(indices), max_size)]
