"""The agent against a real mosquitto: contract, outages, crashes and a full outbox.

The agent runs as its own process (``sitewatch-agent run``), exactly as systemd starts it,
with simulated sensors. A probe subscribes to everything; ``sitewatch-agent status --json``
gives the agent's own accounting.

No collector runs here, so no end-to-end confirmation ever comes: the agents run with
``delivery.confirm_timeout_s: 1`` and, one second after connecting, fall back to deleting on
the broker's PUBACK, which is what these tests are about (and what an agent does beside a
collector without confirmations). ``tests/test_end_to_end_ack.py`` covers confirmations.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sitewatch.agent.outbox import read_stats
from sitewatch.localrun import Mosquitto, wait_until
from sitewatch.wire import (
    EventMessage,
    Quality,
    StatusMessage,
    TelemetryMessage,
    parse_message,
)
from tests.mqtt_probe import Probe
from tests.processes import agent_status as status
from tests.processes import outbox_path, start_agent
from tests.processes import stop_process as stop_agent

pytestmark = pytest.mark.integration

EQUIPMENT = [
    {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.1,
     "seed": 1, "labels": {"zone": "kitchen"}},
    {"id": "compressor", "driver": "simulated", "model": "compressor", "interval_s": 0.2,
     "seed": 3, "faults": [{"kind": "short_cycling", "start_s": 0}]},
    {"id": "door", "driver": "simulated", "model": "door", "interval_s": 0.2, "seed": 4},
]


NO_COLLECTOR = {"confirm_timeout_s": 1}
"""``delivery`` for agents without a collector: fall back to the PUBACK after a second."""


def data_messages(probe: Probe) -> list[TelemetryMessage | EventMessage]:
    out = []
    for received in probe.snapshot():
        message = parse_message(received.topic, received.payload)
        if isinstance(message, TelemetryMessage | EventMessage):
            out.append(message)
    return out


def _first_ts(message: TelemetryMessage | EventMessage) -> int:
    items = message.readings if isinstance(message, TelemetryMessage) else message.events
    return min((item.ts for item in items), default=0)


def readings_count(messages: list[TelemetryMessage | EventMessage]) -> int:
    return sum(len(m.readings) for m in messages if isinstance(m, TelemetryMessage))


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agent_every_message_follows_the_wire_contract(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path],
    agents: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    probe = Probe(mosquitto.host, mosquitto.port)
    config = write_agent_config(mosquitto.port, sensors=EQUIPMENT, delivery=NO_COLLECTOR)
    agents.append(start_agent(config, tmp_path / "agent.log"))
    wait_until(
        lambda: any(isinstance(m, EventMessage) for m in data_messages(probe))
        and any(isinstance(m, TelemetryMessage) and m.health for m in data_messages(probe)),
        30, "telemetry, health and events",
    )
    assert stop_agent(agents[0]) == 0
    wait_until(lambda: probe.on_topic_suffix("/status")[-1:] and b'"offline"'
               in probe.on_topic_suffix("/status")[-1].payload, 10, "the offline status")
    probe.close()

    received = probe.snapshot()
    topics = {m.topic for m in received}
    assert topics == {f"sitewatch/v1/plant-a/pi-01/{kind}" for kind in
                      ("telemetry", "event", "status")}
    parsed = [parse_message(m.topic, m.payload) for m in received]  # raises if any is invalid
    statuses = [m for m in parsed if isinstance(m, StatusMessage)]
    assert statuses[0].state == "online" and statuses[-1].state == "offline"
    assert statuses[-1].reason == "shutdown"
    assert {s.id for s in statuses[0].sensors} == {"cold-room", "compressor", "door"}
    assert statuses[0].config_hash and statuses[0].agent_version
    assert all(r.qos == 1 for r in received)
    assert not any(r.retain for r in received if not r.topic.endswith("/status"))
    late = Probe(mosquitto.host, mosquitto.port, "sitewatch/v1/+/+/status")
    retained = wait_until(late.snapshot, 10, "the retained status")
    late.close()
    assert retained[0].retain and b'"offline"' in retained[0].payload

    data = [m for m in parsed if isinstance(m, TelemetryMessage | EventMessage)]
    assert len({m.boot_id for m in data}) == 1
    seqs = sorted(m.seq for m in data)
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous, nothing lost or doubled
    readings = [r for m in data if isinstance(m, TelemetryMessage) for r in m.readings]
    climate = [r for r in readings if r.sensor == "cold-room" and r.quality is Quality.OK]
    assert climate and all(r.temperature_c is not None and r.humidity_pct is not None
                           for r in climate)
    equipment = [r for r in readings if r.sensor == "compressor" and r.running is not None]
    assert equipment and equipment[-1].starts_per_h is not None
    events = [e for m in data if isinstance(m, EventMessage) for e in m.events]
    assert {e.field for e in events if e.sensor == "compressor"} == {"running"}
    assert {e.field for e in events if e.sensor == "door"} == {"open"}

    final = status(config)
    assert final["produced"] == final["acked"] == readings_count(data)
    assert final["pending"] == 0 and final["dropped"] == 0


def test_agent_broker_down_30s_delivers_everything_once(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path],
    agents: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    probe = Probe(mosquitto.host, mosquitto.port, persistent=True)
    config = write_agent_config(mosquitto.port, delivery=NO_COLLECTOR)
    agents.append(start_agent(config, tmp_path / "agent.log"))
    wait_until(lambda: status(config)["acked"] >= 20, 30, "readings flowing")

    mosquitto.stop()
    outage_started = time.monotonic()
    outage_started_ms = int(time.time() * 1000)
    produced_before = status(config)["produced"]
    # The outage lasts 30 s of agent activity; the agent keeps producing into its outbox.
    wait_until(lambda: time.monotonic() - outage_started >= 30, 40, "the end of the outage",
               interval_s=0.5)
    during = status(config)
    assert during["produced"] > produced_before + 100
    assert during["pending"] > 0
    restarted_ms = int(time.time() * 1000)
    mosquitto.start()

    wait_until(lambda: status(config)["pending"] == 0, 60, "the backlog to drain")
    assert stop_agent(agents[0]) == 0
    final = status(config)
    assert final["produced"] == final["acked"] and final["pending"] == 0
    assert final["dropped"] == 0

    wait_until(lambda: readings_count(data_messages(probe)) >= final["produced"], 20,
               "every reading at the subscriber")
    probe.close()
    messages = data_messages(probe)
    identities = Counter((m.boot_id, m.seq) for m in messages)
    assert sorted(identities) == [(messages[0].boot_id, n) for n in range(1, len(identities) + 1)]
    # Everything produced during the outage arrives exactly once. A message that was in
    # flight when the broker went down may arrive twice (QoS1 is at-least-once: the broker
    # may have routed it without its PUBACK reaching the agent); receivers drop such repeats
    # by (boot_id, seq), and there are never more than the in-flight window of them.
    during_outage = [
        m for m in messages if outage_started_ms + 1000 < _first_ts(m) < restarted_ms - 1000
    ]
    assert len(during_outage) > 50
    assert all(identities[(m.boot_id, m.seq)] == 1 for m in during_outage)
    assert sum(count - 1 for count in identities.values()) <= 20
    unique = {(m.boot_id, m.seq): m for m in messages}.values()
    assert readings_count(list(unique)) == final["produced"]
    assert all(m.historical for m in during_outage), "the backlog was not marked historical"
    assert not messages[0].historical


def test_agent_sigkill_loses_no_committed_reading(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path],
    agents: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    probe = Probe(mosquitto.host, mosquitto.port, persistent=True)
    config = write_agent_config(mosquitto.port, mqtt={"max_inflight": 5}, delivery=NO_COLLECTOR)
    agents.append(start_agent(config, tmp_path / "agent-1.log"))
    wait_until(lambda: status(config)["acked"] >= 50, 30, "readings flowing")
    mosquitto.stop()  # let a backlog build up, so the crash leaves committed, unsent rows
    wait_until(lambda: status(config)["pending"] >= 50, 30, "a backlog")
    agents[0].kill()
    agents[0].wait()

    committed = read_stats(outbox_path(config))
    assert committed.pending >= 50
    mosquitto.start()
    agents.append(start_agent(config, tmp_path / "agent-2.log"))
    wait_until(lambda: status(config)["pending"] == 0, 60, "the backlog to drain after restart")
    assert stop_agent(agents[1]) == 0
    final = status(config)
    assert final["produced"] == final["acked"] + final["dropped"] and final["dropped"] == 0

    wait_until(lambda: readings_count(data_messages(probe)) >= final["produced"], 20,
               "every reading at the subscriber")
    probe.close()
    messages = data_messages(probe)
    boots = list(dict.fromkeys(m.boot_id for m in messages))
    assert len(boots) == 2
    first_boot = Counter(m.seq for m in messages if m.boot_id == boots[0])
    # Every message the first boot committed arrived (the outbox kept them through SIGKILL) ...
    assert sorted(first_boot) == list(range(1, max(first_boot) + 1))
    # ... and what came twice is at most the in-flight window at the moment of the kill.
    doubled = sum(count - 1 for count in first_boot.values())
    assert doubled <= 5
    assert readings_count(messages) - final["produced"] <= 5 * 50


def test_agent_tiny_outbox_stays_within_cap_and_counts_drops(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path],
    agents: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    cap = 8192
    mosquitto.stop()  # the broker is down from the start
    config = write_agent_config(mosquitto.port, outbox={"max_bytes": cap}, delivery=NO_COLLECTOR)
    agents.append(start_agent(config, tmp_path / "agent.log"))
    wait_until(lambda: status(config)["dropped"] >= 100, 30,
               "drops once the outbox is full")
    samples = [read_stats(outbox_path(config)) for _ in range(20)]
    assert all(s.pending_bytes <= cap for s in samples)
    during = status(config)
    assert during["produced"] == during["acked"] + during["pending"] + during["dropped"]

    mosquitto.start()
    probe = Probe(mosquitto.host, mosquitto.port)
    wait_until(
        lambda: any(isinstance(m, TelemetryMessage) and m.health and m.health.dropped_readings > 0
                    for m in data_messages(probe)),
        30, "health telemetry reporting the drops",
    )
    assert stop_agent(agents[0]) == 0
    final = status(config)
    assert final["produced"] == final["acked"] + final["pending"] + final["dropped"]
    assert final["dropped"] >= during["dropped"] > 0
    health = [m.health for m in data_messages(probe)
              if isinstance(m, TelemetryMessage) and m.health is not None]
    assert max(h.dropped_readings for h in health) <= final["dropped"]
    probe.close()
