"""Home Assistant MQTT discovery payloads: each sitewatch device as a Home Assistant device,
each of its sensors' fields as an entity, with the latest values on small retained state
topics. Pure functions; ``homeassistant_bridge`` publishes them from the running collector.

The collector does this, not the agents: it already knows every device, its sensors, their
labels and intervals (from the retained births) and whether a device has a problem (device
state, open alerts), and the agents stay light.

Topics (``cfg`` = the ``home_assistant:`` config section):

- ``<cfg.discovery_prefix>/device/<object id>/config``, retained: Home Assistant's
  device-based discovery payload, with ``dev`` (identifiers, name, manufacturer, model,
  ``sw_version`` = the agent's version, ``suggested_area`` from the ``cfg.area_label`` label),
  ``o`` (origin), ``availability`` and ``cmps``: one component per sensor field that Home
  Assistant can show (``FIELD_ENTITIES``) plus a ``problem`` binary sensor.
- ``<cfg.state_prefix>/<site>/<device>/<sensor>/<field>``, retained: the field's latest value
  as ``{"<field>": value, "ts": ms}`` (binary fields as ``"ON"``/``"OFF"``). One topic per
  field, because Home Assistant restarts an entity's ``expire_after`` clock on every message
  on its state topic: a shared topic would keep a dead field alive while its neighbour reports.
- ``<cfg.state_prefix>/<site>/<device>``, retained: the problem state, ``{"problem": "ON",
  "device_state": …, "faulted_sensors": […], "open_alerts": n, "alerts": […]}`` (also the
  problem entity's attributes). ON while the device is ``sensor-fault`` or ``stale`` or has an
  alert firing, acknowledged or silenced; sent on change and every ``PROBLEM_INTERVAL_S``.

Every value template is the plain ``{{ value_json.<key> }}``. Availability is the agent's own
retained status topic (birth ``online``, last will ``offline``), so Home Assistant marks a
device unavailable when the broker fires its last will, whether or not the collector runs.
A value expires after ``EXPIRE_FACTOR`` × the sensor's reporting interval: its ``interval_s``
or, when longer, ``cfg.agent_batch_interval_s`` (readings travel in batches); a dead sensor
sends no values (its readings carry none), so Home Assistant shows it unavailable.

Identity: the object id is ``sitewatch__<site>__<device>`` and a unique id is
``<object id>__<sensor>__<field>`` (or ``<object id>__problem``), with ``_`` and ``.`` in ids
written ``_u`` and ``_d``: only ``[A-Za-z0-9_-]``, as Home Assistant asks, the same on every
run, and never the same for two devices or two fields.

Keys follow Home Assistant's MQTT discovery documentation: device-based discovery requires
``dev`` (with ``identifiers``), ``o`` (with ``name``) and ``cmps``, each component a ``p``
(platform) and, for entities, a ``unique_id``; ``sensor`` and ``binary_sensor`` require a
``state_topic``; ``expire_after`` is whole seconds; a binary sensor compares the template's
result with ``payload_on``/``payload_off`` (``ON``/``OFF``). Full key names are used inside
the abbreviated ``dev``/``o``/``cmps``/``p``, as in Home Assistant's own example.

>>> from sitewatch.collector.config import HomeAssistantConfig
>>> info = DeviceInfo("plant-a", "pi-01", "0.1.0", (SensorInfo(id="cold-room",
...     driver="dht22", fields=["temperature_c", "humidity_pct"], interval_s=60,
...     labels={"zone": "kitchen"}),))
>>> config = discovery_config(HomeAssistantConfig(enabled=True), info)
>>> config["dev"]["suggested_area"], sorted(config["cmps"])
('kitchen', ['cold-room__humidity_pct', 'cold-room__temperature_c', 'problem'])
>>> temperature = config["cmps"]["cold-room__temperature_c"]
>>> temperature["unique_id"], temperature["expire_after"], temperature["value_template"]
('sitewatch__plant-a__pi-01__cold-room__temperature_c', 180, '{{ value_json.temperature_c }}')
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sitewatch import __version__
from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.wire import Kind, SensorInfo, StatusMessage, topic

if TYPE_CHECKING:
    from sitewatch.collector.config import HomeAssistantConfig

__all__ = [
    "EXPIRE_FACTOR",
    "FIELD_ENTITIES",
    "PROBLEM_ALERT_STATES",
    "PROBLEM_INTERVAL_S",
    "DeviceInfo",
    "EntitySpec",
    "compact_json",
    "device_object_id",
    "device_state_topic",
    "discovery_config",
    "discovery_topic",
    "expire_after_s",
    "field_state_payload",
    "field_state_topic",
    "filter_matches",
    "problem_state",
    "topic_clashes",
]

EXPIRE_FACTOR = 3.0
"""A value expires in Home Assistant after this many reporting intervals without news."""

PROBLEM_INTERVAL_S = 60.0
"""The problem state is sent again this often (s) even unchanged; it expires after 3 × this,
so a stopped collector shows as unavailable rather than as "no problem"."""

PROBLEM_ALERT_STATES = frozenset({AlertState.FIRING, AlertState.ACKNOWLEDGED, AlertState.SILENCED})
"""Alert states that make a device's problem entity ON (pending ones are not confirmed yet)."""

_MAX_LISTED_ALERTS = 10
_ID_ESCAPES = str.maketrans({"_": "_u", ".": "_d"})


@dataclass(frozen=True)
class EntitySpec:
    """How one reading field appears in Home Assistant: its platform (``sensor`` or
    ``binary_sensor``), the name's suffix, and device class, unit and state class if any."""

    platform: str
    title: str
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None


FIELD_ENTITIES: Mapping[str, EntitySpec] = {
    "temperature_c": EntitySpec("sensor", "temperature", "temperature", "°C", "measurement"),
    "humidity_pct": EntitySpec("sensor", "humidity", "humidity", "%", "measurement"),
    "open": EntitySpec("binary_sensor", "door", "door"),
    "running": EntitySpec("binary_sensor", "running", "running"),
    "vibrating": EntitySpec("binary_sensor", "vibration", "vibration"),
    "active": EntitySpec("binary_sensor", "contact"),
    "duty_cycle_pct": EntitySpec("sensor", "duty cycle", None, "%", "measurement"),
    "starts_per_h": EntitySpec("sensor", "starts per hour", None, "starts/h", "measurement"),
    "runtime_h": EntitySpec("sensor", "runtime", "duration", "h", "total_increasing"),
}
"""Reading fields (``sitewatch.wire.MEASUREMENT_FIELDS``) → their Home Assistant entity."""


@dataclass(frozen=True)
class DeviceInfo:
    """What a device's birth says about it, as far as Home Assistant cares."""

    site: str
    device: str
    agent_version: str | None
    sensors: tuple[SensorInfo, ...]

    @classmethod
    def from_status(cls, message: StatusMessage) -> DeviceInfo:
        return cls(message.site, message.device, message.agent_version, tuple(message.sensors))

    def entity_fields(self) -> dict[str, tuple[str, ...]]:
        """Sensor id → the fields of it that become entities."""
        return {
            sensor.id: tuple(f for f in sensor.fields if f in FIELD_ENTITIES)
            for sensor in self.sensors
        }


# -- identity and topics ---------------------------------------------------------------------
def _id_part(text: str) -> str:
    return text.translate(_ID_ESCAPES)


def device_object_id(site: str, device: str) -> str:
    """The device's id in discovery topics, identifiers and unique ids (``[A-Za-z0-9_-]``)."""
    return f"sitewatch__{_id_part(site)}__{_id_part(device)}"


def _component_id(sensor: str, field_name: str) -> str:
    return f"{_id_part(sensor)}__{field_name}"


def discovery_topic(config: HomeAssistantConfig, site: str, device: str) -> str:
    return f"{config.discovery_prefix}/device/{device_object_id(site, device)}/config"


def device_state_topic(config: HomeAssistantConfig, site: str, device: str) -> str:
    """Where the device's problem state goes."""
    return f"{config.state_prefix}/{site}/{device}"


def field_state_topic(
    config: HomeAssistantConfig, site: str, device: str, sensor: str, field_name: str
) -> str:
    """Where one field's latest value goes."""
    return f"{config.state_prefix}/{site}/{device}/{sensor}/{field_name}"


def filter_matches(topic_filter: str, pattern: str) -> bool:
    """Whether the subscription ``topic_filter`` matches some topic of ``pattern``, in which a
    ``+`` level stands for any one level (a site, a device, ...).

    >>> filter_matches("sitewatch/v1/+/+/+", "sitewatch/state/+/+")
    False
    >>> filter_matches("sitewatch/#", "sitewatch/state/+/+")
    True
    """
    wanted_levels = topic_filter.split("/")
    levels = pattern.split("/")
    for index, wanted in enumerate(wanted_levels):
        if wanted == "#":
            return True
        if index >= len(levels):
            return False
        if wanted not in ("+", levels[index]) and levels[index] != "+":
            return False
    return len(wanted_levels) == len(levels)


def topic_clashes(
    config: HomeAssistantConfig, subscriptions: Iterable[str]
) -> list[tuple[str, str, str]]:
    """``(config key, subscription, published pattern)`` for each of the collector's
    subscriptions that would also receive what it publishes for Home Assistant."""
    published = [
        ("discovery_prefix", f"{config.discovery_prefix}/device/+/config"),
        ("state_prefix", f"{config.state_prefix}/+/+"),
        ("state_prefix", f"{config.state_prefix}/+/+/+/+"),
    ]
    return [
        (key, topic_filter, pattern)
        for key, pattern in published
        for topic_filter in subscriptions
        if filter_matches(topic_filter, pattern)
    ]


# -- payloads --------------------------------------------------------------------------------
def expire_after_s(config: HomeAssistantConfig, interval_s: float) -> int:
    """Seconds without a value after which Home Assistant shows the entity unavailable."""
    return math.ceil(EXPIRE_FACTOR * max(interval_s, config.agent_batch_interval_s))


def _suggested_area(config: HomeAssistantConfig, sensors: Sequence[SensorInfo]) -> str | None:
    """The most common value of the area label among the sensors (ties: alphabetical)."""
    if config.area_label is None:
        return None
    label = config.area_label
    counts = Counter(s.labels[label] for s in sensors if s.labels.get(label))
    if not counts:
        return None
    return min(counts, key=lambda value: (-counts[value], value))


def _component(
    config: HomeAssistantConfig, info: DeviceInfo, sensor: SensorInfo, field_name: str, name: str
) -> dict[str, Any]:
    spec = FIELD_ENTITIES[field_name]
    component: dict[str, Any] = {
        "p": spec.platform,
        "name": name,
        "unique_id": (
            f"{device_object_id(info.site, info.device)}__{_component_id(sensor.id, field_name)}"
        ),
        "state_topic": field_state_topic(config, info.site, info.device, sensor.id, field_name),
        "value_template": f"{{{{ value_json.{field_name} }}}}",
        "expire_after": expire_after_s(config, sensor.interval_s),
    }
    if spec.device_class is not None:
        component["device_class"] = spec.device_class
    if spec.platform == "binary_sensor":
        component["payload_on"] = "ON"
        component["payload_off"] = "OFF"
    if spec.unit is not None:
        component["unit_of_measurement"] = spec.unit
    if spec.state_class is not None:
        component["state_class"] = spec.state_class
    return component


def discovery_config(config: HomeAssistantConfig, info: DeviceInfo) -> dict[str, Any]:
    """The device-based discovery payload for one device (see the module docstring)."""
    object_id = device_object_id(info.site, info.device)
    components: dict[str, dict[str, Any]] = {}
    entity_fields = info.entity_fields()
    for sensor in info.sensors:
        fields = entity_fields[sensor.id]
        for field_name in fields:
            # A sensor with one entity (a door) is named by its id alone.
            title = FIELD_ENTITIES[field_name].title
            name = sensor.id if len(fields) == 1 else f"{sensor.id} {title}"
            components[_component_id(sensor.id, field_name)] = _component(
                config, info, sensor, field_name, name
            )
    problem_topic = device_state_topic(config, info.site, info.device)
    components["problem"] = {
        "p": "binary_sensor",
        "name": "problem",
        "unique_id": f"{object_id}__problem",
        "device_class": "problem",
        "entity_category": "diagnostic",
        "state_topic": problem_topic,
        "value_template": "{{ value_json.problem }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": problem_topic,
        "expire_after": math.ceil(EXPIRE_FACTOR * PROBLEM_INTERVAL_S),
    }
    device: dict[str, Any] = {
        "identifiers": [object_id],
        "name": f"{info.site} {info.device}",
        "manufacturer": "sitewatch",
        "model": "sitewatch agent",
    }
    if info.agent_version:
        device["sw_version"] = info.agent_version
    area = _suggested_area(config, info.sensors)
    if area is not None:
        device["suggested_area"] = area
    return {
        "dev": device,
        "o": {"name": "sitewatch", "sw_version": __version__},
        "availability": [
            {
                "topic": topic(info.site, info.device, Kind.STATUS),
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "cmps": components,
    }


def compact_json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def field_state_payload(field_name: str, value: float | bool, ts_ms: int) -> bytes:
    """One field's state message: ``{"<field>": value, "ts": ms}``, booleans as ON/OFF."""
    shown: float | str = ("ON" if value else "OFF") if isinstance(value, bool) else value
    return compact_json({field_name: shown, "ts": ts_ms})


def problem_state(device: Mapping[str, Any] | None, open_alerts: Iterable[Alert]) -> dict[str, Any]:
    """The problem entity's state and attributes: ``device`` is the device's entry in
    ``DeviceStates.snapshot``, ``open_alerts`` its open alerts (those in
    ``PROBLEM_ALERT_STATES`` count)."""
    state = str(device["state"]) if device is not None else "unknown"
    faulted = list(device.get("faulted_sensors", [])) if device is not None else []
    alerts = [alert for alert in open_alerts if alert.state in PROBLEM_ALERT_STATES]
    problem = state in ("sensor-fault", "stale") or bool(alerts)
    return {
        "problem": "ON" if problem else "OFF",
        "device_state": state,
        "faulted_sensors": faulted,
        "open_alerts": len(alerts),
        "alerts": [
            {
                "sensor": alert.sensor,
                "rule": alert.rule,
                "severity": alert.severity,
                "state": str(alert.state),
                "message": alert.message,
            }
            for alert in alerts[:_MAX_LISTED_ALERTS]
        ],
    }
