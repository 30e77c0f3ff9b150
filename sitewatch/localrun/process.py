"""The life cycle the local servers share, and the small helpers they are built from.

A ``ServerProcess`` is one server binary run as a plain child process on a loopback port:
``start`` spawns it and waits until it is ready or has died, ``stop`` ends it with SIGTERM (so
it can save its state), ``kill`` with SIGKILL (to test what survives a crash), and it can be
started again on the same port with the same state. A subclass says how to run its server
(``_command``) and when it is ready (``_ready``); nothing else differs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, ClassVar, Self, TypeVar

T = TypeVar("T")

# The checkout this package runs from (sitewatch/localrun/ is two levels below it): the
# broker config and the fetched victoria-metrics binary live there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


PORT_RANGE_ENV = "SITEWATCH_PORT_RANGE"
"""``first-last``: the ports ``free_port`` hands out (default: any the kernel picks). Parallel
test workers each get their own range below the kernel's ephemeral ports, so a port one of
them picked and has not bound yet is neither picked by the other nor taken meanwhile as the
source port of some outgoing connection."""

_next_in_range: dict[tuple[int, int], int] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now: within
    ``$SITEWATCH_PORT_RANGE`` (taken in turn, so one just handed out is not handed out again
    before the range wraps), or any."""
    spec = os.environ.get(PORT_RANGE_ENV)
    if not spec:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    first, last = (int(part) for part in spec.split("-"))
    start = _next_in_range.get((first, last), first + os.getpid() % (last - first + 1))
    for k in range(last - first + 1):
        port = first + (start - first + k) % (last - first + 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _next_in_range[(first, last)] = port + 1 if port < last else first
        return port
    raise OSError(f"no free port in {PORT_RANGE_ENV}={spec}")


def wait_until(
    condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def installed_binary(name: str, fallback: str) -> str | None:
    """``name`` found on PATH, else ``fallback`` (where the Debian package puts it) if that
    exists, else None."""
    binary = shutil.which(name) or fallback
    return binary if os.path.exists(binary) else None


def http_status(url: str, timeout_s: float = 0.5) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def terminate(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout_s: float) -> None:
    """Send ``sig`` and wait for the process (SIGKILL if it outlives ``timeout_s``)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ServerProcess:
    """One server process owned by a test, on ``host`` (127.0.0.1) and ``port`` (a free one
    unless given), logging to ``log_path``; ``proc`` is the running process or None.

    Subclasses give ``name`` (for messages), ``ready_means`` (what ``_ready`` checks, for the
    timeout message), ``_command`` and ``_ready``.
    """

    name: ClassVar[str]
    ready_means: ClassVar[str]
    # How often ``start`` checks ``_ready``.
    poll_interval_s: ClassVar[float] = 0.01
    # False for a server that writes ``log_path`` itself: its console output is dropped, so
    # the two never write the same file.
    console_to_log: ClassVar[bool] = True

    def __init__(self, binary: str, workdir: Path, port: int | None, log_path: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        """The argument vector that runs the server."""
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        """The server's environment; None inherits ours."""
        return None

    def _ready(self) -> bool:
        """Whether the running server serves requests yet."""
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait up to ``timeout_s`` until it is ready; RuntimeError with
        the log's tail if it exits first. Does nothing while it runs."""
        if self.running:
            return
        if self.console_to_log:
            with self.log_path.open("ab") as log:
                self.proc = self._spawn(log)
        else:
            self.proc = self._spawn(subprocess.DEVNULL)
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or self._ready(),
            timeout_s,
            f"{self.name} to {self.ready_means} on {self.port}",
            interval_s=self.poll_interval_s,
        )
        if proc.poll() is not None:
            self.proc = None
            raise RuntimeError(f"{self.name} exited: {self.log_tail()}")

    def _spawn(self, console: IO[bytes] | int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, and wait up to ``timeout_s`` for the server to save its state and exit
        (then SIGKILL)."""
        terminate(self.proc, signal.SIGTERM, timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server saves nothing more."""
        terminate(self.proc, signal.SIGKILL, 10.0)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of ``log_path`` ("" if it cannot be read)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
