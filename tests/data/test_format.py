"""Prompt formatting on the real SmolLM2 tokenizer: labels mask prompts, truncation, prompt/training consistency."""

from __future__ import annotations

import pytest

from dpsynth.data.format import (
    IGNORE_INDEX,
    bounded_text,
    cut_response,
    encode_prompt,
    encode_unit,
    parse_response,
    prompt_messages,
    response_text,
    user_prompt,
)
from dpsynth.data.records import Record

SYSTEM = "You write realistic customer product reviews."
RECORDS = [
    Record(
        text="The case fits my phone perfectly and the buttons are easy to press.",
        unit="u1",
        codes={"rating": 5, "category": "Cell_Phones_and_Accessories"},
        title="Great fit",
    ),
    Record(text="Stopped charging after two weeks. Returning it.", unit="u1", codes={"rating": 1, "category": "Books"}),
    Record(text="Okay for the price, \u00e9l\u00e9gant design \U0001f600 but flimsy.", unit="u1", codes={"rating": 3}),
]


def _label_spans(ex):
    """Contiguous runs of labelled positions, as lists of token ids."""
    spans, cur = [], []
    for tok, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                spans.append(cur)
            cur = []
        else:
            assert lab == tok  # labels are the input ids themselves (the model shifts them)
            cur.append(tok)
    if cur:
        spans.append(cur)
    return spans


def test_user_prompt_wording():
    assert user_prompt({"rating": 4, "category": "Cell_Phones_and_Accessories"}) == (
        "Write a positive 4-star review in the category Cell Phones and Accessories."
    )
    assert user_prompt({"category": "Books"}) == "Write a review in the category Books."
    assert user_prompt({}) == "Write a review."
    assert (
        user_prompt({"rating": 2, "lang": "en", "tone": "dry"})
        == "Write a negative 2-star review. lang: en; tone: dry."
    )
    # only a 1-5 integer rating gets its sentiment in words; other scales keep the bare number
    assert [user_prompt({"rating": r}) for r in (1, 3, 5)] == [
        "Write a very negative 1-star review.",
        "Write a mixed 3-star review.",
        "Write a very positive 5-star review.",
    ]
    assert user_prompt({"rating": 10}) == "Write a 10-star review."
    assert user_prompt({"rating": "3"}) == "Write a 3-star review."


def test_prompt_messages_always_carry_our_system_prompt():
    msgs = prompt_messages({"rating": 5}, SYSTEM)
    assert msgs[0] == {"role": "system", "content": SYSTEM} and msgs[1]["role"] == "user"


def test_encode_prompt_renders_our_system_prompt_not_the_default(tokenizer):
    text = tokenizer.decode(encode_prompt(tokenizer, {"rating": 5}, SYSTEM))
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWrite a very positive 5-star review.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "SmolLM" not in text


def test_labels_are_exactly_the_responses(tokenizer):
    ex = encode_unit(tokenizer, RECORDS, system_prompt=SYSTEM, max_tokens=200, include_title=True)
    assert len(ex.input_ids) == len(ex.labels)
    spans = _label_spans(ex)
    assert len(spans) == len(RECORDS)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for span, rec in zip(spans, RECORDS, strict=True):
        assert span[-1] == end  # complete responses end with the end-of-turn token, in the loss
        assert tokenizer.decode(span[:-1]) == response_text(rec, include_title=True)
    # nothing of the prompts is in the loss
    masked = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX])
    assert SYSTEM in masked and "Write a very positive 5-star review" in masked
    assert "perfectly" not in masked


def test_whole_sequence_matches_the_chat_template(tokenizer):
    ex = encode_unit(tokenizer, RECORDS, system_prompt=SYSTEM, max_tokens=200)
    messages = [{"role": "system", "content": SYSTEM}]
    for r in RECORDS:
        messages += [{"role": "user", "content": user_prompt(r.codes)}, {"role": "assistant", "content": r.text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ex.input_ids) == rendered
    assert ex.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_training_prefix_is_the_generation_prompt(tokenizer):
    ex = encode_unit(tokenizer, RECORDS[:1], system_prompt=SYSTEM, max_tokens=200)
    prompt = encode_prompt(tokenizer, RECORDS[0].codes, SYSTEM)
    assert ex.input_ids[: len(prompt)] == prompt
    assert all(lab == IGNORE_INDEX for lab in ex.labels[: len(prompt)])
    assert ex.labels[len(prompt)] != IGNORE_INDEX


def test_truncation_drops_end_of_turn_from_the_loss(tokenizer):
    long, short = RECORDS[0], RECORDS[1]
    n_long = len(tokenizer(long.text, add_special_tokens=False)["input_ids"])
    n_short = len(tokenizer(short.text, add_special_tokens=False)["input_ids"])
    max_tokens = 6
    assert n_long > max_tokens and n_short > max_tokens
    ex = encode_unit(tokenizer, [long, short], system_prompt=SYSTEM, max_tokens=max_tokens)
    spans = _label_spans(ex)
    assert [len(s) for s in spans] == [max_tokens, max_tokens]  # no end-of-turn token in the loss
    ids = tokenizer(long.text, add_special_tokens=False)["input_ids"]
    assert spans[0] == ids[:max_tokens]
    # the conversation still closes the turn in the input, so the next prompt reads as in generation
    assert tokenizer.decode(ex.input_ids).count("<|im_end|>") == 5
    # a response exactly at the bound is complete: its end token is learned
    exact = encode_unit(tokenizer, [short], system_prompt=SYSTEM, max_tokens=n_short)
    assert [len(s) for s in _label_spans(exact)] == [n_short + 1]


def test_sentence_cut_ends_a_long_response_after_its_last_whole_sentence(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = 'Stopped charging after two weeks. Support said "send it back!" Returning it now. It was my third one'
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    first_two = 'Stopped charging after two weeks. Support said "send it back!"'
    n_two = len(tokenizer(first_two, add_special_tokens=False)["input_ids"])
    three = len(tokenizer(text[: text.index(" It was")], add_special_tokens=False)["input_ids"])
    assert n_two < three < n
    rec = Record(text=text, unit="u9", codes={"rating": 1})
    # a bound between two and three sentences: the first two, closed by the end-of-turn token (learned)
    for max_tokens in (n_two, three - 1):
        ex = encode_unit(tokenizer, [rec], system_prompt=SYSTEM, max_tokens=max_tokens, cut="sentence")
        (span,) = _label_spans(ex)
        assert span[-1] == end and tokenizer.decode(span[:-1]) == first_two
        assert cut_response(tokenizer, text, max_tokens, "sentence")[1] == len(first_two)
    # the token rule cuts the same bound mid-sentence and learns no end of turn
    (span,) = _label_spans(encode_unit(tokenizer, [rec], system_prompt=SYSTEM, max_tokens=three - 1))
    assert len(span) == three - 1 and end not in span
    assert cut_response(tokenizer, text, three - 1)[1] is None
    # no sentence end within the bound: cut at the token, as the token rule does
    ids, kept = cut_response(tokenizer, text, 4, "sentence")
    assert kept is None and ids == tokenizer(text, add_special_tokens=False)["input_ids"][:4]
    # a response within the bound is whole under either rule
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cut_response(tokenizer, text, n, "sentence") == (whole, len(text))


def test_bounded_text_is_the_trained_cut_as_text(tokenizer):
    """What the frontier's length-matched MAUVE cuts real records to: the text the sentence rule keeps (two sentences
    here), the first ``max_tokens`` tokens decoded under the token rule, and a text within the bound unchanged."""
    text = 'Stopped charging after two weeks. Support said "send it back!" Returning it now. It was my third one'
    first_two = 'Stopped charging after two weeks. Support said "send it back!"'
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    n_two = len(tokenizer(first_two, add_special_tokens=False)["input_ids"])
    assert bounded_text(tokenizer, text, n_two, "sentence") == first_two
    cut = bounded_text(tokenizer, text, n_two - 2, "token")  # mid-sentence: the first n_two - 2 tokens
    assert first_two.startswith(cut) and cut != first_two
    assert cut == tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][: n_two - 2])
    assert bounded_text(tokenizer, text, n, "sentence") == text == bounded_text(tokenizer, text, n, "token")


def test_one_unit_per_example(tokenizer):
    other = Record(text="Someone else's review text.", unit="u2", codes={"rating": 2})
    with pytest.raises(ValueError, match="several privacy units"):
        encode_unit(tokenizer, [RECORDS[0], other], system_prompt=SYSTEM, max_tokens=50)
    with pytest.raises(ValueError, match="without records"):
        encode_unit(tokenizer, [], system_prompt=SYSTEM, max_tokens=50)


def test_template_that_alters_content_is_refused(tokenizer):
    class Upper:
        all_special_ids = tokenizer.all_special_ids

        def apply_chat_template(self, messages, **kw):
            return "".join(f"[{m['role']}]{m['content'].upper()}" for m in messages)

        def __call__(self, text, add_special_tokens=False):
            return tokenizer(text, add_special_tokens=add_special_tokens)

    with pytest.raises(ValueError, match="alters message content"):
        encode_unit(Upper(), RECORDS[:1], system_prompt=SYSTEM, max_tokens=50)


@pytest.mark.parametrize("include_title", [True, False])
def test_response_roundtrip(include_title):
    for rec in RECORDS:
        title, body = parse_response(response_text(rec, include_title), include_title)
        assert body == rec.text
        assert title == (rec.title if include_title else None)


def test_parse_response_tolerates_missing_or_empty_title():
    assert parse_response("  Just a body.  ", include_title=True) == (None, "Just a body.")
    assert parse_response("Title:\nBody here.", include_title=True) == (None, "Body here.")
    assert parse_response("Title: Only a title", include_title=True) == ("Only a title", "")
    assert parse_response("Title: x\nbody", include_title=False) == (None, "Title: x\nbody")
