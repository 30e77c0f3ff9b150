"""The wire contract: what validates, what is refused and why."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sitewatch.wire import (
    MAX_LABELS,
    MAX_SENSORS_PER_DEVICE,
    EventMessage,
    Kind,
    Quality,
    Reading,
    StatusMessage,
    TelemetryMessage,
    WireError,
    encode,
    parse_message,
    parse_topic,
    topic,
    topic_for,
)

NOW_MS = 1_795_464_000_000


def _telemetry(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "v": 1,
        "site": "plant-a",
        "device": "pi-01",
        "boot_id": "3f2a9c1d",
        "seq": 42,
        "historical": False,
        "readings": [
            {
                "sensor": "cold-room",
                "ts": NOW_MS,
                "temperature_c": 4.2,
                "humidity_pct": 81.0,
                "quality": "ok",
            }
        ],
    }
    payload.update(changes)
    return payload


TOPIC = "sitewatch/v1/plant-a/pi-01/telemetry"


def test_wire_design_example_validates() -> None:
    message = parse_message(TOPIC, json.dumps(_telemetry()).encode(), now_ms=NOW_MS)
    assert isinstance(message, TelemetryMessage)
    assert message.readings[0].values() == {"temperature_c": 4.2, "humidity_pct": 81.0}


def test_wire_round_trip_leaves_out_absent_fields() -> None:
    reading = Reading(sensor="door", ts=NOW_MS, quality=Quality.OK, open=True)
    message = TelemetryMessage(site="s", device="d", boot_id="abcdef12", seq=1, readings=[reading])
    payload = encode(message)
    assert b"temperature_c" not in payload
    assert parse_message(topic_for(message), payload) == message


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unknown payload version 2"),
        ({"device": "pi-02"}, "topic is plant-a/pi-01"),
        ({"seq": "42"}, "seq"),
        ({"seq": -1}, "seq"),
        ({"boot_id": "not hex!"}, "boot_id"),
        ({"readings": [{"sensor": "x", "ts": NOW_MS, "quality": "ok"}]}, "at least one measured"),
        (
            {"readings": [{"sensor": "x", "ts": NOW_MS, "quality": "bad", "temperature_c": 4.0}]},
            "must not carry",
        ),
        (
            {"readings": [{"sensor": "x", "ts": NOW_MS, "quality": "ok", "temperature_c": "4"}]},
            "temperature_c",
        ),
        (
            {"readings": [{"sensor": "x", "ts": NOW_MS, "quality": "ok", "humidity_pct": 101.0}]},
            "humidity_pct",
        ),
        ({"readings": [{"sensor": "x", "ts": NOW_MS, "quality": "ok", "temp": 4.0}]}, "temp"),
        ({"readings": [{"sensor": "a/b", "ts": NOW_MS, "quality": "ok", "open": True}]}, "sensor"),
        (
            {
                "readings": [
                    {"sensor": "x", "ts": NOW_MS + 3_600_000, "quality": "ok", "open": True}
                ]
            },
            "in the future",
        ),
        ({"readings": []}, "needs readings or health"),
    ],
)
def test_wire_refuses_bad_payloads_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(WireError) as caught:
        parse_message(TOPIC, json.dumps(_telemetry(**change)).encode(), now_ms=NOW_MS)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b"null", b'{"v": 1', b"\xff\xfe", b'{"v":1,"readings":NaN}'],
)
def test_wire_refuses_malformed_json(payload: bytes) -> None:
    with pytest.raises(WireError):
        parse_message(TOPIC, payload)


def test_wire_refuses_nan_and_infinity() -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        text = json.dumps(_telemetry()).replace("4.2", literal)
        with pytest.raises(WireError, match="temperature_c"):
            parse_message(TOPIC, text.encode())


def test_wire_refuses_oversized_payload() -> None:
    with pytest.raises(WireError, match="exceeds"):
        parse_message(TOPIC, b" " * (256 * 1024 + 1))


def test_wire_topics_round_trip_and_refuse_strangers() -> None:
    assert parse_topic(topic("s", "d", Kind.EVENT)).kind is Kind.EVENT
    for bad in (
        "sitewatch/v2/s/d/telemetry",
        "sitewatch/v1/s/d",
        "sitewatch/v1/s/d/other",
        "x/v1/s/d/status",
    ):
        with pytest.raises(WireError):
            parse_topic(bad)


def test_wire_status_and_event_messages_validate() -> None:
    status = StatusMessage(
        site="s",
        device="d",
        boot_id="abcdef12",
        seq=0,
        state="offline",
        ts=NOW_MS,
        reason="connection lost",
    )
    assert parse_message(topic_for(status), encode(status)) == status
    event = {
        "v": 1,
        "site": "s",
        "device": "d",
        "boot_id": "abcdef12",
        "seq": 3,
        "events": [
            {
                "sensor": "compressor",
                "ts": NOW_MS,
                "type": "state_change",
                "field": "running",
                "value": True,
                "previous_duration_s": 300.0,
            }
        ],
    }
    parsed = parse_message("sitewatch/v1/s/d/event", json.dumps(event).encode())
    assert isinstance(parsed, EventMessage)


@given(st.binary(max_size=512))
def test_wire_any_bytes_either_parse_or_raise_wire_error(payload: bytes) -> None:
    try:
        parse_message(TOPIC, payload)
    except WireError as error:
        assert error.reason


def test_wire_birth_bounds_what_becomes_tags() -> None:
    """A birth's labels become tags on every point of the sensor: a device cannot announce
    more than the agent's config allows, nor more sensors than a device has."""
    sensor = {"id": "cold-room", "driver": "dht22", "fields": ["temperature_c"],
              "interval_s": 30.0, "labels": {"zone": "kitchen, north"}}
    birth = {"v": 1, "site": "plant-a", "device": "pi-01", "boot_id": "3f2a9c1d", "seq": 0,
             "state": "online", "ts": 1_795_464_000_000, "sensors": [sensor]}
    StatusMessage.model_validate(birth)
    too_many_labels = {**sensor, "labels": {f"l{i}": "x" for i in range(MAX_LABELS + 1)}}
    with pytest.raises(ValidationError, match="labels"):
        StatusMessage.model_validate({**birth, "sensors": [too_many_labels]})
    with pytest.raises(ValidationError, match="sensors"):
        StatusMessage.model_validate({**birth, "sensors": [sensor] * (MAX_SENSORS_PER_DEVICE + 1)})
    with pytest.raises(ValidationError, match="driver"):
        StatusMessage.model_validate({**birth, "sensors": [{**sensor, "driver": "a b"}]})
