"""Fingerprints of the files a release produced, for the ledger: path and SHA-256, never content.

A hash lets a later reader check that ``DIR/dp/adapter`` is the adapter the ledger recorded without the ledger holding
anything private. A directory's hash covers its files' relative paths and contents, in sorted order.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.txt").write_text("x")
>>> rec = fingerprint_file(d / "a.txt")
>>> rec.kind, rec.sha256[:12]
('file', '2d711642b726')
>>> fingerprint_file(d / "missing").kind
'missing'
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    """A produced file or directory: absolute path, kind and SHA-256 (None when it was missing at commit time)."""

    path: str
    kind: Literal["file", "dir", "missing"]
    sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FileRecord:
        return cls(path=str(obj["path"]), kind=obj["kind"], sha256=obj.get("sha256"))


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_file(path: str | Path) -> FileRecord:
    """Hash one file or directory (recursively; symlinks are not followed into directories)."""
    p = Path(path).resolve()
    if p.is_file():
        return FileRecord(str(p), "file", _hash_file(p))
    if p.is_dir():
        h = hashlib.sha256()
        for child in sorted(q for q in p.rglob("*") if q.is_file() and not q.is_symlink()):
            h.update(child.relative_to(p).as_posix().encode("utf-8") + b"\0")
            h.update(_hash_file(child).encode("ascii") + b"\n")
        return FileRecord(str(p), "dir", h.hexdigest())
    return FileRecord(str(p), "missing", None)


def fingerprint_files(paths: Sequence[str | Path]) -> list[FileRecord]:
    return [fingerprint_file(p) for p in paths]
