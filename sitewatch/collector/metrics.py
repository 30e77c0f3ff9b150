"""The collector's counters, as a status file for ``sitewatch-collector status`` and as a
Prometheus ``/metrics`` endpoint.

The service refreshes one snapshot (a plain dict) every second; ``status`` reads the file, so
it works while the collector runs and after it stopped, and the HTTP endpoint serves the same
numbers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sitewatch.atomicfile import write_atomic

__all__ = ["COUNTERS", "MetricsServer", "prometheus_text", "read_snapshot", "write_snapshot"]

COUNTERS: dict[str, str] = {
    "received": "readings received (duplicates included)",
    "stored": "points written to InfluxDB",
    "duplicates": "messages received again with a (boot_id, seq) already seen",
    "gaps": "messages missing in a device's seq numbering when a later one arrived",
    "late": "messages that arrived after a later one, filling a gap",
    "spooled": "points written to the on-disk spool while InfluxDB was unavailable",
    "dead_lettered": "invalid messages and points InfluxDB rejected",
    "dropped": "points dropped because the spool was full or too old",
}
"""The counters ``status --json`` gives as integer keys, with their meaning."""


def write_snapshot(path: Path, snapshot: Mapping[str, Any]) -> None:
    """Replace the status file atomically (a reader never sees half a file). Not fsynced:
    it is rewritten every second and is only a view of the counters."""
    write_atomic(path, json.dumps(snapshot, sort_keys=True).encode(), durable=False)


def read_snapshot(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


_STATE_VALUES = ("online", "stale", "offline", "sensor-fault", "unknown")


def prometheus_text(snapshot: Mapping[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format."""
    lines = []
    for name, meaning in COUNTERS.items():
        metric = f"sitewatch_collector_{name}_total"
        lines += [f"# HELP {metric} {meaning}", f"# TYPE {metric} counter"]
        lines.append(f"{metric} {int(snapshot.get(name, 0))}")
    for name in ("spool_depth", "unacknowledged"):
        metric = f"sitewatch_collector_{name}"
        lines += [f"# TYPE {metric} gauge", f"{metric} {int(snapshot.get(name, 0))}"]
    lines.append("# TYPE sitewatch_device_state gauge")
    for device in snapshot.get("devices", []):
        for state in _STATE_VALUES:
            labels = f'site="{device["site"]}",device="{device["device"]}",state="{state}"'
            lines.append(f"sitewatch_device_state{{{labels}}} {int(device['state'] == state)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``/metrics`` from ``snapshot()`` on a daemon thread; ``port`` 0 picks a free one."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = prometheus_text(snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every 15 s would fill the journal

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
