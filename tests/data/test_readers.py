"""Readers: every format plain and gzip, line numbers, and errors that name file and line but not the content."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dpsynth.data.readers import inspect_file, read_rows
from dpsynth.errors import InputError

ROWS = [
    {"text": "first review, plain", "stars": 5},
    {"text": "second review", "stars": 3},
    {"text": "third review", "stars": 1},
]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz", "r.csv", "r.csv.gz", "r.parquet", "r.parquet.gz"])
def test_every_format_plain_and_gzip(write_rows, name):
    path = write_rows(name, ROWS)
    src = inspect_file(path)
    assert src.gzipped == name.endswith(".gz")
    assert src.format == name.split(".")[1]
    rows = list(read_rows(path))
    # CSV values are strings; JSON and Parquet keep their types
    expected_stars = ["5", "3", "1"] if src.format == "csv" else [5, 3, 1]
    assert [r["text"] for _, r in rows] == [r["text"] for r in ROWS]
    assert [r["stars"] for _, r in rows] == expected_stars
    first_line = 2 if src.format == "csv" else 1  # the CSV header is line 1
    assert [line for line, _ in rows] == [first_line, first_line + 1, first_line + 2]


def test_gzip_detected_by_magic_bytes_and_format_by_content(tmp_path):
    path = tmp_path / "export.dat"  # neither suffix says anything
    path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": "b"}\n'))
    src = inspect_file(path)
    assert (src.gzipped, src.format) == (True, "jsonl")
    assert [r["text"] for _, r in read_rows(path)] == ["a", "b"]


def test_format_override(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("text,stars\nhello there,4\n")
    with pytest.raises(InputError, match=r"data\.format"):
        inspect_file(path)
    assert list(read_rows(path, "csv")) == [(2, {"text": "hello there", "stars": "4"})]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "SECRET-CONTENT-XYZ"\n{"text": "never reached"}\n')
    rows = read_rows(path)
    assert next(rows)[0] == 1
    with pytest.raises(InputError) as err:
        next(rows)
    assert str(err.value) == f"{path}:3: not valid JSON"
    assert "SECRET-CONTENT-XYZ" not in str(err.value)
    assert (err.value.path, err.value.line) == (str(path), 3)


def test_malformed_jsonl_in_gzip_names_line(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n[1, 2]\n'))
    with pytest.raises(InputError, match=r"r\.jsonl\.gz:2: a JSON list, not an object"):
        list(read_rows(path))


def test_missing_file():
    with pytest.raises(InputError, match=r"nope/reviews\.csv: file not found"):
        read_rows(Path("nope/reviews.csv"))


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        read_rows(tmp_path)


def test_truncated_gzip_is_an_input_error(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    data = gzip.compress(b"".join(b'{"text": "review %d"}\n' % i for i in range(2000)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        list(read_rows(path))


def test_csv_multiline_field_reports_starting_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('text,stars\n"line one\nline two\nline three",5\n\n"single",4\n"a\nb",3\n')
    assert list(read_rows(path)) == [
        (2, {"text": "line one\nline two\nline three", "stars": "5"}),
        (6, {"text": "single", "stars": "4"}),
        (7, {"text": "a\nb", "stars": "3"}),
    ]


def test_csv_wrong_field_count_names_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,stars\nfine,5\nextra,4,oops\n")
    with pytest.raises(InputError, match=r"r\.csv:3: 3 fields, but the header has 2"):
        list(read_rows(path))


def test_csv_bom_and_header_spaces(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes("\ufefftext , stars\nhello,2\n".encode())
    assert list(read_rows(path)) == [(2, {"text": "hello", "stars": "2"})]


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2: not valid UTF-8"):
        list(read_rows(path))
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(b'text,stars\n"two\nlines",1\nbad \xff byte,2\n'))
    with pytest.raises(InputError, match=r"r\.csv\.gz:4: not valid UTF-8"):
        list(read_rows(path))


def test_not_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match="not a valid Parquet file"):
        list(read_rows(path))


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b"}\n]\n')
    with pytest.raises(InputError, match=r"r\.json:1: not valid JSON \(a JSON array\? .*one object per line\)"):
        list(read_rows(path))


def test_csv_windows_line_endings(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b'text,stars\r\n"a\r\nb",5\r\n\r\nc,4\r\n')
    assert list(read_rows(path)) == [(2, {"text": "a\r\nb", "stars": "5"}), (5, {"text": "c", "stars": "4"})]
