"""``model.vocabulary=ascii``: a model folder cut to its tokenizer's ASCII entries computes the same logits on them,
still spells every other character with byte tokens, renumbers its special tokens, and is made again when its source
changes; a tokenizer without byte fallback is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from dpsynth.errors import ConfigError
from dpsynth.models.config import ModelConfig
from dpsynth.models.loader import load_model, load_tokenizer, model_source
from dpsynth.models.vocab import TRIM_STAMP, ascii_ids, trim_folder, trim_tokenizer


def _trimmed(folder: Path, cache: Path) -> ModelConfig:
    return ModelConfig(name=str(folder), vocabulary="ascii", cache_dir=cache)


def test_ascii_keeps_printable_entries_bytes_and_specials_but_not_placeholders(gemma_like):
    data = json.loads((gemma_like / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    kept = {t for t, i in vocab.items() if i in set(ascii_ids(data))}
    assert {"<pad>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<0xE2>", "\u2581", "\n", "\u2581phone"} <= kept
    assert not kept & {"<unused0>", "\u2019", "\u00e9", "\u2581\u2019", "\u0e01"}
    trimmed = trim_tokenizer(data, ascii_ids(data))
    assert sorted(trimmed["model"]["vocab"].values()) == list(range(len(kept)))
    assert ["\u2581", "\u2019"] not in trimmed["model"]["merges"]  # its result is cut
    assert ["\u2581", "phone"] in trimmed["model"]["merges"]


def test_trimmed_model_matches_the_full_one_on_kept_ids_and_spells_the_rest_in_bytes(gemma_like, tmp_path):
    full_cfg, cut_cfg = ModelConfig(name=str(gemma_like)), _trimmed(gemma_like, tmp_path)
    full_tok, cut_tok = load_tokenizer(full_cfg), load_tokenizer(cut_cfg)
    assert len(cut_tok) == len(full_tok) - 5  # <unused0> and the four non-ASCII entries

    # special tokens renumbered, in the tokenizer and in the model's config alike
    full_model, cut_model = load_model(full_cfg), load_model(cut_cfg)
    assert full_tok.eos_token_id == 6 and cut_tok.eos_token_id == 5
    assert full_tok.bos_token_id == 3 and cut_tok.bos_token_id == 2 == cut_model.config.bos_token_id
    assert cut_model.config.eos_token_id == cut_tok.eos_token_id == cut_model.generation_config.eos_token_id
    assert cut_tok.convert_ids_to_tokens(cut_model.config.eos_token_id) == "<end_of_turn>"
    assert cut_model.get_input_embeddings().weight.shape[0] == len(cut_tok) == cut_model.config.vocab_size

    text = "the phone case fits great. it broke!"
    a, b = full_tok(text)["input_ids"], cut_tok(text)["input_ids"]
    assert full_tok.convert_ids_to_tokens(a) == cut_tok.convert_ids_to_tokens(b)
    assert b[0] == cut_tok.bos_token_id  # the post-processor's <bos>, renumbered
    with torch.no_grad():
        la = full_model(torch.tensor([a])).logits[0]
        lb = cut_model(torch.tensor([b])).logits[0]
    data = json.loads((gemma_like / "tokenizer.json").read_text(encoding="utf-8"))
    assert torch.allclose(la[:, ascii_ids(data)], lb, atol=1e-6)

    other = "it\u2019s caf\u00e9 \u0e01"
    ids = cut_tok(other, add_special_tokens=False)["input_ids"]
    pieces = cut_tok.convert_ids_to_tokens(ids)
    assert "<0xE2>" in pieces and "<0xC3>" in pieces and "<unk>" not in pieces
    assert cut_tok.decode(ids) == other
    assert "\u2019" in full_tok.convert_ids_to_tokens(full_tok(other, add_special_tokens=False)["input_ids"])


def test_trimmed_copy_is_cached_and_made_again_when_the_source_changes(gemma_like, tmp_path):
    cfg = _trimmed(gemma_like, tmp_path)
    first, _ = model_source(cfg)
    stamp = Path(first) / TRIM_STAMP
    made = stamp.stat().st_mtime_ns
    again, _ = model_source(cfg)
    assert again == first and stamp.stat().st_mtime_ns == made
    weights = next(gemma_like.glob("*.safetensors"))
    later = weights.stat().st_mtime + 5
    os.utime(weights, (later, later))  # a warm start merged into the folder again, say
    model_source(cfg)
    assert stamp.stat().st_mtime_ns != made


def test_a_byte_level_tokenizer_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="byte_fallback"):
        model_source(_trimmed(tiny_model_dir, tmp_path))
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # nothing half-written: the lock alone


def test_string_merges_and_a_cut_post_processor_token(gemma_like):
    data = json.loads((gemma_like / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]  # the older spelling of a merge
    keep = ascii_ids(data)
    trimmed = trim_tokenizer(data, keep)
    assert "\u2581 phone" in trimmed["model"]["merges"] and "\u2581 \u2019" not in trimmed["model"]["merges"]
    unused = data["model"]["vocab"]["<unused0>"]
    data["post_processor"]["special_tokens"]["<bos>"]["ids"] = [unused]
    with pytest.raises(ConfigError, match="post-processor"):
        trim_tokenizer(data, keep)


def test_untied_sharded_multimodal_folder(gemma_like, tmp_path):
    """An output layer of its own in a second shard, and a multimodal config whose ids sit at both levels."""
    from safetensors.torch import load_file, save_file

    data = json.loads((gemma_like / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    size = max(vocab.values()) + 1
    source = tmp_path / "source"
    source.mkdir()
    (source / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    (source / "tokenizer.model").write_bytes(b"a full-vocabulary file that must not come along")
    turn, bos = vocab["<end_of_turn>"], vocab["<bos>"]
    config = {
        "eos_token_id": [1, turn],
        "image_token_index": vocab["<start_of_turn>"],
        "text_config": {"vocab_size": size, "bos_token_id": bos, "eos_token_id": [1, turn]},
    }
    (source / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (source / "generation_config.json").write_text(
        json.dumps({"eos_token_id": turn, "suppress_tokens": [vocab["<unused0>"], bos]}), encoding="utf-8"
    )
    rows = torch.arange(size, dtype=torch.float32)[:, None].repeat(1, 4)  # row i holds i: where it came from shows
    save_file({"model.embed_tokens.weight": rows, "model.norm.weight": torch.ones(4)}, str(source / "a.safetensors"))
    save_file({"lm_head.weight": rows * 2}, str(source / "b.safetensors"))

    target = tmp_path / "cut"
    trim_folder(source, target)
    keep = ascii_ids(data)
    new = {old: i for i, old in enumerate(keep)}
    assert torch.equal(
        load_file(str(target / "a.safetensors"))["model.embed_tokens.weight"][:, 0],
        torch.tensor(keep, dtype=torch.float32),
    )
    assert torch.equal(
        load_file(str(target / "b.safetensors"))["lm_head.weight"][:, 0], 2 * torch.tensor(keep, dtype=torch.float32)
    )
    assert load_file(str(target / "a.safetensors"))["model.norm.weight"].shape == (4,)
    cut = json.loads((target / "config.json").read_text(encoding="utf-8"))
    assert cut["eos_token_id"] == [1, new[turn]] == cut["text_config"]["eos_token_id"]
    assert cut["image_token_index"] == new[vocab["<start_of_turn>"]]
    assert cut["text_config"]["vocab_size"] == len(keep) and cut["text_config"]["bos_token_id"] == new[bos]
    gen = json.loads((target / "generation_config.json").read_text(encoding="utf-8"))
    assert gen == {"eos_token_id": new[turn], "suppress_tokens": [new[bos]]}
    assert not (target / "tokenizer.model").exists()


def test_caches_keyed_by_the_vocabulary_only_when_it_is_cut(gemma_like, tmp_path):
    """The CTranslate2 conversion and its source record tell the two models apart; with the whole vocabulary both
    read as before the key existed, so conversions made then stay current."""
    from dpsynth.models.convert import _base_identity, converted_dir

    full, cut = ModelConfig(name=str(gemma_like), cache_dir=tmp_path), _trimmed(gemma_like, tmp_path)
    assert "vocabulary" not in _base_identity(full) and _base_identity(cut)["vocabulary"] == "ascii"
    assert converted_dir(full, None, "float32") != converted_dir(cut, None, "float32")
