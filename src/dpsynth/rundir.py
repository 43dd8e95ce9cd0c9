"""The run directory: where every stage reads and writes, and how it writes atomically.

A run directory is the contract between stages (``prepare -> train -> generate -> evaluate``): each stage reads only
the files an earlier stage wrote here (plus the ledger), so any stage can be rerun alone. Every file is written to a
temporary name in the same directory and renamed into place, so a crash never leaves a half-written file that a later
stage could mistake for a finished one. Directories (adapters) are built under a temporary name and renamed likewise.

Layout::

    DIR/config.yaml
    DIR/data/train.jsonl  DIR/data/test.jsonl  DIR/data/prepare.json  DIR/data/canaries.jsonl
    DIR/dp/adapter/       DIR/dp/privacy.json  DIR/dp/control_codes.json  DIR/dp/generated_sequences_with_dp.jsonl
    DIR/no_dp/adapter/    DIR/no_dp/privacy.json  DIR/no_dp/control_codes.json
    DIR/no_dp/generated_sequences_no_dp.jsonl
    DIR/pe/privacy.json  DIR/pe/control_codes.json  DIR/pe/generated_sequences_pe.jsonl  DIR/pe/pe_log.jsonl
    DIR/<arm>/checkpoints/   (private: optimizer state and the accountant's history, for --resume)
    DIR/eval/metrics.json    DIR/report.html
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Arm = Literal["dp", "no_dp"]
ARMS: tuple[Arm, ...] = ("dp", "no_dp")
"""The arms the train stage fine-tunes."""

_GENERATED_NAME = {
    "dp": "generated_sequences_with_dp.jsonl",
    "no_dp": "generated_sequences_no_dp.jsonl",
    "pe": "generated_sequences_pe.jsonl",
}
SYNTHETIC_ARMS: tuple[str, ...] = tuple(_GENERATED_NAME)
"""Every arm that writes synthetic records, in the order tables show them: the fine-tuned arms and ``pe`` (Private
Evolution, :mod:`dpsynth.pe`). Evaluation, report and CLI enumerate this, so a new generator is one entry here."""
DP_ARMS: tuple[str, ...] = ("dp", "pe")
"""The arms whose output is a DP release (their ``privacy.json`` names a ledger entry), the guarantee's order."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory. Creating the object touches nothing on disk.

    >>> RunDir(Path("runs/a")).generated("dp").as_posix()
    'runs/a/dp/generated_sequences_with_dp.jsonl'
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def test(self) -> Path:
        return self.data_dir / "test.jsonl"

    @property
    def prepare_json(self) -> Path:
        return self.data_dir / "prepare.json"

    @property
    def canaries(self) -> Path:
        return self.data_dir / "canaries.jsonl"

    def arm(self, arm: str) -> Path:
        return self.root / arm

    def adapter(self, arm: str) -> Path:
        return self.arm(arm) / "adapter"

    def privacy_json(self, arm: str) -> Path:
        return self.arm(arm) / "privacy.json"

    def control_codes(self, arm: str) -> Path:
        return self.arm(arm) / "control_codes.json"

    def checkpoints(self, arm: str) -> Path:
        return self.arm(arm) / "checkpoints"

    def train_log(self, arm: str) -> Path:
        return self.arm(arm) / "train_log.jsonl"

    def generated(self, arm: str) -> Path:
        return self.arm(arm) / _GENERATED_NAME[arm]

    @property
    def data_privacy_json(self) -> Path:
        """What ``data/`` is, privacy-wise (the private records themselves): see :func:`not_dp_privacy_json`."""
        return self.data_dir / "privacy.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_privacy_json(self) -> Path:
        """What ``eval/`` is, privacy-wise (metrics that read the real data): see :func:`not_dp_privacy_json`."""
        return self.eval_dir / "privacy.json"

    @property
    def metrics_json(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"


@contextlib.contextmanager
def removed_on_failure(root: Path) -> Iterator[Callable[[], None]]:
    """Remove ``root`` (and the parents made for it) if the body fails and ``root`` did not exist when it began.

    Why: a command that fails on bad input (a missing file, a bad record, a bad setting) must leave nothing behind; a
    new directory holding a ``config.yaml`` looks like a run that happened. A directory that existed before is never
    touched. Call the yielded ``keep()`` once something worth keeping exists (a finished stage): a later failure then
    leaves the directory as it is, for ``--resume``.

    >>> import tempfile
    >>> new = Path(tempfile.mkdtemp()) / "a" / "run"
    >>> try:
    ...     with removed_on_failure(new):
    ...         write_text(new / "config.yaml", "x")
    ...         raise ValueError("bad input")
    ... except ValueError:
    ...     pass
    >>> new.exists(), new.parent.exists(), new.parent.parent.exists()
    (False, False, True)
    """
    root = Path(root)
    created: list[Path] = []  # root and its missing parents, innermost first
    path = root
    while not path.exists() and not path.is_symlink() and path.parent != path:
        created.append(path)
        path = path.parent
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    try:
        yield keep
    except BaseException:
        if created and not kept:
            shutil.rmtree(root, ignore_errors=True)
            for parent in created[1:]:
                try:
                    parent.rmdir()  # only if empty: another process may have put something there meanwhile
                except OSError:
                    break
        raise


# --------------------------------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    Works for files and directories: whatever the caller creates at the temporary path replaces ``path``. A directory
    cannot be renamed over another, so an existing one is first renamed aside (:func:`aside_path`) and deleted only
    after the new one is in place: a crash between the two renames leaves the old directory whole there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it (as a file or a directory)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = aside_path(path)
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def aside_path(path: Path) -> Path:
    """Where :func:`atomic_path` keeps the directory it replaces until the new one is in place."""
    return path.with_name(f".{path.name}.old")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """JSON with the conversions dpsynth needs (paths, numpy scalars); refuses NaN and infinities."""
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False, ensure_ascii=False)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, dumps(obj) + "\n")


def not_dp_privacy_json(path: Path, what: str, **extra: Any) -> None:
    """Write the ``privacy.json`` of an output directory that is **not** a DP release (``data/``, ``eval/``).

    Every output directory says what it is, privacy-wise, so that nobody mistakes its files for DP output: the arms'
    ``privacy.json`` name their ledger entry; these say that there is none and why.
    """
    write_json(path, {"dp": False, "ledger": None, "note": what, **extra})


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Write one JSON object per line, atomically; returns the number of rows."""
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps(row, indent=None) + "\n")
            n += 1
    return n


def read_json(path: Path) -> Any:
    with Path(path).open(encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: Path) -> list[Any]:
    """Read a JSONL file that dpsynth wrote itself (user files go through :mod:`dpsynth.data.readers`)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
