"""Cleaning: HTML remnants, whitespace, short texts, exact and normalized duplicates; the fingerprint."""

from __future__ import annotations

from dpsynth.data.clean import DUPLICATE, EMPTY, NEAR_DUPLICATE, TOO_LONG, TOO_SHORT, Cleaner, clean_record, clean_text
from dpsynth.data.fingerprint import Fingerprint
from dpsynth.data.schemas import RawRecord


def test_html_remnants_removed():
    raw = "Works&nbsp;great!<br /><br />Battery &gt; 10h &amp; <i>very</i> light.<br/>5&lt;6 and a < b and &#39;ok&#39;"
    assert clean_text(raw) == "Works great! Battery > 10h & very light. 5<6 and a < b and 'ok'"


def test_double_escaped_entities_and_site_markup():
    assert clean_text("a &amp;lt;br&amp;gt; b") == "a b"
    assert clean_text("See [[VIDEOID:abc123def]] the video") == "See the video"


def test_whitespace_and_control_characters_normalized():
    assert clean_text("  line one\n\nline\ttwo\r\n\u200b\u0007end  ") == "line one line two end"


def _check(cleaner: Cleaner, text: str) -> str | None:
    rec = RawRecord(line=1, text=text, title=" a <b>title</b> ")
    clean_record(rec)
    assert rec.title == "a title"
    reason = cleaner.check(rec)
    if reason is None:
        cleaner.remember(rec)
    return reason


def test_length_filters():
    cleaner = Cleaner(min_chars=10, max_chars=40)
    assert _check(cleaner, "<p></p>") == EMPTY
    assert _check(cleaner, "?!? ... !!") == EMPTY  # nothing but punctuation
    assert _check(cleaner, "Too short") == TOO_SHORT
    assert _check(cleaner, "x" * 41) == TOO_LONG
    assert _check(cleaner, "Just long enough.") is None


def test_exact_and_normalized_duplicates():
    cleaner = Cleaner(min_chars=5)
    assert _check(cleaner, "Great case, fits my phone!") is None
    assert _check(cleaner, "Great case,   fits my <b>phone</b>!") == DUPLICATE  # same after cleaning
    assert _check(cleaner, "great CASE fits my phone") == NEAR_DUPLICATE
    assert _check(cleaner, "Great case, fits my tablet!") is None


def test_dropped_record_does_not_block_a_later_copy():
    cleaner = Cleaner(min_chars=5)
    rec = RawRecord(line=1, text="Same words here.")
    assert cleaner.check(rec) is None  # checked, but the caller drops it (e.g. no user id): not remembered
    assert _check(cleaner, "Same words here.") is None


def test_dedup_can_be_disabled():
    cleaner = Cleaner(min_chars=5, dedup=False)
    assert _check(cleaner, "Same words here.") is None
    assert _check(cleaner, "Same words here.") is None


def _fp(texts):
    fp = Fingerprint()
    for t in texts:
        fp.add(t)
    return fp.hexdigest()


def test_fingerprint_order_independent_and_content_sensitive():
    texts = ["first review", "second review", "third review", "second review"]
    assert _fp(texts) == _fp(reversed(texts))
    assert _fp(texts) != _fp(["first review", "second review", "third review!", "second review"])
    assert _fp(texts) != _fp(texts[:3])  # a duplicate counts
    assert _fp(texts).startswith("sha256:") and len(_fp(texts)) == 7 + 64
