"""End-to-end acknowledgement, against real servers: agents → mosquitto → collector → influxd.

mosquitto acknowledges a QoS1 publish before the message is on disk, so an agent that deleted
its outbox rows on PUBACK loses whatever a broker crash takes with it. With confirmations the
agent keeps each row until the collector says it is stored. Each test runs agents and the
collector as their own processes, as deployed, and compares what InfluxDB holds with the
agents' own accounting (``sitewatch-agent status``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sitewatch.agent.outbox import read_stats
from sitewatch.localrun import Influxd, Mosquitto, free_port, wait_until
from tests.mqtt_probe import Probe
from tests.processes import (
    agent_counts,
    agent_status,
    collector_status,
    outbox_path,
    start_agent,
    start_collector,
    stop_process,
    write_collector_config,
)
from tests.test_collector_e2e import CLIMATE, DB, stored_readings

pytestmark = pytest.mark.integration

NO_AUTOSAVE = "autosave_interval 86400\n"
"""Appended to the broker's config: it saves its state only on a clean stop, so a SIGKILL
loses every message it had acknowledged (the broker's own config autosaves every 60 s)."""

FAST = {"confirm_timeout_s": 2}
"""``delivery`` for the agents here: resends and fallback after 2 s instead of 60."""

SENSORS = [{**sensor, "interval_s": 0.025} for sensor in CLIMATE]
"""The end-to-end climate sensors at twice their rate, 80 readings/s per agent: the phases
below are counted in readings, so they take half as long; where a phase must also outlast
``confirm_timeout_s`` the test waits for that explicitly."""


@pytest.fixture
def collector_config(tmp_path: Path) -> Callable[..., Path]:
    def write(broker: Mosquitto, influx: Influxd, name: str = "collector", **changes: Any
              ) -> Path:
        # One collector's state whatever the config's name: "off" is the same collector
        # restarted with confirmations off.
        return write_collector_config(
            tmp_path, broker.port, f"http://127.0.0.1:{influx.port}", DB, name=name,
            **{"mqtt": {"client_id": "collector-test"}, "influx": {"retry_max_s": 1.0},
               "metrics": {"enabled": True, "port": free_port()},
               "state_dir": str(tmp_path / "collector-state"), "confirm": {"interval_s": 0.5},
               **changes},
        )

    return write


def agent(write_agent_config: Callable[..., Path], broker: Mosquitto, device: str,
          **sections: Any) -> Path:
    return write_agent_config(broker.port, device=device, sensors=SENSORS, name=f"{device}.yaml",
                              **sections)


def stop_and_count_stored(influx: Influxd, config: Path, proc: subprocess.Popen[bytes],
                          device: str) -> dict[str, Any]:
    """Stop an agent cleanly; wait until all it produced is in InfluxDB; its final status."""
    assert stop_process(proc) == 0
    final = agent_status(config)
    wait_until(lambda: stored_readings(influx, device) >= final["produced"], 60,
               f"{device}'s {final['produced']} readings in InfluxDB")
    assert stored_readings(influx, device) == final["produced"]  # none lost, none doubled
    return final


def device_counters(config: Path, device: str) -> dict[str, int]:
    [entry] = [d for d in collector_status(config)["devices"] if d["device"] == device]
    counters: dict[str, int] = entry["counters"]
    return counters


def test_e2e_ack_broker_sigkill_before_the_collector_stored_loses_nothing(
    influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "broker", extra_conf=NO_AUTOSAVE)
    broker.start()
    try:
        config = collector_config(broker, influxd)
        procs.append(start_collector(config, tmp_path / "collector-1.log"))
        confirmed = agent(write_agent_config, broker, "pi-01", delivery=FAST)
        # The same device under the old rule, side by side: proof that the crash does lose.
        on_puback = agent(write_agent_config, broker, "pi-02", delivery={"confirm": "broker"})
        agents = {"pi-01": start_agent(confirmed, tmp_path / "pi-01.log"),
                  "pi-02": start_agent(on_puback, tmp_path / "pi-02.log")}
        procs.extend(agents.values())
        wait_until(lambda: agent_counts(confirmed)["confirmed"] >= 200
                   and stored_readings(influxd, "pi-02") >= 200, 60, "readings confirmed")

        assert stop_process(procs[0], 30) == 0  # the collector goes away; the broker queues
        held = agent_status(confirmed)["unconfirmed"]
        acked = agent_status(on_puback)["acked"]
        wait_until(lambda: agent_counts(confirmed)["unconfirmed"] >= held + 300
                   and agent_counts(on_puback)["acked"] >= acked + 300, 30,
                   "readings the broker acknowledged while nobody stored them")
        during = agent_status(confirmed)
        assert during["resent"] == 0 and not during["broker_fallback"]  # the collector is away
        lost_on_puback = agent_status(on_puback)["acked"] - acked

        assert not (broker.data_dir / "mosquitto.db").exists()  # nothing saved: all is lost
        broker.kill()
        broker.start()
        procs.append(start_collector(config, tmp_path / "collector-2.log"))
        # The agent replayed its unconfirmed rows at the reconnect, before the collector was
        # back (so the broker dropped them again); the collector then confirms only up to the
        # hole, and after confirm_timeout_s the agent sends them once more.
        wait_until(lambda: agent_counts(confirmed)["confirmed"] >= during["produced"], 90,
                   "every reading produced before the crash confirmed")

        final = stop_and_count_stored(influxd, confirmed, agents["pi-01"], "pi-01")
        assert final["pending"] == 0 and final["dropped"] == 0
        assert final["confirmed"] == final["acked"] == final["produced"]
        assert final["resent"] > 0
        # pi-02 deleted what the broker acknowledged: the crash took those readings for good.
        assert stop_process(agents["pi-02"]) == 0
        produced = agent_status(on_puback)["produced"]
        assert agent_status(on_puback)["acked"] == produced
        assert stored_readings(influxd, "pi-02") <= produced - lost_on_puback
        assert collector_status(config)["confirmations_published"] > 0
    finally:
        broker.kill()


def test_e2e_ack_agent_keeps_rows_until_confirmed_and_resends_none_while_collector_is_away(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector-1.log"))
    device = agent(write_agent_config, mosquitto, "pi-01", delivery=FAST)
    proc = start_agent(device, tmp_path / "pi-01.log")
    procs.append(proc)
    wait_until(lambda: agent_counts(device)["confirmed"] >= 100, 60, "confirmations")

    assert stop_process(procs[0], 30) == 0
    stopped = agent_status(device)
    away = time.monotonic()
    # Far longer than confirm_timeout_s (2 s) without the collector: the PUBACKed rows stay.
    wait_until(lambda: agent_counts(device)["unconfirmed"] >= stopped["unconfirmed"] + 400
               and time.monotonic() - away >= 3 * FAST["confirm_timeout_s"],
               30, "rows waiting for the collector")
    waiting = agent_status(device)
    assert waiting["confirmed"] == waiting["acked"]  # a PUBACK alone deleted nothing
    assert waiting["pending"] >= waiting["unconfirmed"] >= 400
    assert waiting["resent"] == 0 and not waiting["broker_fallback"]

    procs.append(start_collector(config, tmp_path / "collector-2.log"))
    wait_until(lambda: agent_counts(device)["confirmed"] >= waiting["produced"], 60,
               "the waiting rows confirmed and deleted")
    final = stop_and_count_stored(influxd, device, proc, "pi-01")
    # Nothing was sent twice by the agent: the broker's session kept the messages for the
    # collector. (The collector itself may see a few twice: those it had stored but not yet
    # acknowledged to the broker when it stopped.)
    assert (final["pending"], final["unconfirmed"], final["resent"]) == (0, 0, 0)
    assert final["confirmed"] == final["produced"]


def test_e2e_ack_agent_restart_republishes_unconfirmed_rows_and_nothing_doubles(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd)
    procs.append(start_collector(config, tmp_path / "collector-1.log"))
    device = agent(write_agent_config, mosquitto, "pi-01", delivery=FAST)
    procs.append(start_agent(device, tmp_path / "pi-01-1.log"))
    wait_until(lambda: agent_counts(device)["confirmed"] >= 100, 60, "confirmations")
    assert stop_process(procs[0], 30) == 0
    wait_until(lambda: agent_counts(device)["unconfirmed"] >= 200, 30, "unconfirmed rows")
    procs[1].kill()  # the agent crashes with rows the broker has but nobody stored
    procs[1].wait()
    crashed = read_stats(outbox_path(device))
    assert crashed.unconfirmed_messages > 0 and crashed.resent == 0

    procs.append(start_agent(device, tmp_path / "pi-01-2.log"))
    wait_until(lambda: agent_counts(device)["resent"] >= crashed.unconfirmed_messages, 30,
               "the unconfirmed rows sent again by the new process")
    procs.append(start_collector(config, tmp_path / "collector-2.log"))
    wait_until(lambda: agent_counts(device)["confirmed"] >= crashed.produced, 60,
               "the first boot's readings confirmed")
    final = stop_and_count_stored(influxd, device, procs[2], "pi-01")
    assert final["pending"] == 0 and final["confirmed"] == final["produced"]
    # The broker had queued the originals for the collector and then got the copies: the
    # collector saw both, counted the copies as duplicates and wrote each reading once.
    counters = device_counters(config, "pi-01")
    assert counters["duplicates"] >= final["resent"] > 0
    assert counters["gaps"] == 0


def test_e2e_ack_agent_falls_back_to_puback_when_no_collector_confirms(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    """An older collector (or none) never confirms: after confirm_timeout_s the agent deletes
    on PUBACK, so its outbox neither grows nor resends."""
    probe = Probe(mosquitto.host, mosquitto.port, "sitewatch/#")
    device = agent(write_agent_config, mosquitto, "pi-01", delivery=FAST)
    procs.append(start_agent(device, tmp_path / "pi-01.log"))
    wait_until(lambda: agent_counts(device)["broker_fallback"], 30, "the fallback")
    fallen = agent_status(device)
    since = time.monotonic()
    # Long enough for resends after confirm_timeout_s (2 s), were the agent still waiting.
    wait_until(lambda: agent_counts(device)["acked"] >= fallen["acked"] + 400
               and time.monotonic() - since >= 3 * FAST["confirm_timeout_s"], 30,
               "readings acknowledged by the broker alone")
    later = agent_status(device)
    assert later["confirmed"] == 0 and later["resent"] == 0
    assert later["unconfirmed"] == 0 and later["pending_messages"] <= 20  # it does not grow
    assert later["produced"] == later["acked"] + later["pending"] + later["dropped"]
    assert stop_process(procs[0]) == 0
    probe.close()
    # Only what an agent always sent: no skip messages (nobody confirmed anything).
    kinds = {m.topic.rsplit("/", 1)[1] for m in probe.snapshot()}
    assert "telemetry" in kinds and kinds <= {"telemetry", "event", "status"}


def test_e2e_ack_confirmations_turned_off_then_on_again(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    on = collector_config(mosquitto, influxd)
    off = collector_config(mosquitto, influxd, name="collector-off",
                           confirm={"enabled": False})
    first = start_collector(on, tmp_path / "collector-1.log")
    procs.append(first)
    device = agent(write_agent_config, mosquitto, "pi-01", delivery=FAST)
    proc = start_agent(device, tmp_path / "pi-01.log")
    procs.append(proc)
    wait_until(lambda: agent_counts(device)["confirmed"] >= 100, 60, "confirmations")

    # A collector without confirmations clears the retained one: the agent stops waiting.
    assert stop_process(first, 30) == 0
    second = start_collector(off, tmp_path / "collector-2.log")
    procs.append(second)
    wait_until(lambda: agent_counts(device)["broker_fallback"], 30, "the fallback")
    fallen = agent_status(device)
    wait_until(lambda: agent_counts(device)["acked"] >= fallen["acked"] + 200, 30,
               "readings acknowledged on PUBACK")
    assert agent_status(device)["confirmed"] == fallen["confirmed"]

    # Confirmations back on: its checkpoint ends where the first collector stopped, and the
    # agent holds nothing from the gap (deleted on PUBACK), so it says where its rows start
    # (a skip message) and confirmations resume.
    assert stop_process(second, 30) == 0
    procs.append(start_collector(on, tmp_path / "collector-3.log"))
    wait_until(lambda: not agent_counts(device)["broker_fallback"]
               and agent_counts(device)["confirmed"] >= fallen["confirmed"] + 200, 60,
               "confirmations again")
    final = stop_and_count_stored(influxd, device, proc, "pi-01")
    assert final["pending"] == 0 and final["dropped"] == 0
    assert final["confirmed"] < final["acked"] == final["produced"]
