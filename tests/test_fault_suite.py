"""The fault suite (issue 7): nothing lost, nothing doubled, every alert once, under faults.

Three agents (real processes, simulated sensors every 0.25 s, one with a door left open)
send continuously through a real mosquitto (the project's broker config, persistence on,
saving only on a clean stop) to a real collector process and a real influxd, while the test
breaks things one after another and then several at once (``tests/faults.py`` drives them):

1. the broker SIGKILLed and restarted (what it had acknowledged since its last save is
   gone, and the agents' end-to-end confirmations must bring it back);
2. influxd SIGKILLed and restarted on the same data dir (the collector spools);
3. the collector SIGKILLed and restarted (the broker holds its session, the agents their
   unconfirmed rows);
4. an agent SIGKILLed and restarted, coming back with a tiny outbox cap;
5. a broker outage longer than that cap (the agent drops its oldest readings and counts
   them);
6. the collector's spool over a tiny cap while influxd is down (it drops its oldest batches
   and counts, per device, the readings in them);
7. an agent's wall clock stepped back 30 s, then forward 90 s (to 60 s ahead), then back
   to true time (an agent process with an injected clock: see ``tests/faults.py``);
8. all at once: influxd down, a clock step, the broker and the collector SIGKILLed, an agent
   SIGKILLed, restarts in another order, another agent crash while influxd is still down.

Every fault waits on what the processes report (an outbox growing, the spool filling, influxd
answering /ping, confirmations covering what was produced), never on a sleep. At the end,
with everything restored and drained, for every device: readings produced (the agent's own
``sitewatch-agent status``) = readings in InfluxDB + readings the agent dropped + readings
the collector dropped, exactly. Doubling would show as more in InfluxDB than that (a reading
written twice with the same series and timestamp overwrites itself; written under a different
series it would count twice); loss as less. The door-open alert fired exactly once and
reached the technician once. The accounting table is printed (visible in CI's log) and
written to ``fault-accounting.txt`` under the test's tmp dir.

The second test reproduces a hole this suite found and cannot close from here (strict
xfail: it fails while the hole is open, and turns red once it is closed, so the mark comes
off): the outbox's cap evicting rows the broker acknowledged but the collector never
confirmed, and the broker then crashing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sitewatch.localrun import Influxd, Mosquitto, have_influxd, have_mosquitto
from sitewatch.localrun import wait_until as wait
from tests.faults import (
    DB,
    SITE,
    Accounting,
    AgentProcess,
    CollectorProcess,
    DeviceCount,
    Fleet,
    WebhookInbox,
    final_count,
)

pytestmark = pytest.mark.integration

log = logging.getLogger("sitewatch.faults")

INTERVAL_S = 0.25
TINY_OUTBOX_BYTES = 8192
TINY_SPOOL_BYTES = 65536  # the smallest spool.max_bytes allows


def _sensor(sensor_id: str, model: str, seed: int, **extra: Any) -> dict[str, Any]:
    return {"id": sensor_id, "driver": "simulated", "model": model, "interval_s": INTERVAL_S,
            "seed": seed, **extra}


SENSORS = {
    "pi-01": [
        _sensor("cold-room", "cold_room", 1, labels={"zone": "kitchen"}),
        _sensor("walk-in-door", "door", 5, labels={"zone": "cold-room"},
                faults=[{"kind": "door_left_open", "start_s": 0}]),
        _sensor("server-room", "server_room", 2),
    ],
    "pi-02": [
        _sensor("cold-room", "cold_room", 3, labels={"zone": "bakery"}),
        _sensor("compressor", "compressor", 4),
        _sensor("server-room", "server_room", 6),
    ],
    "pi-03": [  # runs with a steppable wall clock
        _sensor("freezer", "freezer", 7),
        _sensor("office", "office", 8),
    ],
}
SHIFTED = "pi-03"
DEVICES = list(SENSORS)


def _agent_config(workdir: Path, port: int, device: str) -> dict[str, Any]:
    return {
        "site": SITE,
        "device": device,
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5},
        "outbox": {"path": str(workdir / f"state-{device}" / "outbox.db"),
                   "drain_rate_per_s": 500},
        "delivery": {"confirm_timeout_s": 2},
        "telemetry": {"batch_interval_s": 0.2, "health_interval_s": 1.0},
        "hardware": {"pin_factory": "mock"},
        "sensors": SENSORS[device],
    }


def _collector_config(workdir: Path, broker: Mosquitto, influx: Influxd,
                      inbox: WebhookInbox) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "collector-faults",
                 "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "influx": {"api": "v1", "url": influx.url, "database": DB, "flush_interval_s": 0.2,
                   "retry_min_s": 0.2, "retry_max_s": 0.5, "timeout_s": 5},
        "state_dir": str(workdir / "collector-state"),
        "metrics": {"enabled": False},
        "delivery_interval_s": 1.0,
        "confirm": {"interval_s": 0.5},
        # Only the door rule: silence and flatline alerts would (rightly) fire during the
        # outages, and the suite checks the one alert it knows must fire.
        "detection": {
            "process": False,
            "defaults": False,
            "rules": [{"name": "walk-in-door", "match": {"labels": {"zone": "cold-room"}},
                       "profile": "door", "detectors": {"door_open": {"max_open_s": 2.0}}}],
        },
        "alerting": {
            "teams": [{"name": "kitchen",
                       "members": [{"name": "tech", "apprise": [inbox.url("tech")]}]}],
            "routes": [{"match": {}, "levels": ["kitchen"]}],
        },
    }


def _door_alerts(fleet: Fleet) -> list[dict[str, Any]]:
    return fleet.influx.query("SELECT * FROM alerts", DB)


def _fresh(since_ms: int) -> Any:
    return lambda status: status["updated_ms"] > since_ms


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_faults(fleet: Fleet, inbox: WebhookInbox) -> None:
    broker, influx, collector, agents = fleet.broker, fleet.influx, fleet.collector, fleet.agents

    with fleet.phase("start"):
        broker.start()
        influx.start()
        influx.create_database(DB)
        collector.start()
        for agent in agents.values():
            agent.start()
        wait(lambda: all(a.stats().confirmed >= 40 for a in agents.values()), 60,
             "readings confirmed end to end from every agent")
        wait(lambda: _door_alerts(fleet), 60, "the door-open alert in InfluxDB")
        wait(lambda: inbox.messages, 30, "the door-open alert at the technician")

    with fleet.phase("broker SIGKILL"):
        broker.kill()
        fleet.wait_outboxes_grow(DEVICES, 5, "the broker is dead")
        restarted = _now_ms()
        broker.start()
        fleet.wait_collector(lambda s: _fresh(restarted)(s) and s["broker_connected"],
                             "the collector back on the broker")
        fleet.wait_confirmed_past(DEVICES, "after the broker's restart")

    with fleet.phase("influxd SIGKILL"):
        influx.kill()
        fleet.wait_collector(lambda s: s["spool_depth"] > 0, "the collector to spool")
        influx.start()  # waits until /ping answers 204
        restarted = _now_ms()
        fleet.wait_collector(lambda s: _fresh(restarted)(s) and s["spool_depth"] == 0,
                             "the spool to drain")
        fleet.wait_confirmed_past(DEVICES, "after influxd's restart")

    with fleet.phase("collector SIGKILL"):
        collector.kill()
        fleet.wait_outboxes_grow(DEVICES, 5, "unconfirmed while the collector is dead")
        collector.start()
        fleet.wait_confirmed_past(DEVICES, "after the collector's restart")

    pi02 = agents["pi-02"]
    with fleet.phase("agent SIGKILL"):
        wait(lambda: pi02.stats().pending_messages >= 3, 30, "rows in pi-02's outbox")
        pi02.kill()  # with committed rows, sent or not, none confirmed yet
        pi02.start(outbox={"max_bytes": TINY_OUTBOX_BYTES})
        fleet.wait_confirmed_past(["pi-02"], "the first boot's rows after the restart")

    with fleet.phase("broker outage > outbox cap"):
        dropped = pi02.stats().dropped
        broker.stop()
        wait(lambda: pi02.stats().dropped >= dropped + 50, 30, "pi-02 dropping for its cap")
        assert pi02.stats().pending_bytes <= TINY_OUTBOX_BYTES
        fleet.wait_outboxes_grow(["pi-01", SHIFTED], 1, "the others keep everything")
        broker.start()
        fleet.wait_confirmed_past(DEVICES, "after the outage")
        pi02.stop()
        pi02.start()  # its usual cap again

    with fleet.phase("spool over its cap"):
        collector.stop()
        collector.start(spool={"max_bytes": TINY_SPOOL_BYTES})
        # The broker redelivers what the stopped collector wrote during its final flush
        # (after it had disconnected, so never acknowledged): let those duplicates reach
        # InfluxDB first. Spooled and then dropped, a duplicate of a stored reading would be
        # counted as dropped although it is stored (see the report on issue 7).
        fleet.wait_confirmed_past(DEVICES, "the restarted collector caught up")
        influx.kill()
        fleet.wait_collector(lambda s: s["dropped"] >= 50, "the spool dropping for its cap", 60)
        influx.start()
        restarted = _now_ms()
        fleet.wait_collector(lambda s: _fresh(restarted)(s) and s["spool_depth"] == 0,
                             "the spool to drain")
        fleet.wait_confirmed_past(DEVICES, "after the spool drained")
        collector.kill()
        collector.start()  # its usual cap again

    shifted = agents[SHIFTED]
    with fleet.phase("clock steps"):
        for offset_s in (-30.0, 60.0, 0.0):
            produced = shifted.stats().produced
            shifted.jump(offset_s)
            wait(lambda p=produced: shifted.stats().produced >= p + 24, 30,  # type: ignore[misc]
                 f"readings after the step to {offset_s:+.0f} s")
            fleet.wait_confirmed_past([SHIFTED], f"after the step to {offset_s:+.0f} s")

    with fleet.phase("overlapping"):
        influx.kill()
        fleet.wait_collector(lambda s: s["spool_depth"] > 0, "the collector to spool")
        shifted.jump(-20.0)
        broker.kill()
        collector.kill()
        agents["pi-01"].kill()
        fleet.wait_outboxes_grow(["pi-02", SHIFTED], 5, "the broker is dead")
        broker.start()
        agents["pi-01"].start()
        collector.start()
        restarted = _now_ms()
        fleet.wait_collector(lambda s: _fresh(restarted)(s) and s["spool_depth"] > 0,
                             "the new collector spooling (influxd still down)")
        shifted.jump(0.0)
        pi02.kill()
        pi02.start()
        influx.start()
        restarted = _now_ms()
        fleet.wait_collector(lambda s: _fresh(restarted)(s) and s["spool_depth"] == 0,
                             "the spool to drain")
        fleet.wait_confirmed_past(DEVICES, "after everything came back")


def drain_and_count(fleet: Fleet) -> Accounting:
    """Stop the agents cleanly, wait until the collector has stored what they confirmed,
    and count."""
    with fleet.phase("drain"):
        fleet.wait_confirmed_past(DEVICES, "before the agents stop")
        for agent in fleet.agents.values():
            agent.stop()
        for device, agent in fleet.agents.items():
            stats = agent.stats()
            assert stats.pending == 0 and stats.pending_messages == 0, (device, stats)
            assert not stats.broker_fallback, (device, stats)  # confirmations all along
        status = fleet.wait_collector(
            lambda s: s["spool_depth"] == 0 and s["unacknowledged"] == 0, "the collector idle")
        collector_devices = {d["device"]: d["counters"] for d in status["devices"]}
        dropped = {device: int(c["dropped"]) for device, c in collector_devices.items()}

        def stored_all() -> bool:
            return all(sum(fleet.stored_by_sensor(d).values()) + dropped.get(d, 0)
                       + fleet.agents[d].stats().dropped >= fleet.agents[d].stats().produced
                       for d in DEVICES)

        try:
            wait(stored_all, 30, "every confirmed reading in InfluxDB")
        except AssertionError:
            log.warning("fault suite: InfluxDB never reached the produced counts")
        counts = [final_count(fleet, d, collector_devices) for d in DEVICES]
    return Accounting(counts, status, fleet.phases)


def _show(accounting: Accounting, tmp_path: Path, summary: Callable[[str], None]) -> str:
    text = accounting.render()
    (tmp_path / "fault-accounting.txt").write_text(text + "\n")
    summary(text + f"\n(also in {tmp_path / 'fault-accounting.txt'})")
    log.warning("%s", text)
    return text


def _delivery_dropped(fleet: Fleet) -> dict[str, int]:
    """Per device, the newest ``dropped`` the collector wrote to the ``delivery`` measurement."""
    rows = fleet.influx.query(
        "SELECT last(dropped) FROM delivery WHERE device =~ /./ GROUP BY device", DB)
    return {row["device"]: int(row["last"]) for row in rows}


def _series_per_sensor(fleet: Fleet, device: str) -> dict[str, int]:
    """How many series hold each sensor's readings: more than one would mean a reading
    written twice under different tags (a doubling that no overwrite undoes)."""
    counts: dict[str, int] = {}
    for series in fleet.influx.series(
        f"SHOW SERIES FROM environment, equipment WHERE device = '{device}'", DB
    ):
        for (key,) in series["values"]:
            sensor = next(part.split("=", 1)[1] for part in key.split(",")
                          if part.startswith("sensor="))
            counts[sensor] = counts.get(sensor, 0) + 1
    return counts


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, WebhookInbox]]:
    """The processes, configured but not started; all killed afterwards."""
    if not (have_mosquitto() and have_influxd()):
        pytest.fail("mosquitto and influxd must be installed (scripts/test installs them)")
    inbox = WebhookInbox()
    # The broker saves its state only on a clean stop (the shipped config autosaves every
    # 60 s, which within this suite would save at a moment nobody chose): a SIGKILL loses
    # every message it had acknowledged, the hole end-to-end confirmation closes.
    broker = Mosquitto(tmp_path / "broker", extra_conf="autosave_interval 86400\n")
    influx = Influxd(tmp_path / "influxd")
    collector = CollectorProcess(_collector_config(tmp_path, broker, influx, inbox), tmp_path)
    agents = {
        device: AgentProcess(device, _agent_config(tmp_path, broker.port, device), tmp_path,
                             shifted=device == SHIFTED)
        for device in DEVICES
    }
    fleet = Fleet(tmp_path, broker, influx, collector, agents)
    try:
        yield fleet, inbox
    finally:
        fleet.close()
        inbox.close()


def test_fault_suite_every_reading_stored_once_or_counted_dropped(
    fleet: tuple[Fleet, WebhookInbox], tmp_path: Path, summary: Callable[[str], None]
) -> None:
    rig, inbox = fleet
    run_faults(rig, inbox)
    accounting = drain_and_count(rig)
    _show(accounting, tmp_path, summary)
    alerts = _door_alerts(rig)
    series = {device: _series_per_sensor(rig, device) for device in DEVICES}
    messages = list(inbox.messages)

    by_device: dict[str, DeviceCount] = {d.device: d for d in accounting.devices}
    for device, count in by_device.items():
        assert count.produced > 0 and count.pending == 0, device
        assert count.balanced, (
            f"{device}: produced {count.produced} != stored {count.stored} + dropped by the "
            f"agent {count.agent_dropped} + dropped by the collector {count.collector_dropped}"
            f" ({count.produced - count.accounted:+d})")
        assert count.events_balanced, device
        assert set(series[device]) == {s["id"] for s in SENSORS[device]}, series
        assert set(series[device].values()) == {1}, series  # no reading under two tag sets
    # The faults happened and were counted where they happened.
    assert by_device["pi-02"].agent_dropped > 0
    assert sum(d.collector_dropped for d in by_device.values()) > 0
    # ... and the spool's drops per device reach the `delivery` measurement too.
    wait(lambda: _delivery_dropped(rig) == {d: c.collector_dropped for d, c in by_device.items()},
         30, "the spool's drops per device in the delivery measurement")
    assert sum(d.resent for d in by_device.values()) > 0
    assert sum(d.duplicates for d in by_device.values()) > 0
    assert accounting.collector["dead_lettered"] == 0
    # One alert, fired once, one message to the technician.
    assert {a["alert_id"] for a in alerts} == {alerts[0]["alert_id"]}, alerts
    fires = [a for a in alerts if a["action"] == "fire"]
    assert len(fires) == 1 and fires[0]["rule"] == "walk-in-door", alerts
    assert fires[0]["device"] == "pi-01" and fires[0]["sensor"] == "walk-in-door"
    assert len(messages) == 1, messages


def test_fault_suite_broker_crash_after_the_outbox_cap_evicted_unconfirmed_rows(
    fleet: tuple[Fleet, WebhookInbox], summary: Callable[[str], None]
) -> None:
    """A tiny outbox cap while the collector is away: the agent evicts rows the broker holds
    for the collector; the broker crashes before saving them; everything comes back."""
    rig, _ = fleet
    agent = rig.agents["pi-02"]
    rig.agents = {"pi-02": agent}
    with rig.phase("start"):
        rig.broker.start()
        rig.influx.start()
        rig.influx.create_database(DB)
        rig.collector.start()
        agent.start(outbox={"max_bytes": TINY_OUTBOX_BYTES})
        wait(lambda: agent.stats().confirmed >= 50, 60, "readings confirmed")
    with rig.phase("collector away, cap evicts"):
        rig.collector.stop()
        # Half the 8 KiB cap holds 64 stubs: kill the broker well before more are needed.
        wait(lambda: agent.stats().stubbed >= 20, 30,
             "rows acknowledged by the broker evicted from the outbox before confirmation")
    with rig.phase("broker SIGKILL"):
        rig.broker.kill()
        dropped = agent.stats().dropped
        wait(lambda: agent.stats().dropped > dropped, 30, "drops for the cap")
        rig.broker.start()
        rig.collector.start()
    with rig.phase("drain"):
        rig.wait_confirmed_past(["pi-02"], "after the crash")
        agent.stop()
        final = agent.stats()
        assert final.pending == 0
        rig.wait_collector(lambda s: s["spool_depth"] == 0 and s["unacknowledged"] == 0,
                           "the collector idle")
        stored = sum(rig.stored_by_sensor("pi-02").values())
    summary(f"broker crash after evicting unconfirmed rows: produced {final.produced},"
            f" stored {stored}, dropped {final.dropped} (of them lost by the broker after its"
            f" PUBACK: {final.dropped_unconfirmed}), released unconfirmed {final.released};"
            " phases (s) " + ", ".join(f"{name} {took:.1f}" for name, took in rig.phases))
    assert final.released == 0  # every stub was followed to its end: stored or lost
    assert stored + final.dropped == final.produced, (
        f"produced {final.produced} != stored {stored} + dropped {final.dropped}: "
        f"{final.produced - stored - final.dropped} readings lost and counted nowhere")
