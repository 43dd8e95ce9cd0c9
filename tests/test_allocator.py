"""``dpsynth.allocator``: the CLI keeps freed memory in glibc's heap (a training step's large tensors are reused, not
mapped and faulted in again), and leaves the allocator alone where the user chose another or asked it to."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

from dpsynth import allocator, cli


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"DPSYNTH_MALLOC": "system"}, "DPSYNTH_MALLOC=system"),
        ({"DPSYNTH_MALLOC": " System "}, "DPSYNTH_MALLOC=system"),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "GLIBC_TUNABLES sets malloc already"),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "another allocator is preloaded"),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "another allocator is preloaded"),
    ],
)
def test_the_users_choice_of_allocator_is_left_alone(environ, reason):
    assert allocator.keep_freed_memory(environ) == reason


def test_not_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_is_glibc", lambda: False)
    assert allocator.keep_freed_memory({}) == "not glibc"


# In a fresh process (this one's allocator stays as it is): bytes glibc serves from mmap'd blocks (mallinfo2's hblkhd)
# while a 64 MiB tensor lives, before and after keep_freed_memory().
_PROBE = """
import ctypes, json, sys
import torch
from dpsynth.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_while_alive():
    before = libc.mallinfo2().hblkhd
    x = torch.ones(64 * 2**20, dtype=torch.uint8)
    during = libc.mallinfo2().hblkhd
    del x
    return during - before

default = mapped_while_alive()
done = keep_freed_memory({})
print(json.dumps({"default": default, "done": done, "kept": mapped_while_alive()}))
"""


def _probe(code: str) -> dict:
    if not allocator._is_glibc():
        pytest.skip("glibc only: mallopt, malloc_trim and mallinfo2 are glibc's")
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("mallinfo2 needs glibc 2.33 or later")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "DPSYNTH_MALLOC")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_after_keep_freed_memory_a_large_tensor_comes_from_the_heap_not_a_fresh_mapping():
    got = _probe(_PROBE)
    assert got["default"] >= 64 * 2**20  # glibc's default: a fresh mmap for the block (the cost this removes)
    assert got["done"] == "kept"
    assert got["kept"] == 0


# Resident memory (/proc/self/statm) after a 256 MiB tensor is freed under keep_freed_memory(), then after
# release_freed_memory(): kept first, given back second.
_RELEASE = """
import json, os
import torch
from dpsynth.allocator import keep_freed_memory, release_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

keep_freed_memory({})
x = torch.ones(256 * 2**20, dtype=torch.uint8)
del x
kept = rss()
release_freed_memory()
print(json.dumps({"kept": kept, "released": rss()}))
"""


def test_release_freed_memory_gives_the_kept_memory_back():
    got = _probe(_RELEASE)
    assert got["kept"] - got["released"] >= 200 * 2**20


def test_the_pipeline_releases_kept_memory_after_each_stage(tmp_path, tiny_model_dir, monkeypatch):
    from dpsynth import api
    from dpsynth.config import load_config

    calls: list[str] = []
    monkeypatch.setattr(api, "release_freed_memory", lambda: calls.append("released"))
    cfg = load_config(None, [f"model.name={tiny_model_dir}", "data.demo_records=40"])
    api.run_pipeline(cfg, tmp_path / "run", progress=False, stages=("prepare",))
    assert calls == ["released"]


def test_the_cli_entry_point_sets_the_allocator_before_running_a_command(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or "kept")
    monkeypatch.setattr(sys, "argv", ["dpsynth", "version"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code in (0, None)
    assert calls == ["kept"]
