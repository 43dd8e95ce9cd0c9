"""``bench/bench_train.py``'s ``_vocabNk`` modes time a DP step through an output layer cut to its first N x 1,024
rows (``bench/results/vocab-trim-2026-12-07/``): the step must really run through the cut layer, and a mode that
does not use the fast forward (where the cut would not reach) is refused."""

from __future__ import annotations

import importlib.util
import queue
from argparse import Namespace
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _args(model: Path) -> Namespace:
    return Namespace(
        model=str(model), batch=2, tokens=16, steps=1, targets="q_proj,v_proj", top_k=1,
        threads=torch.get_num_threads(), attn="sdpa", profile=None, profile_top=5,
    )  # fmt: skip


def test_a_vocab_mode_trains_through_the_cut_output_layer(tiny_model_dir, monkeypatch):
    import dpsynth.allocator
    import dpsynth.train.forward as forward

    monkeypatch.setattr(dpsynth.allocator, "keep_freed_memory", lambda: "kept")  # leave this process's malloc alone
    widths, labels_max = [], []
    real = forward.head_sequence_loss

    def spy(hidden, labels, head, **kw):
        widths.append(head.weight.shape[0])
        labels_max.append(int(labels.max()))
        return real(hidden, labels, head, **kw)

    monkeypatch.setattr(forward, "head_sequence_loss", spy)
    out: queue.Queue = queue.Queue()
    _script()._child("dp_fast_vocab1k", _args(tiny_model_dir), out)
    result = out.get_nowait()
    assert result["mode"] == "dp_fast_vocab1k" and result["median_s"] > 0
    assert widths and set(widths) == {1024}  # every step's loss through the first 1,024 rows, not the full 49,152
    assert max(labels_max) < 1024  # the batch's tokens drawn below the cut


def test_a_vocab_suffix_on_a_mode_before_the_fast_forward_is_refused(tiny_model_dir):
    with pytest.raises(SystemExit, match="fast modes only"):
        _script()._child("dp_vocab1k", _args(tiny_model_dir), queue.Queue())


def test_an_ascii_mode_trains_the_model_cut_to_its_ascii_entries(gemma_like, tmp_path, monkeypatch):
    """``_ascii`` times the cut model itself (``model.vocabulary=ascii``): its loss runs through the kept rows."""
    import dpsynth.allocator
    import dpsynth.train.forward as forward
    from dpsynth.models import loader

    monkeypatch.setattr(dpsynth.allocator, "keep_freed_memory", lambda: "kept")
    monkeypatch.setattr(loader, "default_cache_dir", lambda: tmp_path)  # the cut copy lands here, not in the user's
    widths = []
    real = forward.head_sequence_loss

    def spy(hidden, labels, head, **kw):
        widths.append(head.weight.shape[0])
        return real(hidden, labels, head, **kw)

    monkeypatch.setattr(forward, "head_sequence_loss", spy)
    out: queue.Queue = queue.Queue()
    _script()._child("dp_fast_ascii", _args(gemma_like), out)
    result = out.get_nowait()
    from dpsynth.config import ModelConfig

    full = loader.load_tokenizer(ModelConfig(name=str(gemma_like)))
    assert result["vocabulary"] == "ascii" and result["vocab_rows"] == len(full) - 5
    assert widths and set(widths) == {len(full) - 5}
