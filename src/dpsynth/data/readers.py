"""Reading user files: JSON lines, CSV with a header, Parquet; each gzip-compressed or not.

Every reader yields ``(line_number, row_dict)``: the line a record *starts* on (JSONL, CSV, whose quoted fields may
span lines) or the row index + 1 (Parquet), so that every error and drop can be traced to a place in the file. Errors
are :class:`~dpsynth.errors.InputError` naming the file and line, never quoting the line: it is private data.

Compression is detected from the gzip magic bytes (a ``.gz`` suffix alone is not trusted); the format comes from the
name (``reviews.jsonl.gz`` is JSONL) or ``data.format``, else from the first bytes (``{`` is JSONL, ``PAR1`` is
Parquet).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from dpsynth.errors import InputError

Format = Literal["jsonl", "csv", "parquet"]

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_SUFFIX_FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # a long review must not hit the csv module's 128 KiB default


@dataclass(frozen=True)
class SourceFile:
    """A user file with its detected compression and format."""

    path: Path
    format: Format
    gzipped: bool


def _head(path: Path, n: int = 4096) -> bytes:
    with path.open("rb") as fh:
        head = fh.read(n)
    if head[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"not a valid gzip file ({type(exc).__name__})", path=path) from exc
    return head


def inspect_file(path: Path | str, fmt: str = "auto") -> SourceFile:
    """Check that ``path`` is a readable file and find its compression and format.

    >>> inspect_file("no/such/file.jsonl")
    Traceback (most recent call last):
    ...
    dpsynth.errors.InputError: no/such/file.jsonl: file not found
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    with path.open("rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC
    if fmt != "auto":
        if fmt not in ("jsonl", "csv", "parquet"):
            raise InputError(f"unknown format {fmt!r} (jsonl, csv or parquet)", path=path)
        return SourceFile(path, fmt, gzipped)  # type: ignore[arg-type]
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in _SUFFIX_FORMATS:
        return SourceFile(path, _SUFFIX_FORMATS[suffix], gzipped)
    head = _head(path)
    if head.startswith(PARQUET_MAGIC):
        return SourceFile(path, "parquet", gzipped)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return SourceFile(path, "jsonl", gzipped)
    raise InputError("cannot tell the file format from its name or content; set data.format", path=path)


def _open_binary(src: SourceFile) -> IO[bytes]:
    if src.gzipped:
        return gzip.open(src.path, "rb")  # type: ignore[return-value]
    return src.path.open("rb")


def _gzip_guard(src: SourceFile, line: int | None, exc: Exception) -> InputError:
    return InputError(f"the file is damaged or truncated ({type(exc).__name__})", path=src.path, line=line)


def read_jsonl(src: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """One JSON object per line; blank lines are skipped."""
    line_no = 0
    try:
        with _open_binary(src) as fh:
            for line_no, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise InputError("not valid UTF-8", path=src.path, line=line_no) from None
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    hint = (
                        " (a JSON array? dpsynth reads JSON lines: one object per line)"
                        if text.lstrip()[:1] == "["
                        else ""
                    )
                    raise InputError("not valid JSON" + hint, path=src.path, line=line_no) from None
                if not isinstance(obj, dict):
                    raise InputError(f"a JSON {type(obj).__name__}, not an object", path=src.path, line=line_no)
                yield line_no, obj
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(src, line_no + 1, exc) from exc


def _csv_rows(src: SourceFile, fh: Iterator[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(fh)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"not valid CSV ({exc})", path=src.path, line=1) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise InputError("the first line must be a header of column names", path=src.path, line=1)
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"not valid CSV ({exc})", path=src.path, line=start) from None
        end = reader.line_num
        if not row:  # a blank line
            continue
        if len(row) != len(header):
            raise InputError(f"{len(row)} fields, but the header has {len(header)}", path=src.path, line=start)
        yield start, dict(zip(header, row, strict=True))


def read_csv(src: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """CSV with a header line; a record's line is the line it starts on (quoted fields may contain newlines).

    Rows are parsed with :func:`csv.reader` (the parsing ``csv.DictReader`` does) so that the starting line of each
    record is known exactly, blank lines included.
    """
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        with _open_binary(src) as raw:
            yield from _csv_rows(src, _decoded_lines(src, raw))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(src, None, exc) from exc


def _decoded_lines(src: SourceFile, raw: IO[bytes]) -> Iterator[str]:
    """Lines decoded one at a time, so that invalid UTF-8 is reported with its line (the csv module counts the
    same lines: a quoted newline still ends a physical line here)."""
    for line_no, line in enumerate(raw, start=1):
        try:
            yield line.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InputError("not valid UTF-8", path=src.path, line=line_no) from None


def read_parquet(src: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parquet rows via pyarrow, in batches; the "line" is the row index + 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if src.gzipped:  # Parquet needs random access: decompress into memory
            with gzip.open(src.path, "rb") as gz:
                pf = pq.ParquetFile(io.BytesIO(gz.read()))
        else:
            pf = pq.ParquetFile(src.path)
    except (pa.ArrowException, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"not a valid Parquet file ({type(exc).__name__})", path=src.path) from exc
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                index += 1
                yield index, row
    except pa.ArrowException as exc:
        raise InputError(f"cannot read row group ({type(exc).__name__})", path=src.path, line=index + 1) from exc


def read_rows(path: Path | str, fmt: str = "auto") -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL, CSV or Parquet file (gzip or not), each with its line number.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> _ = p.write_text('{"text": "ok"}\\n\\n{"text": "fine"}\\n')
    >>> list(read_rows(p))
    [(1, {'text': 'ok'}), (3, {'text': 'fine'})]
    >>> import shutil; shutil.rmtree(p.parent)
    """
    return iter_rows(inspect_file(path, fmt))


def iter_rows(src: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of an inspected file (see :func:`inspect_file`)."""
    readers = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}
    return readers[src.format](src)
