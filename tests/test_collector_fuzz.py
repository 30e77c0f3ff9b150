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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from sitewatch.localrun import Influxd, Mosquitto, wait_until
from sitewatch.wire import WireError, parse_message
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
