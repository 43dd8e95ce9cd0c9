"""The fingerprint of a source: what the privacy ledger uses to recognise the same private data set again.

It is SHA-256 over the *sorted* SHA-256 digests of the normalized texts of every record read from the file (dropped
ones too, and the whole file even when ``data.max_records`` uses only its beginning), so it does not depend on the
order of the rows, on cleaning options or on how many records a run used: two runs on the same data are charged to the
same budget. Texts are never stored, only their 32-byte digests.

The fingerprint is a deterministic function of private data: keep it with the run and the ledger, do not publish it
(someone who knows all records but one could test guesses of the last one against it).

>>> a, b = Fingerprint(), Fingerprint()
>>> for t in ["one", "two"]: a.add(t)
>>> for t in ["two", "one"]: b.add(t)
>>> a.hexdigest() == b.hexdigest(), a.count
(True, 2)
"""

from __future__ import annotations

import hashlib


class Fingerprint:
    """An order-independent digest of a multiset of texts (already normalized by the caller)."""

    def __init__(self) -> None:
        self._digests: list[bytes] = []

    def add(self, normalized_text: str) -> None:
        self._digests.append(hashlib.sha256(normalized_text.encode("utf-8")).digest())

    @property
    def count(self) -> int:
        return len(self._digests)

    def hexdigest(self) -> str:
        """``sha256:<hex>`` over the sorted digests."""
        h = hashlib.sha256()
        for d in sorted(self._digests):
            h.update(d)
        return "sha256:" + h.hexdigest()
