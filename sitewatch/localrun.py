"""Servers run as plain local processes on free loopback ports: for the demo and the tests.

``Mosquitto`` runs the Debian ``mosquitto`` binary with the project's own
``broker/mosquitto.conf`` plus a loopback listener, a persistence directory and a log file
under a work directory. It can be stopped (SIGTERM: mosquitto saves its state), killed
(SIGKILL) and started again on the same port with the same state. ``allow_anonymous=False``
and ``listener_conf`` (e.g. ``cafile``/``certfile``/``keyfile`` lines) turn the loopback
listener into an authenticated or TLS one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BROKER_CONF = Path(__file__).resolve().parent.parent / "broker" / "mosquitto.conf"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A mosquitto process owned by a test."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_conf: str = "",
        *,
        allow_anonymous: bool = True,
        listener_conf: str = "",
    ) -> None:
        """``extra_conf`` is appended to the whole file; ``listener_conf`` goes right after the
        loopback ``listener`` line, so options such as ``cafile``, ``certfile``, ``keyfile`` and
        ``require_certificate`` apply to that listener. ``allow_anonymous=False`` refuses
        clients without credentials (give a ``password_file`` in ``extra_conf``)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        self.conf_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + _lines(listener_conf)
            + f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            f"persistence_location {self.data_dir}/\n"
            f"log_dest file {self.log_path}\n"
            # Run as whoever owns the work directory: started as root, mosquitto would switch
            # to the `mosquitto` user and could then not write its state or its log here.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + BROKER_CONF.read_text()
            + extra_conf
        )

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc
        wait_until(
            lambda: _port_open(self.port) or proc.poll() is not None,
            timeout_s,
            f"mosquitto to listen on {self.port}",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistent state and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no state saved since the last autosave."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _lines(text: str) -> str:
    """``text`` ending with a newline (empty stays empty), so config lines never run together."""
    return text if not text or text.endswith("\n") else text + "\n"


def have_mosquitto() -> bool:
    """Whether the mosquitto binary is installed."""
    return shutil.which("mosquitto") is not None or os.path.exists("/usr/sbin/mosquitto")
