"""Detection in its own process gives what inline detection gives, in order, survives the
child's death (from the last checkpoint, the loss counted) and checkpoints on stop."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision
from sitewatch.collector.detection import Detection
from sitewatch.collector.detection_worker import DetectionWorker
from sitewatch.collector.rules import DetectionConfig
from sitewatch.localrun import wait_until
from sitewatch.wire import StatusMessage, TelemetryMessage

T0_S = 1_795_464_000.0
DEADLINE_S = 60.0
RULES: dict[str, Any] = {
    "rules": [{"name": "cold-room", "match": {"labels": {"zone": "cold"}},
               "profile": "cold_room"}],
}  # fmt: skip


def _status() -> bytes:
    return json.dumps({
        "site": "plant-a", "device": "pi-01", "boot_id": "b1b1b1b1", "seq": 0,
        "state": "online", "ts": int(T0_S * 1000), "agent_version": "test",
        "sensors": [{"id": "room", "driver": "simulated", "interval_s": 60.0,
                     "labels": {"zone": "cold"}, "fields": ["temperature_c", "humidity_pct"]}],
    }).encode()  # fmt: skip


def _telemetry(seq: int, ts_s: float, temperature_c: float) -> TelemetryMessage:
    """The room's reading and a compressor's: booleans, a duty cycle, and now and then a
    reading without values (quality bad), which ``silence`` must not count."""
    ts_ms = int(ts_s * 1000)
    compressor = (
        {"sensor": "compressor", "ts": ts_ms, "quality": "bad"} if seq % 7 == 0 else
        {"sensor": "compressor", "ts": ts_ms, "quality": "ok", "running": seq % 4 < 2,
         "duty_cycle_pct": 40.0 + seq % 5}
    )  # fmt: skip
    return TelemetryMessage.model_validate_json(json.dumps({
        "site": "plant-a", "device": "pi-01", "boot_id": "b1b1b1b1", "seq": seq,
        "readings": [{"sensor": "room", "ts": ts_ms, "quality": "ok",
                      "temperature_c": temperature_c, "humidity_pct": 80.0 + seq % 3},
                     compressor],
    }))  # fmt: skip


def _values() -> list[float]:
    # Normal, then a fault above 8 °C long enough to fire, then back.
    return [3.0 + 0.1 * (i % 5) for i in range(60)] + [9.0] * 20 + [3.0] * 10


class _Collected:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.decisions: list[Decision] = []
        self.lock = threading.Lock()

    def on_lines(self, lines: list[str]) -> None:
        with self.lock:
            self.lines += lines

    def on_decision(self, decision: Decision) -> None:
        with self.lock:
            self.decisions.append(decision)


def _known_catalog() -> SensorCatalog:
    """The collector's persisted catalog, as after the device's status message."""
    catalog = SensorCatalog()
    catalog.update(StatusMessage.model_validate_json(_status()))
    return catalog


def _worker(
    tmp_path: Path, collected: _Collected, catalog: SensorCatalog | None = None
) -> DetectionWorker:
    return DetectionWorker(
        DetectionConfig.model_validate(RULES), tmp_path / "detection.json",
        catalog or SensorCatalog(),
        write_decisions=True, on_lines=collected.on_lines, on_decision=collected.on_decision,
    )  # fmt: skip


def test_detection_worker_gives_what_inline_detection_gives(tmp_path: Path) -> None:
    catalog = SensorCatalog()
    inline_decisions: list[Decision] = []
    inline = Detection(DetectionConfig.model_validate(RULES), catalog,
                       on_decision=inline_decisions.append, write_decisions=True)
    catalog.update(StatusMessage.model_validate_json(_status()))
    inline_lines: list[str] = []
    collected = _Collected()
    worker = _worker(tmp_path, collected)
    worker.start()
    try:
        worker.status(_status())
        for i, value in enumerate(_values()):
            message = _telemetry(i + 1, T0_S + 60 * i, value)
            inline_lines += inline.observe(message)
            worker.telemetry(message)
        tick_s = T0_S + 60 * len(_values()) + 3600  # an hour of silence
        inline_lines += inline.tick(tick_s)
        worker.tick(tick_s)
        assert worker.wait_idle(DEADLINE_S)
    finally:
        worker.stop()
    assert inline_decisions, "the crafted fault must fire inline"
    assert collected.lines == inline_lines
    assert collected.decisions == inline_decisions
    assert worker.scored_values == inline.scored_values
    assert worker.decisions == inline.decisions
    # Labels from the status message reached the child: its points carry them.
    assert any("zone=cold" in line for line in collected.lines)


def test_detection_worker_checkpoints_on_stop_and_restores_at_start(tmp_path: Path) -> None:
    collected = _Collected()
    first = _worker(tmp_path, collected)
    first.start()
    first.status(_status())
    for i, value in enumerate(_values()[:70]):  # 10 readings above 8 °C: pending, not fired
        first.telemetry(_telemetry(i + 1, T0_S + 60 * i, value))
    first.stop()
    state = json.loads((tmp_path / "detection.json").read_text())
    assert state["streams"], "stop must checkpoint the streams"
    assert not [d for d in collected.decisions if d.verdict == "fire"]

    second = _worker(tmp_path, collected, _known_catalog())
    second.start()
    try:
        for i, value in enumerate(_values()[70:], start=70):
            second.telemetry(_telemetry(i + 1, T0_S + 60 * i, value))
        assert second.wait_idle(DEADLINE_S)
    finally:
        second.stop()
    fired = [d for d in collected.decisions if d.verdict == "fire"]
    # The for-duration (600 s) began before the restart: fired 10 readings in, at reading 70.
    assert len(fired) == 1 and fired[0].ts_ms == int((T0_S + 60 * 70) * 1000)


def test_detection_worker_replaced_when_killed_and_the_loss_counted(tmp_path: Path) -> None:
    collected = _Collected()
    # The collector's catalog, kept by ingest: a new child starts from it.
    worker = _worker(tmp_path, collected, _known_catalog())
    worker.start()
    try:
        worker.status(_status())
        worker.telemetry(_telemetry(1, T0_S, 3.0))
        assert worker.wait_idle(DEADLINE_S)  # checkpointed: the sensor is known
        pid = worker._process.pid if worker._process is not None else None
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: worker.restarts == 1 and worker.alive, DEADLINE_S,
                   "a new detection process")
        for i, value in enumerate(_values()[1:], start=1):
            worker.telemetry(_telemetry(i + 1, T0_S + 60 * i, value))
        assert worker.wait_idle(DEADLINE_S)
        assert worker.alive
    finally:
        worker.stop()
    assert worker.lost_messages == 0  # nothing was in flight when it died
    # The new child started from the checkpoint and the catalog, and caught the fault.
    assert [d.verdict for d in collected.decisions] == ["fire", "resolve"]
