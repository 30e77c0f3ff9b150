"""``Mosquitto`` runs the Debian ``mosquitto`` binary with the project's own
``broker/mosquitto.conf`` plus a loopback listener, a persistence directory and a log file
under a work directory. It can be stopped (SIGTERM: mosquitto saves its state), killed
(SIGKILL) and started again on the same port with the same state. ``allow_anonymous=False``
and ``listener_conf`` (e.g. ``cafile``/``certfile``/``keyfile`` lines) turn the loopback
listener into an authenticated or TLS one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
from pathlib import Path

from sitewatch.localrun.process import PROJECT_ROOT, ServerProcess, installed_binary

BROKER_CONF = PROJECT_ROOT / "broker" / "mosquitto.conf"

_DEBIAN_BINARY = "/usr/sbin/mosquitto"


class Mosquitto(ServerProcess):
    """A mosquitto process owned by a test.

    ``kill`` (SIGKILL): no state saved since the last autosave.
    """

    name = "mosquitto"
    ready_means = "listen"
    poll_interval_s = 0.05
    console_to_log = False  # ``log_dest file`` in the config: mosquitto writes log_path itself

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
        binary = installed_binary("mosquitto", _DEBIAN_BINARY)
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        super().__init__(binary, workdir, port, workdir / "mosquitto.log")
        self.extra_conf = extra_conf
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
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

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf_path)]

    def _ready(self) -> bool:
        """Something accepts TCP connections on ``port``."""
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it listens on ``port``."""
        super().start(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistent state and exits."""
        super().stop(timeout_s)


def _lines(text: str) -> str:
    """``text`` ending with a newline (empty stays empty), so config lines never run together."""
    return text if not text or text.endswith("\n") else text + "\n"


def have_mosquitto() -> bool:
    """Whether the mosquitto binary is installed."""
    return installed_binary("mosquitto", _DEBIAN_BINARY) is not None


def require_mosquitto_pub() -> None:
    """Exit with how to install it when ``mosquitto_pub`` (which the benches publish with) is
    missing: Debian's ``mosquitto-clients``, which ``scripts/test`` installs."""
    if shutil.which("mosquitto_pub") is None:
        raise SystemExit(
            "mosquitto_pub is not installed: sudo apt-get install mosquitto-clients "
            "(./scripts/test installs it too)"
        )
