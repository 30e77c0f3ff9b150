"""The wire contract between agents and collectors: topics and JSON payloads.

This is the one module both sides import (DESIGN.md, "Wire contract"). Anything that
reads sitewatch traffic (the collector, Node-RED, Home Assistant, a test) can rely on it:

- Topics are ``sitewatch/v1/<site>/<device>/<kind>`` with kind ``telemetry`` (QoS1, a batch
  of readings and, once a minute, the agent's health), ``event`` (QoS1, state changes and
  sensor faults), ``status`` (retained; birth ``online``, last will ``offline``) or ``skip``
  (QoS1, rare: seqs the agent will never send, see ``SkipMessage``).
- The collector answers each device on ``sitewatch/v1/<site>/ack/<device>`` (QoS1,
  retained): the highest ``seq`` up to which everything of a boot is durably stored
  (``AckMessage``). The agent keeps each message until that confirmation covers it, since a
  broker's PUBACK does not mean the message is on disk. The device id ``ack`` is therefore
  reserved.
- Every message carries ``v`` (the payload version), ``site``, ``device``, ``boot_id`` (new at
  each agent start) and ``seq`` (monotonic per boot, shared by telemetry and events, so a
  receiver can count gaps and duplicates per ``(device, boot_id)``).
- Every reading carries its own event timestamp ``ts`` (UTC, milliseconds since the epoch),
  units in its field names (``temperature_c``, ``humidity_pct``) and a ``quality`` flag.
  A value that was not measured in this period is absent, never repeated from an older one.
- Backlog replayed after an outage or a restart is marked ``historical``.

Payloads are validated strictly: wrong types are not coerced, NaN and infinities are refused,
unknown keys are refused. ``parse_message`` gives a receiver one call that checks the topic,
the size, the version, the device/topic match and the timestamps, and raises ``WireError``
with a reason fit for a dead-letter log.

>>> msg = TelemetryMessage(site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=42,
...     readings=[Reading(sensor="cold-room", ts=1795464000123, temperature_c=4.2,
...                       humidity_pct=81.0, quality=Quality.OK)])
>>> topic_for(msg)
'sitewatch/v1/plant-a/pi-01/telemetry'
>>> parsed = parse_message(topic_for(msg), encode(msg), now_ms=1795464000200)
>>> parsed.readings[0].temperature_c
4.2
"""

from __future__ import annotations

import operator
import reprlib
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ACK_LEVEL",
    "DEVICE_KINDS",
    "MAX_ACK_RANGES",
    "MAX_LABELS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SENSORS_PER_DEVICE",
    "MEASUREMENT_FIELDS",
    "TOPIC_ROOT",
    "WIRE_VERSION",
    "AckMessage",
    "Event",
    "EventMessage",
    "EventType",
    "Health",
    "Kind",
    "Quality",
    "Reading",
    "SensorInfo",
    "SkipMessage",
    "StatusMessage",
    "TelemetryMessage",
    "TopicParts",
    "WireError",
    "encode",
    "parse_message",
    "parse_topic",
    "topic",
    "topic_for",
]

WIRE_VERSION: Literal[1] = 1
"""Payload version carried in every message as ``v``; bumped on incompatible changes."""

TOPIC_ROOT = "sitewatch/v1"
"""Topic prefix; its ``v1`` is the topic layout version, independent of ``WIRE_VERSION``."""

MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest payload a receiver accepts (bytes). An agent batch of 1000 readings is ~150 KiB."""

MAX_ACK_RANGES = 32
"""Ranges of durable seqs past a hole that one confirmation names (``AckMessage.above``)."""

MAX_LABELS = 16
"""Labels per sensor: each becomes an InfluxDB tag on every point of the sensor."""

MAX_SENSORS_PER_DEVICE = 256
"""Sensors one device announces in its birth."""

MAX_READINGS_PER_MESSAGE = 1000
"""Largest number of readings in one telemetry message."""

DEFAULT_MAX_FUTURE_MS = 5 * 60 * 1000
"""Readings stamped further ahead of the receiver's clock than this (ms) are refused."""

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
]
"""Site, device and sensor ids: safe as an MQTT topic level and as an InfluxDB tag value."""

TimestampMs = Annotated[int, Field(ge=0, le=32503680000000)]
"""Milliseconds since the Unix epoch, UTC (upper bound: year 3000)."""

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]

Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A count or a seq: at most InfluxDB's largest integer (signed 64-bit), so it can be stored."""


class WireError(ValueError):
    """A topic or payload that does not follow the contract; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Kind(StrEnum):
    """What a message is: the last topic level of what agents publish; ``ack`` (the
    collector's) is the level after the site instead (``topic``)."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    SKIP = "skip"
    ACK = "ack"


DEVICE_KINDS: tuple[Kind, ...] = (Kind.TELEMETRY, Kind.EVENT, Kind.STATUS, Kind.SKIP)
"""The kinds an agent publishes (on its own topics); it only reads its ``ack`` topic."""

ACK_LEVEL = Kind.ACK.value
"""The topic level after the site that marks the collector's confirmations; no device may
carry this id."""


class Quality(StrEnum):
    """How far a reading can be trusted.

    - ``ok``: measured this period from enough good samples.
    - ``degraded``: measured this period, but from fewer good samples than the policy asks
      for, or the clock was not yet synchronised; use it, but with care.
    - ``bad``: no good sample this period; the measurement fields are absent.
    - ``fault``: the sensor has failed for several periods in a row (a ``sensor_fault`` event
      was raised); the measurement fields are absent.
    """

    OK = "ok"
    DEGRADED = "degraded"
    BAD = "bad"
    FAULT = "fault"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


MEASUREMENT_FIELDS: tuple[str, ...] = (
    "temperature_c",
    "humidity_pct",
    "running",
    "open",
    "vibrating",
    "active",
    "duty_cycle_pct",
    "starts_per_h",
    "runtime_h",
)
"""Reading fields that carry a measured value (the rest is metadata)."""


_measured = operator.itemgetter(*MEASUREMENT_FIELDS)
_NOTHING_MEASURED = (None,) * len(MEASUREMENT_FIELDS)
_MEASURED_QUALITIES = frozenset({Quality.OK, Quality.DEGRADED})


class Reading(_Strict):
    """One sensor's value for one sampling period.

    Analog sensors fill ``temperature_c``/``humidity_pct``; binary inputs fill the field of
    their role (``running`` for equipment, ``open`` for doors, ``vibrating``, ``active``) and,
    for equipment, the counters ``duty_cycle_pct`` (over the last hour), ``starts_per_h``
    (off→on transitions in the last hour) and ``runtime_h`` (total, persisted).
    ``n_ok``/``n_tried`` count the good and attempted reads behind the value and
    ``sample_age_s`` is the age of the newest sample used (seconds).

    A reading carries at least one measured field exactly when its quality is ``ok`` or
    ``degraded``. The message holding it checks that (``TelemetryMessage``), for all its
    readings in one loop: as a validator of each reading, the check cost a fifth of the time a
    collector spends validating a message.
    """

    sensor: Identifier
    ts: TimestampMs
    quality: Quality
    temperature_c: Annotated[float, Field(ge=-273.15, le=1000.0)] | None = None
    humidity_pct: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    running: bool | None = None
    open: bool | None = None
    vibrating: bool | None = None
    active: bool | None = None
    duty_cycle_pct: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    starts_per_h: NonNegative | None = None
    runtime_h: NonNegative | None = None
    n_ok: Annotated[int, Field(ge=0)] | None = None
    n_tried: Annotated[int, Field(ge=0)] | None = None
    sample_age_s: NonNegative | None = None
    error: Annotated[str, Field(max_length=200)] | None = None

    def values(self) -> dict[str, float | bool]:
        """The measured fields that are present, by name."""
        out: dict[str, float | bool] = {}
        for name in MEASUREMENT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class EventType(StrEnum):
    """What an event reports."""

    STATE_CHANGE = "state_change"
    SENSOR_FAULT = "sensor_fault"
    SENSOR_RECOVERED = "sensor_recovered"


class Event(_Strict):
    """A confirmed change of a binary input, or a sensor entering or leaving fault.

    For ``state_change``: ``field`` is the role's field (``running``, ``open``…), ``value``
    the new state, ``previous_duration_s`` how long the previous state lasted (seconds; absent
    for the first state after start). ``ts`` is when the input changed, not when the debounce
    confirmed it.
    """

    sensor: Identifier
    ts: TimestampMs
    type: EventType
    field: Annotated[str, Field(max_length=64)] | None = None
    value: bool | None = None
    previous_duration_s: NonNegative | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None


class Health(_Strict):
    """The agent's own health, sent in a telemetry message every ``health_interval_s``.

    ``ts`` is when the report was made (ms). Counts are since the outbox was created (they
    survive restarts) unless named otherwise.
    ``read_errors`` maps sensor id → error class → count since this boot.
    """

    ts: TimestampMs | None = None
    uptime_s: NonNegative
    produced: Count
    acked: Count
    outbox_messages: Count
    outbox_readings: Count
    outbox_bytes: Count
    dropped_readings: Count
    dropped_events: Count
    read_errors: dict[str, dict[str, Count]] = Field(default_factory=dict)
    time_synced: bool | None = None


class _Envelope(_Strict):
    v: Literal[1] = WIRE_VERSION
    site: Identifier
    device: Identifier
    boot_id: Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]
    seq: Count


class TelemetryMessage(_Envelope):
    """A batch of readings (and sometimes the agent's health), published QoS1."""

    historical: bool = False
    readings: Annotated[list[Reading], Field(max_length=MAX_READINGS_PER_MESSAGE)]
    health: Health | None = None

    @model_validator(mode="after")
    def _readings_consistent(self) -> TelemetryMessage:
        readings = self.readings
        if not readings and self.health is None:
            raise ValueError("a telemetry message needs readings or health")
        # Whether each reading carries a measured value, and whether its quality says it
        # should: this runs for every reading a collector receives, so most readings are
        # told by their temperature alone.
        for reading in readings:
            fields = reading.__dict__
            has_value = fields["temperature_c"] is not None or (
                _measured(fields) != _NOTHING_MEASURED
            )
            if has_value != (fields["quality"] in _MEASURED_QUALITIES):
                need = (
                    "must not carry measured fields"
                    if has_value
                    else "needs at least one measured field"
                )
                # (index finds it, or an identical reading before it: as wrong, and first)
                where = readings.index(reading)
                raise ValueError(f"readings.{where}: quality {reading.quality.value!r} {need}")
        return self


class EventMessage(_Envelope):
    """One or more events, published QoS1."""

    historical: bool = False
    events: Annotated[list[Event], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


class SensorInfo(_Strict):
    """A configured sensor as announced in the birth message. Its labels become tags on
    every point of the sensor, so they are bounded like the agent's config bounds them."""

    id: Identifier
    driver: Identifier
    fields: Annotated[list[Identifier], Field(max_length=len(MEASUREMENT_FIELDS))]
    interval_s: Annotated[float, Field(gt=0)]
    labels: Annotated[
        dict[Identifier, Annotated[str, Field(max_length=128)]], Field(max_length=MAX_LABELS)
    ] = Field(default_factory=dict)


class StatusMessage(_Envelope):
    """Retained device status: the birth (``online``) and the last will (``offline``).

    ``seq`` is the newest data seq at the time the status was formed; it is informative and
    takes no part in gap counting.
    """

    state: Literal["online", "offline"]
    ts: TimestampMs
    reason: Annotated[str, Field(max_length=200)] | None = None
    agent_version: str | None = None
    config_hash: str | None = None
    sensors: Annotated[list[SensorInfo], Field(max_length=MAX_SENSORS_PER_DEVICE)] = Field(
        default_factory=list
    )


class SkipMessage(_Strict):
    """The agent's word that seqs of boot ``boot_id`` below ``held_from`` will never be sent.

    Published (QoS1, not retained, not through the outbox) when a confirmation shows the
    collector waiting for a seq the agent no longer holds: it dropped it for the outbox's caps
    (counted as dropped), or released it to the broker without confirmation (fallback, see
    ``sitewatch.agent.confirm``). The collector then stops waiting for them, so its
    confirmations can move past the hole. Only agents that receive confirmations send it.
    ``ts``: when it was sent (ms).
    """

    v: Literal[1] = WIRE_VERSION
    site: Identifier
    device: Identifier
    boot_id: Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]
    held_from: Annotated[int, Field(ge=1)]
    ts: TimestampMs


class AckMessage(_Strict):
    """The collector's end-to-end confirmation for one boot of one device.

    Every data message of boot ``boot_id`` with ``seq <= durable_seq`` is durable: written to
    InfluxDB or to the collector's on-disk spool (or dead-lettered with its reason, which no
    resend can change). The agent deletes such messages from its outbox. Published QoS1 and
    retained on ``sitewatch/v1/<site>/ack/<device>``, at most about once a second per device
    while data arrives (also when ``durable_seq`` did not move: the agent then knows the
    collector is waiting for ``durable_seq + 1``). ``ts``: when it was sent (ms).

    ``above`` (absent when there are none): the durable seqs past the hole at
    ``durable_seq + 1``, as ascending ``[first, last]`` ranges, at most ``MAX_ACK_RANGES``
    (the lowest). Like TCP's selective acknowledgement: the agent deletes those messages too,
    need not send them again, and can tell a message the broker lost (below a seq the
    collector has) from one still on its way.
    """

    v: Literal[1] = WIRE_VERSION
    site: Identifier
    device: Identifier
    boot_id: Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]
    durable_seq: Annotated[int, Field(ge=0)]
    above: Annotated[list[tuple[Count, Count]], Field(max_length=MAX_ACK_RANGES)] | None = None
    ts: TimestampMs

    @model_validator(mode="after")
    def _ranges_ascend_past_the_hole(self) -> AckMessage:
        last = self.durable_seq + 1  # the hole: no range may cover it
        for first, end in self.above or ():
            if not last < first <= end:
                raise ValueError(
                    "above: ranges must be [first, last] with first <= last, ascending, apart,"
                    " and past durable_seq + 1"
                )
            last = end + 1
        return self

    def highest_seq(self) -> int:
        """The highest seq the collector holds durably."""
        return self.above[-1][1] if self.above else self.durable_seq


Message = TelemetryMessage | EventMessage | StatusMessage | SkipMessage | AckMessage

_ModelType = (
    type[TelemetryMessage]
    | type[EventMessage]
    | type[StatusMessage]
    | type[SkipMessage]
    | type[AckMessage]
)
_MODEL_FOR_KIND: dict[Kind, _ModelType] = {
    Kind.TELEMETRY: TelemetryMessage,
    Kind.EVENT: EventMessage,
    Kind.STATUS: StatusMessage,
    Kind.SKIP: SkipMessage,
    Kind.ACK: AckMessage,
}
_KIND_FOR_MODEL = {model: kind for kind, model in _MODEL_FOR_KIND.items()}


class TopicParts(BaseModel):
    """The identity a topic carries."""

    model_config = ConfigDict(frozen=True)

    site: str
    device: str
    kind: Kind


def topic(site: str, device: str, kind: Kind) -> str:
    """The topic for a device's messages of one kind.

    ``ack`` topics put the kind before the device (``sitewatch/v1/<site>/ack/<device>``), so
    one ACL line can let every device read its own and nothing else, and no device's own
    subtree holds its confirmations.
    """
    if kind is Kind.ACK:
        return f"{TOPIC_ROOT}/{site}/{ACK_LEVEL}/{device}"
    return f"{TOPIC_ROOT}/{site}/{device}/{kind.value}"


def topic_for(message: Message) -> str:
    """The topic a message is published on."""
    return topic(message.site, message.device, _KIND_FOR_MODEL[type(message)])


def subscription(site: str = "+", kind: Kind | None = None) -> str:
    """A topic filter for all devices' messages (of one kind, or all kinds; all kinds
    includes the collector's ``ack`` topics, which have as many levels)."""
    if kind is Kind.ACK:
        return f"{TOPIC_ROOT}/{site}/{ACK_LEVEL}/+"
    return f"{TOPIC_ROOT}/{site}/+/{kind.value if kind else '+'}"


def parse_topic(name: str) -> TopicParts:
    """Split a device topic into site, device and kind, or raise ``WireError``."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise WireError(f"topic {name!r} is not {TOPIC_ROOT}/<site>/<device>/<kind>")
    site, device, kind = parts[2], parts[3], parts[4]
    if device == ACK_LEVEL:
        return TopicParts(site=site, device=kind, kind=Kind.ACK)
    try:
        parsed_kind = Kind(kind)
    except ValueError:
        raise WireError(f"topic {name!r}: unknown kind {kind!r}") from None
    if parsed_kind is Kind.ACK:
        raise WireError(f"topic {name!r}: confirmations go to {TOPIC_ROOT}/<site>/ack/<device>")
    return TopicParts(site=site, device=device, kind=parsed_kind)


def encode(message: Message) -> bytes:
    """Serialise a message as compact JSON, leaving out absent (None) fields."""
    return message.model_dump_json(exclude_none=True).encode()


def _reason(error: ValidationError) -> str:
    """The most useful single sentence for a dead-letter log."""
    errors = error.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"malformed JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    if first["type"] == "model_type":
        return "payload is not a JSON object"
    version = next((e for e in errors if e["loc"] == ("v",)), None)
    if version is not None:
        got = version["input"] if version["type"] != "missing" else None
        # reprlib: the sender's value, cut short (it goes to logs and the dead-letter topic)
        return f"unknown payload version {reprlib.repr(got)}; expected {WIRE_VERSION}"
    location = ".".join(str(part) for part in first["loc"])
    if len(location) > 120:  # an unknown key is the sender's text, of any length
        location = location[:120] + "…"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location or 'payload'}: {first['msg']}{more}"


def parse_message(
    topic_name: str,
    payload: bytes,
    *,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Message:
    """Validate a received message against its topic; raise ``WireError`` with the reason.

    Checks: the topic layout, the payload size (``MAX_PAYLOAD_BYTES``), JSON, the version,
    the model (in one parsing pass), that site and device match the topic, and (when
    ``now_ms`` is given) that no timestamp lies more than ``max_future_ms`` ahead of it.
    """
    parts = parse_topic(topic_name)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    model = _MODEL_FOR_KIND[parts.kind]
    try:
        message = model.model_validate_json(payload)  # one pass: parse and validate
    except ValidationError as error:
        raise WireError(_reason(error)) from None
    if message.site != parts.site or message.device != parts.device:
        raise WireError(
            f"payload names {message.site}/{message.device} but the topic is "
            f"{parts.site}/{parts.device}"
        )
    if now_ms is not None:
        newest = _newest_ts(message)
        if newest is not None and newest > now_ms + max_future_ms:
            raise WireError(f"timestamp {newest} is {(newest - now_ms) / 1000:.0f} s in the future")
    return message


_ts_of = operator.attrgetter("ts")


def _newest_ts(message: Message) -> int | None:
    if isinstance(message, TelemetryMessage):
        newest = max(map(_ts_of, message.readings), default=None)
        health_ts = message.health.ts if message.health is not None else None
        if health_ts is not None and (newest is None or health_ts > newest):
            return health_ts  # the device_health point is stamped with it
        return newest
    if isinstance(message, EventMessage):
        return max(e.ts for e in message.events)
    if isinstance(message, StatusMessage):
        return message.ts
    return None  # skip and ack: ``ts`` only says when they were sent; nothing is stored
