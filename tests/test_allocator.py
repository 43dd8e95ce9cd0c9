"""``dpsynth.allocator``: the CLI keeps freed memory in glibc's heap (a training step's large tensors are reused, not
mapped and faulted in again), and leaves the allocator alone where the user chose another or asked it to."""

from __future__ import annotations

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


def test_after_keep_freed_memory_a_large_tensor_comes_from_the_heap_not_a_fresh_mapping():
    if not allocator._is_glibc():
        pytest.skip("glibc only: mallopt and mallinfo2 are glibc's")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "DPSYNTH_MALLOC")}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["default"] >= 64 * 2**20  # glibc's default: a fresh mmap for the block (the cost this removes)
    assert got["done"] == "kept"
    assert got["kept"] == 0


def test_the_cli_entry_point_sets_the_allocator_before_running_a_command(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or "kept")
    monkeypatch.setattr(sys, "argv", ["dpsynth", "version"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code in (0, None)
    assert calls == ["kept"]
