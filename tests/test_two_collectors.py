"""Several collectors on one fleet, against real servers: agents on two sites → one mosquitto →
three partitioned collectors → one influxd; then the same traffic through one collector.

The fleet: ``north`` owns site plant-a (``mqtt.partition.sites``); ``south-0`` and ``south-1``
share site plant-b by device hash (``index`` 0 and 1 of 2), so both receive every plant-b
message and each passes over the other's. Agents with seeded simulated sensors and faults
(spikes, a stuck sensor, a short-cycling compressor) send continuously, each as its own
process, while a probe on the broker records every message they publish.

Then the single-collector reference: the recorded messages are published again, in the order
the broker delivered them, to a second mosquitto, where one collector without a partition
stores them in a second database. Per device the broker keeps each publisher's order, so each
partitioned collector saw its devices' messages in exactly that order: detection, which is
per stream, must give the same results. The detectors here all score readings; none scores
the passing of wall-clock time (``silence``, ``door_open``), which a later replay cannot
reproduce.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from sitewatch.collector.config import load_config
from sitewatch.collector.partition import fleet_issues, owner
from sitewatch.localrun import Influxd, Mosquitto, free_port, wait_until
from sitewatch.wire import DEVICE_KINDS, WireError, parse_topic, subscription
from tests.mqtt_probe import Probe, Received
from tests.processes import agent_status, start_agent, start_collector, stop_process
from tests.test_collector_e2e import DB

pytestmark = pytest.mark.integration

REFERENCE_DB = "reference"

NORTH = ["a-01", "a-02"]
SOUTH = ["b-01", "b-02", "b-03"]
SITES = {"plant-a": NORTH, "plant-b": SOUTH}

FLEET: dict[str, dict[str, Any]] = {
    "north": {"sites": ["plant-a"]},
    "south-0": {"sites": ["plant-b"], "index": 0, "count": 2},
    "south-1": {"sites": ["plant-b"], "index": 1, "count": 2},
}

DETECTION: dict[str, Any] = {
    "defaults": False,  # the defaults include silence, which watches the wall clock
    "rules": [
        {"name": "sensor-health", "fields": ["temperature_c", "humidity_pct"],
         "detectors": {"plausibility": {}, "flatline": {}}},
        {"name": "unusual", "fields": ["temperature_c", "humidity_pct", "duty_cycle_pct"],
         "detectors": {"anomaly": {"grace_readings": 20, "grace_s": 0}}, "severity": "info"},
        {"name": "too-warm", "match": {"sensor": "cold-room"}, "fields": ["temperature_c"],
         "detectors": {"threshold": {"above": 6.0, "clear_above": 5.0}},
         "policy": {"cooldown_s": 0}},
    ],
}


def sensors(seed: int) -> list[dict[str, Any]]:
    """A cold room with spikes (threshold, anomaly), a server room that sticks after 2 s
    (flatline) and a short-cycling compressor (duty-cycle anomaly)."""
    return [
        {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.05,
         "seed": seed, "faults": [{"kind": "spikes", "probability": 0.05}]},
        {"id": "server-room", "driver": "simulated", "model": "server_room", "interval_s": 0.05,
         "seed": seed + 100, "faults": [{"kind": "stuck", "start_s": 2}]},
        {"id": "compressor", "driver": "simulated", "model": "compressor", "interval_s": 0.2,
         "seed": seed + 200, "faults": [{"kind": "short_cycling", "on_s": 5, "off_s": 5}]},
    ]


def collector_config(tmp_path: Path, name: str, broker: Mosquitto, influx: Influxd, db: str,
                     partition: dict[str, Any] | None) -> Path:
    mqtt: dict[str, Any] = {"host": "127.0.0.1", "port": broker.port,
                            "client_id": f"collector-{name}"}
    if partition is not None:
        mqtt["partition"] = partition
    config = {
        "mqtt": mqtt,
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influx.port}", "database": db,
                   "flush_interval_s": 0.2, "retry_min_s": 0.2, "retry_max_s": 1.0},
        "state_dir": str(tmp_path / f"state-{name}"),
        "metrics": {"port": free_port()},
        "delivery_interval_s": 1.0,
        "confirm": {"interval_s": 0.5},
        "detection": DETECTION,
    }
    path = tmp_path / f"collector-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stored_readings(influx: Influxd, device: str, db: str = DB) -> int:
    """Points per reading (each carries ``quality``), in both measurements."""
    total = 0
    for measurement in ("environment", "equipment"):
        rows = influx.query(
            f"SELECT count(quality) FROM {measurement} WHERE device = '{device}'", db
        )
        total += int(rows[0]["count"]) if rows else 0
    return total


def status(config: Path) -> dict[str, Any]:
    """The collector's status file (written every second and at stop)."""
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    result: dict[str, Any] = json.loads((state_dir / "status.json").read_text())
    return result


def owned(name: str) -> set[str]:
    """The devices a collector of ``FLEET`` should own."""
    partition = FLEET[name]
    return {device for site in partition["sites"] for device in SITES[site]
            if "count" not in partition
            or owner(site, device, partition["count"]) == partition["index"]}


def open_session(broker: Mosquitto, client_id: str, topic_filter: str) -> None:
    """Create a persistent session with a subscription (SUBACK awaited) and leave it: the
    broker queues what matches for the client that later connects with ``client_id``."""
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, *args: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        wait_until(subscribed.is_set, 10, f"{client_id}'s subscription")
    finally:
        client.disconnect()
        client.loop_stop()


def replay(messages: list[Received], broker: Mosquitto) -> None:
    """Publish ``messages`` in order, QoS1, with their retain flags; wait for every PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="replay")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()


def from_agents(message: Received) -> bool:
    try:
        return parse_topic(message.topic).kind in DEVICE_KINDS
    except WireError:
        return False


Points = dict[tuple[str, str, str, str], list[tuple[Any, ...]]]


def detection_points(influx: Influxd, measurement: str, db: str) -> Points:
    """Every point of ``measurement``, per stream (site, device, sensor, field), in time order,
    each as its sorted (column, value) pairs."""
    streams: Points = {}
    for row in influx.query(f"SELECT * FROM {measurement}", db):
        key = (row["site"], row["device"], row["sensor"], row["field"])
        streams.setdefault(key, []).append(tuple(sorted(row.items())))
    return {key: sorted(points) for key, points in streams.items()}


def test_two_collectors_partitioned_by_site_and_device_hash_match_one_collector(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    # Both hash shares of plant-b own devices, so each passes over the other's messages.
    assert owned("south-0") and owned("south-1")
    configs = {name: collector_config(tmp_path, name, mosquitto, influxd, DB, partition)
               for name, partition in FLEET.items()}
    assert fleet_issues([(name, load_config(path).mqtt) for name, path in configs.items()]) == []
    recorder = Probe("127.0.0.1", mosquitto.port, "sitewatch/v1/#")
    with ThreadPoolExecutor(8) as pool:
        procs += pool.map(lambda item: start_collector(item[1], tmp_path / f"{item[0]}.log"),
                          configs.items())
        agents = {
            device: write_agent_config(mosquitto.port, device=device, site=site,
                                       sensors=sensors(seed), name=f"{device}.yaml")
            for seed, (site, device) in enumerate(
                (site, device) for site, devices in SITES.items() for device in devices)
        }
        agent_procs = list(pool.map(
            lambda item: start_agent(item[1], tmp_path / f"{item[0]}.log"), agents.items()))
        procs += agent_procs

        # Running until every collector has decided something and every device has sent a
        # few hundred readings (the stuck sensors start sticking after 2 s).
        wait_until(lambda: all(status(c)["detection"]["decisions"] > 0
                               for c in configs.values()), 40, "decisions on every collector")
        wait_until(lambda: all(stored_readings(influxd, d) >= 300 for d in agents), 40,
                   "readings from every device")
        assert list(pool.map(stop_process, agent_procs)) == [0] * len(agent_procs)
    produced = {}
    for device, config in agents.items():
        counts = agent_status(config)
        # Every message confirmed end to end (by the collector that owns the device).
        assert counts["pending"] == 0 and counts["dropped"] == 0, (device, counts)
        produced[device] = counts["produced"]
        wait_until(lambda d=device: stored_readings(influxd, d) >= produced[d], 30,  # type: ignore[misc]
                   f"{device}'s {produced[device]} readings in InfluxDB")
        assert stored_readings(influxd, device) == produced[device]
    for proc in procs[:len(configs)]:
        assert stop_process(proc, 30) == 0
    recorder.close()

    # Each device's stream lived on exactly one collector: its owner.
    finals = {name: status(config) for name, config in configs.items()}
    for name, final in finals.items():
        assert {d["device"] for d in final["devices"]} == owned(name), name
        assert final["gaps"] == 0, name
        assert final["detection"]["decisions"] > 0, name
        assert (final["passed_over"] > 0) == ("count" in FLEET[name]), name
        state = Path(yaml.safe_load(configs[name].read_text())["state_dir"])
        confirmed = json.loads((state / "confirm.json").read_text())["devices"]
        assert {d["device"] for d in confirmed} == owned(name), name
    fleet_counters = {d["device"]: d["counters"] for final in finals.values()
                      for d in final["devices"]}

    # The reference: the same messages through one collector.
    recorded = [m for m in recorder.snapshot() if from_agents(m)]
    replay_broker = Mosquitto(tmp_path / "replay-broker")
    replay_broker.start()
    try:
        influxd.create_database(REFERENCE_DB)
        reference = collector_config(tmp_path, "reference", replay_broker, influxd,
                                     REFERENCE_DB, None)
        # Its session and subscription exist before the replay (a collector's status says
        # connected before its SUBSCRIBE has surely reached the broker).
        open_session(replay_broker, "collector-reference", subscription())
        replay(recorded, replay_broker)
        procs.append(start_collector(reference, tmp_path / "reference.log"))
        for device in agents:
            wait_until(lambda d=device: stored_readings(influxd, d, REFERENCE_DB)  # type: ignore[misc]
                       >= produced[d], 30, f"{device}'s readings in the reference")
            assert stored_readings(influxd, device, REFERENCE_DB) == produced[device]
        assert stop_process(procs[-1], 30) == 0
    finally:
        replay_broker.kill()
    # Per device, the fleet counted what one collector counts: the same readings received,
    # and the same duplicates (an agent may publish a message twice: at least once).
    single_counters = {d["device"]: d["counters"] for d in status(reference)["devices"]}
    assert single_counters == fleet_counters

    for measurement in ("alerts", "anomaly"):
        fleet = detection_points(influxd, measurement, DB)
        single = detection_points(influxd, measurement, REFERENCE_DB)
        assert fleet.keys() == single.keys(), measurement
        for stream, points in single.items():
            assert fleet[stream] == points, (measurement, stream)
    # Not trivially equal: every collector's devices fired and scored.
    alerts = detection_points(influxd, "alerts", DB)
    anomaly = detection_points(influxd, "anomaly", DB)
    for name in FLEET:
        assert any(device in owned(name) for _, device, _, _ in alerts), name
        assert any(device in owned(name) for _, device, _, _ in anomaly), name
    detectors = {dict(point)["detector"] for points in alerts.values() for point in points}
    assert {"flatline", "threshold"} <= detectors
