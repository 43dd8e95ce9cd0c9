"""Sampling and batching: Poisson as the accountant assumes it, rate from the data set's size."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from dpsynth.train.batching import (
    Collator,
    ExampleDataset,
    check_poisson,
    fixed_batches,
    physical_chunks,
    poisson_loader,
    sample_rate,
)


def _dataset(n: int) -> ExampleDataset:
    return ExampleDataset([SimpleNamespace(input_ids=[i + 3, 4], labels=[-100, 4]) for i in range(n)])


def test_poisson_batch_sizes_vary_and_average_q_times_n():
    n, batch = 1000, 50
    q = sample_rate(batch, n)
    assert q == 0.05
    loader = poisson_loader(
        _dataset(n), q=q, steps=400, generator=torch.Generator().manual_seed(0), collate=Collator(pad_id=0)
    )
    sizes = torch.tensor([b["input_ids"].shape[0] for b in loader], dtype=torch.float)
    assert len(sizes) == 400
    assert sizes.mean().item() == pytest.approx(q * n, rel=0.05)
    # Binomial(n, q) spread: std sqrt(n q (1-q)) ~ 6.9; fixed-size batches would have std 0.
    assert sizes.std().item() == pytest.approx((n * q * (1 - q)) ** 0.5, rel=0.2)


def test_poisson_can_give_an_empty_batch():
    loader = poisson_loader(
        _dataset(5), q=0.05, steps=50, generator=torch.Generator().manual_seed(0), collate=Collator(pad_id=0)
    )
    sizes = [b["input_ids"].shape[0] for b in loader]
    assert 0 in sizes  # P(empty) = 0.95^5 ~ 0.77


def test_sample_rate_comes_from_the_data_set_size_not_the_loader_length():
    # 100 examples, batch 32: a loader has ceil(100/32) = 4 batches, so 1/len would be 0.25; the true rate is 0.32.
    assert sample_rate(32, 100) == 0.32
    loader = poisson_loader(
        _dataset(100), q=0.32, steps=3, generator=torch.Generator().manual_seed(0), collate=Collator(pad_id=0)
    )
    check_poisson(loader, q=0.32, n=100)
    with pytest.raises(ValueError, match="differs from the accounted rate"):
        check_poisson(loader, q=0.25, n=100)
    with pytest.raises(ValueError, match="covers 100 examples"):
        check_poisson(loader, q=0.32, n=101)


def test_shuffled_or_fixed_size_batches_are_refused_under_poisson_accounting():
    ds = _dataset(100)
    for loader in (
        DataLoader(ds, batch_size=32, shuffle=True, collate_fn=Collator(pad_id=0)),
        DataLoader(ds, batch_size=32, shuffle=False, collate_fn=Collator(pad_id=0)),
    ):
        with pytest.raises(ValueError, match="Poisson"):
            check_poisson(loader, q=0.32, n=100)


def test_poisson_draws_differ_across_generators():
    def draws(seed: int) -> list[list[int]]:
        loader = poisson_loader(
            _dataset(200), q=0.1, steps=5, generator=torch.Generator().manual_seed(seed), collate=Collator(pad_id=0)
        )
        return [b["input_ids"][:, 0].tolist() for b in loader]

    assert draws(1) != draws(2)
    assert draws(1) == draws(1)


def test_fixed_batches_cover_each_epoch_and_resume_anywhere():
    full = [b for _, b in zip(range(7), fixed_batches(10, 3, seed=4), strict=False)]
    assert sorted(i for b in full[:4] for i in b) == list(range(10))  # epoch 0: 3 + 3 + 3 + 1
    resumed = [b for _, b in zip(range(3), fixed_batches(10, 3, seed=4, start_step=4), strict=False)]
    assert resumed == full[4:]


def test_physical_chunks_split_a_logical_batch():
    assert physical_chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert physical_chunks([], 3) == []


def test_length_sorting_keeps_the_poisson_draws():
    """Sorting within a batch changes the order only: the same generator gives the same sets of examples."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    from dpsynth.train.batching import LengthSortedPoissonSampler

    lengths = [(7 * i) % 13 + 1 for i in range(300)]
    plain = UniformWithReplacementSampler(
        num_samples=300, sample_rate=0.1, generator=torch.Generator().manual_seed(5), steps=20
    )
    ordered = LengthSortedPoissonSampler(
        lengths=lengths, num_samples=300, sample_rate=0.1, generator=torch.Generator().manual_seed(5), steps=20
    )
    for a, b in zip(plain, ordered, strict=True):
        assert sorted(a) == sorted(b)
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
