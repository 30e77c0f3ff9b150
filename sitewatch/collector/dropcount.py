r"""Whose readings and events a batch of line protocol holds, for counting what the spool's
caps drop.

The spool is generic (lines in, lines out) and its caps drop whole batches, which mix every
device's readings with health, anomaly, alert and delivery points. To keep the delivery
promise checkable per device (readings produced = stored + dropped, each drop counted where
it happened), a dropped batch's reading and event points are counted per ``(site, device)``.

A reading point is one this collector wrote to ``environment`` or ``equipment`` with a
``quality`` field (``lineproto.telemetry_lines``); state-change points in ``equipment``
(from events) carry none. That is also how readings are counted in InfluxDB
(``SELECT count(quality) …``), so the two counts add up. An event is one ``events`` point.
Lines are parsed only when a batch is dropped, never on the hot path.

>>> lines = [
...     'environment,site=plant-a,device=pi-01,sensor=cold-room,zone=kitchen\\,\\ north '
...     'temperature_c=4.2,humidity_pct=81.0,quality="ok" 1795464000123',
...     'equipment,site=plant-a,device=pi\\ 2,sensor=door open=true,quality="ok" 1795464000200',
...     'equipment,site=plant-a,device=pi-01,sensor=door open=false 1795464000300',
...     'device_health,site=plant-a,device=pi-01 uptime_s=1.0,seq=7i 1795464000400',
...     'events,site=plant-a,device=pi-01,sensor=door,type=state_change field="open",'
...     'value=false 1795464000300',
... ]
>>> for key, count in sorted(points_by_device(lines).items()):
...     print(key, count)
('plant-a', 'pi 2', 'readings') 1
('plant-a', 'pi-01', 'events') 1
('plant-a', 'pi-01', 'readings') 1
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EVENTS", "READINGS", "points_by_device"]

READINGS = "readings"
EVENTS = "events"

_READING_MEASUREMENTS = ("environment,", "equipment,")
_EVENTS = "events,"
_QUALITY = 'quality="'


def _split_unescaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """``text`` split at each ``separator`` not escaped by a backslash (at most ``limit``
    splits), escapes left in place."""
    parts: list[str] = []
    start = i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == separator and (limit < 0 or len(parts) < limit):
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def point_device(line: str) -> tuple[str, str, str] | None:
    """``(site, device, READINGS)`` for a reading point, ``(site, device, EVENTS)`` for an
    event point, else None."""
    if line.startswith(_EVENTS):
        kind = EVENTS
    elif line.startswith(_READING_MEASUREMENTS):
        kind = READINGS
    else:
        return None
    series_and_rest = _split_unescaped(line, " ", limit=1)
    if len(series_and_rest) != 2:
        return None
    series, rest = series_and_rest
    if kind == READINGS:
        # The field set ends at the last space (before the timestamp). Only ``quality`` is
        # a string field of a reading point, so a ``quality="`` there starts that field.
        fields = rest.rsplit(" ", 1)[0]
        if not (fields.startswith(_QUALITY) or f",{_QUALITY}" in fields):
            return None
    site = device = None
    for tag in _split_unescaped(series, ",")[1:]:
        key_value = _split_unescaped(tag, "=", limit=1)
        if len(key_value) != 2:
            continue
        key, value = key_value
        if key == "site":
            site = _unescape(value)
        elif key == "device":
            device = _unescape(value)
    if site is None or device is None:
        return None
    return site, device, kind


def points_by_device(lines: Iterable[str]) -> dict[tuple[str, str, str], int]:
    """Reading and event points per ``(site, device, READINGS or EVENTS)`` in ``lines``."""
    counts: dict[tuple[str, str, str], int] = {}
    for line in lines:
        key = point_device(line)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts
