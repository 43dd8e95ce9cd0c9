"""The optional LLM classifier (evaluate.llm_classifier) on a tiny Llama: it learns, is seeded, checks labels."""

from __future__ import annotations

import pytest

from dpsynth.config import LoraSettings, ModelConfig
from dpsynth.evaluate.llm_classifier import LLMClassifierSettings, llm_train_on_x_test_on_real
from dpsynth.evaluate.utility import LabeledSet

SETTINGS = LLMClassifierSettings(epochs=8, learning_rate=1e-2, batch_size=8, max_tokens=16, seed=0)
GOOD = ["great", "excellent", "wonderful", "perfect", "lovely"]
BAD = ["awful", "terrible", "broken", "useless", "horrible"]


def _set(n: int, offset: int = 0) -> LabeledSet:
    """Reviews whose last word gives the label away (the head reads the last token), in both classes."""
    texts, labels = [], []
    for i in range(n):
        good = (i + offset) % 2 == 0
        words = GOOD if good else BAD
        texts.append(f"the phone case arrived and it is {words[(i // 2) % len(words)]}")
        labels.append(5 if good else 1)
    return LabeledSet(texts, labels)


@pytest.fixture()
def model_cfg(tiny_model_dir):
    return ModelConfig(name=str(tiny_model_dir), device="cpu")


def test_learns_a_separable_task_and_a_source_without_signal_does_not(model_cfg):
    train, test = _set(40), _set(20, offset=1)
    noise = LabeledSet(train.texts, [5 if i % 4 < 2 else 1 for i in range(40)])  # labels unrelated to the words
    out = llm_train_on_x_test_on_real(
        {"real": train, "noise": noise}, test, [1, 5], model_cfg, LoraSettings(), SETTINGS
    )
    assert out["real"]["status"] == "ok" and out["real"]["n_train"] == 40
    assert out["real"]["accuracy"] >= 0.9, out
    assert out["noise"]["accuracy"] < out["real"]["accuracy"], out


def test_seeded_and_empty_sources(model_cfg):
    train, test = _set(16), _set(8, offset=1)
    short = LLMClassifierSettings(epochs=1, learning_rate=1e-3, batch_size=4, max_tokens=16, seed=3)
    a = llm_train_on_x_test_on_real({"x": train}, test, [1, 5], model_cfg, LoraSettings(), short)
    b = llm_train_on_x_test_on_real({"x": train}, test, [1, 5], model_cfg, LoraSettings(), short)
    assert a == b
    empty = llm_train_on_x_test_on_real({"e": LabeledSet([], [])}, test, [1, 5], model_cfg, LoraSettings(), short)
    assert empty["e"]["status"] == "empty" and "accuracy" not in empty["e"]


def test_labels_outside_the_task_are_refused(model_cfg):
    with pytest.raises(ValueError, match="outside the task's classes"):
        llm_train_on_x_test_on_real(
            {"x": LabeledSet(["fine"], [3])}, _set(2), [1, 5], model_cfg, LoraSettings(), SETTINGS
        )


def test_the_classifier_trains_every_block_whatever_the_generators_top_k():
    """A non-DP measurement: its LoRA is on every block even though the generators default to the top 8, and trains
    both LoRA factors whatever train.lora.freeze_a says, so its figures stay comparable across generator settings."""
    from types import SimpleNamespace

    from dpsynth.config import load_config
    from dpsynth.evaluate.utility_eval import llm_settings

    cfg = load_config(None, ["train.lora.top_k_layers=4", "train.lora.r=2", "train.lora.freeze_a=true"])
    got = llm_settings(cfg, SimpleNamespace(info={"max_tokens": 32}, label="rating"))  # type: ignore[arg-type]
    assert got.lora.top_k_layers is None and got.lora.r == 2 and cfg.train.lora.top_k_layers == 4
    assert got.lora.freeze_a is False and cfg.train.lora.freeze_a is True
