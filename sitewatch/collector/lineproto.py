"""InfluxDB line protocol for sitewatch's public schema (DESIGN.md, "InfluxDB schema").

Lines are built with f-strings: ``influxdb_client.Point`` costs about 7× more CPU per reading
(research/limits.md 4b). Timestamps are milliseconds (write with ``precision=ms``).

Field types never change between writes, because InfluxDB refuses a field whose type differs
from what a shard already holds (a "field type conflict"): measured values are always floats
(``4.0``, never ``4i``), counts always integers (``12i``), states always ``true``/``false``,
``quality`` and free text always strings.

A point's identity is its measurement, tag set and timestamp, all taken from the message, so
a redelivered message overwrites its own points instead of adding new ones. Labels from the
agent's birth message (``SensorCatalog``) become tags; a label named like one of the
schema's tags (``site``, ``device``, ``sensor``, ``type``, ``field``…, or ``time``) or
starting with ``_`` is written as ``label_<name>``. Newlines in free text become spaces;
empty tag values are left out.

A backslash in a label becomes ``/`` (``escaping`` says why); every other character reads back
as it was sent (the tests check that against a real influxd).

>>> from sitewatch.wire import Reading, Quality, TelemetryMessage
>>> msg = TelemetryMessage(site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=42,
...     readings=[Reading(sensor="cold-room", ts=1795464000123, temperature_c=4.2,
...                       humidity_pct=81.0, quality=Quality.OK)])
>>> catalog = SensorCatalog()
>>> catalog.set_sensor("plant-a", "pi-01", "cold-room", labels={"zone": "kitchen,north"})
True
>>> tags, fields, ts = telemetry_lines(msg, catalog)[0].split(" ")
>>> tags
'environment,device=pi-01,sensor=cold-room,site=plant-a,zone=kitchen\\\\,north'
>>> fields, ts
('temperature_c=4.2,humidity_pct=81.0,dew_point_c=1.23,quality="ok"', '1795464000123')
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Mapping

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.escaping import escape_tag, string_field, tag_set
from sitewatch.wire import EventMessage, EventType, Health, Quality, Reading, TelemetryMessage

__all__ = [
    "SensorCatalog",
    "collector_delivery_line",
    "delivery_line",
    "dew_point_c",
    "event_lines",
    "health_line",
    "telemetry_lines",
]

_STATE_FIELDS = frozenset({"running", "open", "vibrating", "active"})
_BOOL = {True: "true", False: "false"}

_log = math.log
_MAX_INT = 2**63 - 1
"""InfluxDB's largest integer field value."""


def dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Dew point (°C, frost point below 0 °C) by the Magnus formula, rounded to 0.01 °C.

    Coefficients (Sonntag 1990, as the WMO gives them): over water a=17.62, b=243.12 °C;
    over ice, for temperatures below 0 °C, a=22.46, b=272.62 °C.

    Accurate to about ±0.35 °C between -45 and 60 °C, well inside a DHT22's own error.
    Raises ``ValueError`` for a humidity of 0 % or less (there is no dew point) or a
    temperature at or below -272.62 °C (the pole of the formula over ice).

    >>> dew_point_c(20.0, 50.0)
    9.26
    >>> dew_point_c(-10.0, 80.0)
    -12.49
    >>> dew_point_c(25.0, 100.0)
    25.0
    """
    return round(_magnus(temperature_c, humidity_pct), 2)


def _magnus(temperature_c: float, humidity_pct: float) -> float:
    if temperature_c < 0.0:
        a, b = 22.46, 272.62  # over ice
    else:
        a, b = 17.62, 243.12  # over water
    if humidity_pct <= 0.0 or temperature_c <= -b:
        raise ValueError(f"no dew point for {temperature_c} °C at {humidity_pct} %")
    gamma = _log(humidity_pct / 100.0) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)


def _float(value: float) -> str:
    # The shortest exact form. An int (only an unvalidated model could hold one) prints
    # without a decimal point, which line protocol still reads as a float: never ``i``.
    return repr(value)


_QUALITY = {quality: f'quality="{quality.value}"' for quality in Quality}
# A reading's equipment values, read from its fields in one step: most readings have none.
_EQUIPMENT = operator.itemgetter(
    "running", "open", "vibrating", "active", "duty_cycle_pct", "starts_per_h", "runtime_h"
)
_NO_EQUIPMENT = (None,) * 7


def telemetry_lines(
    message: TelemetryMessage, catalog: SensorCatalog, *, received_ms: int | None = None
) -> list[str]:
    """The lines for a telemetry message: one point per reading per measurement, and the
    ``device_health`` point when the message carries health.

    A reading with climate values goes to ``environment``, one with equipment values to
    ``equipment`` (both, if it has both); a reading without values (quality bad or fault)
    writes only ``quality``, in the measurement its sensor's declared fields imply.
    The health point is stamped with the health report's own ``ts``; from agents that do not
    send one, with the newest reading's ``ts`` or else ``received_ms`` (default: now).
    """
    site, device = message.site, message.device
    out: list[str] = []
    append = out.append
    tags_of: dict[str, str] = {}  # a message usually repeats a few sensors many times
    for r in message.readings:
        sensor = r.sensor
        tags = tags_of.get(sensor)
        if tags is None:
            tags = tags_of[sensor] = catalog.tags(site, device, sensor)
        quality = _QUALITY[r.quality]
        t, h = r.temperature_c, r.humidity_pct
        wrote = False
        if t is not None and h is not None:
            try:
                dew = _magnus(t, h)
            except ValueError:  # 0 % humidity: there is no dew point
                append(
                    f"environment,{tags} temperature_c={t!r},humidity_pct={h!r},{quality} {r.ts}"
                )
            else:  # formatted to 0.01 °C as dew_point_c() rounds it, in one step
                append(
                    f"environment,{tags} temperature_c={t!r},humidity_pct={h!r},"
                    f"dew_point_c={dew:.2f},{quality} {r.ts}"
                )
            wrote = True
        elif t is not None or h is not None:
            name, value = ("temperature_c", t) if t is not None else ("humidity_pct", h)
            append(f"environment,{tags} {name}={value!r},{quality} {r.ts}")
            wrote = True
        if _EQUIPMENT(r.__dict__) != _NO_EQUIPMENT:
            append(f"equipment,{tags} {_equipment_fields(r)},{quality} {r.ts}")
            wrote = True
        if not wrote:
            measurement = catalog.measurement(site, device, sensor)
            append(f"{measurement},{tags} {quality} {r.ts}")
    if message.health is not None:
        if message.health.ts is not None:  # the agent's own stamp: a redelivery overwrites
            ts_ms = message.health.ts
        elif message.readings:
            ts_ms = max(r.ts for r in message.readings)
        else:
            ts_ms = received_ms if received_ms is not None else int(time.time() * 1000)
        append(health_line(site, device, message.health, message.seq, ts_ms))
    return out


def _equipment_fields(r: Reading) -> str:
    parts = []
    if r.running is not None:
        parts.append("running=true" if r.running else "running=false")
    if r.open is not None:
        parts.append("open=true" if r.open else "open=false")
    if r.vibrating is not None:
        parts.append("vibrating=true" if r.vibrating else "vibrating=false")
    if r.active is not None:
        parts.append("active=true" if r.active else "active=false")
    if r.duty_cycle_pct is not None:
        parts.append(f"duty_cycle_pct={r.duty_cycle_pct!r}")
    if r.starts_per_h is not None:
        parts.append(f"starts_per_h={r.starts_per_h!r}")
    if r.runtime_h is not None:
        parts.append(f"runtime_h={r.runtime_h!r}")
    return ",".join(parts)


def health_line(site: str, device: str, health: Health, seq: int, ts_ms: int) -> str:
    """The ``device_health`` point: uptime (float), outbox and drop counts (int),
    ``read_errors`` (total this boot, int), ``time_synced`` (bool, when known), ``seq``."""
    read_errors = sum(sum(by_class.values()) for by_class in health.read_errors.values())
    read_errors = min(read_errors, _MAX_INT)  # each count fits; their sum might not
    fields = (
        f"uptime_s={_float(health.uptime_s)},produced={health.produced}i,"
        f"acked={health.acked}i,outbox_messages={health.outbox_messages}i,"
        f"outbox_readings={health.outbox_readings}i,outbox_bytes={health.outbox_bytes}i,"
        f"dropped_readings={health.dropped_readings}i,"
        f"dropped_events={health.dropped_events}i,read_errors={read_errors}i"
    )
    if health.time_synced is not None:
        fields += f",time_synced={_BOOL[health.time_synced]}"
    return f"device_health,{_device_tags(site, device)} {fields},seq={seq}i {ts_ms}"


def event_lines(message: EventMessage, catalog: SensorCatalog) -> list[str]:
    """One ``events`` point per event; a ``state_change`` of a state field (``running``,
    ``open``, ``vibrating``, ``active``) also writes that field to ``equipment`` at the
    event's ``ts``, so state timelines are exact to the millisecond, not to a sampling period.
    Two events of one type for one sensor within the same millisecond overwrite each other.
    """
    site, device = message.site, message.device
    out: list[str] = []
    for e in message.events:
        tags = catalog.tags(site, device, e.sensor)
        fields = []
        if e.field is not None:
            fields.append(f"field={string_field(e.field)}")
        if e.value is not None:
            fields.append(f"value={_BOOL[e.value]}")
        if e.previous_duration_s is not None:
            fields.append(f"previous_duration_s={_float(e.previous_duration_s)}")
        if e.detail is not None or not fields:
            fields.append(f"detail={string_field(e.detail or '')}")
        event_tags = tag_set(
            (("site", site), ("device", device), ("sensor", e.sensor), ("type", e.type.value))
        )
        out.append(f"events,{event_tags} {','.join(fields)} {e.ts}")
        if e.type is EventType.STATE_CHANGE and e.field in _STATE_FIELDS and e.value is not None:
            out.append(f"equipment,{tags} {e.field}={_BOOL[e.value]} {e.ts}")
    return out


def delivery_line(site: str, device: str, counters: Mapping[str, int], ts_ms: int) -> str:
    """The ``delivery`` point: the collector's per-device counters (``received``, ``stored``,
    ``duplicates``, ``gaps``, ``late``…), each an integer field.

    >>> delivery_line("plant-a", "pi-01", {"received": 10, "gaps": 0}, 1795464000000)
    'delivery,device=pi-01,site=plant-a received=10i,gaps=0i 1795464000000'
    """
    if not counters:
        raise ValueError("a delivery point needs at least one counter")
    fields = ",".join(f"{escape_tag(name)}={int(value)}i" for name, value in counters.items())
    return f"delivery,{_device_tags(site, device)} {fields} {ts_ms}"


def collector_delivery_line(collector: str, counters: Mapping[str, int], ts_ms: int) -> str:
    """The collector-wide ``delivery`` point (tag ``collector``, its MQTT client id): what is
    not per device (``spooled``, ``dead_lettered``, ``dropped``, points ``stored``).

    >>> collector_delivery_line("collector-1", {"spooled": 0, "dropped": 0}, 1795464000000)
    'delivery,collector=collector-1 spooled=0i,dropped=0i 1795464000000'
    """
    if not counters:
        raise ValueError("a delivery point needs at least one counter")
    fields = ",".join(f"{escape_tag(name)}={int(value)}i" for name, value in counters.items())
    return f"delivery,collector={escape_tag(collector)} {fields} {ts_ms}"


def _device_tags(site: str, device: str) -> str:
    return tag_set((("site", site), ("device", device)))
