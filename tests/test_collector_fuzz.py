"""Hypothesis throws arbitrary bytes and near-valid payloads at the real collector.

Every bad message must be dead-lettered with its reason (in the log and on the dead-letter
topic), and the good messages interleaved with them must all be stored: a bad message never
stops or slows the good ones. The wire contract itself (``parse_message``) is the oracle for
which fuzzed payloads are bad.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.confirm import is_ack_topic
from sitewatch.collector.lineproto import event_lines, telemetry_lines
from sitewatch.localrun import Influxd, Mosquitto, wait_until
from sitewatch.wire import (
    MAX_PAYLOAD_BYTES,
    EventMessage,
    Message,
    StatusMessage,
    TelemetryMessage,
    WireError,
    encode,
    parse_message,
    topic_for,
)
from tests import wire_strategies
from tests.lineparse import parse_line
from tests.mqtt_probe import Probe
from tests.processes import collector_status, start_collector, stop_process

pytestmark = pytest.mark.integration

DB = "sitewatch"
NOW_MS = int(time.time() * 1000)


def _valid(device: str, seq: int, boot_id: str) -> dict[str, Any]:
    return {
        "v": 1, "site": "fuzz", "device": device, "boot_id": boot_id, "seq": seq,
        "historical": False,
        "readings": [{"sensor": "t1", "ts": NOW_MS + seq, "temperature_c": 4.5,
                      "humidity_pct": 80.0, "quality": "ok"}],
    }


_BAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=20),
    st.sampled_from([float("nan"), float("inf"), 1e308, -1e308, [], {}, "NaN"]),
)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid message with one thing broken (or, sometimes, nothing: still valid)."""
    message = _valid("noise", draw(st.integers(1, 10**6)), "f00dcafe")
    reading = message["readings"][0]
    target = draw(st.sampled_from(["envelope", "reading", "drop", "future", "size", "none"]))
    if target == "envelope":
        message[draw(st.sampled_from(list(message)))] = draw(_BAD_VALUES)
    elif target == "reading":
        reading[draw(st.sampled_from([*reading, "extra_c"]))] = draw(_BAD_VALUES)
    elif target == "drop":
        del message[draw(st.sampled_from(list(message)))]
    elif target == "future":
        reading["ts"] = NOW_MS + 86_400_000
    elif target == "size":
        message["readings"] = [reading] * 2000
    text = json.dumps(message, allow_nan=True)
    return text.encode()


payloads = st.one_of(st.binary(max_size=300), near_valid())


@pytest.fixture
def collector(
    mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    config = tmp_path / "collector.yaml"
    config.write_text(yaml.safe_dump({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "collector-fuzz"},
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influxd.port}", "database": DB,
                   "flush_interval_s": 0.2},
        "state_dir": str(tmp_path / "state"),
        "metrics": {"enabled": False},
    }))
    proc = start_collector(config, tmp_path / "collector.log")
    yield config, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_collector_survives_fuzzing_and_keeps_storing_good_messages(
    mosquitto: Mosquitto, influxd: Influxd, collector: tuple[Path, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    config, proc = collector
    dead_topic = "sitewatch/v1/_collector/deadletter"
    watcher = Probe(mosquitto.host, mosquitto.port, dead_topic)
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    boot_id = secrets.token_hex(8)
    sent = {"good": 0, "bad": 0, "valid_noise": 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(payload=payloads, kind=st.sampled_from(["telemetry", "event", "status"]))
    def publish_pair(payload: bytes, kind: str) -> None:
        topic = f"sitewatch/v1/fuzz/noise/{kind}"
        try:
            parse_message(topic, payload, now_ms=int(time.time() * 1000))
            sent["valid_noise"] += 1
        except WireError:
            sent["bad"] += 1
        publisher.publish(topic, payload, qos=1).wait_for_publish(10)
        sent["good"] += 1
        good = json.dumps(_valid("good", sent["good"], boot_id)).encode()
        publisher.publish("sitewatch/v1/fuzz/good/telemetry", good, qos=1).wait_for_publish(10)

    publish_pair()
    publisher.loop_stop()
    assert sent["bad"] > 50

    def stored_good() -> int:
        rows = influxd.query("SELECT count(temperature_c) FROM environment WHERE device='good'", DB)
        return int(rows[0]["count"]) if rows else 0

    wait_until(lambda: stored_good() == sent["good"], 60, "every good reading stored")
    wait_until(lambda: len(watcher.snapshot()) >= sent["bad"], 30, "every dead letter published")
    assert proc.poll() is None, "the collector died"
    status = collector_status(config)
    assert status["invalid_messages"] == sent["bad"]
    letters = [json.loads(m.payload) for m in watcher.snapshot()]
    assert all(letter["reason"] and letter["source"].startswith("sitewatch/v1/fuzz/")
               for letter in letters)
    log = (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()
    assert len(log) == sent["bad"]
    watcher.close()
    assert stop_process(proc, 30) == 0


# -- a fixed corpus of near-valid messages of every kind, with full accounting -----------------

CORPUS_SIZE = 300
"""Near-valid payloads in the corpus, each followed by a valid message."""

_RECENT = st.integers(NOW_MS - 3_600_000, NOW_MS)  # one InfluxDB shard; never in the future
_STORED_MEASUREMENTS = ("environment", "equipment", "events", "device_health")


def _corpus() -> list[tuple[str, bytes]]:
    """Near-valid payloads (all kinds: telemetry, event, status, skip, ack) interleaved with
    valid messages, for a few devices on two sites. Derandomized: the same corpus every run."""
    messages = wire_strategies.wire_messages(st.sampled_from(["fuzz", "fuzz-b"]),
                             st.sampled_from(["pi-01", "pi-02", "pi-03"]), _RECENT)
    corpus: list[tuple[str, bytes]] = []

    @settings(max_examples=CORPUS_SIZE, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(noise=wire_strategies.near_valid(messages), valid=messages)
    def collect(noise: tuple[str, bytes], valid: Message) -> None:
        corpus.append(noise)
        corpus.append((topic_for(valid), encode(valid)))

    collect()
    corpus.append(("sitewatch/v1/fuzz/pi-01/telemetry", b"[" * 100_000))  # nested too deep
    corpus.append(("sitewatch/v1/fuzz/pi-01/event", b'{"seq": ' + b"9" * 5000 + b"}"))
    return corpus


def _mqtt_text(text: str) -> bool:
    """Whether mosquitto takes ``text`` as a topic: it disconnects a client that publishes
    to one with a control character or a non-character (and paho would send it again)."""
    return not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xFDD0 <= ord(c) <= 0xFDEF
        or ord(c) & 0xFFFE == 0xFFFE or c in "+#"
        for c in text
    )


def _deliverable(topic: str, payload: bytes) -> bool:
    """Publishable, matched by the collector's ``sitewatch/v1/+/+/+`` and under the broker's
    ``message_size_limit`` (a bigger one never reaches the collector)."""
    levels = topic.split("/")
    return (
        len(levels) == 5 and levels[:2] == ["sitewatch", "v1"] and all(levels)
        and _mqtt_text(topic) and len(payload) <= MAX_PAYLOAD_BYTES
    )


def _expected_points(valid: list[Message]) -> tuple[set[tuple[Any, ...]], int]:
    """The points the valid messages make, by identity (measurement, tags, time: a later
    point with the same identity overwrites an earlier one), taking births in order as the
    collector does; and how many ``device_health`` points are stamped with the collector's
    own receive time (health without a ``ts``, in a message without readings)."""
    catalog = SensorCatalog()
    points: set[tuple[Any, ...]] = set()
    floating = 0
    for message in valid:
        if isinstance(message, StatusMessage):
            catalog.update(message)
            continue
        if isinstance(message, TelemetryMessage):
            lines = telemetry_lines(message, catalog, received_ms=0)
            if message.health is not None and message.health.ts is None and not message.readings:
                floating += 1
                lines = lines[:-1]
        elif isinstance(message, EventMessage):
            lines = event_lines(message, catalog)
        else:
            continue  # skip and ack: nothing stored
        for line in lines:
            measurement, tags, _, ts = parse_line(line)
            points.add((measurement, tuple(sorted(tags.items())), ts))
    return points, floating


def _stored_points(influxd: Influxd, measurement: str) -> int:
    series = influxd.series(f'SELECT * FROM "{measurement}" GROUP BY *', DB)
    return sum(len(s.get("values", [])) for s in series)


def test_collector_fuzz_corpus_every_bad_one_dead_lettered_every_good_one_stored(
    mosquitto: Mosquitto, influxd: Influxd, collector: tuple[Path, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    config, proc = collector
    corpus = [(topic, payload) for topic, payload in _corpus() if _deliverable(topic, payload)]
    valid: list[Message] = []
    invalid = 0
    for topic, payload in corpus:  # the contract decides which are bad
        try:
            valid.append(parse_message(topic, payload, now_ms=int(time.time() * 1000)))
        except WireError:
            if payload or not is_ack_topic(topic):  # an empty ack: a cleared confirmation
                invalid += 1
    assert invalid >= CORPUS_SIZE // 2 and len(valid) >= CORPUS_SIZE

    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-corpus")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    sent = [publisher.publish(topic, payload, qos=1) for topic, payload in corpus]  # one batch
    deadline = time.monotonic() + 60
    for info in sent:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
    assert all(info.is_published() for info in sent), "the broker did not take them all"
    publisher.loop_stop()
    publisher.disconnect()

    wait_until(lambda: proc.poll() is not None
               or collector_status(config)["invalid_messages"] >= invalid, 60,
               f"{invalid} invalid messages counted")
    assert proc.poll() is None, "the collector died: " + (tmp_path / "collector.log").read_text(
        errors="replace")[-3000:]
    points, floating = _expected_points(valid)
    expected = {m: sum(p[0] == m for p in points) for m in _STORED_MEASUREMENTS}
    # Health points stamped on receipt: two from one device in one millisecond are one point.
    expected["device_health"] += min(floating, 1)
    wait_until(
        lambda: all(_stored_points(influxd, m) >= n for m, n in expected.items()), 60,
        f"the valid messages' points in InfluxDB ({expected})",
    )
    assert proc.poll() is None, "the collector died"
    stored = {m: _stored_points(influxd, m) for m in _STORED_MEASUREMENTS}
    assert stored["device_health"] - expected["device_health"] <= floating - min(floating, 1)
    stored["device_health"] = expected["device_health"]
    assert stored == expected  # nothing lost, nothing extra
    status = collector_status(config)
    assert status["invalid_messages"] == invalid
    letters = [json.loads(line) for line in
               (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()]
    assert len(letters) == invalid == status["dead_lettered"]  # none from InfluxDB: all stored
    assert all(letter["reason"] and letter["source"] != "influx" for letter in letters)
    assert stop_process(proc, 30) == 0
