"""Servers run as plain local processes on free loopback ports: for the demo and the tests.

``Mosquitto`` runs the Debian ``mosquitto`` binary with the project's own
``broker/mosquitto.conf`` plus a loopback listener, a persistence directory and a log file
under a work directory. It can be stopped (SIGTERM: mosquitto saves its state), killed
(SIGKILL) and started again on the same port with the same state. ``allow_anonymous=False``
and ``listener_conf`` (e.g. ``cafile``/``certfile``/``keyfile`` lines) turn the loopback
listener into an authenticated or TLS one.

``Influxd`` runs Debian's ``influxd`` (InfluxDB 1.6.7, package ``influxdb``) the same way:
its own ``influxdb.conf`` with every listener but HTTP off, data under the work directory,
the same stop/kill/start-again life cycle, and InfluxQL helpers (stdlib ``urllib``) for
tests to read back what was stored. ``VictoriaMetrics`` runs a ``victoria-metrics`` binary
(fetched by ``scripts/fetch-victoria-metrics.sh``; see ``victoria_metrics_binary``) as a
server that speaks InfluxDB's v2 write API, with ``export`` to read points back.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def _end(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout_s: float) -> None:
    """Send ``sig`` and wait for the process (SIGKILL if it outlives ``timeout_s``)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _http_status(url: str, timeout_s: float = 0.5) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


class InfluxQLError(RuntimeError):
    """InfluxDB refused an InfluxQL query; the message is the server's."""


class Influxd:
    """An influxd (InfluxDB 1.x, Debian package ``influxdb``) process owned by a test.

    Everything lives under ``workdir``: ``influxdb.conf``, ``meta/``, ``data/``, ``wal/`` and
    ``influxd.log``. Only HTTP listens, on ``127.0.0.1:port``; 1.6 cannot turn its backup RPC
    service off, so that binds another free loopback port. Reporting, the ``_internal``
    monitor store, continuous queries, subscriptions and the graphite/collectd/opentsdb/udp
    listeners are off. ``max_body_size`` (bytes; influxd's default is 25,000,000) makes larger
    ``/write`` bodies fail with 413. ``auth_enabled`` turns on HTTP authentication: then call
    ``create_admin`` first (influxd allows that one statement without credentials), and the
    helpers use that admin from then on.

    influxd keeps the user it was started as (it never switches user; the Debian unit's
    ``User=influxdb`` does that), so started as root it can write its directories here.
    ``INFLUXDB_*`` environment variables, which influxd would let override its config file,
    are removed from its environment.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        max_body_size: int | None = None,
        auth_enabled: bool = False,
    ) -> None:
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        if not Path(binary).exists():
            raise RuntimeError("influxd is not installed (apt-get install influxdb)")
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.username: str | None = None
        self.password: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "influxd.log"
        self.conf_path = workdir / "influxdb.conf"
        http_extra = [] if max_body_size is None else [f"max-body-size = {int(max_body_size)}"]
        sections = {
            "": ["reporting-disabled = true", f'bind-address = "{self.host}:{self.rpc_port}"'],
            "[meta]": [f'dir = "{workdir / "meta"}"', "logging-enabled = false"],
            "[data]": [
                f'dir = "{workdir / "data"}"',
                f'wal-dir = "{workdir / "wal"}"',
                "query-log-enabled = false",
            ],
            "[monitor]": ["store-enabled = false"],
            "[subscriber]": ["enabled = false"],
            "[continuous_queries]": ["enabled = false"],
            "[http]": [
                "enabled = true",
                f'bind-address = "{self.host}:{self.port}"',
                f"auth-enabled = {'true' if auth_enabled else 'false'}",
                "log-enabled = false",
                "pprof-enabled = false",
                "unix-socket-enabled = false",
                *http_extra,
            ],
            "[logging]": ["suppress-logo = true"],
            "[ifql]": ["enabled = false"],
            "[[graphite]]": ["enabled = false"],
            "[[collectd]]": ["enabled = false"],
            "[[opentsdb]]": ["enabled = false"],
            "[[udp]]": ["enabled = false"],
        }
        self.conf_path.write_text(
            "".join(
                (f"{header}\n" if header else "") + "".join(f"{line}\n" for line in lines)
                for header, lines in sections.items()
            )
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd and wait until ``/ping`` answers 204 (its HTTP service is up)."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "run", "-config", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or _http_status(f"{self.url}/ping") == 204,
            timeout_s,
            f"influxd to answer /ping on {self.port}",
            interval_s=0.01,
        )
        if proc.poll() is not None:
            self.proc = None
            raise RuntimeError(f"influxd exited: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: influxd closes its shards and exits."""
        _end(self.proc, signal.SIGTERM, timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what was acknowledged survives in the WAL, nothing else is saved."""
        _end(self.proc, signal.SIGKILL, 10.0)
        self.proc = None

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{_influxql_ident(name)}"')

    def create_admin(self, username: str, password: str) -> None:
        """Create an admin user and use it for the helpers from now on."""
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        self.query(
            f"CREATE USER \"{_influxql_ident(username)}\" WITH PASSWORD '{escaped}' "
            "WITH ALL PRIVILEGES"
        )
        self.username, self.password = username, password

    def series(self, influxql: str, db: str | None = None) -> list[dict[str, Any]]:
        """The series of the first statement's result, as InfluxDB returns them
        (``name``, ``tags``, ``columns``, ``values``); times are epoch milliseconds."""
        form = {"q": influxql, "epoch": "ms"}
        if db is not None:
            form["db"] = db
        request = urllib.request.Request(  # noqa: S310 (our own loopback server)
            f"{self.url}/query", data=urllib.parse.urlencode(form).encode(), method="POST"
        )
        if self.username is not None and self.password is not None:
            # influxd 1.6 reads u/p from the URL only, never the form: use Basic auth instead.
            pair = f"{self.username}:{self.password}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                document = json.load(response)
        except urllib.error.HTTPError as error:
            raise InfluxQLError(f"{error.code}: {error.read().decode(errors='replace')}") from None
        if "error" in document:
            raise InfluxQLError(str(document["error"]))
        results = document.get("results") or [{}]
        if "error" in results[0]:
            raise InfluxQLError(str(results[0]["error"]))
        return list(results[0].get("series", []))

    def query(self, influxql: str, db: str | None = None) -> list[dict[str, Any]]:
        """The rows of the first statement's result, one dict per row: column → value, plus
        the series' tags (from GROUP BY); times are epoch milliseconds."""
        return [
            {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            for series in self.series(influxql, db)
            for values in series.get("values", [])
        ]

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Influxd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _influxql_ident(name: str) -> str:
    """``name`` escaped for use inside an InfluxQL double-quoted identifier."""
    return name.replace("\\", "\\\\").replace('"', '\\"')


def have_influxd() -> bool:
    """Whether Debian's influxd is installed."""
    return shutil.which("influxd") is not None or os.path.exists("/usr/bin/influxd")


PROJECT_ROOT = Path(__file__).resolve().parent.parent
VICTORIA_METRICS_CACHE = PROJECT_ROOT / ".cache" / "victoria-metrics" / "usr" / "bin"


_YEAR_S = 366 * 86400


def victoria_metrics_binary() -> Path | None:
    """The victoria-metrics binary to test the v2 write path with, or None.

    In order: ``$SITEWATCH_VICTORIA_METRICS``; the copy ``scripts/fetch-victoria-metrics.sh``
    unpacks into ``.cache/victoria-metrics/``; ``victoria-metrics`` on PATH.
    """
    candidates = [
        os.environ.get("SITEWATCH_VICTORIA_METRICS", ""),
        str(VICTORIA_METRICS_CACHE / "victoria-metrics"),
        shutil.which("victoria-metrics") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


class VictoriaMetrics:
    """A VictoriaMetrics single-node server owned by a test: it accepts InfluxDB line protocol
    on ``/write`` and ``/api/v2/write`` (ignoring ``bucket``/``org``: a line
    ``env,device=a temp_c=1`` becomes the series ``env_temp_c{device="a"}``).

    Data lives in ``workdir/data``, the log in ``workdir/victoria-metrics.log``. Retention is
    100 years so tests may write any timestamp. Two things hide fresh writes from a search:
    recent rows sit in memory buffers for a few seconds, and a search ends by default at the
    server's coarse clock, which runs up to a second behind, so a point stamped "now" looks
    like the future. ``export`` therefore flushes first (``/internal/force_flush``) and asks
    up to a year ahead: what it returns includes every acknowledged write. PromQL queries see
    fresh points too (``-search.latencyOffset=0s``, no response cache).
    """

    def __init__(self, workdir: Path, binary: Path | str, port: int | None = None) -> None:
        self.binary = str(binary)
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "victoria-metrics.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until ``/health`` answers 200."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"-httpListenAddr={self.host}:{self.port}",
                    f"-storageDataPath={self.data_dir}",
                    "-retentionPeriod=100y",
                    "-search.latencyOffset=0s",
                    "-search.disableCache",
                    "-loggerOutput=stderr",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or _http_status(f"{self.url}/health") == 200,
            timeout_s,
            f"victoria-metrics to answer /health on {self.port}",
            interval_s=0.01,
        )
        if proc.poll() is not None:
            self.proc = None
            raise RuntimeError(f"victoria-metrics exited: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: the server flushes its buffers and exits."""
        _end(self.proc, signal.SIGTERM, timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: writes from the last few seconds may be lost (its flush interval)."""
        _end(self.proc, signal.SIGKILL, 10.0)
        self.proc = None

    def flush(self) -> None:
        """Make every acknowledged write visible to searches now."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30):  # noqa: S310
            pass

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every stored series matching the series selector ``match`` (e.g.
        ``'{__name__=~"env_.*"}'``), as ``{"metric": labels, "values": [...],
        "timestamps": [ms...]}`` dicts, after a flush."""
        self.flush()
        query = urllib.parse.urlencode(
            {"match[]": match, "start": "0", "end": str(int(time.time()) + _YEAR_S)}
        )
        with urllib.request.urlopen(  # noqa: S310
            f"{self.url}/api/v1/export?{query}", timeout=30
        ) as response:
            text = response.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> VictoriaMetrics:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
