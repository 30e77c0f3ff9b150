"""Detection cost: the default detector set on 10,000 streams, per reading.

Builds the collector's live detection path (``sitewatch.collector.detection.Detection`` with
the default rules) for 1,000 devices × 10 sensors, each sending ``temperature_c``: 10,000
climate streams (plus the per-sensor ``reading`` stream that ``silence`` watches). Readings
are realistic (a cold room's sawtooth with noise, a few spikes and stuck sensors) and are
built before timing, as ingest hands them over already parsed. Then it times, in this
process, side by side:

- **detection**: ``Detection.observe`` over every message (score, learn, decide, lines);
- **baseline**: the cheapest useful detector, an exponentially weighted mean and variance
  per stream (a z-score), in the same loop shape, keyed the same way;

and prints the mean µs per reading of each, their ratio, and the cost of each detector of
the default set alone. Target: detection ≤ 10 µs per reading.

    .venv/bin/python bench/detect.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.detection import Detection
from sitewatch.collector.rules import DEFAULT_RULES, DetectionConfig
from sitewatch.wire import TelemetryMessage

DEVICES = 1000
SENSORS_PER_DEVICE = 10
INTERVAL_S = 10.0
START_S = 1_790_000_000.0


def _messages(steps: int, seed: int = 7) -> list[TelemetryMessage]:
    rng = random.Random(seed)
    messages = []
    for step in range(steps):
        ts_s = START_S + step * INTERVAL_S
        for d in range(DEVICES):
            readings = []
            for s in range(SENSORS_PER_DEVICE):
                phase = (d * 7 + s * 3) % 120
                value = 3.0 + math.sin((step + phase) / 12.0) + rng.gauss(0.0, 0.1)
                if (d + s) % 97 == 0:
                    value = 3.3  # a stuck sensor
                elif rng.random() < 0.001:
                    value += 15.0  # a spike
                readings.append({"sensor": f"s{s}", "ts": int(ts_s * 1000),
                                 "temperature_c": round(value, 2), "quality": "ok"})
            messages.append(TelemetryMessage.model_validate_json(json.dumps({
                "site": "bench", "device": f"pi-{d:04d}", "boot_id": "b007b007",
                "seq": step + 1, "readings": readings,
            })))
    return messages


def _time_detection(config: DetectionConfig, messages: list[TelemetryMessage]) -> float:
    detection = Detection(config, SensorCatalog())
    started = time.perf_counter()
    for message in messages:
        detection.observe(message)
    return time.perf_counter() - started


def _time_baseline(messages: list[TelemetryMessage]) -> float:
    state: dict[tuple[str, str, str, str], list[float]] = {}
    alpha = 0.05
    flagged = 0
    started = time.perf_counter()
    for message in messages:
        site, device = message.site, message.device
        for reading in message.readings:
            value = reading.temperature_c
            if value is None:
                continue
            key = (site, device, reading.sensor, "temperature_c")
            s = state.get(key)
            if s is None:
                state[key] = [value, 0.0]
                continue
            mean, var = s
            diff = value - mean
            if var > 0 and diff * diff > 9.0 * var:
                flagged += 1
            s[0] = mean + alpha * diff
            s[1] = (1 - alpha) * (var + alpha * diff * diff)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description="detection cost per reading")
    parser.add_argument("--steps", type=int, default=30, help="readings per stream")
    args = parser.parse_args()
    messages = _messages(args.steps)
    readings = sum(len(m.readings) for m in messages)
    streams = DEVICES * SENSORS_PER_DEVICE
    default = DetectionConfig()
    baseline_s = _time_baseline(messages)
    detection_s = _time_detection(default, messages)
    per = 1e6 / readings
    print(f"{streams} streams, {readings} readings ({args.steps} per stream), default rules: "
          + ", ".join(f"{r['name']} ({'/'.join(r['detectors'])})" for r in DEFAULT_RULES))
    print(f"{'':34} {'µs per reading':>15}")
    print(f"{'detection (default set)':34} {detection_s * per:15.2f}")
    print(f"{'baseline (EW z-score, same loop)':34} {baseline_s * per:15.2f}")
    print(f"{'ratio detection/baseline':34} {detection_s / baseline_s:15.2f}")
    for rule in DEFAULT_RULES:
        for detector in rule["detectors"]:
            alone = DetectionConfig.model_validate({
                "defaults": False,
                "rules": [{"name": "alone", "fields": rule["fields"],
                           "detectors": {detector: {}}}],
            })
            print(f"{'  ' + detector + ' alone':34} "
                  f"{_time_detection(alone, messages) * per:15.2f}")
    target = detection_s * per <= 10.0
    print(f"target: <= 10 µs per reading: {'met' if target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
