"""``dpsynth.machine``: which processor a benchmark or frontier ran on, read from ``/proc/cpuinfo``."""

from __future__ import annotations

import pytest

from dpsynth import machine

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


def test_the_first_processors_model_and_flags_are_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(EPYC)
    assert machine.cpu_model(str(info)) == "AMD EPYC 9B14"
    assert machine.cpu_flags(str(info)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    d = machine.describe(str(info))
    assert (d["cpu"], d["bf16_flags"], d["avx512"]) == ("AMD EPYC 9B14", ["avx512_bf16"], True)
    assert isinstance(d["cores"], int) and d["cores"] >= 1
    assert machine.summary(str(info)).startswith("AMD EPYC 9B14 (avx512_bf16), ")
    info.write_text("processor : 0\nmodel name : Old Xeon\nflags : fpu avx2\n")
    assert machine.summary(str(info)).startswith("Old Xeon (no AVX-512), ")


def test_without_cpuinfo_nothing_is_invented(tmp_path, monkeypatch):
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    missing = str(tmp_path / "absent")
    assert machine.cpu_model(missing) == "unknown"
    assert machine.cpu_flags(missing) == frozenset()
    assert machine.describe(missing)["bf16_flags"] == []


def test_the_peak_resident_set_is_read_in_the_os_unit(monkeypatch):
    from types import SimpleNamespace

    resource = pytest.importorskip("resource")  # not on Windows, where the function returns None
    usage = {resource.RUSAGE_SELF: 3 * 2**20, resource.RUSAGE_CHILDREN: 2**20}  # KiB on Linux
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=usage[who]))
    monkeypatch.setattr(machine.platform, "system", lambda: "Linux")
    assert machine.peak_resident_gib() == 3.0  # the larger of the process and its children, not their sum
    usage = {resource.RUSAGE_SELF: 3 * 2**30, resource.RUSAGE_CHILDREN: 2**30}  # bytes on macOS
    monkeypatch.setattr(machine.platform, "system", lambda: "Darwin")
    assert machine.peak_resident_gib() == 3.0
