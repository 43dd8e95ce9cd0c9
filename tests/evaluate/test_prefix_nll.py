"""The shared-prefix scorer equals response_nll on the concatenated sequences, whatever the batching."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dpsynth.evaluate.prefix_nll import _batches, common_prefix_length, shared_prefix_nll
from dpsynth.evaluate.scoring import response_nll


def _items(rng: np.random.Generator, n: int) -> tuple[list[list[int]], list[list[int]]]:
    prompts = [list(rng.integers(3, 500, size=int(rng.integers(0, 6)))) for _ in range(n)]
    responses = [list(rng.integers(3, 500, size=int(rng.integers(1, 9)))) for _ in range(n)]
    return prompts, responses


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_equals_response_nll_of_the_whole_sequence(tiny_llama, tokenizer, reduction):
    rng = np.random.default_rng(0)
    prefix = [1, 17, 42, 99]
    prompts, responses = _items(rng, 11)  # includes empty prompts: the prefix's last position predicts the response
    expected = response_nll(tiny_llama, tokenizer, [prefix + p for p in prompts], responses, reduction=reduction)
    for budget in (8, 10_000):  # a row or two per batch; everything at once
        got = shared_prefix_nll(
            tiny_llama, tokenizer, prefix, prompts, responses, max_batch_tokens=budget, reduction=reduction
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_rejects_bad_input(tiny_llama, tokenizer):
    with pytest.raises(ValueError, match="prefix"):
        shared_prefix_nll(tiny_llama, tokenizer, [], [[1]], [[2]])
    with pytest.raises(ValueError, match="response"):
        shared_prefix_nll(tiny_llama, tokenizer, [1], [[1]], [[]])
    assert shared_prefix_nll(tiny_llama, tokenizer, [1], [], []).shape == (0,)


def test_batches_respect_the_token_budget_and_cover_every_item():
    lengths = [5, 1, 9, 3, 3, 7]
    batches = _batches(lengths, 10)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 10 for b in batches)
    assert common_prefix_length([[1, 2], [1, 3]]) == 1 and common_prefix_length([]) == 0


def test_passes_the_cache_without_deprecation_warnings(tiny_llama, tokenizer):
    """transformers 5.24 renamed the KV-cache argument; the old name warned at every scored batch."""
    prompts, responses = _items(np.random.default_rng(1), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        shared_prefix_nll(tiny_llama, tokenizer, [1, 17, 42], prompts, responses, max_batch_tokens=16)
