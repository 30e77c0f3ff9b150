"""Backtests against a real influxd: readings stored through the collector's own line
protocol and sink, replayed through rules (and routes) by ``run_backtest``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.collector.alerting.config import parse_alerting
from sitewatch.collector.backtest import backtest_command, load_rules, run_backtest
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.config import InfluxConfig
from sitewatch.collector.influxql import InfluxQuery
from sitewatch.collector.lineproto import event_lines, telemetry_lines
from sitewatch.collector.rules import DetectionConfig
from sitewatch.collector.sinks.influx_v1 import InfluxV1Sink
from sitewatch.configfile import ConfigError
from sitewatch.localrun import Influxd
from sitewatch.wire import Event, EventMessage, EventType, Quality, Reading, TelemetryMessage

pytestmark = pytest.mark.integration

DB = "sitewatch"
T0_MS = 1_795_464_000_000  # 2026-11-23 20:00 UTC
MIN_MS = 60_000
SPAN_MIN = 180


def _cold_room_c(minute: int, *, high_c: float = 8.5) -> float:
    """4 °C with a little wobble, and ``high_c`` for the 20 minutes 60-79."""
    base = high_c if 60 <= minute < 80 else 4.0
    return base + 0.05 * (minute % 3)


def _write(influxd: Influxd, lines: list[str]) -> None:
    result = InfluxV1Sink(influxd.url, DB).write(lines)
    assert result.reason == "", result


def _store(
    influxd: Influxd,
    catalog: SensorCatalog,
    readings: list[Reading],
    *,
    site: str = "plant-a",
    device: str = "pi-01",
) -> None:
    """Store readings as the collector does: telemetry messages → line protocol → /write."""
    lines: list[str] = []
    for seq, start in enumerate(range(0, len(readings), 500)):
        message = TelemetryMessage(site=site, device=device, boot_id="3f2a9c1d", seq=seq,
                                   readings=readings[start:start + 500])  # fmt: skip
        lines += telemetry_lines(message, catalog)
    _write(influxd, lines)


def _climate(sensor: str, values_c: list[float], humidity_pct: float = 85.0) -> list[Reading]:
    return [
        Reading(sensor=sensor, ts=T0_MS + minute * MIN_MS, temperature_c=value,
                humidity_pct=humidity_pct, quality=Quality.OK)
        for minute, value in enumerate(values_c)
    ]  # fmt: skip


@pytest.fixture
def query(influxd: Influxd) -> InfluxQuery:
    return InfluxQuery(InfluxConfig(api="v1", url=influxd.url, database=DB))


@pytest.fixture
def cold_rooms(influxd: Influxd) -> SensorCatalog:
    """Two rooms crossing 8 °C for 20 minutes; only ``cold-room`` has the label
    ``zone: cold-room`` (and a label named like a schema tag, stored as ``label_type``)."""
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "cold-room",
                       labels={"zone": "cold-room", "type": "walk-in"})  # fmt: skip
    catalog.set_sensor("plant-a", "pi-01", "prep-room", labels={"zone": "kitchen"})
    temps = [_cold_room_c(minute) for minute in range(SPAN_MIN)]
    _store(influxd, catalog, _climate("cold-room", temps) + _climate("prep-room", temps))
    return catalog


def _threshold_rules(above_c: float, **extra: Any) -> DetectionConfig:
    return DetectionConfig.model_validate({
        "defaults": False,
        "rules": [{
            "name": "cold-room",
            "match": {"labels": {"zone": "cold-room", "type": "walk-in"}},
            "fields": ["temperature_c"],
            "detectors": {"threshold": {"above": above_c, "for_s": 600.0}},
            "severity": "critical",
            **extra,
        }],
    })  # fmt: skip


def _summary(decisions: list[Any]) -> list[tuple[str, int, str]]:
    return [(d.verdict, (d.ts_ms - T0_MS) // MIN_MS, d.dedupe_key) for d in decisions]


def test_backtest_threshold_above_8_fires_once_and_resolves(
    query: InfluxQuery, cold_rooms: SensorCatalog
) -> None:
    result = run_backtest(query, _threshold_rules(8.0), None, T0_MS, T0_MS + SPAN_MIN * MIN_MS)

    key = "plant-a/pi-01/cold-room/temperature_c/cold-room/threshold"
    # Above 8 from minute 60; held 10 minutes at minute 70; three readings under at 80-82.
    assert _summary(result.decisions) == [("fire", 70, key), ("resolve", 82, key)]
    assert result.readings == 2 * SPAN_MIN
    assert result.sensors == 2
    assert result.skipped == 0
    assert result.tick_s == 60.0
    assert result.decisions[0].message == "8.55 °C above 8 °C for 10 m"
    # One alert per problem, opened and resolved; nobody to tell without routes.
    assert [(a.key, str(a.state)) for a in result.alerts] == [
        ("plant-a/pi-01/cold-room/cold-room", "resolved")
    ]
    assert result.alerts[0].labels == {"zone": "cold-room", "type": "walk-in"}
    assert result.notifications is None


def test_backtest_threshold_above_9_fires_nothing(
    query: InfluxQuery, cold_rooms: SensorCatalog
) -> None:
    result = run_backtest(query, _threshold_rules(9.0), None, T0_MS, T0_MS + SPAN_MIN * MIN_MS)

    assert result.decisions == []
    assert result.alerts == []
    assert result.readings == 2 * SPAN_MIN


def test_backtest_counts_one_notification_with_one_team_and_a_default_route(
    query: InfluxQuery, cold_rooms: SensorCatalog
) -> None:
    alerting = parse_alerting({
        "teams": [{"name": "refrigeration",
                   "members": [{"name": "Ana", "apprise": ["ntfy://ntfy.sh/sitewatch-ana"]}]}],
        "routes": [{"match": {}, "levels": ["refrigeration"]}],
    })  # fmt: skip

    result = run_backtest(query, _threshold_rules(8.0), alerting, T0_MS,
                          T0_MS + SPAN_MIN * MIN_MS)  # fmt: skip

    assert result.notifications == 1
    [page] = result.pages
    assert (page.kind, page.recipients, page.ts_ms) == ("firing", ("Ana",), T0_MS + 70 * MIN_MS)
    assert page.key == "plant-a/pi-01/cold-room/cold-room"
    assert result.alerts[0].notify_count == 1


def test_backtest_escalates_on_replayed_time_when_nobody_acknowledges(
    influxd: Influxd, query: InfluxQuery
) -> None:
    """A problem lasting 40 minutes, escalation after 15 minutes unacknowledged: the
    engine's clock follows the replayed readings, so the second level is paged at 85 min."""
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "cold-room", labels={"zone": "cold-room"})
    temps = [9.0 if 60 <= minute < 100 else 4.0 for minute in range(SPAN_MIN)]
    _store(influxd, catalog, _climate("cold-room", temps))
    alerting = parse_alerting({
        "teams": [
            {"name": "fridge", "members": [{"name": "Ana", "apprise": ["ntfy://ntfy.sh/a"]}]},
            {"name": "boss", "members": [{"name": "Bo", "apprise": ["ntfy://ntfy.sh/b"]}]},
        ],
        "routes": [{"match": {}, "levels": ["fridge", "boss"], "escalate_after_s": 900}],
    })  # fmt: skip
    rules = DetectionConfig.model_validate({"defaults": False, "rules": [
        {"name": "cold-room", "fields": ["temperature_c"],
         "detectors": {"threshold": {"above": 8.0, "for_s": 600.0}}}]})  # fmt: skip

    result = run_backtest(query, rules, alerting, T0_MS, T0_MS + SPAN_MIN * MIN_MS)

    assert [(p.kind, p.recipients, (p.ts_ms - T0_MS) // MIN_MS) for p in result.pages] == [
        ("firing", ("Ana",), 70),
        ("escalation", ("Bo",), 85),
    ]
    assert result.notifications == 2


def test_backtest_ticks_between_readings_so_a_silent_sensor_is_noticed(
    influxd: Influxd, query: InfluxQuery
) -> None:
    catalog = SensorCatalog()
    # Sends every minute for 100 minutes, then nothing until the end of the period.
    _store(influxd, catalog, _climate("cold-room", [4.0 + 0.1 * (m % 5) for m in range(100)]))
    rules = DetectionConfig.model_validate({"defaults": False, "rules": [
        {"name": "silent", "fields": ["reading"], "detectors": {"silence": {}}}]})  # fmt: skip

    result = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS)

    # Last reading at minute 99; five missed one-minute intervals later it is silent.
    [fire] = result.decisions
    assert fire.verdict == "fire" and fire.detector == "silence"
    assert T0_MS + 104 * MIN_MS <= fire.ts_ms <= T0_MS + 105 * MIN_MS


def test_backtest_reads_equipment_readings_but_not_event_points(
    influxd: Influxd, query: InfluxQuery
) -> None:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "compressor", labels={"equipment": "compressor-1"},
                       fields=["running", "duty_cycle_pct"])  # fmt: skip
    readings = [
        Reading(sensor="compressor", ts=T0_MS + m * MIN_MS, running=m % 2 == 0,
                duty_cycle_pct=95.0 if 30 <= m < 50 else 40.0, quality=Quality.OK)
        for m in range(SPAN_MIN)
    ]  # fmt: skip
    _store(influxd, catalog, readings)
    # A door's state changes stored from events (no quality): live detection never saw them.
    events = EventMessage(site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=99, events=[
        Event(sensor="door", ts=T0_MS + m * MIN_MS + 1, type=EventType.STATE_CHANGE,
              field="open", value=m % 2 == 0) for m in range(20)])  # fmt: skip
    _write(influxd, event_lines(events, catalog))
    rules = DetectionConfig.model_validate({"defaults": False, "rules": [
        {"name": "duty", "match": {"labels": {"equipment": "compressor-1"}},
         "fields": ["duty_cycle_pct"], "detectors": {"threshold": {"above": 90.0}}},
        {"name": "door", "fields": ["open"], "detectors": {"threshold": {"above": 0.5}}},
    ]})  # fmt: skip

    result = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS)

    assert [(v, m) for v, m, _ in _summary(result.decisions)] == [("fire", 30), ("resolve", 52)]
    assert result.readings == SPAN_MIN
    assert result.sensors == 1


def test_backtest_pages_through_small_windows_and_row_limits_alike(
    query: InfluxQuery, cold_rooms: SensorCatalog
) -> None:
    """Reading 25 minutes at a time, 7 rows per query, gives the same replay as one read."""
    rules = _threshold_rules(8.0)
    whole = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS,
                         window_s=SPAN_MIN * 60.0)  # fmt: skip
    paged = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS,
                         window_s=25 * 60.0, page_rows=7)  # fmt: skip

    assert _summary(paged.decisions) == _summary(whole.decisions)
    assert len(whole.decisions) == 2
    assert paged.readings == whole.readings == 2 * SPAN_MIN


def test_backtest_site_filter_replays_only_that_site(
    influxd: Influxd, query: InfluxQuery
) -> None:
    catalog = SensorCatalog()
    temps = [_cold_room_c(minute) for minute in range(SPAN_MIN)]
    _store(influxd, catalog, _climate("cold-room", temps), site="plant-a")
    _store(influxd, catalog, _climate("cold-room", temps), site="plant-b")
    rules = DetectionConfig.model_validate({"defaults": False, "rules": [
        {"name": "hot", "fields": ["temperature_c"],
         "detectors": {"threshold": {"above": 8.0, "for_s": 600.0}}}]})  # fmt: skip

    both = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS)
    one = run_backtest(query, rules, None, T0_MS, T0_MS + SPAN_MIN * MIN_MS, site="plant-b")

    assert {d.site for d in both.fires} == {"plant-a", "plant-b"}
    assert [d.site for d in one.fires] == ["plant-b"]
    assert one.readings == SPAN_MIN


def _collector_config(tmp_path: Path, influxd: Influxd) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({
        "mqtt": {"host": "127.0.0.1", "client_id": "collector-1"},
        "influx": {"api": "v1", "url": influxd.url, "database": DB},
        "state_dir": str(tmp_path / "state"),
    }))  # fmt: skip
    return path


def test_backtest_command_replays_the_last_hours_with_the_rules_file(
    influxd: Influxd, cold_rooms: SensorCatalog, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({
        "detection": {"defaults": False, "rules": [{
            "name": "cold-room", "match": {"labels": {"zone": "cold-room"}},
            "fields": ["temperature_c"], "severity": "critical",
            "detectors": {"threshold": {"above": 8.0, "for_s": 600.0}},
        }]},
        "alerting": {
            "teams": [{"name": "refrigeration",
                       "members": [{"name": "Ana", "apprise": ["ntfy://ntfy.sh/a"]}]}],
            "routes": [{"match": {}, "levels": ["refrigeration"]}],
        },
    }))  # fmt: skip
    now_s = (T0_MS + SPAN_MIN * MIN_MS) / 1000

    text, data = backtest_command(_collector_config(tmp_path, influxd), rules, "3h",
                                  now_s=now_s)  # fmt: skip

    assert (data["fired"], data["resolved"], data["notifications"]) == (1, 1, 1)
    assert data["decisions"][0]["key"] == (
        "plant-a/pi-01/cold-room/temperature_c/cold-room/threshold"
    )
    assert data["decisions"][0]["ts_ms"] == T0_MS + 70 * MIN_MS
    assert data["alerts"][0]["severity"] == "critical"
    json.dumps(data)  # JSON-able as it is
    assert "Decisions: 1 fired, 1 resolved" in text
    assert "Notifications to people: 1 (firing 1)" in text
    assert "2026-11-23 21:10 UTC  FIRE" in text


def test_backtest_command_without_alerting_does_not_count_notifications(
    influxd: Influxd, cold_rooms: SensorCatalog, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{
        "name": "cold-room", "fields": ["temperature_c"],
        "detectors": {"threshold": {"above": 8.0, "for_s": 600.0}}}]}))  # fmt: skip
    now_s = (T0_MS + SPAN_MIN * MIN_MS) / 1000

    text, data = backtest_command(_collector_config(tmp_path, influxd), rules, "3h",
                                  site="plant-a", now_s=now_s)  # fmt: skip

    # Both rooms match (no label in the match), and no default rules were added.
    assert data["fired"] == 2
    assert {d["rule"] for d in data["decisions"]} == {"cold-room"}
    assert data["notifications"] is None
    assert "Notifications: not counted" in text


@pytest.mark.parametrize(
    ("content", "path"),
    [
        (
            {"rules": [{"name": "x", "fields": ["temperature_c"],
                        "detectors": {"threshold": {"above": "warm"}}}]},
            "rules[0].detectors.threshold.above",
        ),
        (
            {"detection": {"rules": [{"name": "x", "fields": ["temperature_c"],
                                      "detectors": {"threshold": {"above": 8.0}},
                                      "policy": {"hits": 3}}]}},
            "detection.rules[0].policy.hits",
        ),
        (
            {"detection": {"rules": [{"name": "x", "fields": ["temprature_c"],
                                      "detectors": {"threshold": {"above": 8.0}}}]}},
            "detection.rules[0].fields",
        ),
        (
            {"detection": {"rules": [{"name": "x", "fields": ["temperature_c"],
                                      "detectors": {"no_such_detector": {}}}]}},
            "detection.rules[0].detectors.no_such_detector",
        ),
        (
            {"rules": [{"name": "x", "fields": ["temperature_c"],
                        "detectors": {"threshold": {"above": 8.0}}}],
             "alerting": {"routes": [{"match": {}, "levels": ["nobody"]}]}},
            "alerting.routes[0].levels[0]",
        ),
        ({"rules": []}, "rules"),
        ({"detection": {"rules": [{"name": "x"}], "colour": "red"}}, "detection.colour"),
    ],
)
def test_backtest_bad_rules_file_names_the_field_path(
    tmp_path: Path, content: dict[str, Any], path: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(content))

    with pytest.raises(ConfigError) as caught:
        load_rules(rules)

    assert path in [issue.path for issue in caught.value.issues], caught.value.issues
    assert str(rules) in str(caught.value)


def test_backtest_rules_file_forms_and_defaults(tmp_path: Path) -> None:
    bare, wrapped = tmp_path / "bare.yaml", tmp_path / "wrapped.yaml"
    rule = {"name": "x", "fields": ["temperature_c"], "detectors": {"threshold": {"above": 8.0}}}
    bare.write_text(yaml.safe_dump({"rules": [rule]}))
    wrapped.write_text(yaml.safe_dump({"detection": {"rules": [rule]}}))

    from_bare, from_wrapped = load_rules(bare), load_rules(wrapped)

    # A bare rules list is just those rules; the detection section keeps its defaults.
    assert [r.name for r in from_bare.detection.all_rules()] == ["x"]
    assert [r.name for r in from_wrapped.detection.all_rules()][-1] == "x"
    assert len(from_wrapped.detection.all_rules()) > 1
    assert from_bare.alerting is None and from_wrapped.alerting is None
