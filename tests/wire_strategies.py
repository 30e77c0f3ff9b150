"""Hypothesis strategies for the wire contract: valid messages of every kind, and near-valid
payloads made from them (``near_valid``), for the property tests and the ingest corpus.

``wire_messages`` takes the strategies for sites, devices and timestamps, so a test against
a real collector can keep its corpus to a few devices and to recent times (InfluxDB makes a
shard per week of timestamps; the collector refuses timestamps in the future).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from sitewatch.wire import (
    AckMessage,
    Event,
    EventMessage,
    EventType,
    Health,
    Message,
    Quality,
    Reading,
    SensorInfo,
    SkipMessage,
    StatusMessage,
    TelemetryMessage,
    encode,
    topic_for,
)

__all__ = [
    "MAX_INT64",
    "MEASURED",
    "bad_values",
    "boot_ids",
    "device_ids",
    "identifiers",
    "mutated",
    "near_valid",
    "wire_messages",
]

MAX_INT64 = 2**63 - 1

identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
device_ids = identifiers.filter(lambda name: name != "ack")  # reserved (wire.ACK_LEVEL)
boot_ids = st.from_regex(r"[0-9a-f]{8,32}", fullmatch=True)
all_timestamps = st.integers(0, 32_503_680_000_000)
counts = st.integers(0, MAX_INT64)
non_negative = st.floats(0.0, 1e300, allow_nan=False, allow_infinity=False)


def _bounded(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


MEASURED: dict[str, st.SearchStrategy[Any]] = {
    "temperature_c": _bounded(-273.15, 1000.0),
    "humidity_pct": _bounded(0.0, 100.0),
    "running": st.booleans(),
    "open": st.booleans(),
    "vibrating": st.booleans(),
    "active": st.booleans(),
    "duty_cycle_pct": _bounded(0.0, 100.0),
    "starts_per_h": non_negative,
    "runtime_h": non_negative,
}
"""Each measured field and its valid values."""


@st.composite
def _readings(draw: st.DrawFn, timestamps: st.SearchStrategy[int]) -> Reading:
    quality = draw(st.sampled_from(list(Quality)))
    values: dict[str, Any] = {}
    if quality in (Quality.OK, Quality.DEGRADED):  # at least one measured field, else none
        names = draw(st.lists(st.sampled_from(list(MEASURED)), min_size=1, max_size=4,
                              unique=True))
        values = {name: draw(MEASURED[name]) for name in names}
    extra: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "n_ok": counts, "n_tried": counts, "sample_age_s": non_negative,
        "error": st.text(max_size=200),
    }))
    return Reading.model_validate({"sensor": draw(identifiers), "ts": draw(timestamps),
                                   "quality": quality, **values, **extra})


def wire_messages(
    sites: st.SearchStrategy[str] = identifiers,
    devices: st.SearchStrategy[str] = device_ids,
    timestamps: st.SearchStrategy[int] = all_timestamps,
) -> st.SearchStrategy[Message]:
    """Valid messages of every kind (telemetry, event, status, skip, ack)."""
    events = st.builds(
        Event, sensor=identifiers, ts=timestamps, type=st.sampled_from(list(EventType)),
        field=st.none() | st.text(max_size=64), value=st.none() | st.booleans(),
        previous_duration_s=st.none() | non_negative, detail=st.none() | st.text(max_size=500),
    )
    healths = st.builds(
        Health, ts=st.none() | timestamps, uptime_s=non_negative,
        produced=counts, acked=counts, outbox_messages=counts, outbox_readings=counts,
        outbox_bytes=counts, dropped_readings=counts, dropped_events=counts,
        read_errors=st.dictionaries(st.text(max_size=10),
                                    st.dictionaries(st.text(max_size=10), counts, max_size=2),
                                    max_size=2),
        time_synced=st.none() | st.booleans(),
    )
    envelope: dict[str, st.SearchStrategy[Any]] = {
        "site": sites, "device": devices, "boot_id": boot_ids, "seq": counts,
    }
    telemetry = st.builds(
        TelemetryMessage, **envelope, historical=st.booleans(),
        readings=st.lists(_readings(timestamps), min_size=1, max_size=4),
        health=st.none() | healths,
    ) | st.builds(TelemetryMessage, **envelope, readings=st.just([]), health=healths)
    event_messages = st.builds(
        EventMessage, **envelope, historical=st.booleans(),
        events=st.lists(events, min_size=1, max_size=4),
    )
    sensor_infos = st.builds(
        SensorInfo, id=identifiers, driver=identifiers,
        fields=st.lists(identifiers, max_size=3),
        interval_s=st.floats(min_value=0.0, exclude_min=True, allow_nan=False,
                             allow_infinity=False),
        # Label values are free text (they become tag values: escaping is what is tried).
        labels=st.dictionaries(identifiers, st.text(max_size=40), max_size=3),
    )
    statuses = st.builds(
        StatusMessage, **envelope, state=st.sampled_from(["online", "offline"]), ts=timestamps,
        reason=st.none() | st.text(max_size=200), agent_version=st.none() | st.text(max_size=30),
        config_hash=st.none() | st.text(max_size=30), sensors=st.lists(sensor_infos, max_size=3),
    )
    skips = st.builds(SkipMessage, site=sites, device=devices, boot_id=boot_ids,
                      held_from=st.integers(1, 2**70), ts=timestamps)
    acks = st.builds(AckMessage, site=sites, device=devices, boot_id=boot_ids,
                     durable_seq=st.integers(0, 2**70), ts=timestamps)
    return st.one_of(telemetry, event_messages, statuses, skips, acks)


# -- near-valid payloads -----------------------------------------------------------------------

DEEP = "@@deep@@"
"""A placeholder string that ``serialise`` replaces with deeply nested brackets (built as
Python lists, such nesting would stop ``json.dumps`` itself)."""

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, -(2**63) - 1, 2**64 + 1, 10**40, 1e308, -1e308, 5e-324,
    float("nan"), float("inf"), float("-inf"), "", " ", "NaN", "null", "\x00", "\ud800",
    "é😀\u202e", [], {}, [None], {"": None},
]

bad_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.text(min_size=150, max_size=600),
    st.integers(1_000, 70_000).map(lambda n: "x" * n),  # very long (up to the size limit)
    st.integers(1_000, 5_000).map(lambda n: "9" * n),  # a number written as a long string
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(DEEP),
)
"""Values a strict model may refuse: wrong types, NaN and infinities, huge integers, unicode,
empty and very long strings, deep nesting."""


def _positions(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON-like tree, parents before children."""
    if isinstance(node, dict):
        for key in list(node):
            out.append((node, key))
            _positions(node[key], out)
    elif isinstance(node, list):
        for index in range(len(node)):
            out.append((node, index))
            _positions(node[index], out)
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any, values: st.SearchStrategy[Any] = bad_values) -> Any:
    """``base`` (a JSON-like tree, copied) with one to three things broken: a value replaced,
    a key deleted, an unknown key added, a value re-typed (``4`` → ``"4"``, ``[4]``), a list
    emptied or an element doubled."""
    tree = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        spots = _positions(tree, [])
        action = draw(st.sampled_from(["replace", "delete", "extra", "retype", "empty",
                                       "double"]))
        if action == "extra" or not spots:
            dicts = [tree] + [c[k] for c, k in spots if isinstance(c[k], dict)]
            target = dicts[draw(st.integers(0, len(dicts) - 1))]
            key = draw(st.text(max_size=12) | st.sampled_from(["v", "extra", "site", "_"]))
            target[key] = copy.deepcopy(draw(values))  # never a shared constant: it changes
            continue
        container, key = spots[draw(st.integers(0, len(spots) - 1))]
        value = container[key]
        if action == "replace":
            container[key] = copy.deepcopy(draw(values))
        elif action == "delete":
            del container[key]
        elif action == "retype":
            container[key] = draw(st.sampled_from([str(value), [value], {"value": value}]))
            if container[key] is not value and not isinstance(container[key], str):
                container[key] = copy.deepcopy(container[key])
        elif action == "empty":
            container[key] = type(value)() if isinstance(value, list | dict | str) else None
        elif isinstance(value, list) and value:  # double
            value.append(value[0])
    return tree


def serialise(tree: Any, depth: int) -> bytes:
    """JSON as a careless sender writes it: NaN/Infinity literals allowed, ``DEEP`` replaced
    by ``depth`` levels of brackets."""
    text = json.dumps(tree, allow_nan=True)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


@st.composite
def near_valid(
    draw: st.DrawFn, messages: st.SearchStrategy[Message] | None = None
) -> tuple[str, bytes]:
    """A topic and payload close to a valid message: its JSON mutated, sometimes its bytes
    damaged (truncated, a byte changed) or its topic wrong."""
    message = draw(messages if messages is not None else wire_messages())
    topic = topic_for(message)
    payload = serialise(draw(mutated(json.loads(encode(message)))), draw(st.integers(1, 5000)))
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "byte", "topic"]))
    if damage == "truncate" and payload:
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    elif damage == "byte" and payload:
        at = draw(st.integers(0, len(payload) - 1))
        payload = payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1 :]
    elif damage == "topic":
        levels = topic.split("/")
        at = draw(st.integers(0, len(levels) - 1))
        levels[at] = draw(st.text(max_size=8).filter(lambda t: "/" not in t) | identifiers)
        topic = "/".join(levels)
    return topic, payload
