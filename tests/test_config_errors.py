"""A bad config file is a clear error naming the file (and the line where there is one), never a traceback."""

from __future__ import annotations

import pytest

from dpsynth.config import load_config
from dpsynth.errors import ConfigError


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"absent\.yaml: config file not found"):
        load_config(tmp_path / "absent.yaml", [])


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    # the column counts characters: the UTF-8 "\u00e8" (two bytes) before the Latin-1 byte is one
    path.write_bytes("train:\n  max_steps: 3\ndata:\n  path: \u00e8".encode() + "caf\u00e9.csv\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml, line 4, column 13: not UTF-8 text \(a byte 0xe9\)"):
        load_config(path, [])


def test_invalid_yaml_and_a_top_level_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml: not valid YAML .*line 2"):
        load_config(bad, [])
    listed = tmp_path / "list.yaml"
    listed.write_text("- train\n- data\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping of sections"):
        load_config(listed, [])


def test_a_utf8_file_with_a_byte_order_mark_and_accents_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("\ufeffdata:\n  path: caf\u00e9.csv\n", encoding="utf-8")
    assert str(load_config(path, []).data.path).endswith("caf\u00e9.csv")
