"""Line protocol for the public schema: measurements, tags, field types, escaping, identity.

Lines are checked with a reference parser (``tests.lineparse.parse_line``) and, in
``test_lineproto_influxd_*``, by the real influxd, which must accept every line and give
back what went in.
"""

from __future__ import annotations

import itertools
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitewatch.collector.catalog import RESERVED_TAGS, SensorCatalog, tag_string
from sitewatch.collector.decisions import Decision, alerts_line
from sitewatch.collector.escaping import escape_tag
from sitewatch.collector.lineproto import (
    delivery_line,
    dew_point_c,
    event_lines,
    telemetry_lines,
)
from sitewatch.localrun import Influxd
from sitewatch.wire import (
    Event,
    EventMessage,
    EventType,
    Health,
    Quality,
    Reading,
    SensorInfo,
    StatusMessage,
    TelemetryMessage,
)
from tests.lineparse import parse_line

TS = 1_795_464_000_123


def _telemetry(*readings: Reading, health: Health | None = None) -> TelemetryMessage:
    return TelemetryMessage(
        site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=42,
        readings=list(readings), health=health,
    )


def _events(*events: Event) -> EventMessage:
    return EventMessage(
        site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=43, events=list(events)
    )


def _birth(*sensors: SensorInfo) -> StatusMessage:
    return StatusMessage(
        site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=0, state="online", ts=TS,
        sensors=list(sensors),
    )


def _climate(sensor: str = "cold-room", **values: Any) -> Reading:
    values.setdefault("quality", Quality.OK)
    return Reading(sensor=sensor, ts=TS, **values)


def test_lineproto_environment_point_carries_tags_labels_and_dew_point() -> None:
    catalog = SensorCatalog()
    info = SensorInfo(
        id="cold-room", driver="dht22", fields=["temperature_c", "humidity_pct"],
        interval_s=60, labels={"zone": "kitchen", "equipment": "walk-in 1"},
    )
    assert catalog.update(_birth(info)) is True
    [line] = telemetry_lines(_telemetry(_climate(temperature_c=20.0, humidity_pct=50.0)), catalog)
    measurement, tags, fields, ts = parse_line(line)
    assert measurement == "environment"
    assert tags == {
        "site": "plant-a", "device": "pi-01", "sensor": "cold-room",
        "zone": "kitchen", "equipment": "walk-in 1",
    }
    assert fields == {
        "temperature_c": 20.0, "humidity_pct": 50.0, "dew_point_c": 9.26, "quality": "ok"
    }
    assert ts == TS


def test_lineproto_dew_point_follows_magnus_over_water_and_ice() -> None:
    assert dew_point_c(20.0, 50.0) == pytest.approx(9.26, abs=0.005)
    assert dew_point_c(30.0, 70.0) == pytest.approx(23.93, abs=0.01)
    assert dew_point_c(-10.0, 80.0) == pytest.approx(-12.49, abs=0.01)  # frost point, ice
    with pytest.raises(ValueError, match="no dew point"):
        dew_point_c(20.0, 0.0)


@given(
    st.floats(min_value=-40.0, max_value=60.0),
    st.floats(min_value=1.0, max_value=100.0),
)
def test_lineproto_dew_point_never_exceeds_temperature(temperature: float, humidity: float) -> None:
    dew = dew_point_c(temperature, humidity)
    assert dew <= temperature + 0.005
    if humidity == 100.0:
        assert dew == pytest.approx(temperature, abs=0.005)


def test_lineproto_zero_humidity_writes_no_dew_point() -> None:
    [line] = telemetry_lines(
        _telemetry(_climate(temperature_c=20.0, humidity_pct=0.0)), SensorCatalog()
    )
    assert "dew_point_c" not in parse_line(line)[2]


@given(
    st.floats(min_value=-273.15, max_value=1000.0),
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=1e9),
)
def test_lineproto_measured_values_are_always_floats(
    temperature: float, humidity: float, runtime: float
) -> None:
    # An integral value (40.0) must not become 40i: InfluxDB would refuse the next float.
    message = _telemetry(
        _climate(temperature_c=temperature, humidity_pct=humidity),
        Reading(sensor="compressor", ts=TS, quality=Quality.OK, running=True,
                duty_cycle_pct=humidity, starts_per_h=runtime, runtime_h=runtime),
    )
    for line in telemetry_lines(message, SensorCatalog()):
        _, _, fields, _ = parse_line(line)
        for name, value in fields.items():
            if name in ("quality", "running"):
                continue
            assert type(value) is float, (name, line)
        raw = dict(part.split("=", 1) for part in line.split(" ")[1].split(","))
        assert not any(value.endswith("i") for value in raw.values()), line
    env = parse_line(telemetry_lines(message, SensorCatalog())[0])[2]
    assert (env["temperature_c"], env["humidity_pct"]) == (temperature, humidity)


def test_lineproto_equipment_point_has_bools_and_float_counters() -> None:
    reading = Reading(sensor="compressor", ts=TS, quality=Quality.DEGRADED, running=False,
                      duty_cycle_pct=41.5, starts_per_h=3.0, runtime_h=1234.5)
    [line] = telemetry_lines(_telemetry(reading), SensorCatalog())
    measurement, tags, fields, _ = parse_line(line)
    assert measurement == "equipment"
    assert tags == {"site": "plant-a", "device": "pi-01", "sensor": "compressor"}
    assert fields == {"running": False, "duty_cycle_pct": 41.5, "starts_per_h": 3.0,
                      "runtime_h": 1234.5, "quality": "degraded"}


def test_lineproto_reading_without_value_goes_where_its_fields_say() -> None:
    catalog = SensorCatalog()
    catalog.update(_birth(
        SensorInfo(id="door", driver="gpio_input", fields=["open"], interval_s=5),
        SensorInfo(id="rack", driver="dht22", fields=["temperature_c"], interval_s=5),
    ))
    message = _telemetry(
        Reading(sensor="door", ts=TS, quality=Quality.FAULT),
        Reading(sensor="rack", ts=TS, quality=Quality.BAD),
        Reading(sensor="unknown", ts=TS, quality=Quality.BAD),
    )
    parsed = [parse_line(line) for line in telemetry_lines(message, catalog)]
    assert [(m, t["sensor"], f) for m, t, f, _ in parsed] == [
        ("equipment", "door", {"quality": "fault"}),
        ("environment", "rack", {"quality": "bad"}),
        ("environment", "unknown", {"quality": "bad"}),
    ]


def test_lineproto_health_counts_are_integers_and_uptime_a_float() -> None:
    health = Health(uptime_s=3600, produced=10, acked=8, outbox_messages=2, outbox_readings=2,
                    outbox_bytes=300, dropped_readings=1, dropped_events=0,
                    read_errors={"rack": {"timeout": 2, "crc": 1}, "door": {"io": 4}},
                    time_synced=True)
    lines = telemetry_lines(_telemetry(_climate(temperature_c=4.0), health=health),
                            SensorCatalog())
    measurement, tags, fields, ts = parse_line(lines[-1])
    assert (measurement, tags, ts) == ("device_health", {"site": "plant-a", "device": "pi-01"},
                                       TS)
    assert fields == {"uptime_s": 3600.0, "produced": 10, "acked": 8, "outbox_messages": 2,
                      "outbox_readings": 2, "outbox_bytes": 300, "dropped_readings": 1,
                      "dropped_events": 0, "read_errors": 7, "time_synced": True, "seq": 42}
    assert type(fields["uptime_s"]) is float and type(fields["produced"]) is int


def test_lineproto_health_only_message_is_stamped_with_received_time() -> None:
    health = Health(uptime_s=1.5, produced=0, acked=0, outbox_messages=0, outbox_readings=0,
                    outbox_bytes=0, dropped_readings=0, dropped_events=0)
    [line] = telemetry_lines(_telemetry(health=health), SensorCatalog(), received_ms=TS + 5)
    _, _, fields, ts = parse_line(line)
    assert ts == TS + 5 and "time_synced" not in fields


def test_lineproto_health_uses_the_agents_own_timestamp_so_redelivery_overwrites() -> None:
    health = Health(ts=TS - 7, uptime_s=1.5, produced=0, acked=0, outbox_messages=0,
                    outbox_readings=0, outbox_bytes=0, dropped_readings=0, dropped_events=0)
    first = telemetry_lines(_telemetry(health=health), SensorCatalog(), received_ms=TS + 5)
    again = telemetry_lines(_telemetry(health=health), SensorCatalog(), received_ms=TS + 900)
    assert first == again and parse_line(first[0])[3] == TS - 7


def test_lineproto_state_change_also_writes_the_equipment_state_at_event_time() -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "compressor", labels={"equipment": "cooler 1"})
    event = Event(sensor="compressor", ts=TS, type=EventType.STATE_CHANGE, field="running",
                  value=True, previous_duration_s=600)
    first, second = (parse_line(line) for line in event_lines(_events(event), catalog))
    assert first == (
        "events",
        {"site": "plant-a", "device": "pi-01", "sensor": "compressor", "type": "state_change"},
        {"field": "running", "value": True, "previous_duration_s": 600.0},
        TS,
    )
    reading = Reading(sensor="compressor", ts=TS + 1, quality=Quality.OK, running=True)
    [state_line] = telemetry_lines(_telemetry(reading), catalog)
    # the same series as the sampled readings, so a timeline query sees both
    assert second[:2] == parse_line(state_line)[:2]
    assert second[2:] == ({"running": True}, TS)


def test_lineproto_fault_events_carry_detail_and_write_no_state() -> None:
    events = _events(
        Event(sensor="rack", ts=TS, type=EventType.SENSOR_FAULT, detail='3 "bad" periods\n'),
        Event(sensor="rack", ts=TS + 1, type=EventType.SENSOR_RECOVERED),
    )
    lines = event_lines(events, SensorCatalog())
    assert [parse_line(line)[2] for line in lines] == [
        {"detail": '3 "bad" periods '},
        {"detail": ""},
    ]


def test_lineproto_delivery_counters_are_integer_fields() -> None:
    line = delivery_line("plant-a", "pi-01", {"received": 10, "stored": 9, "duplicates": 1,
                                              "gaps": 0, "late": 2}, TS)
    assert parse_line(line) == (
        "delivery", {"site": "plant-a", "device": "pi-01"},
        {"received": 10, "stored": 9, "duplicates": 1, "gaps": 0, "late": 2}, TS,
    )
    with pytest.raises(ValueError):
        delivery_line("plant-a", "pi-01", {}, TS)


def test_lineproto_reserved_and_empty_labels() -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "s", labels={
        "site": "other", "quality": "x", "_measurement": "y", "time": "z", "": "w", "blank": "",
    })
    [line] = telemetry_lines(_telemetry(_climate("s", temperature_c=1.0)), catalog)
    assert parse_line(line)[1] == {
        "site": "plant-a", "device": "pi-01", "sensor": "s", "label_site": "other",
        "label_quality": "x", "label__measurement": "y", "label_time": "z",
    }


def test_lineproto_catalog_survives_a_checkpoint_and_tags_the_same() -> None:
    catalog = SensorCatalog()
    catalog.update(_birth(SensorInfo(id="cold-room", driver="dht22", fields=["temperature_c"],
                                     interval_s=60, labels={"zone": 'a,b c="d"'})))
    message = _telemetry(_climate(temperature_c=3.0), Reading(sensor="cold-room", ts=TS + 1,
                                                             quality=Quality.BAD))
    restored = SensorCatalog.from_json(catalog.to_json())
    assert telemetry_lines(message, restored) == telemetry_lines(message, catalog)
    # the same birth again changes nothing; a last will changes nothing either
    assert catalog.update(_birth(SensorInfo(id="cold-room", driver="dht22",
                                            fields=["temperature_c"], interval_s=60,
                                            labels={"zone": 'a,b c="d"'}))) is False
    offline = StatusMessage(site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=1,
                            state="offline", ts=TS)
    assert catalog.update(offline) is False
    with pytest.raises(ValueError):
        SensorCatalog.from_json({"version": 1, "sensors": [{"site": "x"}]})


def test_lineproto_new_labels_retag_the_sensor() -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "cold-room", labels={"zone": "a"})
    message = _telemetry(_climate(temperature_c=3.0))
    before = telemetry_lines(message, catalog)
    assert catalog.set_sensor("plant-a", "pi-01", "cold-room", labels={"zone": "b"}) is True
    assert parse_line(telemetry_lines(message, catalog)[0])[1]["zone"] == "b"
    assert parse_line(before[0])[1]["zone"] == "a"


label_text = st.text(max_size=24)


def _expected(text: str) -> str:
    """What a free-text string becomes: newlines are spaces, unencodable characters ``?``."""
    cleaned = text.replace("\n", " ").replace("\r", " ")
    return cleaned.encode("utf-8", "replace").decode("utf-8")


def _expected_tag(text: str) -> str:
    """What a label key or value becomes: as free text, and backslashes are ``/``."""
    return _expected(text).replace("\\", "/")


def _expected_tags(labels: dict[str, str], sensor: str = "s") -> dict[str, str]:
    expected = {"site": "plant-a", "device": "pi-01", "sensor": sensor}
    for key, value in sorted(labels.items()):
        name = f"label_{key}" if key in RESERVED_TAGS or key[:1] == "_" else key
        if key and value:
            expected.setdefault(_expected_tag(name), _expected_tag(value))
    return expected


@given(st.dictionaries(label_text, label_text, max_size=4), label_text)
def test_lineproto_any_label_or_detail_text_parses_back(
    labels: dict[str, str], detail: str
) -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "s", labels=labels)
    [line] = telemetry_lines(_telemetry(_climate("s", temperature_c=1.0)), catalog)
    assert "\n" not in line
    _, tags, fields, ts = parse_line(line)
    assert fields == {"temperature_c": 1.0, "quality": "ok"} and ts == TS
    assert tags == _expected_tags(labels)
    assert list(tags) == sorted(tags, key=escape_tag)  # in key order, as InfluxDB keeps them
    stream_tags = tag_string("plant-a", "pi-01", "s", labels, field="humidity_pct")
    anomaly_tags = parse_line(f"anomaly,{stream_tags} score=0.5 {TS}")[1]
    assert anomaly_tags == {**_expected_tags(labels), "field": "humidity_pct"}
    assert list(anomaly_tags) == sorted(anomaly_tags, key=escape_tag)
    [event] = event_lines(_events(Event(sensor="s", ts=TS, type=EventType.SENSOR_FAULT,
                                        detail=detail)), catalog)
    assert parse_line(event)[2] == {"detail": _expected(detail)}


def test_lineproto_every_measurement_writes_its_tags_in_key_order() -> None:
    """InfluxDB sorts any other order itself, point by point (escaping.tag_set)."""
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "door", labels={"area": "dock", "zone": "north"})
    health = Health(uptime_s=1.0, produced=1, acked=1, outbox_messages=0, outbox_readings=0,
                    outbox_bytes=0, dropped_readings=0, dropped_events=0)  # fmt: skip
    lines = telemetry_lines(_telemetry(_climate("door", temperature_c=1.0), health=health),
                            catalog)  # fmt: skip
    lines += event_lines(_events(Event(sensor="door", ts=TS, type=EventType.STATE_CHANGE,
                                       field="open", value=True)), catalog)  # fmt: skip
    lines.append(delivery_line("plant-a", "pi-01", {"received": 1}, TS))
    lines.append(alerts_line(Decision(
        "fire", "plant-a", "pi-01", "door", "open", "door", "door_open", "warning",
        "technician", TS, 1.0, 1.0, "open for 5 m", "c0ffee", None)))  # fmt: skip
    measurements = []
    for line in lines:
        measurement, tags, _, _ = parse_line(line)
        measurements.append(measurement)
        assert list(tags) == sorted(tags), line
        assert {"site", "device"} <= set(tags), line
    assert measurements == ["environment", "device_health", "events", "equipment", "delivery",
                            "alerts"]  # fmt: skip


def test_lineproto_lines_never_contain_newlines_or_surrogates() -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "s", labels={"zone\n": "a\r\nb", "x": "\ud800"})
    [line] = telemetry_lines(_telemetry(_climate("s", temperature_c=1.0)), catalog)
    line.encode("utf-8")
    assert parse_line(line)[1]["zone "] == "a  b" and parse_line(line)[1]["x"] == "?"


@settings(max_examples=50)
@given(st.lists(label_text, min_size=1, max_size=3))
def test_lineproto_identity_is_deterministic(values: list[str]) -> None:
    labels = {f"k{i}": v for i, v in enumerate(values)}
    first, second = SensorCatalog(), SensorCatalog()
    first.set_sensor("plant-a", "pi-01", "s", labels=labels)
    second.set_sensor("plant-a", "pi-01", "s", labels=dict(reversed(list(labels.items()))))
    message = _telemetry(_climate("s", temperature_c=1.0, humidity_pct=40.0))
    assert telemetry_lines(message, first) == telemetry_lines(message, second)


# -- against the real influxd ---------------------------------------------------------------

DB = "sitewatch"  # the influxd fixture creates it


def _post(server: Influxd, lines: list[str]) -> tuple[int, str]:
    """POST lines to influxd's /write (ms precision) and return its status and body."""
    request = urllib.request.Request(  # noqa: S310 (the test's own loopback server)
        f"{server.url}/write?db={DB}&precision=ms", data="\n".join(lines).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _row(server: Influxd, measurement: str, sensor: str) -> dict[str, Any]:
    [row] = server.query(f"SELECT * FROM {measurement} WHERE sensor = '{sensor}'", DB)
    return {k: v for k, v in row.items() if v is not None and v != ""}


@pytest.mark.integration
def test_lineproto_influxd_accepts_every_kind_of_line_without_type_conflicts(
    influxd: Influxd,
) -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "compressor", labels={"equipment": "cooler 1"},
                       fields=["running", "duty_cycle_pct", "starts_per_h", "runtime_h"])
    health = Health(uptime_s=60, produced=5, acked=5, outbox_messages=0, outbox_readings=0,
                    outbox_bytes=0, dropped_readings=0, dropped_events=0, time_synced=False)
    # integral values first (40.0, 0.0), then fractional ones: with a float written as an
    # integer, the second round would be a field type conflict
    for round_, (value, other) in enumerate(((40.0, 0.0), (40.5, 3.25))):
        ts = TS + 1000 * round_
        message = TelemetryMessage(
            site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=1 + round_, health=health,
            readings=[
                Reading(sensor="cold-room", ts=ts, quality=Quality.OK, temperature_c=value,
                        humidity_pct=value),
                Reading(sensor="compressor", ts=ts, quality=Quality.OK, running=bool(round_),
                        duty_cycle_pct=value, starts_per_h=other, runtime_h=value),
                Reading(sensor="compressor", ts=ts + 1, quality=Quality.FAULT),
            ],
        )
        events = EventMessage(
            site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=10 + round_,
            events=[Event(sensor="compressor", ts=ts + 2, type=EventType.STATE_CHANGE,
                          field="running", value=True, previous_duration_s=other),
                    Event(sensor="rack", ts=ts + 3, type=EventType.SENSOR_FAULT, detail="x")],
        )
        lines = telemetry_lines(message, catalog) + event_lines(events, catalog)
        lines.append(delivery_line("plant-a", "pi-01", {"received": 3, "gaps": 0}, ts))
        assert _post(influxd, lines) == (204, "")
    rows = influxd.query("SELECT * FROM equipment WHERE equipment = 'cooler 1'", DB)
    assert [row["time"] for row in rows] == [TS, TS + 1, TS + 2, TS + 1000, TS + 1001, TS + 1002]
    assert rows[3]["duty_cycle_pct"] == 40.5 and rows[1]["quality"] == "fault"
    [health_row] = influxd.query("SELECT * FROM device_health WHERE seq = 2", DB)
    assert (health_row["time"], health_row["uptime_s"], health_row["time_synced"]) == (
        TS + 1001, 60, False  # stamped with the message's newest reading
    )


_influxd_example = itertools.count()


@pytest.mark.integration
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    labels=st.dictionaries(label_text, label_text, max_size=3),
    detail=label_text,
    temperature=st.floats(min_value=-80.0, max_value=1000.0),
)
def test_lineproto_influxd_takes_any_text_and_gives_it_back(
    influxd: Influxd, labels: dict[str, str], detail: str, temperature: float
) -> None:
    sensor = f"s{next(_influxd_example)}"
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", sensor, labels=labels)
    lines = telemetry_lines(
        _telemetry(_climate(sensor, temperature_c=temperature, humidity_pct=55.5)), catalog
    ) + event_lines(
        _events(Event(sensor=sensor, ts=TS, type=EventType.SENSOR_FAULT, detail=detail)),
        catalog,
    )
    assert _post(influxd, lines) == (204, "")
    environment = _row(influxd, "environment", sensor)
    expected_tags = _expected_tags(labels, sensor)
    assert {k: v for k, v in environment.items() if k in expected_tags} == expected_tags
    assert set(environment) == {*expected_tags, "time", "temperature_c", "humidity_pct",
                                "dew_point_c", "quality"}
    assert environment["temperature_c"] == temperature and environment["time"] == TS
    assert _row(influxd, "events", sensor).get("detail", "") == _expected(detail)
