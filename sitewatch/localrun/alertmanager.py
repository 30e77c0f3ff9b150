"""``Alertmanager`` runs Debian's ``prometheus-alertmanager`` (package
``prometheus-alertmanager``) as a plain process: a minimal config whose only receiver does
nothing, clustering off, its notification log and silences under the work directory, and
``alerts`` (stdlib ``urllib``) to read back what it holds through API v2.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sitewatch.localrun.process import ServerProcess, http_status, installed_binary

_DEBIAN_BINARY = "/usr/bin/prometheus-alertmanager"

# One route to a receiver with no integrations: alerts are held and grouped, never sent on.
# The short group_wait lets a test see an alert go from "unprocessed" to "active" at once.
_MINIMAL_CONFIG = """\
route:
  receiver: "null"
  group_by: ["alertname", "site"]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


class Alertmanager(ServerProcess):
    """A prometheus-alertmanager process owned by a test.

    Everything lives under ``workdir``: ``alertmanager.yml`` (``config`` if given, else a
    route to a receiver that does nothing), ``data/`` (``--storage.path``: silences and the
    notification log) and ``alertmanager.log``. The API listens on ``127.0.0.1:port``;
    clustering is off (``--cluster.listen-address=``), so no gossip port is opened.

    ``start`` waits until ``/-/ready`` answers 200. ``stop`` (SIGTERM): silences and the
    notification log are saved; alerts themselves live in memory only (clients re-send them).
    """

    name = "alertmanager"
    ready_means = "answer /-/ready"

    def __init__(self, workdir: Path, port: int | None = None, config: str | None = None) -> None:
        binary = installed_binary("prometheus-alertmanager", _DEBIAN_BINARY)
        if binary is None:
            raise RuntimeError(
                "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
            )
        super().__init__(binary, workdir, port, workdir / "alertmanager.log")
        self.url = f"http://{self.host}:{self.port}"
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = workdir / "alertmanager.yml"
        self.conf_path.write_text(_MINIMAL_CONFIG if config is None else config)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.conf_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def _ready(self) -> bool:
        return http_status(f"{self.url}/-/ready") == 200

    def alerts(self, **filters: str | bool) -> list[dict[str, Any]]:
        """GET ``/api/v2/alerts`` with query ``filters`` (``active``, ``silenced``,
        ``inhibited``, ``unprocessed``, ``receiver``; booleans as true/false): the alerts it
        holds, as the API returns them (``labels``, ``annotations``, ``startsAt``, ``endsAt``,
        ``generatorURL``, ``status.state``, ``fingerprint``). Resolved alerts are left out."""
        query = urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in filters.items()}
        )
        url = f"{self.url}/api/v2/alerts" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            document = json.load(response)
        return list(document)


def have_alertmanager() -> bool:
    """Whether Debian's prometheus-alertmanager is installed."""
    return installed_binary("prometheus-alertmanager", _DEBIAN_BINARY) is not None
