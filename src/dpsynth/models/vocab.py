"""A model folder with a smaller vocabulary: the same network, its embedding and tied output rows cut to a PUBLIC set.

Why: gemma-3-270m's output layer is 262,144 x 640, and on a CPU it is most of a DP training step (the logits and their
gradient at every labelled position) and of a generated token: cut to its 144,294 ASCII entries (below), about the
150,528 rows with which a timing of a DP step made 1.44x the tokens per second
(``bench/results/vocab-trim-2026-12-07/``). Most of the rest of that vocabulary is other scripts and ``<unusedN>``
placeholders that English records never need.

``model.vocabulary=ascii`` keeps every entry made of printable ASCII, SentencePiece's word marker ``▁`` and the
whitespace controls (newline, tab, carriage return), the 256 byte tokens, and every added (special) token except the
``<unusedN>`` placeholders; it is a function of the tokenizer alone, so choosing it reads no private data and costs
nothing in the ledger. The tokenizer keeps the BPE merges among kept entries only, so a character whose entry was cut
(a curly quote, an emoji, a Thai letter) is written with the byte-fallback tokens, as the tokenizer already does for
anything outside its vocabulary: every text still round-trips, and the model, trained and sampled over the kept rows,
can still read and write it, one byte at a time. Rows are renumbered in their old order and the special-token ids in
``config.json`` and ``generation_config.json`` follow.

Only tokenizers that can fall back to bytes qualify: a BPE model with ``byte_fallback`` (SentencePiece-style:
Gemma, Llama 2, Mistral). A byte-level BPE (GPT-2, SmolLM2) maps bytes to printable stand-ins, so "ASCII" means
nothing there, and its 49,152 rows are not the cost anyway; it is refused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from dpsynth.errors import ConfigError
from dpsynth.rundir import atomic_path

log = logging.getLogger(__name__)

WORD_MARKER = "\u2581"
_UNUSED = re.compile(r"<unused\d+>")
TRIM_STAMP = "dpsynth_vocabulary.json"


def ascii_entry(token: str) -> bool:
    """Whether a vocabulary entry is made only of printable ASCII, the word marker and whitespace controls.

    >>> [ascii_entry(t) for t in ("\u2581the", "\\n\\n", "<0xE2>", "\u2019s", "\u0e01")]
    [True, True, True, False, False]
    """
    return all(32 <= ord(c) < 127 or c in "\n\t\r" or c == WORD_MARKER for c in token)


def ascii_ids(tokenizer_json: dict[str, Any]) -> list[int]:
    """The ids ``model.vocabulary=ascii`` keeps, ascending (see the module docstring)."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ConfigError(
            "model.vocabulary=ascii needs a BPE tokenizer with byte_fallback (SentencePiece-style: Gemma, Llama 2); "
            f"this one is {model.get('type')!r} with byte_fallback={model.get('byte_fallback')!r}"
        )
    keep = {i for t, i in model["vocab"].items() if ascii_entry(t) and not _UNUSED.fullmatch(t)}
    for added in tokenizer_json.get("added_tokens", []):
        if _UNUSED.fullmatch(added["content"]):
            keep.discard(added["id"])
        else:
            keep.add(added["id"])
    return sorted(keep)


def trim_tokenizer(tokenizer_json: dict[str, Any], keep: Iterable[int]) -> dict[str, Any]:
    """``tokenizer_json`` with only the ids in ``keep``, renumbered in order, and the merges among kept entries.

    A merge is kept when both its parts and its result are kept entries: any other could only build an entry that
    is gone (ASCII entries are built from ASCII parts, so every one stays reachable)."""
    keep = sorted(set(keep))
    new_id = {old: new for new, old in enumerate(keep)}
    out = json.loads(json.dumps(tokenizer_json))  # a deep copy of plain JSON
    model = out["model"]
    model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    kept = model["vocab"]

    def parts(merge: Any) -> tuple[str, str]:
        return (merge[0], merge[1]) if isinstance(merge, list) else tuple(merge.split(" ", 1))

    model["merges"] = [m for m in model["merges"] if all(p in kept for p in (*parts(m), "".join(parts(m))))]
    out["added_tokens"] = [{**a, "id": new_id[a["id"]]} for a in out.get("added_tokens", []) if a["id"] in new_id]
    for name in ("post_processor",):
        _remap_special_ids(out.get(name), new_id)
    return out


def _remap_special_ids(node: Any, new_id: dict[int, int]) -> None:
    """Template post-processors name their special tokens' ids (``{"ids": [2]}``): renumber them in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                cut = [v for v in value if v not in new_id]
                if cut:
                    raise ConfigError(f"model.vocabulary: the tokenizer's post-processor adds cut id(s) {cut}")
                node[key] = [new_id[v] for v in value]
            else:
                _remap_special_ids(value, new_id)
    elif isinstance(node, list):
        for item in node:
            _remap_special_ids(item, new_id)


_ID_LISTS = ("suppress_tokens", "begin_suppress_tokens")


def _remap_config(config: dict[str, Any], new_id: dict[int, int], size: int | None) -> dict[str, Any]:
    """``config.json`` / ``generation_config.json`` (and a multimodal config's ``text_config``) with the special-token
    ids renumbered: ``*_token_id`` and ``*_token_index`` (one id or a list) must be kept; the suppressed-token lists
    lose the ids that are cut (they can no longer be written anyway)."""
    out = dict(config)
    for key, value in config.items():
        if (key.endswith("_token_id") or key.endswith("_token_index")) and isinstance(value, int | list):
            ids = value if isinstance(value, list) else [value]
            missing = [v for v in ids if v not in new_id]
            if missing:
                raise ConfigError(f"model.vocabulary: {key}={value} is outside the kept vocabulary")
            mapped = [new_id[v] for v in ids]
            out[key] = mapped if isinstance(value, list) else mapped[0]
        elif key in _ID_LISTS and isinstance(value, list):
            out[key] = [new_id[v] for v in value if v in new_id]
        elif key == "bad_words_ids" and isinstance(value, list):
            out[key] = [[new_id[v] for v in seq] for seq in value if all(v in new_id for v in seq)]
        elif key == "text_config" and isinstance(value, dict):
            out[key] = _remap_config(value, new_id, size)
    if "vocab_size" in config and size is not None:
        out["vocab_size"] = size
    return out


HUB_FILES = ["*.json", "*.safetensors", "*.jinja"]
"""What a trim reads of a hub model (not its GGUF or original checkpoints)."""

RULE_VERSION = 1
"""Bumped whenever what a trim keeps or how it writes changes: copies made by another version are made again."""

_COPIED = (".json", ".jinja")
"""Besides the tokenizer and configs rewritten here, the files copied as they are. Not ``tokenizer.model``,
``vocab.json`` or ``merges.txt``: a loader that read them would number tokens by the full vocabulary."""


def source_identity(folder: Path) -> dict[str, Any]:
    """The folder and the sizes and times (nanoseconds) of the files a trim reads: a copy of a folder since changed (a
    warm start merged into it again) is made again."""
    files = sorted(
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in folder.iterdir()
        if p.is_file() and p.suffix in (".safetensors", *_COPIED)
    )
    return {"folder": str(folder.resolve()), "files": files}


def trimmed_is_current(target: Path, source: Path, vocabulary: str) -> bool:
    """Whether ``target`` is a trim of ``source`` as it is now, to ``vocabulary``, by this version of the rule."""
    try:
        stamp = json.loads((target / TRIM_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        stamp.get("vocabulary") == vocabulary
        and stamp.get("rule") == RULE_VERSION
        and stamp.get("source") == source_identity(source)
    )


def trimmed(source: Path, target: Path, vocabulary: str) -> Path:
    """``target``, made from ``source`` unless it is current; under a lock beside it, so that torchrun's ranks or two
    runs sharing the cache make it once and never swap it under each other."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not ((target / "config.json").is_file() and trimmed_is_current(target, source, vocabulary)):
            trim_folder(source, target, vocabulary=vocabulary)
    return target


def trim_folder(source: Path, target: Path, *, vocabulary: str = "ascii") -> None:
    """Write ``source`` (a Hugging Face model folder: ``tokenizer.json`` and safetensors weights) with its vocabulary
    cut to the ``vocabulary`` set into ``target``, atomically. Every 2-D weight as tall as the vocabulary (the input
    embedding, and an output layer not tied to it) keeps the kept rows."""
    from safetensors.torch import load_file, save_file

    if vocabulary != "ascii":
        raise ConfigError(f"model.vocabulary={vocabulary!r}: only 'ascii' trims a vocabulary")
    tok_path = source / "tokenizer.json"
    if not tok_path.is_file():
        raise ConfigError(f"model.vocabulary=ascii: {source} has no tokenizer.json to trim")
    tokenizer_json = json.loads(tok_path.read_text(encoding="utf-8"))
    keep = ascii_ids(tokenizer_json)
    new_id = {old: new for new, old in enumerate(keep)}
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    full = int(config.get("text_config", config)["vocab_size"])
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise ConfigError(f"model.vocabulary=ascii: {source} holds no .safetensors weights")
    index = torch.tensor(keep, dtype=torch.long)
    log.info("model.vocabulary=ascii: keeping %s of %s vocabulary rows (%s)", len(keep), full, source)
    trimmed_tok = trim_tokenizer(tokenizer_json, keep)  # before writing anything: it may refuse
    new_config = _remap_config(config, new_id, len(keep))
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        rewritten = ("tokenizer.json", "config.json", "generation_config.json", "tokenizer_config.json")
        for path in source.iterdir():
            if path.is_file() and path.suffix in _COPIED and path.name not in rewritten:
                shutil.copy2(path, tmp / path.name)
        _write(tmp / "config.json", new_config)
        (tmp / "tokenizer.json").write_text(json.dumps(trimmed_tok, ensure_ascii=False), encoding="utf-8")
        if (source / "generation_config.json").is_file():
            gen = json.loads((source / "generation_config.json").read_text(encoding="utf-8"))
            _write(tmp / "generation_config.json", _remap_config(gen, new_id, None))
        if (source / "tokenizer_config.json").is_file():
            tc = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
            if isinstance(tc.get("added_tokens_decoder"), dict):  # transformers 4 lists added tokens by id there
                decoder = tc["added_tokens_decoder"]
                tc["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in decoder.items() if int(k) in new_id}
            _write(tmp / "tokenizer_config.json", tc)
        for path in weights:
            tensors = load_file(str(path))
            for k in [k for k, v in tensors.items() if v.dim() == 2 and v.shape[0] == full]:
                tensors[k] = tensors[k].index_select(0, index).contiguous()
            save_file(tensors, str(tmp / path.name), metadata={"format": "pt"})
        stamp = {
            "vocabulary": vocabulary,
            "rule": RULE_VERSION,
            "source": source_identity(source),
            "kept": len(keep),
            "of": full,
        }
        _write(tmp / TRIM_STAMP, stamp)


def _write(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
