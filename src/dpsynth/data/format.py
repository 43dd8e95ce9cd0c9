"""Prompt -> response formatting through the tokenizer's chat template, for training and for generation.

A record becomes a chat turn: a user message built only from its control codes (public) and an assistant message
that is the review (private). One privacy unit becomes ONE training example: the system prompt, then a user and an
assistant turn per record of that unit, never records of two units in one sequence, so that per-example gradient
clipping bounds each unit's influence.

Only assistant responses are in the loss (``labels`` is -100 elsewhere). Each response is cut to ``max_tokens``
tokens, a public bound; its end-of-turn token (``<|im_end|>``) is in the loss only when the response was not cut, so
the model does not learn to stop mid-sentence. With ``cut="sentence"`` (``data.cut_responses``) a longer response is
cut instead after its last sentence that fits the bound, and then ends with the end-of-turn token: a model trained
on token cuts never learns to finish a long review within the bound and runs into the generation limit mid-sentence.
Either rule reads one record only, so one unit's example still depends on that unit alone.

Tokens are produced piece by piece: the template is rendered with placeholders for the responses, the text between
them is tokenized on its own, and each response is tokenized on its own. The first piece is then exactly the
generation prompt (:func:`encode_prompt`), so a model sees at generation time the token sequence it was trained on.

>>> user_prompt({"rating": 4, "category": "Cell_Phones_and_Accessories"})
'Write a positive 4-star review in the category Cell Phones and Accessories.'
>>> user_prompt({"rating": 1, "language": "en"})
'Write a very negative 1-star review. language: en.'
>>> parse_response("Title: Works\\nGood case.", include_title=True)
('Works', 'Good case.')
>>> sentence_ends('Great case. Fits well! "Love it." Would buy')
[11, 22, 33]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dpsynth.data.categories import category_label
from dpsynth.data.records import CodeValue, Record

CutRule = Literal["token", "sentence"]
IGNORE_INDEX = -100
TITLE_PREFIX = "Title: "
_MARK = "\ue000DPSYNTH-RESPONSE-{}\ue001"  # private-use characters: no template or text contains them
# A sentence ends with . ! ? or an ellipsis, closing quotes or brackets after it, then white space (the rule of
# dpsynth.evaluate.quality.is_abrupt, so that a sentence cut reads as well-formed there).
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]}*_]*(?=\s)")


# A 1-5 star rating named in words too: the pretrained model ignores a bare star count (STACK-NOTES). A public
# mapping, chosen on the public proxy's eps-0 rows (bench/results/recipe-search/: well-formed 0.10 -> 0.22, sentiment
# macro-F1 0.42 -> 0.51 with the embedding classifier but 0.57 -> 0.53 with TF-IDF; a weak signal).
RATING_WORDS = {1: "very negative", 2: "negative", 3: "mixed", 4: "positive", 5: "very positive"}


def user_prompt(codes: Mapping[str, CodeValue]) -> str:
    """The user turn for a set of control codes (rating and category in words, other codes as ``name: value``).

    The domain ("product", "restaurant") is the system prompt's to say (``data.system_prompt``), so the same user
    turn serves Amazon, Yelp and generic data.
    """
    rating = codes.get("rating")
    word = RATING_WORDS.get(rating) if isinstance(rating, int) and not isinstance(rating, bool) else None
    if rating is None:
        text = "Write a review"
    elif word is None:
        text = f"Write a {rating}-star review"
    else:
        text = f"Write a {word} {rating}-star review"
    category = codes.get("category")
    if category is not None:
        text += f" in the category {category_label(category)}"
    text += "."
    extra = [f"{name}: {value}" for name, value in codes.items() if name not in ("rating", "category")]
    if extra:
        text += " " + "; ".join(extra) + "."
    return text


def prompt_messages(codes: Mapping[str, CodeValue], system_prompt: str) -> list[dict[str, str]]:
    """System and user messages for one record (always our system prompt: the template's default is not ours)."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt(codes)}]


def response_text(record: Record, include_title: bool) -> str:
    """What the assistant says: the review, after a ``Title: ...`` line when titles are included and present."""
    if include_title and record.title:
        return f"{TITLE_PREFIX}{record.title}\n{record.text}"
    return record.text


def parse_response(text: str, include_title: bool) -> tuple[str | None, str]:
    """Split generated text into (title or None, review body); the inverse of :func:`response_text`."""
    text = text.strip()
    if include_title and text.startswith(TITLE_PREFIX.strip()):
        first, _, rest = text.partition("\n")
        title = first[len(TITLE_PREFIX.strip()) :].strip()
        return (title or None), rest.strip()
    return None, text


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def sentence_ends(text: str) -> list[int]:
    """Character positions just after each sentence end of ``text`` that white space follows (so not the end of the
    text itself: a response that fits the bound is never cut)."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


def cut_response(tokenizer: Any, text: str, max_tokens: int, cut: CutRule = "token") -> tuple[list[int], int | None]:
    """The response's token ids as trained, and how many characters of ``text`` they stand for when it ends
    complete (its end-of-turn token is then trained), or None when it was cut mid-sentence at ``max_tokens``.

    ``cut="sentence"``: a response over the bound ends after its last sentence whose tokens fit; one with no sentence
    end within the bound is cut at ``max_tokens`` as with ``"token"``.
    """
    ids = _tokens(tokenizer, text)
    if len(ids) <= max_tokens:
        return ids, len(text)
    if cut == "sentence":
        for end in reversed(sentence_ends(text)):
            kept = _tokens(tokenizer, text[:end])
            if len(kept) <= max_tokens:
                return kept, end
    return ids[:max_tokens], None


def bounded_text(tokenizer: Any, text: str, max_tokens: int, cut: CutRule = "token") -> str:
    """``text`` as :func:`cut_response` bounds it for training, as text: unchanged when it fits ``max_tokens``, else cut
    after its last whole sentence that fits (``cut="sentence"``) or decoded from its first ``max_tokens`` tokens.

    Why as text: a length-matched comparison (the frontier's ``mauve_bounded``) cuts real records to the budget that
    bounds every synthetic one, by the rule that shaped what the model learned."""
    ids, kept = cut_response(tokenizer, text, max_tokens, cut)
    return text[:kept] if kept is not None else str(tokenizer.decode(ids))


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))


def encode_prompt(tokenizer: Any, codes: Mapping[str, CodeValue], system_prompt: str) -> list[int]:
    """Token ids of the generation prompt for ``codes``: the chat up to the assistant's header."""
    return _tokens(tokenizer, _render(tokenizer, prompt_messages(codes, system_prompt), generation_prompt=True))


@dataclass
class Example:
    """One training example (one privacy unit): token ids and labels (-100 outside assistant responses)."""

    input_ids: list[int]
    labels: list[int]


def _split_rendered(tokenizer: Any, messages: list[dict[str, str]], responses: Sequence[str]) -> list[str]:
    """The rendered chat cut around each response: ``[piece0, piece1, ..., pieceN]`` with response i between pieces
    i and i+1. Raises if the template changed the content (then the pieces would not line up with the responses)."""
    marks = [_MARK.format(i) for i in range(len(responses))]
    with_marks = [dict(m) for m in messages]
    j = 0
    for m in with_marks:
        if m["role"] == "assistant":
            m["content"] = marks[j]
            j += 1
    rendered = _render(tokenizer, with_marks, generation_prompt=False)
    pieces = []
    rest = rendered
    for mark in marks:
        before, found, rest = rest.partition(mark)
        if not found or mark in rest:
            raise ValueError("the chat template does not render each assistant message exactly once")
        pieces.append(before)
    pieces.append(rest)
    real = _render(tokenizer, messages, generation_prompt=False)
    joined = pieces[0] + "".join(r + p for r, p in zip(responses, pieces[1:], strict=True))
    if joined != real:
        raise ValueError("the chat template alters message content; responses cannot be located in the rendering")
    return pieces


def encode_unit(
    tokenizer: Any,
    records: Sequence[Record],
    *,
    system_prompt: str,
    max_tokens: int,
    include_title: bool = False,
    cut: CutRule = "token",
) -> Example:
    """ONE example for one privacy unit: system prompt, then a user turn (codes) and an assistant turn (response)
    per record. Labels are the response tokens (each cut by :func:`cut_response`) and, for responses that end
    complete, the end-of-turn token that follows; every other position is -100."""
    if not records:
        raise ValueError("a unit without records")
    if len({r.unit for r in records}) != 1:
        raise ValueError("records of several privacy units in one example")
    responses = [response_text(r, include_title) for r in records]
    messages = [{"role": "system", "content": system_prompt}]
    for r, resp in zip(records, responses, strict=True):
        messages += [{"role": "user", "content": user_prompt(r.codes)}, {"role": "assistant", "content": resp}]
    pieces = _split_rendered(tokenizer, messages, responses)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    input_ids: list[int] = []
    labels: list[int] = []
    truncated = False
    for i, piece in enumerate(pieces):
        ids = _tokens(tokenizer, piece)
        piece_labels = [IGNORE_INDEX] * len(ids)
        if i > 0 and not truncated and ids and ids[0] in special:
            piece_labels[0] = ids[0]  # the end-of-turn token right after a complete response
        input_ids += ids
        labels += piece_labels
        if i < len(responses):
            resp_ids, complete = cut_response(tokenizer, responses[i], max_tokens, cut)
            truncated = complete is None
            input_ids += resp_ids
            labels += resp_ids
    return Example(input_ids=input_ids, labels=labels)
