"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (no extra dependency).

Why the DevTools protocol rather than ``--dump-dom`` and the stderr log: the log prints every console message at the
same ``INFO:CONSOLE`` level, so an error cannot be told from a log line, and it does not show network requests. Over
the protocol the page reports console calls with their level, uncaught exceptions, browser-side errors (a blocked or
failed load) and every request it makes, which is what "renders offline with no errors" means.

``--remote-debugging-pipe`` makes Chromium read commands from fd 3 and write replies and events to fd 4, each message
JSON terminated by a NUL byte. A reader thread queues the messages so that every wait has a deadline and a broken
browser fails a test instead of hanging it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() or out.stderr.strip()


@dataclass
class PageResult:
    """What a page did while loading: console messages by level, exceptions, browser log entries, requests."""

    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    log_entries: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    requests: list[str] = field(default_factory=list)
    evaluated: Any = None
    screenshot_png: bytes = b""

    @property
    def errors(self) -> list[str]:
        """Everything that counts as an error: console.error/assert, uncaught exceptions, browser errors."""
        out = [f"console.{lvl}: {txt}" for lvl, txt in self.console if lvl in ("error", "assert")]
        out += [f"exception: {e}" for e in self.exceptions]
        out += [f"log.{lvl}: {txt}" for lvl, txt in self.log_entries if lvl == "error"]
        return out


class DevToolsError(RuntimeError):
    """The browser did not answer as expected (it crashed, timed out or returned a protocol error)."""


_LAUNCHER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (the original is closed).

    The launcher moves the browser's pipe ends onto fds 3 and 4; if a pipe end already had number 3 or 4 (as under
    pytest, which holds few descriptors), moving the first would clobber the second.
    """
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Pipe:
    def __init__(self, binary: str, extra_flags: tuple[str, ...] = ()) -> None:
        self._profile = tempfile.mkdtemp(prefix="dpsynth-chromium-")
        to_browser_r, self._to_browser = (_high_fd(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_high_fd(fd) for fd in os.pipe())

        flags = [
            *BASE_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            *extra_flags,
            "about:blank",
        ]
        # The protocol needs the pipe ends at fds 3 and 4: a tiny Python launcher moves them there and execs the
        # browser (safer than a preexec hook; dash, the usual sh, cannot redirect descriptors above 9).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(to_browser_r), str(from_browser_w), binary, *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._messages.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._messages.put(json.loads(raw))

    def stderr_tail(self) -> str:
        return b"".join(self._stderr[-20:]).decode("utf-8", "replace")

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(msg).encode("utf-8") + b"\0")
        except OSError as exc:
            raise DevToolsError(f"cannot send {method} ({exc}); the browser's stderr:\n{self.stderr_tail()}") from None
        return self._next_id

    def next_message(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DevToolsError(f"timed out waiting for the browser; its stderr:\n{self.stderr_tail()}")
        try:
            msg = self._messages.get(timeout=left)
        except queue.Empty:
            raise DevToolsError(f"timed out waiting for the browser; its stderr:\n{self.stderr_tail()}") from None
        if msg is None:
            raise DevToolsError(f"the browser closed the pipe; its stderr:\n{self.stderr_tail()}")
        return msg

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(self._profile, ignore_errors=True)


def _call(
    pipe: _Pipe, result: PageResult, method: str, params: dict[str, Any] | None, session: str | None, deadline: float
) -> dict[str, Any]:
    """Send one command and wait for its reply, recording every event that arrives meanwhile."""
    msg_id = pipe.send(method, params, session)
    while True:
        msg = pipe.next_message(deadline)
        if msg.get("id") == msg_id:
            if "error" in msg:
                raise DevToolsError(f"{method}: {msg['error']}")
            return msg.get("result", {})
        _record(result, msg)


def _record(result: PageResult, msg: dict[str, Any]) -> str | None:
    """File one protocol event into ``result``; returns its method name."""
    method = msg.get("method")
    params = msg.get("params", {})
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        result.console.append((params.get("type", ""), text))
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        result.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
    elif method == "Log.entryAdded":
        entry = params.get("entry", {})
        result.log_entries.append((entry.get("level", ""), f"{entry.get('text', '')} {entry.get('url', '')}".strip()))
    elif method == "Network.requestWillBeSent":
        result.requests.append(params.get("request", {}).get("url", ""))
    return method


def load_page(
    binary: str, url: str, expression: str, *, timeout: float = 60.0, settle: float = 0.5, width: int = 1280
) -> PageResult:
    """Open ``url`` in a fresh headless browser, wait for its load event (and ``settle`` seconds for late errors),
    evaluate ``expression`` (its JSON-serialisable value lands in ``evaluated``) and take a full-page PNG screenshot.
    """
    deadline = time.monotonic() + timeout
    pipe = _Pipe(binary)
    result = PageResult()
    try:
        target = _call(pipe, result, "Target.createTarget", {"url": "about:blank"}, None, deadline)["targetId"]
        session = _call(pipe, result, "Target.attachToTarget", {"targetId": target, "flatten": True}, None, deadline)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            _call(pipe, result, f"{domain}.enable", None, session, deadline)
        _call(
            pipe,
            result,
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session,
            deadline,
        )
        _call(pipe, result, "Page.navigate", {"url": url}, session, deadline)
        while True:  # wait for the load event of the navigation
            msg = pipe.next_message(deadline)
            if _record(result, msg) == "Page.loadEventFired":
                break
        settle_until = min(deadline, time.monotonic() + settle)
        while True:  # collect late events (errors thrown by timers, failed lazy loads)
            try:
                _record(result, pipe.next_message(settle_until))
            except DevToolsError:
                if pipe.proc.poll() is not None:
                    raise
                break
        value = _call(
            pipe,
            result,
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
            deadline,
        )
        if "exceptionDetails" in value:
            raise DevToolsError(f"evaluating the check expression failed: {value['exceptionDetails']}")
        result.evaluated = value.get("result", {}).get("value")
        shot = _call(
            pipe,
            result,
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session,
            deadline,
        )
        result.screenshot_png = base64.b64decode(shot["data"])
        return result
    finally:
        pipe.close()


def page_url(path: Path) -> str:
    return path.resolve().as_uri()
