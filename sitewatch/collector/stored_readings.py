"""Stored readings read back from InfluxDB, a time window at a time, as the wire's
``Reading`` objects: what ``backtest`` replays through detection.

Both measurements of a sensor (``environment`` and ``equipment``) are merged per timestamp;
labels come back from the stored tags (``label_<name>`` as ``<name>``); a series that fills a
page is read on from its last timestamp, so memory stays bounded by the window.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pydantic import ValidationError

from sitewatch.collector.catalog import RESERVED_TAGS
from sitewatch.collector.influxql import InfluxQuery, quote_ident, quote_string
from sitewatch.wire import Quality, Reading

__all__ = ["SensorKey", "StoredReadings", "Window", "cadence_s", "reading_from_point"]

_MEASUREMENTS: dict[str, tuple[str, ...]] = {
    "environment": ("temperature_c", "humidity_pct", "quality"),
    "equipment": (
        "running", "open", "vibrating", "active", "duty_cycle_pct", "starts_per_h",
        "runtime_h", "quality",
    ),
}  # fmt: skip
_STATES = frozenset({"running", "open", "vibrating", "active"})
_MEASURED = frozenset({Quality.OK, Quality.DEGRADED})

# -- reading InfluxDB back ----------------------------------------------------------------------
SensorKey = tuple[str, str, str]


@dataclass
class Window:
    """One window's stored readings: per sensor, its labels (from its newest series) and its
    points (ts_ms → field → value; both measurements merged)."""

    labels: dict[SensorKey, tuple[int, dict[str, str]]] = field(default_factory=dict)
    points: dict[SensorKey, dict[int, dict[str, Any]]] = field(default_factory=dict)


def _label_name(tag: str) -> str:
    rest = tag.removeprefix("label_")
    return rest if rest != tag and (rest in RESERVED_TAGS or rest.startswith("_")) else tag


class StoredReadings:
    """Pages through the stored readings with InfluxQL, ``page_rows`` rows per series per
    query (a series that has more in the window is read on from its last time)."""

    def __init__(self, query: InfluxQuery, site: str | None, page_rows: int) -> None:
        self.query = query
        self.site = site
        self.page_rows = page_rows

    def window(self, start_ms: int, end_ms: int) -> Window:
        window = Window()
        for measurement, fields in _MEASUREMENTS.items():
            where = f"time >= {start_ms}ms AND time < {end_ms}ms"
            if self.site is not None:
                where += f" AND site = {quote_string(self.site)}"
            for series, rows in self._select(measurement, fields, where).items():
                while True:
                    self._take(window, series, rows, fields)
                    if len(rows) < self.page_rows:
                        break
                    rows = self._more(measurement, fields, series, rows[-1]["time"], end_ms)
        return window

    def _select(
        self, measurement: str, fields: tuple[str, ...], where: str
    ) -> dict[tuple[tuple[str, str], ...], list[dict[str, Any]]]:
        columns = ",".join(quote_ident(name) for name in fields)
        # Every name and value is quoted by quote_ident/quote_string, numbers are int().
        rows = self.query.query(
            f"SELECT {columns} FROM {quote_ident(measurement)} WHERE {where} "  # noqa: S608
            f"GROUP BY * LIMIT {int(self.page_rows)}"
        )
        grouped: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
        for row in rows:
            tags = tuple(
                sorted(
                    (key, value)
                    for key, value in row.items()
                    if key != "time" and key not in fields and isinstance(value, str) and value
                )
            )
            grouped.setdefault(tags, []).append(row)
        return grouped

    def _more(
        self,
        measurement: str,
        fields: tuple[str, ...],
        series: tuple[tuple[str, str], ...],
        after_ms: int,
        end_ms: int,
    ) -> list[dict[str, Any]]:
        tags = dict(series)
        where = " AND ".join(
            f"{name} = {quote_string(tags.get(name, ''))}" for name in ("site", "device", "sensor")
        )
        where += f" AND time > {int(after_ms)}ms AND time < {end_ms}ms"
        return self._select(measurement, fields, where).get(series, [])

    @staticmethod
    def _take(
        window: Window,
        series: tuple[tuple[str, str], ...],
        rows: list[dict[str, Any]],
        fields: tuple[str, ...],
    ) -> None:
        tags = dict(series)
        key = (tags.pop("site", ""), tags.pop("device", ""), tags.pop("sensor", ""))
        if not all(key) or not rows:
            return
        newest = int(rows[-1]["time"])
        known = window.labels.get(key)
        if known is None or newest >= known[0]:
            window.labels[key] = (newest, {_label_name(name): v for name, v in tags.items()})
        points = window.points.setdefault(key, {})
        for row in rows:
            point = points.setdefault(int(row["time"]), {})
            for name in fields:
                value = row.get(name)
                if value is not None:
                    point[name] = value


def reading_from_point(sensor: str, ts_ms: int, point: Mapping[str, Any]) -> Reading | None:
    """The reading a stored point came from; None for points that state-change events wrote
    (no ``quality``) or that do not read back as a valid reading."""
    quality = point.get("quality")
    if quality is None:
        return None
    values: dict[str, Any] = {}
    for name, value in point.items():
        if name == "quality":
            continue
        if name in _STATES:
            values[name] = bool(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = float(value)
    try:
        stated = Quality(quality)
        if values and stated not in _MEASURED:
            stated = Quality.OK  # an event's state stored over a bad reading's point
        return Reading.model_validate({"sensor": sensor, "ts": ts_ms, "quality": stated,
                                       **values})  # fmt: skip
    except (ValueError, ValidationError):
        return None


def cadence_s(points: Mapping[SensorKey, Mapping[int, Any]]) -> float | None:
    """The median interval between consecutive readings of a sensor (s), over all sensors."""
    gaps: list[float] = []
    for by_ts in points.values():
        times = sorted(by_ts)
        gaps += [(b - a) / 1000 for a, b in pairwise(times) if b > a]
    return statistics.median(gaps) if gaps else None


# -- replaying ----------------------------------------------------------------------------------
