"""Detection end to end: a simulated agent with faults → real mosquitto → the collector →
decisions in a real influxd's ``alerts`` measurement (and scores in ``anomaly``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.localrun import Influxd, Mosquitto, free_port, wait_until
from tests.mqtt_probe import Probe
from tests.processes import start_agent, start_collector, stop_process
from tests.smtp_inbox import Inbox

pytestmark = pytest.mark.integration

DB = "sitewatch"


def _collector_config(tmp_path: Path, broker: Mosquitto, influx: Influxd,
                      detection: dict[str, Any]) -> Path:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "collector-detect"},
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influx.port}", "database": DB,
                   "flush_interval_s": 0.2, "retry_min_s": 0.2, "retry_max_s": 1.0},
        "state_dir": str(tmp_path / "collector-state"),
        "metrics": {"port": free_port()},
        "detection": detection,
    }
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _alerts(influx: Influxd, where: str) -> list[dict[str, Any]]:
    return influx.query(f"SELECT * FROM alerts WHERE {where}", DB)


@pytest.mark.parametrize("in_process", [True, False], ids=["detection-process", "inline"])
def test_faults_of_a_simulated_agent_become_decisions_in_influxdb(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path, in_process: bool,
) -> None:
    detection = {"process": in_process,
                 "rules": [{"name": "walk-in-door", "match": {"labels": {"zone": "cold-room"}},
                            "profile": "door", "detectors": {"door_open": {"max_open_s": 2.0}}}]}
    procs.append(start_collector(_collector_config(tmp_path, mosquitto, influxd, detection),
                                 tmp_path / "collector.log"))
    sensors = [
        {"id": "walk-in-door", "driver": "simulated", "model": "door", "interval_s": 0.2,
         "seed": 5, "labels": {"zone": "cold-room"},
         "faults": [{"kind": "door_left_open", "start_s": 0}]},
        {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.1,
         "seed": 6, "labels": {"zone": "cold-room"}, "faults": [{"kind": "stuck", "start_s": 0}]},
    ]
    agent = start_agent(write_agent_config(mosquitto.port, sensors=sensors),
                        tmp_path / "agent.log")
    procs.append(agent)

    wait_until(lambda: _alerts(influxd, "detector = 'door_open'"), 60,
               "the door-open alert in InfluxDB")
    door = _alerts(influxd, "detector = 'door_open'")[0]
    assert door["state"] == "firing" and door["rule"] == "walk-in-door"
    assert door["sensor"] == "walk-in-door" and door["field"] == "open"
    assert door["severity"] == "warning" and door["audience"] == "technician"
    assert door["alert_id"] and door["message"]

    wait_until(lambda: _alerts(influxd, "detector = 'flatline'"), 60,
               "the stuck-sensor alert in InfluxDB")
    stuck = _alerts(influxd, "detector = 'flatline'")[0]
    assert stuck["rule"] == "sensor-health" and stuck["sensor"] == "cold-room"
    assert stuck["audience"] == "installer"
    assert influxd.query("SELECT count(score) FROM anomaly WHERE sensor = 'cold-room'", DB)
    assert stop_process(agent) == 0


def test_a_fault_reaches_the_technician_by_email_and_mqtt_through_the_running_collector(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
    smtp: tuple[Inbox, int],
) -> None:
    inbox, smtp_port = smtp
    mailto = (f"mailto://127.0.0.1:{smtp_port}?from=sitewatch@example.com"
              "&to=tech@example.com")
    detection = {"rules": [{"name": "walk-in-door", "match": {"labels": {"zone": "cold-room"}},
                            "profile": "door", "detectors": {"door_open": {"max_open_s": 2.0}}}]}
    config = _collector_config(tmp_path, mosquitto, influxd, detection)
    data = yaml.safe_load(config.read_text())
    data["alerting"] = {
        "public_url": "http://sitewatch.local:8080",
        "teams": [{"name": "kitchen", "members": [{"name": "Tech", "apprise": [mailto]}]}],
        "routes": [{"match": {}, "levels": ["kitchen"]}],
    }
    config.write_text(yaml.safe_dump(data))
    procs.append(start_collector(config, tmp_path / "collector.log"))
    sensors = [{"id": "walk-in-door", "driver": "simulated", "model": "door", "interval_s": 0.2,
                "seed": 5, "labels": {"zone": "cold-room"},
                "faults": [{"kind": "door_left_open", "start_s": 0}]}]
    # Subscribed before the fault: it sees the alert as it is published. Email and MQTT are
    # delivered independently, so the email alone does not say that the alert is on MQTT yet.
    live = Probe("127.0.0.1", mosquitto.port, "sitewatch/v1/plant-a/alerts/#")
    try:
        procs.append(start_agent(write_agent_config(mosquitto.port, sensors=sensors),
                                 tmp_path / "agent.log"))
        wait_until(inbox.messages, 60, "the alert email")
        wait_until(live.snapshot, 30, "the alert on MQTT")
    finally:
        live.close()
    ((to, message),) = inbox.messages()
    assert to == ["tech@example.com"]
    assert "walk-in-door" in str(message["subject"])
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "http://sitewatch.local:8080/alerts/" in body.get_content()
    # A subscriber that comes after the alert was published still gets it: it is retained
    # while firing.
    late = Probe("127.0.0.1", mosquitto.port, "sitewatch/v1/plant-a/alerts/#")
    try:
        (received,) = wait_until(late.snapshot, 30, "the retained alert on MQTT")
    finally:
        late.close()
    assert received.retain
    assert received.topic == "sitewatch/v1/plant-a/alerts/pi-01/walk-in-door/walk-in-door"
    assert json.loads(received.payload)["state"] == "firing"
    rows = wait_until(lambda: _alerts(influxd, "rule = 'walk-in-door'"), 30,
                      "the alert's transition in InfluxDB")
    assert rows[0]["action"] == "fire" and rows[0]["state"] == "firing"
