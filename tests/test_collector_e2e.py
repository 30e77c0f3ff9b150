"""The collector end to end: simulated agents → real mosquitto → collector → real influxd.

Agents and the collector run as their own processes, exactly as deployed; what is stored is
read back with InfluxQL and compared with the agents' own accounting (``produced``).
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.localrun import Influxd, Mosquitto, VictoriaMetrics, free_port, wait_until
from tests.processes import (
    agent_counts,
    agent_status,
    collector_counts,
    collector_status,
    start_agent,
    start_collector,
    stop_process,
    write_collector_config,
)

pytestmark = pytest.mark.integration

DB = "sitewatch"

CLIMATE = [
    {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.05,
     "seed": 1, "labels": {"zone": "kitchen north", "equipment": "walk-in,1"}},
    {"id": "server-room", "driver": "simulated", "model": "server_room", "interval_s": 0.05,
     "seed": 2},
]
EQUIPMENT = [
    {"id": "compressor", "driver": "simulated", "model": "compressor", "interval_s": 0.2,
     "seed": 3, "faults": [{"kind": "short_cycling", "start_s": 0}],
     "labels": {"equipment": "walk-in,1"}},
]


@pytest.fixture
def collector_config(tmp_path: Path) -> Callable[..., Path]:
    def write(broker: Mosquitto, influx: Influxd, **changes: Any) -> Path:
        return write_collector_config(
            tmp_path, broker.port, f"http://127.0.0.1:{influx.port}", DB, name="collector",
            **{"mqtt": {"client_id": "collector-test"},
               "influx": {"retry_max_s": 1.0}, "metrics": {"enabled": True, "port": free_port()},
               **changes},
        )

    return write


def stored_readings(influx: Influxd, device: str) -> int:
    """Points per reading: every reading writes exactly one point carrying ``quality``."""
    total = 0
    for measurement in ("environment", "equipment"):
        rows = influx.query(
            f"SELECT count(quality) FROM {measurement} WHERE device = '{device}'", DB
        )
        total += int(rows[0]["count"]) if rows else 0
    return total


Agents = dict[str, tuple[Path, subprocess.Popen[bytes]]]


def run_agents(
    write_agent_config: Callable[..., Path], broker: Mosquitto, tmp_path: Path,
    procs: list[subprocess.Popen[bytes]], devices: list[str], sensors: list[dict[str, Any]],
) -> Agents:
    """Start one agent per device; device → (config, process)."""
    agents: Agents = {}
    for device in devices:
        config = write_agent_config(broker.port, device=device, sensors=sensors,
                                    name=f"{device}.yaml")
        proc = start_agent(config, tmp_path / f"{device}.log")
        procs.append(proc)
        agents[device] = (config, proc)
    return agents


def stop_agents_and_check(influx: Influxd, agents: Agents) -> dict[str, int]:
    """Stop the agents, wait until every reading they produced is in InfluxDB, return counts."""
    for _, proc in agents.values():
        assert stop_process(proc) == 0
    produced = {}
    for device, (config, _) in agents.items():
        status = agent_status(config)
        assert status["pending"] == 0 and status["dropped"] == 0
        produced[device] = status["produced"]
        wait_until(lambda d=device: stored_readings(influx, d) >= produced[d], 60,  # type: ignore[misc]
                   f"{device}'s {produced[device]} readings in InfluxDB")
        assert stored_readings(influx, device) == produced[device]  # none doubled
    return produced


def test_collector_stores_every_reading_once_with_documented_schema(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector.log"))
    devices = ["pi-01", "pi-02", "pi-03"]
    agents = run_agents(write_agent_config, mosquitto, tmp_path, procs, devices,
                        CLIMATE + EQUIPMENT)
    wait_until(lambda: stored_readings(influxd, "pi-03") >= 300, 60, "readings flowing")
    produced = stop_agents_and_check(influxd, agents)
    assert all(count >= 300 for count in produced.values())

    rows = influxd.query(
        "SELECT temperature_c, humidity_pct, dew_point_c, quality, zone, equipment, site"
        " FROM environment WHERE device = 'pi-01' AND sensor = 'cold-room' LIMIT 5", DB
    )
    assert rows and all(r["zone"] == "kitchen north" and r["equipment"] == "walk-in,1"
                        and r["site"] == "plant-a" for r in rows)
    ok = [r for r in rows if r["quality"] in ("ok", "degraded")]
    assert ok and all(r["dew_point_c"] < r["temperature_c"] for r in ok)
    equipment = influxd.query(
        "SELECT running, duty_cycle_pct, starts_per_h, runtime_h, quality FROM equipment"
        " WHERE sensor = 'compressor' AND device = 'pi-02'", DB
    )
    assert equipment and all(isinstance(r["running"], bool) for r in equipment)
    readings = [r for r in equipment if r["quality"] is not None]  # the rest: state changes
    assert readings and all(r["starts_per_h"] is not None for r in readings)
    assert len(readings) < len(equipment), "no state change was written"
    health = influxd.query("SELECT last(outbox_messages) FROM device_health GROUP BY device", DB)
    assert {r["device"] for r in health} == set(devices)

    collector = procs[0]
    assert stop_process(collector, 30) == 0
    status = collector_status(config)
    assert {"received", "stored", "duplicates", "gaps", "late", "spooled",
            "dead_lettered"} <= set(status)
    assert all(isinstance(status[key], int) for key in ("received", "stored", "duplicates"))
    assert status["received"] == sum(produced.values())
    assert status["gaps"] == 0 and status["dead_lettered"] == 0 and status["spool_depth"] == 0
    states = {d["device"]: d["state"] for d in status["devices"]}
    assert states == {device: "offline" for device in devices}
    delivery = influxd.query("SELECT last(received) FROM delivery GROUP BY device", DB)
    assert {r["device"] for r in delivery if r["device"]} == set(devices)
    [totals] = influxd.query(
        "SELECT last(stored), last(spooled), last(dropped) FROM delivery"
        " WHERE collector = 'collector-test'", DB
    )
    assert totals["last"] > 0 and totals["last_2"] == 0


def test_collector_influxd_down_30s_loses_and_doubles_nothing(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector.log"))
    devices = ["pi-01", "pi-02"]
    agents = run_agents(write_agent_config, mosquitto, tmp_path, procs, devices, CLIMATE)
    wait_until(lambda: stored_readings(influxd, "pi-02") >= 100, 60, "readings flowing")

    influxd.kill()
    killed = time.monotonic()
    wait_until(lambda: collector_counts(config)["spool_depth"] > 0, 30, "the spool to fill")
    # The outage lasts 30 s while the agents keep producing.
    wait_until(lambda: time.monotonic() - killed >= 30, 40, "the end of the outage", 0.5)
    spooled = collector_status(config)["spooled"]
    assert spooled > 1000
    influxd.start()

    wait_until(lambda: collector_counts(config)["spool_depth"] == 0, 90, "the spool to drain")
    stop_agents_and_check(influxd, agents)
    assert collector_status(config)["dropped"] == 0


def test_collector_sigkill_and_restart_loses_and_doubles_nothing(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector-1.log"))
    devices = ["pi-01", "pi-02"]
    agents = run_agents(write_agent_config, mosquitto, tmp_path, procs, devices, CLIMATE)
    wait_until(lambda: stored_readings(influxd, "pi-02") >= 200, 60, "readings flowing")
    procs[0].kill()
    procs[0].wait()
    # Readings keep coming while the collector is dead: the broker keeps them in its session.
    # (The agents hold them too, unconfirmed, until the collector confirms them stored.)
    configs = [config for config, _ in agents.values()]

    def published() -> int:
        return sum(s["acked"] + s["unconfirmed"] for s in map(agent_counts, configs))

    before = published()
    wait_until(lambda: published() >= before + 200, 30,
               "readings published while the collector is down")
    procs.append(start_collector(config, tmp_path / "collector-2.log"))
    stop_agents_and_check(influxd, agents)


def test_collector_resubscribes_after_broker_restart(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector.log"))
    devices = ["pi-01"]
    agents = run_agents(write_agent_config, mosquitto, tmp_path, procs, devices, CLIMATE)
    wait_until(lambda: stored_readings(influxd, "pi-01") >= 100, 60, "readings flowing")
    mosquitto.stop()
    wait_until(lambda: not collector_counts(config)["broker_connected"], 20,
               "the collector to notice")
    mosquitto.start()
    wait_until(lambda: collector_counts(config)["broker_connected"], 30, "the reconnect")
    stored = stored_readings(influxd, "pi-01")
    wait_until(lambda: stored_readings(influxd, "pi-01") > stored + 100, 60,
               "new readings after the broker restart")
    stop_agents_and_check(influxd, agents)


def test_collector_serves_prometheus_metrics(
    mosquitto: Mosquitto, influxd: Influxd, collector_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector.log"))
    port = yaml.safe_load(config.read_text())["metrics"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for name in ("received", "stored", "duplicates", "gaps", "late", "spooled", "dead_lettered"):
        assert f"sitewatch_collector_{name}_total " in text


def test_collector_v2_api_stores_every_reading_in_a_v2_server(
    mosquitto: Mosquitto, victoria: VictoriaMetrics, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The influx.api v2 path (influxdb-client, token from the environment, gzip) end to end,
    against VictoriaMetrics, which speaks InfluxDB's /api/v2/write."""
    monkeypatch.setenv("SITEWATCH_TEST_INFLUX_TOKEN", "test-token")
    config = tmp_path / "collector-v2.yaml"
    config.write_text(yaml.safe_dump({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "collector-v2"},
        "influx": {"api": "v2", "url": victoria.url, "org": "facilities", "bucket": "sitewatch",
                   "token_env": "SITEWATCH_TEST_INFLUX_TOKEN", "flush_interval_s": 0.2},
        "state_dir": str(tmp_path / "collector-v2-state"),
        "metrics": {"enabled": False},
    }))
    procs.append(start_collector(config, tmp_path / "collector.log"))
    agents = run_agents(write_agent_config, mosquitto, tmp_path, procs, ["pi-01"], CLIMATE[:1])

    def stored() -> int:
        series = victoria.export('{__name__="environment_quality",device="pi-01"}')
        return sum(len(s["values"]) for s in series)

    wait_until(lambda: stored() >= 100, 60, "readings in VictoriaMetrics")
    (agent_config, agent) = agents["pi-01"]
    assert stop_process(agent) == 0
    produced = agent_status(agent_config)["produced"]
    wait_until(lambda: stored() >= produced, 60, f"{produced} readings in VictoriaMetrics")
    assert stored() == produced
    [series] = victoria.export('{__name__="environment_temperature_c",device="pi-01"}')
    assert series["metric"]["zone"] == "kitchen north" and series["metric"]["site"] == "plant-a"
