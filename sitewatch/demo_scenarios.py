"""The demo's fault scenarios and how far they have got: which have raised an alert, seen
where a person would see it (the live view's MQTT alert topics, the alert page, InfluxDB's
``alerts`` measurement).

The demo prints progress as alerts arrive and, with ``--until-alerted``, stops as soon as
every scenario's alert is on the page and in InfluxDB, which is how the test runs it
headless.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from sitewatch.localrun import Influxd

__all__ = ["SCENARIOS", "Progress", "Scenario", "alerts_in_influx", "alerts_on_page"]

_ALERTED_STATES = frozenset({"firing", "acknowledged", "silenced"})


@dataclass(frozen=True)
class Scenario:
    """A fault the demo injects, and the sensor whose alert shows it was caught."""

    title: str
    site: str
    device: str
    sensor: str

    @property
    def where(self) -> str:
        return f"{self.site}/{self.device}/{self.sensor}"


SCENARIOS = (
    Scenario("cold room cooling failure", "plant-a", "pi-kitchen", "cold-room"),
    Scenario("compressor short-cycling", "plant-a", "pi-kitchen", "compressor"),
    Scenario("door left open", "plant-a", "pi-kitchen", "walk-in-door"),
    Scenario("dead DHT22", "plant-b", "pi-server", "rack-3"),
)
"""Every scenario the demo must catch; the simulated fleet is in ``sitewatch.demo``."""


class Progress:
    """Which scenarios have alerted (from the live view's alert messages), since when.

    ``note_alert`` is called from the live view's thread; ``done`` is set once every
    scenario has alerted. ``started_s`` and the times are monotonic seconds.
    """

    def __init__(self, scenarios: tuple[Scenario, ...] = SCENARIOS) -> None:
        self.scenarios = scenarios
        self.started_s = time.monotonic()
        self.alerted_after_s: dict[Scenario, float] = {}
        self.done = threading.Event()
        self._lock = threading.Lock()

    def note_alert(self, alert: dict[str, Any]) -> Scenario | None:
        """Record an alert message (the MQTT channel's JSON); the scenario it newly
        completes, if any."""
        if alert.get("state") not in _ALERTED_STATES:
            return None
        where = f"{alert.get('site')}/{alert.get('device')}/{alert.get('sensor')}"
        with self._lock:
            for scenario in self.scenarios:
                if scenario.where == where and scenario not in self.alerted_after_s:
                    self.alerted_after_s[scenario] = time.monotonic() - self.started_s
                    if len(self.alerted_after_s) == len(self.scenarios):
                        self.done.set()
                    return scenario
        return None

    def waiting(self) -> list[Scenario]:
        with self._lock:
            return [s for s in self.scenarios if s not in self.alerted_after_s]

    def line(self) -> str:
        """One progress line: elapsed time, how many scenarios alerted, which are awaited."""
        elapsed = _clock_text(time.monotonic() - self.started_s)
        waiting = self.waiting()
        count = len(self.scenarios) - len(waiting)
        text = f"[{elapsed}] {count} of {len(self.scenarios)} fault scenarios alerted"
        if waiting:
            text += "; waiting for: " + ", ".join(s.title for s in waiting)
        return text


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def alerts_in_influx(influx: Influxd, database: str = "sitewatch") -> set[str]:
    """``site/device/sensor`` of every alert that fired, from the ``alerts`` measurement."""
    rows = influx.query(
        "SELECT count(alert_id) FROM alerts WHERE action = 'fire' GROUP BY site, device, sensor",
        database,
    )
    return {f"{r['site']}/{r['device']}/{r['sensor']}" for r in rows if r.get("count")}


def alerts_on_page(url: str, token: str, timeout_s: float = 10.0) -> set[str]:
    """``site/device/sensor`` of every open alert the alert page serves (its JSON API, with
    the page's bearer token); the HTML page is checked to name each sensor as well."""
    def get(path: str) -> bytes:
        request = urllib.request.Request(  # noqa: S310 (the demo's own http:// page)
            url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body: bytes = response.read()
            return body

    listed = json.loads(get("/api/alerts"))
    html = get("/").decode("utf-8", "replace")
    return {
        f"{a['site']}/{a['device']}/{a['sensor']}"
        for a in listed.get("alerts", [])
        if a.get("sensor") and a["sensor"] in html
    }
