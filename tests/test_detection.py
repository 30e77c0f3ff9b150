"""The live detection path on crafted streams: rules, policy, decisions, lines, checkpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.config import CollectorConfigError, parse_config
from sitewatch.collector.decisions import Decision, alerts_line
from sitewatch.collector.detection import SCORE_FLOOR, SCORE_REFRESH_S, SCORE_STEP, Detection
from sitewatch.collector.detectors import build_detector
from sitewatch.collector.detectors.threshold import ThresholdParams
from sitewatch.collector.policy import AlertPolicy
from sitewatch.collector.rules import DetectionConfig, PolicyConfig, RuleSet
from sitewatch.wire import TelemetryMessage
from tests.lineparse import parse_line

T0_S = 1_795_464_000.0

COLD_ROOM_RULE = {
    "name": "cold-room",
    "match": {"labels": {"zone": "cold-room"}},
    "fields": ["temperature_c"],
    "detectors": {"threshold": {"above": 8.0, "clear_above": 7.0, "for_s": 600.0}},
    "severity": "critical",
}


def _config(*rules: dict[str, Any], defaults: bool = False) -> DetectionConfig:
    return DetectionConfig.model_validate({"defaults": defaults, "rules": list(rules)})


def _catalog(**labels: str) -> SensorCatalog:
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "room", labels=labels, fields=["temperature_c"])
    return catalog


def _message(seq: int, ts_s: float, **fields: Any) -> TelemetryMessage:
    return TelemetryMessage.model_validate_json(json.dumps({
        "site": "plant-a", "device": "pi-01", "boot_id": "b1b1b1b1", "seq": seq,
        "readings": [{"sensor": "room", "ts": int(ts_s * 1000), "quality": "ok", **fields}],
    }))


def _feed(detection: Detection, values: list[float], start_s: float = T0_S,
          step_s: float = 60.0, seq: int = 1) -> list[str]:
    lines: list[str] = []
    for i, value in enumerate(values):
        lines += detection.observe(_message(seq + i, start_s + i * step_s, temperature_c=value))
    return lines


def _collector_config(detection: dict[str, Any]) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": "c"},
        "influx": {"api": "v1", "url": "http://127.0.0.1:8086", "database": "sitewatch"},
        "state_dir": "/tmp/x",
        "detection": detection,
    }


# -- rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"name": "r", "fields": ["temperature_c"], "detectors": {"thresold": {}}},
         "detection.rules[0].detectors.thresold"),
        ({"name": "r", "fields": ["temperature_c"],
          "detectors": {"threshold": {"above": 8.0, "clear_above": 9.0}}},
         "detection.rules[0].detectors.threshold"),
        ({"name": "r", "fields": ["temprature_c"], "detectors": {"flatline": {}}},
         "detection.rules[0].fields"),
        ({"name": "r", "profile": "walk_in"}, "detection.rules[0].profile"),
        ({"name": "r", "fields": ["temperature_c"], "detectors": {"flatline": {}},
          "policy": {"hits": 3, "window": 2}}, "detection.rules[0].policy.hits"),
        ({"name": "r", "fields": ["temperature_c"]}, "detection.rules[0].detectors"),
    ],
)
def test_bad_rules_fail_at_start_naming_the_field(rule: dict[str, Any], path: str) -> None:
    with pytest.raises(CollectorConfigError) as error:
        parse_config(_collector_config({"rules": [rule]}))
    assert any(issue.path.startswith(path) for issue in error.value.issues), error.value


def test_profile_fills_in_and_rule_overrides_parameter_by_parameter() -> None:
    config = _config({"name": "walk-in", "profile": "cold_room",
                      "detectors": {"threshold": {"above": 9.0}}})
    bindings = RuleSet(config).bindings("s", "d", "room", {})
    threshold = next(b for b in bindings["temperature_c"] if b.detector == "threshold")
    params = threshold.params.model_dump()
    assert params["above"] == 9.0 and params["clear_above"] == 7.0 and params["for_s"] == 600.0
    assert threshold.severity == "critical"
    assert {b.detector for b in bindings["temperature_c"]} == {"threshold", "forecast"}


def test_rules_select_by_labels_and_globs_and_defaults_come_first() -> None:
    config = DetectionConfig.model_validate({"rules": [COLD_ROOM_RULE]})
    rules = RuleSet(config)
    cold = rules.bindings("plant-a", "pi-01", "room", {"zone": "cold-room"})
    office = rules.bindings("plant-a", "pi-01", "room", {"zone": "office"})
    assert [b.rule for b in cold["temperature_c"]][-1] == "cold-room"
    assert "cold-room" not in {b.rule for b in office["temperature_c"]}
    assert {b.detector for b in office["temperature_c"]} >= {"plausibility", "flatline",
                                                             "anomaly"}
    assert [b.detector for b in office["reading"]] == ["silence"]
    assert {b.audience for b in office["temperature_c"] if b.detector == "flatline"} == {
        "installer"}


# -- policy --------------------------------------------------------------------------------
def test_policy_needs_n_of_m_hits_and_clears_with_hysteresis() -> None:
    policy = AlertPolicy(PolicyConfig(hits=2, window=3, fire_at=0.6, clear_at=0.3,
                                      clear_after=2, cooldown_s=0))
    verdicts = [policy.update(t, s) for t, s in enumerate([0.7, 0.1, 0.1, 0.7, 0.65])]
    assert verdicts == [None, None, None, None, "fire"]
    # 0.4 is below fire_at but not below clear_at: the alert stays up.
    assert [policy.update(10 + t, s) for t, s in enumerate([0.4, 0.2, 0.4, 0.2, 0.1])] == [
        None, None, None, None, "resolve"]


def test_policy_cooldown_suppresses_refiring_and_survives_a_checkpoint() -> None:
    policy = AlertPolicy(PolicyConfig(clear_after=1, cooldown_s=100))
    assert policy.update(0, 1.0) == "fire"
    assert policy.update(1, 0.0) == "resolve"
    restored = AlertPolicy(PolicyConfig(clear_after=1, cooldown_s=100))
    restored.set_state(json.loads(json.dumps(policy.get_state())))
    assert restored.update(50, 1.0) is None
    assert restored.update(102, 1.0) == "fire"


# -- engine --------------------------------------------------------------------------------
def test_threshold_fires_after_its_duration_and_resolves_below_the_clear_level() -> None:
    decisions: list[Decision] = []
    detection = Detection(_config(COLD_ROOM_RULE), _catalog(zone="cold-room"),
                          on_decision=decisions.append)
    values = [4.0] * 5 + [8.5] * 12 + [7.5] * 3 + [6.5] * 4
    lines = _feed(detection, values)
    fired = [d for d in decisions if d.verdict == "fire"]
    resolved = [d for d in decisions if d.verdict == "resolve"]
    assert len(fired) == 1 and len(resolved) == 1
    # First above 8 °C at reading 5; 600 s later is reading 15.
    assert fired[0].ts_ms == int((T0_S + 15 * 60) * 1000)
    assert fired[0].rule == "cold-room" and fired[0].severity == "critical"
    assert fired[0].audience == "technician" and fired[0].value == 8.5
    assert resolved[0].alert_id == fired[0].alert_id
    # 7.5 °C is not below the clear level: resolved only after three readings at 6.5 °C.
    assert resolved[0].ts_ms == int((T0_S + 22 * 60) * 1000)
    alert_lines = [line for line in lines if line.startswith("alerts,")]
    assert len(alert_lines) == 2 and 'state="firing"' in alert_lines[0]
    assert "rule=cold-room" in alert_lines[0] and "severity=critical" in alert_lines[0]
    anomaly = [line for line in lines if line.startswith("anomaly,")]
    assert anomaly and "field=temperature_c" in anomaly[0] and "zone=cold-room" in anomaly[0]
    # Scores are written while above 0 and once more when they return to 0.
    assert anomaly[-1].split(" ")[1].startswith("score=0.0")


def test_a_score_held_high_writes_a_point_a_minute_and_every_change() -> None:
    detection = Detection(_config(COLD_ROOM_RULE), _catalog(zone="cold-room"))
    # Twenty minutes above 8 °C at a reading a second: the threshold's score rises over its
    # for-duration, then holds at 1; then back to normal.
    values = [4.0] * 5 + [9.0] * 1200 + [4.0] * 3
    lines = _feed(detection, values, step_s=1.0)
    points = [
        (int(line.rsplit(" ", 1)[1]) / 1000 - T0_S,
         float(line.split(" ")[1].split(",")[0].removeprefix("score=")))
        for line in lines if line.startswith("anomaly,")
    ]  # fmt: skip
    # The same detector alone gives the score of every reading.
    alone = build_detector("threshold", ThresholdParams(above=8.0, clear_above=7.0, for_s=600.0))
    for i, value in enumerate(values):
        ts_s = T0_S + i
        score = alone.score_one(ts_s, value)
        alone.learn_one(ts_s, value)
        if score < SCORE_FLOOR:
            continue
        # Every high score is shown by the latest point: within SCORE_STEP, or at most
        # SCORE_REFRESH_S old.
        shown = [p for p in points if p[0] <= i]
        assert shown, i
        at_s, written = shown[-1]
        assert abs(written - score) < SCORE_STEP or i - at_s < SCORE_REFRESH_S, (i, score)
    assert len(points) < 100  # not one per reading (1,200 high ones)
    assert points[-1][1] == 0.0  # the run of high scores is closed by a 0


def test_restart_mid_duration_neither_forgets_nor_restarts_the_pending_time() -> None:
    decisions: list[Decision] = []
    first = Detection(_config(COLD_ROOM_RULE), _catalog(zone="cold-room"))
    _feed(first, [4.0, 8.5, 8.5, 8.5, 8.5, 8.5])  # above since reading 1, 5 min ago
    checkpoint = json.loads(json.dumps(first.to_json()))

    second = Detection(_config(COLD_ROOM_RULE), _catalog(zone="cold-room"),
                       on_decision=decisions.append)
    second.restore(checkpoint)
    _feed(second, [8.5] * 8, start_s=T0_S + 6 * 60, seq=7)
    assert [d.verdict for d in decisions] == ["fire"]
    assert decisions[0].ts_ms == int((T0_S + 11 * 60) * 1000)  # 600 s after reading 1


def test_redelivered_and_out_of_order_readings_are_stored_but_not_scored() -> None:
    detection = Detection(_config(COLD_ROOM_RULE), _catalog(zone="cold-room"))
    _feed(detection, [4.0, 4.1, 4.2])
    scored = detection.scored_values
    detection.observe(_message(2, T0_S + 60, temperature_c=4.1))  # a redelivery
    assert detection.scored_values == scored and detection.late_values == 1


def test_a_sensor_that_went_silent_while_the_collector_was_down_is_noticed() -> None:
    silence = {"name": "silent", "fields": ["reading"],
               "detectors": {"silence": {"expected_interval_s": 60.0}}}
    first = Detection(_config(silence), _catalog())
    _feed(first, [4.0] * 20)
    last_s = T0_S + 19 * 60
    checkpoint = json.loads(json.dumps(first.to_json()))

    decisions: list[Decision] = []
    second = Detection(_config(silence), _catalog(), on_decision=decisions.append)
    second.restore(checkpoint)
    assert second.tick(last_s + 30) == []
    lines = second.tick(last_s + 3600)
    assert [d.detector for d in decisions] == ["silence"]
    assert decisions[0].audience == "installer" and lines[0].startswith("alerts,")


def test_label_change_keeps_state_of_unchanged_bindings() -> None:
    catalog = _catalog(zone="cold-room")
    detection = Detection(_config(COLD_ROOM_RULE), catalog)
    _feed(detection, [8.5] * 5)  # pending for 4 min
    catalog.set_sensor("plant-a", "pi-01", "room", labels={"zone": "cold-room", "x": "y"},
                       fields=["temperature_c"])
    decisions: list[Decision] = []
    detection.on_decision = decisions.append
    _feed(detection, [8.5] * 8, start_s=T0_S + 5 * 60, seq=6)
    assert decisions and decisions[0].ts_ms == int((T0_S + 10 * 60) * 1000)


def test_labels_announced_after_the_first_readings_apply_from_the_next_reading() -> None:
    catalog = SensorCatalog()  # readings before the device's birth: no labels, no cold room
    decisions: list[Decision] = []
    detection = Detection(_config(COLD_ROOM_RULE), catalog, on_decision=decisions.append)
    _feed(detection, [8.5] * 12)
    assert decisions == []
    catalog.set_sensor("plant-a", "pi-01", "room", labels={"zone": "cold-room"},
                       fields=["temperature_c"])
    lines = _feed(detection, [8.5] * 12, start_s=T0_S + 12 * 60, seq=13)
    # The rule watches from the first reading after the birth: 600 s later it fires.
    assert [d.rule for d in decisions] == ["cold-room"]
    assert decisions[0].ts_ms == int((T0_S + 22 * 60) * 1000)
    anomaly = [line for line in lines if line.startswith("anomaly,")]
    assert anomaly and all("zone=cold-room" in line for line in anomaly)


def test_dew_point_margin_and_reading_are_derived_fields() -> None:
    rule = {"name": "wet", "fields": ["dew_point_margin_c"],
            "detectors": {"threshold": {"below": 2.0, "clear_below": 3.0}}}
    decisions: list[Decision] = []
    detection = Detection(_config(rule), _catalog(), on_decision=decisions.append)
    detection.observe(_message(1, T0_S, temperature_c=20.0, humidity_pct=50.0))
    assert decisions == []
    detection.observe(_message(2, T0_S + 60, temperature_c=20.0, humidity_pct=95.0))
    assert [d.field for d in decisions] == ["dew_point_margin_c"]
    assert decisions[0].value is not None and 0.0 < decisions[0].value < 1.0


def test_checkpoint_in_pieces_is_the_same_json_as_the_whole() -> None:
    detection = Detection(_config(COLD_ROOM_RULE, defaults=True), _catalog(zone="cold-room"))
    _feed(detection, [4.0, 8.5, 8.5, 4.2, 3.9] * 10)
    text = b"".join(detection.checkpoint_chunks())
    assert json.loads(text) == json.loads(json.dumps(detection.to_json()))
    restored = Detection(_config(COLD_ROOM_RULE, defaults=True), _catalog(zone="cold-room"))
    restored.restore(json.loads(text))
    assert restored.to_json() == json.loads(text)


def test_decision_alerts_line_leaves_out_empty_tags_and_values_without_a_spelling() -> None:
    """InfluxDB refuses a line with an empty tag value, and line protocol has no NaN."""
    decision = Decision(
        "fire", "plant-a", "pi-01", "", "reading", "pi-silent", "silence", "warning",
        "installer", 1795464000123, float("nan"), 1.0, "no data for 5 m", "c0ffee",
        float("inf"),
    )  # fmt: skip
    measurement, tags, fields, ts = parse_line(alerts_line(decision))
    assert measurement == "alerts" and ts == 1795464000123
    assert "sensor" not in tags and tags["rule"] == "pi-silent"
    assert "value" not in fields and "predicted_breach_s" not in fields
    assert fields["message"] == "no data for 5 m" and fields["score"] == 1.0
