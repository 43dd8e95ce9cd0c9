"""Which prompt format an adapter was trained in, so that it is never prompted in another.

An adapter learns the token sequence of its training examples: the chat template (turn markers, the token that ends
the model's turn), the wording of the control-code prompt, the system prompt. None of these is a configuration key:
the template ships with the tokenizer or with dpsynth's built-in models (gemma-3-270m's turn came to end in ``<eos>``
instead of ``<end_of_turn>`` on 2026-12-05), the wording is code (:func:`dpsynth.data.format.user_prompt`). A
configuration fingerprint therefore cannot see a change of them, and a trained arm, or a frontier row kept by its
fingerprint, would be prompted in a format it never saw: its text degrades silently, and the frontier would mix rows
of two formats.

The train stage records the digest of one probe example (:func:`digest`) in the arm's ``privacy.json``
(``prompt_format``) and in its checkpoints; generation, the evaluate stage's membership inference and exposure
(:func:`dpsynth.evaluate.model_privacy.load_arms`), the frontier and the one-run audit reusing a finished arm compare
it with today's before using the arm (:func:`stale`), ``--resume`` before continuing a checkpoint, and training
before starting from a public warm start whose run recorded one (:func:`dpsynth.train.warm_start.check`). Arms and
checkpoints made before the key existed carry none and are used as before: there is nothing to compare them with.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator
from typing import Any

from dpsynth.data.format import encode_unit
from dpsynth.data.prepare import load_code_specs, load_prepare_info, prepared_cut_rule
from dpsynth.data.records import Record
from dpsynth.models.config import ModelConfig
from dpsynth.rundir import RunDir, read_json

KEY = "prompt_format"
_PROBE_TEXT = "A probe review. It fits."


def digest(tokenizer: Any, run: RunDir) -> str:
    """The digest of one probe training example of ``run``'s prepared data, rendered by ``tokenizer``: its token ids
    and labels (the prompt for the first value of every code, the system prompt, a fixed response and the end of
    turn that training labels). Reads no private record: the codes' domains and the system prompt are public settings
    that ``prepare.json`` holds."""
    info = load_prepare_info(run)
    codes = {spec.name: spec.values[0] for spec in load_code_specs(run)}
    with _pinned_clock():
        example = encode_unit(
            tokenizer,
            [Record(text=_PROBE_TEXT, unit="probe", codes=codes)],
            system_prompt=str(info["system_prompt"]),
            max_tokens=64,
            include_title=False,
            cut=prepared_cut_rule(info),
        )
    text = repr((example.input_ids, example.labels))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class _Epoch(datetime.datetime):
    """A clock stopped at one instant."""

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Epoch:
        return cls(2000, 1, 1, tzinfo=tz)


@contextlib.contextmanager
def _pinned_clock() -> Iterator[None]:
    """Render under a stopped clock: some hub chat templates write today's date into the system turn (transformers
    gives templates ``strftime_now``, which reads ``datetime.now()`` in its module), and a digest that changed every
    day would refuse every arm the day after its training. The date is not what an arm learned to read; the template
    around it is."""
    from transformers.utils import chat_template_utils

    if not hasattr(chat_template_utils, "datetime"):
        yield
        return
    saved = chat_template_utils.datetime
    chat_template_utils.datetime = _Epoch  # type: ignore[misc]
    try:
        yield
    finally:
        chat_template_utils.datetime = saved  # type: ignore[misc]


def current(model: ModelConfig, run: RunDir) -> str:
    """Today's digest for ``run`` with ``model``'s tokenizer (as training and generation load it)."""
    from dpsynth.models.loader import load_tokenizer

    return digest(load_tokenizer(model), run)


def mismatch(model: ModelConfig, run: RunDir, arm: str) -> tuple[str, str] | None:
    """``(recorded, today's)`` digests when ``arm`` of ``run`` records a prompt format other than the one ``model``'s
    tokenizer renders for ``run`` now; None when they agree, or the arm records none (trained before the check
    existed) or has no ``privacy.json`` (not trained)."""
    path = run.privacy_json(arm)
    if not path.is_file():
        return None
    trained = read_json(path).get(KEY)
    if not trained:
        return None
    now = current(model, run)
    return None if now == trained else (str(trained), now)


def stale(model: ModelConfig, run: RunDir, arm: str) -> str | None:
    """Why ``arm``'s adapter in ``run`` must not be prompted today (:func:`mismatch`), or None."""
    if (differ := mismatch(model, run, arm)) is None:
        return None
    return (
        f"{run.adapter(arm)} was trained in another prompt format than {model.name}'s tokenizer renders now "
        f"({run.privacy_json(arm)} records {differ[0]}, today's is {differ[1]}: the chat template, its end-of-turn "
        "token or dpsynth's prompt wording changed since); prompted in a format it never saw, it would write degraded "
        "text"
    )
