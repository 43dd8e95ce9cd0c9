"""What this machine offers a run: the usable CPU cores (thread counts, reports, benchmarks) and which processor it
is (benchmarks and frontiers record it: the same 2 cores ran 2-5x apart on the processors this project met, a Xeon
with AMX, an EPYC with AVX-512 bf16 and one with AVX2 only, so a time without its processor compares with nothing)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags of native bfloat16 dot products (``dpsynth.train.precision`` trains under bf16 autocast only there)."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, e.g. under taskset or a container's
    cpuset), at least 1.

    >>> usable_cores() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _cpuinfo(path: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a Linux ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends at the first blank line
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where unknown."""
    return frozenset(_cpuinfo(cpuinfo).get("flags", "").split())


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says, else ``unknown``."""
    return _cpuinfo(cpuinfo).get("model name") or platform.processor() or "unknown"


def describe(cpuinfo: str = "/proc/cpuinfo") -> dict[str, object]:
    """The processor, its native bf16 and AVX-512 flags, the usable cores, and the GPU when torch sees one.

    >>> sorted(describe())
    ['arch', 'avx512', 'bf16_flags', 'cores', 'cpu', 'gpu']
    """
    flags = cpu_flags(cpuinfo)
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:  # torch is a dependency; an environment stripped of it has no GPU that dpsynth could use
        pass
    return {
        "cpu": cpu_model(cpuinfo),
        "arch": platform.machine(),
        "cores": usable_cores(),
        "bf16_flags": [f for f in BF16_FLAGS if f in flags],
        "avx512": "avx512f" in flags,
        "gpu": gpu,
    }


def summary(cpuinfo: str = "/proc/cpuinfo") -> str:
    """One line for a table's header: ``AMD EPYC (avx512_bf16), x86_64, 2 CPU cores``."""
    d = describe(cpuinfo)
    bf16 = d["bf16_flags"]
    tags = ", ".join(bf16) if isinstance(bf16, list) and bf16 else ("AVX-512" if d["avx512"] else "no AVX-512")
    line = f"{d['cpu']} ({tags}), {d['arch']}, {d['cores']} CPU cores"
    return f"{line}, GPU {d['gpu']}" if d["gpu"] else line


def peak_resident_gib() -> float | None:
    """The most memory this process (or the largest of its finished children) has held resident, in GiB: what a
    frontier records beside its time, so that a sweep says whether it fits a user's machine without ``/usr/bin/time``
    (gemma-3-270m's Amazon sweep peaked at 22.4 GiB of a 23.5 GiB machine before its loss ran in chunks). A process's
    lifetime peak: a command's own when it runs as one, a test session's under pytest. None where the OS has no
    ``getrusage`` (Windows).

    >>> (peak_resident_gib() or 1.0) > 0
    True
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    unit = 1 if platform.system() == "Darwin" else 1024  # macOS reports bytes, Linux KiB
    return round(peak * unit / 2**30, 2)
