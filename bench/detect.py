"""Detection cost: the default detector set on 10,000 streams, per reading.

Builds the collector's live detection path (``sitewatch.collector.detection.Detection`` with
the default rules) for 1,000 devices × 10 sensors, each sending ``temperature_c``: 10,000
climate streams (plus the per-sensor ``reading`` stream that ``silence`` watches). Readings
(a daily-like cycle with noise, a few spikes and stuck sensors, every 20 min so the anomaly
score's two-day warm-up passes) are built outside the timed part, as ingest hands them over
already parsed. The steady state is timed after every stream has warmed up; the warm-up
(building 10,000 streams' detectors) is printed apart. Side by side, in this process:

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
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.detection import Detection
from sitewatch.collector.rules import DEFAULT_RULES, DetectionConfig
from sitewatch.wire import TelemetryMessage

DEVICES = 1000
SENSORS_PER_DEVICE = 10
INTERVAL_S = 1200.0
START_S = 1_790_000_000.0


def _step_messages(step: int, rng: random.Random) -> list[TelemetryMessage]:
    ts_s = START_S + step * INTERVAL_S
    messages = []
    for d in range(DEVICES):
        readings = []
        for s in range(SENSORS_PER_DEVICE):
            phase = (d * 7 + s * 3) % 72
            value = 3.0 + math.sin(2 * math.pi * (step + phase) / 72) + rng.gauss(0.0, 0.1)
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


def _time_both(
    detection: Detection | None, steps: int, warmup_steps: int, seed: int = 7
) -> tuple[float, float, int]:
    """Seconds spent in ``observe`` (or the baseline) during warm-up and after it, and the
    readings after it. Messages are built outside the timed part, one step at a time."""
    rng = random.Random(seed)
    state: dict[tuple[str, str, str, str], list[float]] = {}
    warm_s = steady_s = 0.0
    readings = 0
    for step in range(steps):
        messages = _step_messages(step, rng)
        started = time.perf_counter()
        if detection is not None:
            for message in messages:
                detection.observe(message)
        else:
            _baseline(messages, state)
        spent = time.perf_counter() - started
        if step < warmup_steps:
            warm_s += spent
        else:
            steady_s += spent
            readings += sum(len(m.readings) for m in messages)
    return warm_s, steady_s, readings


def _baseline(messages: list[TelemetryMessage], state: dict[Any, list[float]]) -> int:
    """An exponentially weighted mean and variance per stream: a z-score."""
    alpha = 0.05
    flagged = 0
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
    return flagged


def main() -> int:
    parser = argparse.ArgumentParser(description="detection cost per reading")
    parser.add_argument("--steps", type=int, default=200, help="readings per stream")
    parser.add_argument("--warmup-steps", type=int, default=160,
                        help="readings per stream before timing the steady state")
    args = parser.parse_args()
    if args.steps <= args.warmup_steps:
        parser.error(f"--steps ({args.steps}) must exceed --warmup-steps ({args.warmup_steps}):"
                     " the steady state is timed on the readings after the warm-up")
    logging.disable(logging.WARNING)  # the default rules do fire on the stuck sensors
    streams = DEVICES * SENSORS_PER_DEVICE
    print(f"{streams} streams, a reading every {INTERVAL_S / 60:.0f} min, {args.steps} per "
          f"stream ({args.warmup_steps} to warm up: the anomaly score needs 150 and 2 days); "
          "default rules: "
          + ", ".join(f"{r['name']} ({'/'.join(r['detectors'])})" for r in DEFAULT_RULES))
    _, base_s, readings = _time_both(None, args.steps, args.warmup_steps)
    warm_s, steady_s, _ = _time_both(Detection(DetectionConfig(), SensorCatalog()),
                                     args.steps, args.warmup_steps)
    per = 1e6 / readings
    warm_readings = streams * args.warmup_steps
    print(f"{'':40} {'µs per reading':>15}")
    print(f"{'detection (default set), steady state':40} {steady_s * per:15.2f}")
    print(f"{'detection, warm-up (streams built)':40} {warm_s * 1e6 / warm_readings:15.2f}")
    print(f"{'baseline (EW z-score, same loop)':40} {base_s * per:15.2f}")
    print(f"{'ratio detection/baseline':40} {steady_s / base_s:15.2f}")
    for rule in DEFAULT_RULES:
        for detector in rule["detectors"]:
            alone = DetectionConfig.model_validate({
                "defaults": False,
                "rules": [{"name": "alone", "fields": rule["fields"],
                           "detectors": {detector: {}}}],
            })
            _, alone_s, _ = _time_both(Detection(alone, SensorCatalog()), args.steps,
                                       args.warmup_steps)
            print(f"{'  ' + detector + ' alone (with the engine)':40} {alone_s * per:15.2f}")
    met = steady_s * per <= 10.0
    print(f"target: <= 10 µs per reading: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
