"""The running side of Home Assistant discovery (payloads: ``sitewatch.collector.homeassistant``):
which configs and values to publish, and when.

Configs go out, retained, when a device first announces itself (its birth), when its sensors,
labels or version change, on every new broker connection (the broker may have lost them),
and whenever Home Assistant's birth (``online`` on ``home_assistant.status_topic``) arrives.
When a device's sensors change, the fields it no longer has are first sent as bare
``{"p": platform}`` components (Home Assistant's way to remove an entity), then the config
without them. This needs the earlier config in memory: a sensor removed while the collector
was down keeps its entity until removed by hand.

Values: each field's value from the newest measured reading, at most once per
``FLUSH_INTERVAL_S`` and only when there is a newer reading (a value sent again would keep a
dead sensor's entity from expiring). Replayed backlog (``historical``) is never shown. A
state change (a door opening) is shown at once, ahead of the next reading, and a reading
older than it does not undo it. The problem state goes out on change and every
``PROBLEM_INTERVAL_S``.

Everything runs on the collector's MQTT thread (``observe`` is called by ingest, ``tick`` and
``on_status`` by the broker session's loop), so there are no locks. ``observe`` sits on the
ingest path: it only keeps a reference to each sensor's newest reading (about 0.3 µs per
reading); payloads are built in ``tick``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sitewatch.collector.alerting.model import Alert
from sitewatch.collector.homeassistant import (
    FIELD_ENTITIES,
    PROBLEM_INTERVAL_S,
    DeviceInfo,
    compact_json,
    device_state_topic,
    discovery_config,
    discovery_topic,
    field_state_payload,
    field_state_topic,
    problem_state,
)
from sitewatch.wire import (
    EventMessage,
    EventType,
    Message,
    Quality,
    Reading,
    StatusMessage,
    TelemetryMessage,
)

if TYPE_CHECKING:
    from sitewatch.collector.config import HomeAssistantConfig

__all__ = ["FLUSH_INTERVAL_S", "HomeAssistantBridge", "Publish"]

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""State topics are updated at most this often (s): enough for a dashboard, cheap for ingest."""

_MEASURED = frozenset({Quality.OK, Quality.DEGRADED})


class Publish(Protocol):
    """``BrokerSession.publish``."""

    def __call__(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None: ...


@dataclass(eq=False)
class _Device:
    info: DeviceInfo
    fields: dict[str, tuple[str, ...]]
    latest: dict[str, Reading] = field(default_factory=dict)
    sent: dict[str, Reading] = field(default_factory=dict)
    # (sensor, field) → (ts_ms, value, sent): a state change newer than the latest reading.
    changes: dict[tuple[str, str], tuple[int, bool, bool]] = field(default_factory=dict)
    announced: dict[str, str] = field(default_factory=dict)  # component id → platform
    dirty: bool = False
    problem: bytes | None = None
    problem_sent_s: float = -math.inf


class HomeAssistantBridge:
    """Announces devices to Home Assistant and keeps their state topics current.

    ``publish`` is the broker session's; ``device_states`` returns ``DeviceStates.snapshot``
    and ``open_alerts`` the alert store's open alerts (None without alerting).
    """

    def __init__(
        self,
        config: HomeAssistantConfig,
        publish: Publish,
        *,
        device_states: Callable[[], list[dict[str, Any]]],
        open_alerts: Callable[[], Iterable[Alert]] | None = None,
    ) -> None:
        self.config = config
        self._publish = publish
        self._device_states = device_states
        self._open_alerts = open_alerts
        self._devices: dict[tuple[str, str], _Device] = {}
        self._announce: set[tuple[str, str]] = set()
        self._announce_all = False
        self._generation: int | None = None
        self._flush_due = -math.inf
        self.announcements = 0
        self.values_published = 0

    # -- ingest (MQTT thread) ------------------------------------------------------------
    def observe(self, message: Message) -> None:
        """Take one valid message; cheap for telemetry (the ingest hot path)."""
        if isinstance(message, StatusMessage):
            if message.state == "online":
                self._birth(DeviceInfo.from_status(message))
            return
        if not isinstance(message, TelemetryMessage | EventMessage) or message.historical:
            return  # replayed backlog is never newer than what is shown
        device = self._devices.get((message.site, message.device))
        if device is None:
            return
        if isinstance(message, TelemetryMessage):
            latest = device.latest
            for reading in message.readings:
                if reading.quality in _MEASURED:
                    previous = latest.get(reading.sensor)
                    if previous is None or reading.ts >= previous.ts:
                        latest[reading.sensor] = reading
                        device.dirty = True
            return
        for event in message.events:
            field_name = event.field
            if (
                event.type is EventType.STATE_CHANGE
                and field_name is not None
                and field_name in FIELD_ENTITIES
                and event.value is not None
            ):
                key = (event.sensor, field_name)
                previous_change = device.changes.get(key)
                if previous_change is None or event.ts >= previous_change[0]:
                    device.changes[key] = (event.ts, event.value, False)
                    device.dirty = True

    def _birth(self, info: DeviceInfo) -> None:
        key = (info.site, info.device)
        device = self._devices.get(key)
        if device is None:
            self._devices[key] = _Device(info, info.entity_fields())
        elif device.info != info:
            device.info, device.fields = info, info.entity_fields()
        else:
            return  # the same birth again (every agent reconnect): nothing to announce
        self._announce.add(key)

    def on_status(self, payload: bytes) -> None:
        """A message on Home Assistant's status topic: ``online`` means it (re)started and
        wants every config again."""
        if payload.strip() == b"online":
            log.info("home assistant is online: announcing %d devices again", len(self._devices))
            self._announce_all = True

    # -- session loop (MQTT thread) ------------------------------------------------------
    def tick(self, now_s: float, broker_generation: int, connected: bool) -> None:
        """Announce what is due, and (at most every ``FLUSH_INTERVAL_S``, monotonic seconds)
        publish new values and problem states. Nothing is sent while disconnected; a new
        connection announces every device again (the broker may have lost them)."""
        if not connected:
            return
        if broker_generation != self._generation:
            self._generation = broker_generation
            self._announce_all = True
            for device in self._devices.values():
                device.problem = None
        if self._announce_all:
            self._announce_all = False
            self._announce = set(self._devices)
        for key in sorted(self._announce):
            self._announce_device(self._devices[key])
        self._announce.clear()
        if now_s >= self._flush_due:
            self._flush_due = now_s + FLUSH_INTERVAL_S
            self._flush(now_s)

    def _announce_device(self, device: _Device) -> None:
        info = device.info
        config = discovery_config(self.config, info)
        components = config["cmps"]
        topic_name = discovery_topic(self.config, info.site, info.device)
        removed = {c: {"p": p} for c, p in device.announced.items() if c not in components}
        if removed:
            removal = {**config, "cmps": {**components, **removed}}
            self._publish(topic_name, compact_json(removal), qos=1, retain=True)
        self._publish(topic_name, compact_json(config), qos=1, retain=True)
        device.announced = {c: str(component["p"]) for c, component in components.items()}
        self.announcements += 1
        device.dirty = True
        log.debug("home assistant: announced %s/%s", info.site, info.device)

    def _flush(self, now_s: float) -> None:
        if not self._devices:
            return
        states = {(d["site"], d["device"]): d for d in self._device_states()}
        alerts: dict[tuple[str, str], list[Alert]] = {}
        for alert in self._open_alerts() if self._open_alerts is not None else ():
            alerts.setdefault((alert.site, alert.device), []).append(alert)
        for key, device in self._devices.items():
            if device.dirty:
                device.dirty = False
                self._publish_values(device)
            payload = compact_json(problem_state(states.get(key), alerts.get(key, ())))
            if payload != device.problem or now_s - device.problem_sent_s >= PROBLEM_INTERVAL_S:
                self._publish(
                    device_state_topic(self.config, *key), payload, qos=1, retain=True
                )
                device.problem, device.problem_sent_s = payload, now_s

    def _publish_values(self, device: _Device) -> None:
        """Each field's value from the newest reading not yet sent, unless a state change
        newer than that reading says otherwise (then the change, once)."""
        site, name = device.info.site, device.info.device
        for sensor in [s for s in device.latest if s not in device.fields]:
            del device.latest[sensor]  # not (or no longer) announced
        for key in [k for k in device.changes if k[1] not in device.fields.get(k[0], ())]:
            del device.changes[key]
        for sensor, fields in device.fields.items():
            values: dict[str, tuple[float | bool, int]] = {}
            reading = device.latest.get(sensor)
            if reading is not None and device.sent.get(sensor) is not reading:
                device.sent[sensor] = reading
                measured = reading.values()
                values = {f: (measured[f], reading.ts) for f in fields if f in measured}
            for field_name in fields:
                change = device.changes.get((sensor, field_name))
                if change is None:
                    continue
                ts_ms, value, sent = change
                if reading is not None and reading.ts >= ts_ms:
                    del device.changes[(sensor, field_name)]  # a reading has caught up
                    continue
                values.pop(field_name, None)  # older than the change
                if not sent:
                    values[field_name] = (value, ts_ms)
                    device.changes[(sensor, field_name)] = (ts_ms, value, True)
            for field_name, (shown, shown_ts_ms) in values.items():
                self._publish(
                    field_state_topic(self.config, site, name, sensor, field_name),
                    field_state_payload(field_name, shown, shown_ts_ms),
                    qos=0,
                    retain=True,
                )
                self.values_published += 1

    def stats(self) -> dict[str, int]:
        return {
            "devices": len(self._devices),
            "announcements": self.announcements,
            "values_published": self.values_published,
        }
