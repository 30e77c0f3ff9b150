"""``Influxd`` runs Debian's ``influxd`` (InfluxDB 1.6.7, package ``influxdb``) as a plain
process: its own ``influxdb.conf`` with every listener but HTTP off, data under the work
directory, the stop/kill/start-again life cycle of ``ServerProcess``, and InfluxQL helpers
(stdlib ``urllib``) for tests to read back what was stored.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sitewatch.localrun.process import ServerProcess, free_port, http_status, installed_binary

_DEBIAN_BINARY = "/usr/bin/influxd"


class InfluxQLError(RuntimeError):
    """InfluxDB refused an InfluxQL query; the message is the server's."""


class Influxd(ServerProcess):
    """An influxd (InfluxDB 1.x, Debian package ``influxdb``) process owned by a test.

    Everything lives under ``workdir``: ``influxdb.conf``, ``meta/``, ``data/``, ``wal/`` and
    ``influxd.log``. Only HTTP listens, on ``127.0.0.1:port``; 1.6 cannot turn its backup RPC
    service off, so that binds another free loopback port. Reporting, the ``_internal``
    monitor store, continuous queries, subscriptions and the graphite/collectd/opentsdb/udp
    listeners are off. ``max_body_size`` (bytes; influxd's default is 25,000,000) makes larger
    ``/write`` bodies fail with 413. ``auth_enabled`` turns on HTTP authentication: then call
    ``create_admin`` first (influxd allows that one statement without credentials), and the
    helpers use that admin from then on.

    ``start`` waits until ``/ping`` answers 204 (its HTTP service is up). ``stop`` (SIGTERM):
    influxd closes its shards and exits. ``kill`` (SIGKILL): what was acknowledged survives in
    the WAL, nothing else is saved.

    influxd keeps the user it was started as (it never switches user; the Debian unit's
    ``User=influxdb`` does that), so started as root it can write its directories here.
    ``INFLUXDB_*`` environment variables, which influxd would let override its config file,
    are removed from its environment.
    """

    name = "influxd"
    ready_means = "answer /ping"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        max_body_size: int | None = None,
        auth_enabled: bool = False,
    ) -> None:
        binary = installed_binary("influxd", _DEBIAN_BINARY)
        if binary is None:
            raise RuntimeError("influxd is not installed (apt-get install influxdb)")
        super().__init__(binary, workdir, port, workdir / "influxd.log")
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.username: str | None = None
        self.password: str | None = None
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

    def _command(self) -> list[str]:
        return [self.binary, "run", "-config", str(self.conf_path)]

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _ready(self) -> bool:
        return http_status(f"{self.url}/ping") == 204

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


def _influxql_ident(name: str) -> str:
    """``name`` escaped for use inside an InfluxQL double-quoted identifier."""
    return name.replace("\\", "\\\\").replace('"', '\\"')


def have_influxd() -> bool:
    """Whether Debian's influxd is installed."""
    return installed_binary("influxd", _DEBIAN_BINARY) is not None
