"""``VictoriaMetrics`` runs a ``victoria-metrics`` binary (fetched by
``scripts/fetch-victoria-metrics.sh``; see ``victoria_metrics_binary``) as a server that
speaks InfluxDB's v2 write API, with ``export`` to read points back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sitewatch.localrun.process import PROJECT_ROOT, ServerProcess, http_status

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


class VictoriaMetrics(ServerProcess):
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

    ``start`` waits until ``/health`` answers 200. ``stop`` (SIGTERM): the server flushes its
    buffers and exits. ``kill`` (SIGKILL): writes from the last few seconds may be lost (its
    flush interval).
    """

    name = "victoria-metrics"
    ready_means = "answer /health"

    def __init__(self, workdir: Path, binary: Path | str, port: int | None = None) -> None:
        super().__init__(str(binary), workdir, port, workdir / "victoria-metrics.log")
        self.url = f"http://{self.host}:{self.port}"
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerOutput=stderr",
        ]

    def _ready(self) -> bool:
        return http_status(f"{self.url}/health") == 200

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
