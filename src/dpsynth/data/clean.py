"""Cleaning: HTML remnants and whitespace out, empty/short/long texts and duplicates dropped, each drop counted.

Duplicates are dropped twice over: exact duplicates of the cleaned text, and texts equal after casefolding and
removing punctuation and whitespace (``"Great case!"`` and ``"great case"``). A repeated text is a secret told twice:
under DP it would cost twice the budget it is charged for, and it is what language models memorize first. The first
occurrence in file order is kept. Only SHA-256 digests of the texts are held to detect duplicates.

>>> clean_text("Great&nbsp;case.<br /><br />Fits   my <b>phone</b> &amp; more")
'Great case. Fits my phone & more'
>>> dedup_key("Great case!!") == dedup_key("  great CASE ")
True
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

from dpsynth.data.schemas import RawRecord

EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"

_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>")  # an HTML tag (not a bare "<3" or "a < b")
_BLOCK_TAG = re.compile(r"<\s*/?\s*(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|hr|blockquote)\b[^<>]*>", re.IGNORECASE)
_AMAZON_MARKUP = re.compile(r"\[\[(?:VIDEOID|ASIN):[^\]]*\]\]")  # embedded-video / product-link markers
_SPACE = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[\W_]+")


def _strip_tags(text: str) -> str:
    """Block tags (``<br />``, ``<p>``) separate words; inline ones (``<b>``) do not."""
    return _TAG.sub("", _BLOCK_TAG.sub(" ", text))


def clean_text(text: str) -> str:
    """Strip HTML tags and entities (also doubly escaped ones), site markup and control characters; collapse spaces.

    All whitespace, newlines included, becomes one space: responses are single paragraphs, which keeps the
    ``Title: ...`` line of :mod:`dpsynth.data.format` unambiguous.
    """
    text = _AMAZON_MARKUP.sub(" ", text)
    for _ in range(2):  # "&amp;lt;br&amp;gt;" is a tag after two rounds
        text = _strip_tags(text)
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _strip_tags(text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """The normalized form duplicates are compared on: NFKC, casefolded, letters and digits only."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def clean_record(rec: RawRecord) -> None:
    """Clean a raw record's text and title in place (an empty title becomes None)."""
    if rec.text is not None:
        rec.text = clean_text(rec.text)
    if rec.title is not None:
        rec.title = clean_text(rec.title) or None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class Cleaner:
    """Cleans raw records in file order, remembering (digests of) the kept texts to drop later duplicates.

    :meth:`check` says why a cleaned record is unusable; :meth:`remember` notes a record the caller keeps. They
    are separate so that a record dropped for another reason (no user id) does not block a later copy of its text.
    """

    def __init__(self, *, min_chars: int, max_chars: int | None = None, dedup: bool = True) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.dedup = dedup
        self._exact: set[bytes] = set()
        self._near: set[bytes] = set()

    def check(self, rec: RawRecord) -> str | None:
        """Why a record cleaned by :func:`clean_record` is unusable (empty, too short/long, a duplicate), or None."""
        text = rec.text or ""
        key = dedup_key(text)
        if not key:
            return EMPTY
        if len(text) < self.min_chars:
            return TOO_SHORT
        if self.max_chars is not None and len(text) > self.max_chars:
            return TOO_LONG
        if self.dedup:
            if _digest(text) in self._exact:
                return DUPLICATE
            if _digest(key) in self._near:
                return NEAR_DUPLICATE
        return None

    def remember(self, rec: RawRecord) -> None:
        """Note a kept record's text, so later copies of it are dropped."""
        if self.dedup and rec.text is not None:
            self._exact.add(_digest(rec.text))
            self._near.add(_digest(dedup_key(rec.text)))
