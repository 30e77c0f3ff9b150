"""Security limits of the collector (issue 7, "Security checks").

- Topic spoofing: a payload whose site or device differs from its topic is dead-lettered with
  the reason, counted, and neither stored nor confirmed to anyone.
- Oversized payloads: one over ``wire.MAX_PAYLOAD_BYTES`` (256 KiB, as the broker's
  ``message_size_limit`` in ``broker/mosquitto.conf``) is dead-lettered on its size alone,
  never parsed, and counted; behind a broker without that limit (a stock mosquitto) a flood of
  them, waiting for their acknowledgement behind a message InfluxDB has not yet taken, does
  not grow the collector's memory.
- Slow consumer and flood: while InfluxDB is down, a flood keeps the collector's queues
  bounded (unacknowledged messages within the broker's in-flight window, memory within a
  generous bound, measured as the collector process's RSS from ``/proc``), and everything
  arrives once InfluxDB is back.
- No secret in logs: agents and collectors run with a broker password from a file, an
  InfluxDB password, an alert web token and a notification URL with a password, through
  normal operation and failures (a wrong broker password, InfluxDB refusing the login);
  none of those strings appears in any log, status output, status file, dead letter,
  metrics page or MQTT message.

Servers are real: mosquitto and influxd (the fixtures), collectors and agents as processes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from sitewatch.clock import FakeClock
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.ingest import Ingest
from sitewatch.collector.mqtt import Received
from sitewatch.collector.tracking import SeqTracker
from sitewatch.localrun import Influxd, Mosquitto, free_port, wait_until
from sitewatch.wire import (
    MAX_PAYLOAD_BYTES,
    Event,
    EventMessage,
    EventType,
    Quality,
    Reading,
    SensorInfo,
    StatusMessage,
    TelemetryMessage,
    encode,
    topic_for,
)
from tests.mqtt_probe import Probe
from tests.processes import (
    agent_status,
    collector_counts,
    collector_status,
    start_agent,
    start_collector,
    stop_process,
    write_collector_config,
)

DB = "sitewatch"
NOW_MS = int(time.time() * 1000)
BOOT = "5ec0de01"
MiB = 1 << 20


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def telemetry(device: str, seq: int, readings: int = 1, *, site: str = "plant-a",
              ts_ms: int = NOW_MS) -> TelemetryMessage:
    return TelemetryMessage(
        site=site, device=device, boot_id=BOOT, seq=seq,
        readings=[Reading(sensor=f"s{i % 10}", ts=ts_ms + i, quality=Quality.OK,
                          temperature_c=4.0 + (i % 7) / 10, humidity_pct=80.0)
                  for i in range(readings)],
    )


def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes]], qos: int = 1,
                **login: str) -> None:
    """Publish in one batch from one client and wait until the broker has taken each."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sender-{free_port()}")
    if login:
        client.username_pw_set(login["username"], login["password"])
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        sent = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        deadline = time.monotonic() + 60
        for info in sent:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        assert all(info.is_published() for info in sent), "the broker did not take them all"
    finally:
        client.loop_stop()
        client.disconnect()


def stored(influx: Influxd, where: str, measurement: str = "environment") -> int:
    rows = influx.query(f"SELECT count(quality) FROM {measurement} WHERE {where}", DB)
    return int(rows[0]["count"]) if rows else 0


@pytest.fixture
def collector_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a collector config (v1 API, metrics off); keyword arguments override sections."""

    def write(broker: Mosquitto, influx_url: str, name: str = "collector", **changes: Any) -> Path:
        return write_collector_config(tmp_path, broker.port, influx_url, DB, name=name,
                                      **changes)

    return write


def dead_letters(config: Path) -> list[dict[str, Any]]:
    state = Path(yaml.safe_load(config.read_text())["state_dir"])
    path = state / "deadletter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the ingest queue, without servers ---------------------------------------------------------


def test_security_limits_refused_payloads_waiting_for_their_ack_hold_no_memory(
    tmp_path: Path,
) -> None:
    """Messages are acknowledged in order, so refused ones wait behind a valid one until its
    batch is stored. They must not keep their payloads meanwhile (a stock broker passes up to
    256 MiB each), and QoS 0 ones, which the broker's in-flight window does not bound and
    which need no acknowledgement, must not be held at all."""
    submitted: list[object] = []
    ingest = Ingest(
        lambda lines, token: submitted.append(token),  # the writer never reports: stuck
        clock=FakeClock(wall_s=NOW_MS / 1000), catalog=SensorCatalog(), tracker=SeqTracker(),
        devices=DeviceStates(300.0), dead_letters=DeadLetters(tmp_path / "deadletter.jsonl"),
        max_future_ms=300_000,
    )
    head = telemetry("pi-01", 1)
    ingest.handle(Received(topic_for(head), encode(head), 1, 1, False, 1))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for mid in range(2, 42):  # 40 × 1 MiB, QoS1: each waits for the head's write
            ingest.handle(Received("sitewatch/v1/plant-a/pi-01/telemetry",
                                   b'{"v": 1, "x": "' + b"x" * MiB + b'"}', mid, 1, False, 1))
        for _ in range(2000):  # QoS 0: nothing to acknowledge, nothing to hold
            ingest.handle(Received("sitewatch/v1/plant-a/pi-01/event", b"{}", 0, 0, False, 1))
        status = StatusMessage(site="plant-a", device="pi-01", boot_id=BOOT, seq=0,
                               state="online", ts=NOW_MS)
        ingest.handle(Received(topic_for(status), encode(status), 0, 0, True, 1))
        held_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert ingest.invalid_messages == 2040
    assert held_bytes < 4 * MiB, f"{held_bytes / MiB:.1f} MiB held for 40 MiB refused"
    assert ingest.unacknowledged == 41  # the head and the 40 QoS1 ones, in order
    acked: list[int] = []
    assert ingest.release_acks(lambda received: acked.append(received.mid)) == 0
    ingest.mark_durable(submitted)  # the head's batch is stored: all go, in receipt order
    assert ingest.release_acks(lambda received: acked.append(received.mid)) == 41
    assert acked == list(range(1, 42)) and ingest.unacknowledged == 0


# -- topic spoofing ----------------------------------------------------------------------------


@pytest.mark.integration
def test_security_limits_spoofed_topic_is_dead_lettered_not_stored_nor_confirmed(
    mosquitto: Mosquitto, influxd: Influxd, collector_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd.url)
    procs.append(start_collector(config, tmp_path / "collector.log"))
    acks = Probe(mosquitto.host, mosquitto.port, "sitewatch/v1/+/ack/+")
    pi01 = "sitewatch/v1/plant-a/pi-01"
    birth = StatusMessage(site="plant-a", device="pi-02", boot_id=BOOT, seq=0, state="online",
                          ts=NOW_MS, sensors=[SensorInfo(id="s0", driver="dht22", fields=[],
                                                         interval_s=5, labels={"zone": "evil"})])
    event = EventMessage(site="plant-a", device="pi-02", boot_id=BOOT, seq=2, events=[
        Event(sensor="door", ts=NOW_MS, type=EventType.STATE_CHANGE, field="open", value=True)])
    spoofs = [
        (f"{pi01}/telemetry", encode(telemetry("pi-02", 1))),  # another device of the site
        (f"{pi01}/telemetry", encode(telemetry("pi-01", 1, site="plant-b"))),  # another site
        (f"{pi01}/status", encode(birth)),  # labels for another device's series
        (f"{pi01}/event", encode(event)),
        ("sitewatch/v1/plant-b/pi-02/telemetry", encode(telemetry("pi-02", 3))),
    ]
    genuine = [(f"{pi01}/telemetry", encode(telemetry("pi-01", seq, ts_ms=NOW_MS + 100 * seq)))
               for seq in (1, 2)]
    publish_all(mosquitto, spoofs + genuine)

    wait_until(lambda: stored(influxd, "device = 'pi-01'") == 2, 30, "the genuine readings")
    wait_until(lambda: any(m.topic.endswith("/ack/pi-01") for m in acks.snapshot()), 30,
               "pi-01's confirmation")
    status = collector_status(config)
    assert status["invalid_messages"] == len(spoofs) == status["dead_lettered"]
    letters = dead_letters(config)
    assert [letter["source"] for letter in letters] == [topic for topic, _ in spoofs]
    assert all("but the topic is" in letter["reason"] for letter in letters), letters
    series = influxd.query("SHOW SERIES", DB)
    assert series and not [s for s in series if "pi-02" in s["key"] or "plant-b" in s["key"]
                           or "evil" in s["key"]]
    # Only pi-01 is confirmed, to seq 2: a spoofed payload confirms nothing for anyone.
    confirmed = {m.topic: json.loads(m.payload) for m in acks.snapshot() if m.payload}
    assert set(confirmed) == {"sitewatch/v1/plant-a/ack/pi-01"}
    assert confirmed["sitewatch/v1/plant-a/ack/pi-01"]["durable_seq"] == 2
    acks.close()
    assert stop_process(procs[0], 30) == 0


# -- oversized payloads ------------------------------------------------------------------------


@pytest.mark.integration
def test_security_limits_oversized_payloads_are_refused_unparsed_and_cost_no_memory(
    tmp_path: Path, influxd: Influxd, collector_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    # A broker without sitewatch's size limits (stock mosquitto: up to 256 MiB).
    broker = Mosquitto(tmp_path / "stock-broker",
                       extra_conf="message_size_limit 0\nmax_packet_size 268435460\n")
    broker.start()
    try:
        config = collector_config(broker, influxd.url, influx={"timeout_s": 60})
        collector = start_collector(config, tmp_path / "collector.log")
        procs.append(collector)
        size = 2 * MiB
        oversized = [(f"sitewatch/v1/plant-a/pi-{i:02d}/telemetry",
                      b'{"v": 1, "readings": [' + b" " * size + b"]}") for i in range(40)]
        publish_all(broker, oversized[:10])  # warm up: buffers and allocator at their size
        wait_until(lambda: collector_counts(config)["invalid_messages"] == 10, 30, "warm-up")
        baseline = rss_bytes(collector.pid)

        # InfluxDB hangs (SIGSTOP): a valid message's batch waits on its write, and every
        # later message waits behind it for its acknowledgement.
        assert influxd.proc is not None
        influxd.proc.send_signal(signal.SIGSTOP)
        try:
            publish_all(broker, [("sitewatch/v1/plant-a/pi-01/telemetry",
                                  encode(telemetry("pi-01", 1)))])
            publish_all(broker, oversized[10:])  # 60 MiB more
            wait_until(lambda: collector_counts(config)["invalid_messages"] == 40, 30,
                       "the oversized payloads dead-lettered")
            status = collector_status(config)
            held = rss_bytes(collector.pid) - baseline
        finally:
            influxd.proc.send_signal(signal.SIGCONT)
        assert status["unacknowledged"] >= 31, status  # they did wait behind the valid one
        assert held < 32 * MiB, f"RSS grew {held / MiB:.0f} MiB for 60 MiB of refused payloads"
        letters = dead_letters(config)
        assert len(letters) == 40 == status["dead_lettered"]
        assert all(letter["reason"] == f"payload of {size + 24} bytes exceeds "
                   f"{MAX_PAYLOAD_BYTES}" and letter["truncated"] for letter in letters)
        wait_until(lambda: collector_counts(config)["unacknowledged"] == 0, 60,
                   "every message acknowledged once InfluxDB answers")
        assert stored(influxd, "device = 'pi-01'") == 1
        assert collector.poll() is None
        assert stop_process(collector, 30) == 0
    finally:
        broker.kill()


@pytest.mark.integration
def test_security_limits_broker_config_refuses_oversized_packets_unread(
    mosquitto: Mosquitto,
) -> None:
    """``broker/mosquitto.conf``: a payload over ``message_size_limit`` is not forwarded; a
    packet over ``max_packet_size`` gets its sender disconnected before it is read."""
    watcher = Probe(mosquitto.host, mosquitto.port, "sitewatch/v1/+/+/+")
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="big-sender")
    dropped: list[object] = []
    sender.on_disconnect = lambda *args: dropped.append(args[3])
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        for size in (MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1):  # at the limit, just over
            sender.publish(f"sitewatch/v1/plant-a/pi-01/x{size}", b" " * size, qos=1
                           ).wait_for_publish(10)
        sender.publish("sitewatch/v1/plant-a/pi-01/huge", b" " * (2 * MiB), qos=1)
        wait_until(lambda: dropped, 10, "the sender disconnected")
    finally:
        sender.loop_stop()
    wait_until(lambda: watcher.snapshot(), 10, "the payload at the limit")
    assert [len(m.payload) for m in watcher.snapshot()] == [MAX_PAYLOAD_BYTES]
    assert "oversize packet" in mosquitto.log_path.read_text()
    watcher.close()


# -- flood while InfluxDB is down --------------------------------------------------------------


@pytest.mark.integration
def test_security_limits_flood_while_influxdb_is_down_stays_bounded_and_all_arrives(
    mosquitto: Mosquitto, influxd: Influxd, collector_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = collector_config(mosquitto, influxd.url, detection={"enabled": False},
                              influx={"timeout_s": 5, "retry_max_s": 0.5})
    collector = start_collector(config, tmp_path / "collector.log")
    procs.append(collector)
    devices = [f"pi-{i:02d}" for i in range(10)]
    per_message, messages = 200, 500  # 100,000 readings, about 12 MB of JSON
    warm = [(topic_for(m), encode(m)) for m in (telemetry(d, 1, per_message) for d in devices)]
    publish_all(mosquitto, warm)
    wait_until(lambda: stored(influxd, "time > 0") == len(warm) * per_message, 60, "warm-up")
    baseline = rss_bytes(collector.pid)

    influxd.kill()
    flood = []
    for n in range(messages):
        device, seq = devices[n % len(devices)], 2 + n // len(devices)
        message = telemetry(device, seq, per_message, ts_ms=NOW_MS + seq * 1000)
        flood.append((topic_for(message), encode(message)))
    publish_all(mosquitto, flood)
    peak = {"unacknowledged": 0, "rss": 0}

    def received_all() -> bool:
        status = collector_status(config)
        peak["unacknowledged"] = max(peak["unacknowledged"], status["unacknowledged"])
        peak["rss"] = max(peak["rss"], rss_bytes(collector.pid))
        return bool(status["received"] >= (len(flood) + len(warm)) * per_message
                    and status["unacknowledged"] == 0)

    wait_until(received_all, 60, "the flood received, spooled and acknowledged")
    status = collector_status(config)
    grown = peak["rss"] - baseline
    peak_unacknowledged = peak["unacknowledged"]
    assert status["spool_depth"] >= len(flood) * per_message, status
    assert peak_unacknowledged <= 1000  # the broker's in-flight window (broker/mosquitto.conf)
    assert grown < 48 * MiB, f"RSS grew {grown / MiB:.0f} MiB while InfluxDB was down"

    influxd.start()
    total = (len(flood) + len(warm)) * per_message
    wait_until(lambda: collector_counts(config)["spool_depth"] == 0, 60, "the spool drained")
    wait_until(lambda: stored(influxd, "time > 0") >= total, 30, "every reading stored")
    assert stored(influxd, "time > 0") == total
    assert collector_status(config)["dropped"] == 0
    assert stop_process(collector, 30) == 0


# -- no secret in logs -------------------------------------------------------------------------


def _passwd_file(path: Path, logins: dict[str, str]) -> Path:
    """A mosquitto password file (hashed) made by ``mosquitto_passwd``."""
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd comes with the mosquitto package"
    for index, (user, secret) in enumerate(logins.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([tool, "-b", *create, str(path), user, secret], check=True,
                       capture_output=True)
    return path


def _secret_file(path: Path, secret: str) -> str:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return str(path)


def _fetch(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url)  # noqa: S310 (the test's own loopback servers)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read().decode(errors='replace')}"


@pytest.mark.integration
def test_security_limits_no_secret_in_logs_status_or_traffic(
    tmp_path: Path, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]],
) -> None:
    tag = secrets.token_hex(4)
    secret = {  # every one distinct and unmistakable
        "agent": f"agent-pw-{tag}-Kq3", "agent_wrong": f"agent-wrong-{tag}-Zr8",
        "collector": f"collector-pw-{tag}-Mv1", "collector_wrong": f"collector-wrong-{tag}-Tx5",
        "influx": f"influx-pw-{tag}-Hb6", "influx_wrong": f"influx-wrong-{tag}-Wd2",
        "web_token": f"web-token-{tag}-Ny4Ry4Ny4", "apprise": f"apprise-pw-{tag}-Pc9",
    }
    probe_login = ("probe", f"probe-{tag}")
    hashes = _passwd_file(tmp_path / "passwd", {
        "pi-01": secret["agent"], "pi-02": secret["agent"],
        "collector-a": secret["collector"], "collector-b": secret["collector"],
        probe_login[0]: probe_login[1],
    })
    broker = Mosquitto(tmp_path / "broker", allow_anonymous=False,
                       extra_conf=f"password_file {hashes}\n")
    broker.start()
    influx = Influxd(tmp_path / "influxd-auth", auth_enabled=True)
    influx.start()
    try:
        influx.create_admin("sitewatch", secret["influx"])
        influx.create_database(DB)
        traffic = Probe(broker.host, broker.port, "sitewatch/#", username=probe_login[0],
                        password=probe_login[1])
        web_port, metrics_port = free_port(), free_port()
        good = collector_config(
            broker, influx.url, "collector-a",
            mqtt={"username": "collector-a", "password_file": _secret_file(
                tmp_path / "collector-a.pw", secret["collector"])},
            influx={"username": "sitewatch", "password_file": _secret_file(
                tmp_path / "influx.pw", secret["influx"])},
            metrics={"enabled": True, "port": metrics_port},
            alerting={
                "teams": [{"name": "ops", "members": [{"name": "Ana", "apprise": [
                    f"mailtos://ana:{secret['apprise']}@127.0.0.1:{free_port()}"
                    "?to=ana@example.com"]}]}],
                "routes": [{"levels": ["ops"]}],
                "web": {"enabled": True, "port": web_port, "token_file": _secret_file(
                    tmp_path / "web.token", secret["web_token"])},
            },
        )
        # Wrong broker password and an InfluxDB login InfluxDB refuses.
        bad = collector_config(
            broker, influx.url, "collector-b",
            mqtt={"username": "collector-b", "password_file": _secret_file(
                tmp_path / "collector-b.pw", secret["collector_wrong"])},
            influx={"username": "sitewatch", "password_file": _secret_file(
                tmp_path / "influx-wrong.pw", secret["influx_wrong"])},
        )
        logs = {name: tmp_path / f"{name}.log" for name in
                ("collector-a", "collector-b", "pi-01", "pi-02")}
        procs.append(start_collector(good, logs["collector-a"]))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sitewatch.collector.cli", "run", "--config", str(bad),
             "--log-level", "DEBUG"],
            stdout=logs["collector-b"].open("ab"), stderr=subprocess.STDOUT,
        ))
        agents = {}
        for device, password in (("pi-01", secret["agent"]), ("pi-02", secret["agent_wrong"])):
            agents[device] = write_agent_config(broker.port, device=device, name=f"{device}.yaml",
                                                mqtt={"username": device, "password_file":
                                                      _secret_file(tmp_path / f"{device}.pw",
                                                                   password)})
            procs.append(start_agent(agents[device], logs[device]))

        wait_until(lambda: stored(influx, "device = 'pi-01'") >= 20, 60, "pi-01's readings")
        bad_status = Path(yaml.safe_load(bad.read_text())["state_dir"]) / "status.json"
        wait_until(lambda: bad_status.exists()
                   and json.loads(bad_status.read_text())["influx_error"], 30,
                   "collector-b's InfluxDB login refused")
        wait_until(lambda: "refused" in logs["pi-02"].read_text().lower(), 30,
                   "pi-02's broker login refused")
        wait_until(lambda: "refused" in logs["collector-b"].read_text().lower(), 30,
                   "collector-b's broker login refused")
        outputs = [
            _fetch(f"http://127.0.0.1:{metrics_port}/metrics"),
            _fetch(f"http://127.0.0.1:{web_port}/api/alerts", secret["web_token"]),
            _fetch(f"http://127.0.0.1:{web_port}/api/alerts", secret["web_token"][:-1]),
            _fetch(f"http://127.0.0.1:{web_port}/"),
        ]
        for proc in reversed(procs):  # the agents first, while their collector confirms
            assert stop_process(proc, 30) == 0
        commands = [  # status --json of each, as people read it of two; the agent's check
            [f"sitewatch.{program}.cli", "status", "--config", str(config), *args]
            for config, program, args in (
                (good, "collector", ["--json"]), (bad, "collector", ["--json"]),
                (agents["pi-01"], "agent", ["--json"]), (agents["pi-02"], "agent", ["--json"]),
                (good, "collector", []), (agents["pi-01"], "agent", []))
        ] + [["sitewatch.agent.cli", "check", "--config", str(agents["pi-01"])]]
        running = [subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT) for command in commands]
        outputs += [proc.communicate(timeout=60)[0].decode(errors="replace")
                    for proc in running]
        assert all(proc.returncode == 0 for proc in running[:-1]), outputs
        assert agent_status(agents["pi-01"])["produced"] > 0
        assert collector_status(good)["received"] > 0

        texts = {f"log {name}": path.read_text(errors="replace") for name, path in logs.items()}
        texts |= {f"output {i}": text for i, text in enumerate(outputs)}
        for config in (good, bad):
            state = Path(yaml.safe_load(config.read_text())["state_dir"])
            for name in ("status.json", "deadletter.jsonl"):
                if (state / name).exists():
                    texts[f"{config.stem} {name}"] = (state / name).read_text(errors="replace")
        texts["mqtt"] = "\n".join(m.payload.decode(errors="replace")
                                  for m in traffic.snapshot())
        assert "pi-01" in texts["mqtt"] and "Traceback" not in texts["log collector-a"]
        leaks = [(name, where) for name, value in secret.items()
                 for where, text in texts.items() if value in text]
        assert not leaks, f"secrets found: {leaks}"
        traffic.close()
    finally:
        influx.kill()
        broker.kill()
