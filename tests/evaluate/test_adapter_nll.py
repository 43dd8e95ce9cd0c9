"""Scoring under several adapters with the unadapted blocks run once equals scoring each model whole."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dpsynth.evaluate import adapter_nll
from dpsynth.evaluate.adapter_nll import active_adapter, adapters_response_nll, shared_bottom_start
from dpsynth.evaluate.model_privacy import UnitScorer
from dpsynth.evaluate.scoring import response_nll
from tests.conftest import make_tiny_llama


def _with_adapters(vocab: int, layers: list[int] | None, names=("dp", "no_dp")):
    """A 3-block tiny Llama carrying two random (non-zero) LoRA adapters on ``layers`` (None: every block)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=layers, init_lora_weights=False
    )
    torch.manual_seed(3)
    model = get_peft_model(make_tiny_llama(vocab, num_hidden_layers=3), config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    model.eval()
    return model


def _items(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(3, 500, size=int(rng.integers(1, 7)))) for _ in range(n)]
    responses = [list(rng.integers(3, 500, size=int(rng.integers(1, 9)))) for _ in range(n)]
    return prompts, responses


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_each_adapter_scores_as_its_whole_model(tokenizer, reduction):
    model = _with_adapters(len(tokenizer), [1, 2])
    assert shared_bottom_start(model) == 1
    prompts, responses = _items(9)
    names = [None, "dp", "no_dp"]
    expected = []
    for name in names:
        with active_adapter(model, name):
            expected.append(response_nll(model, tokenizer, prompts, responses, reduction=reduction))
    assert not np.allclose(expected[1], expected[2])  # the adapters differ, so a mix-up shows
    assert not np.allclose(expected[0], expected[1])
    for budget in (8, 10_000):
        got = adapters_response_nll(
            model, tokenizer, prompts, responses, names, start=1, max_batch_tokens=budget, reduction=reduction
        )
        assert got is not None
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_nothing_is_shared_when_an_adapter_reaches_the_first_block(tokenizer):
    assert shared_bottom_start(_with_adapters(len(tokenizer), None)) is None
    assert shared_bottom_start(_with_adapters(len(tokenizer), [0, 2])) is None
    assert shared_bottom_start(make_tiny_llama(len(tokenizer))) is None  # no adapter at all
    assert shared_bottom_start(torch.nn.Linear(2, 2)) is None  # not a decoder stack: scored whole, no error


def _units(n: int, seed: int):
    from dpsynth.data.records import Record

    rng = np.random.default_rng(seed)
    words = ["good", "bad", "phone", "case", "battery", "screen", "fast", "broke"]
    return [
        [
            Record(
                text=" ".join(rng.choice(words, size=int(rng.integers(3, 12)))),
                unit=f"u{seed}-{i}",
                codes={"rating": int(rng.integers(1, 6))},
            )
        ]
        for i in range(n)
    ]


INFO = {"system_prompt": "You write reviews.", "max_tokens": 32, "cut_responses": "token"}


def test_unit_losses_under_adapters_equal_those_of_each_model(tokenizer):
    model = _with_adapters(len(tokenizer), [2])
    scorer = UnitScorer(tokenizer, _units(6, 0), INFO, batch_tokens=64)
    names = [None, "dp", "no_dp"]
    got = scorer.losses_under(model, names)
    for name, values in zip(names, got, strict=True):
        with active_adapter(model, name) as m:
            np.testing.assert_allclose(values, scorer.losses(m), rtol=1e-5, atol=1e-5)


def test_a_model_the_split_does_not_reproduce_is_scored_whole(tokenizer, monkeypatch, caplog):
    model = _with_adapters(len(tokenizer), [2])
    scorer = UnitScorer(tokenizer, _units(4, 1), INFO, batch_tokens=64)
    names = [None, "dp"]
    expected = []
    for name in names:
        with active_adapter(model, name) as m:
            expected.append(scorer.losses(m))
    original = adapter_nll._sums
    monkeypatch.setattr(adapter_nll, "_sums", lambda *a: original(*a) + 1.0)  # as if logits were rescaled after
    with caplog.at_level(logging.WARNING):
        got = scorer.losses_under(model, names)
    assert "scoring each model whole" in caplog.text
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)
