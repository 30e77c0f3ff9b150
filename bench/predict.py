"""Predictive alerts on the simulator's fault scenarios, 30 simulated days per sensor.

Each scenario is one simulated sensor (``sitewatch.agent.sensors.sim_climate`` rooms, and
compressor or door contacts from ``sim_equipment.PinSchedule`` through the agent's own
``EquipmentCounters``), read every ``--interval-s`` (default 60 s) for 30 days, with its
fault starting on day 10. Readings go through the collector's live detection path
(``Detection``: default rules plus the profile rule for that kind of equipment), with
``tick`` called after every reading as the collector does each second.

Prints per fault scenario the first alert of the detector that should catch it, and its
lead time: before the real breach (the first reading past the limit) for the slow cooling
failure, after the fault's start for the others. For healthy scenarios (no fault) it prints
every alert, as false alerts per sensor-week. Targets: slow cooling failure predicted
≥ 30 min before the crossing; duty drift flagged within 24 h of its start; short-cycling
within 1 h; a stuck sensor within 10 intervals; ≤ 0.1 false alerts per sensor-week.

The simulator has no duty-drift fault, so that scenario's compressor is driven here: its
on-times lengthen linearly from the normal ~50 % duty to 85 % over three days.

    .venv/bin/python bench/predict.py [--days 30] [--interval-s 60]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.agent.equipment import EquipmentCounters
from sitewatch.agent.sensors.sim_climate import ClimateModel
from sitewatch.agent.sensors.sim_equipment import PinSchedule
from sitewatch.agent.sensors.sim_faults import FaultConfig
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision
from sitewatch.collector.detection import Detection
from sitewatch.collector.rules import DetectionConfig
from sitewatch.wire import TelemetryMessage

START_WALL_S = 1_790_000_000.0 - 1_790_000_000.0 % 86400  # a midnight UTC
FAULT_DAY = 10
DAY_S = 86400.0


@dataclass
class Scenario:
    name: str
    kind: str  # climate model or "compressor" / "door"
    profile: str
    faults: list[dict[str, Any]] = field(default_factory=list)
    expect: str | None = None  # the detector that should catch the fault
    target: str = ""
    duty_drift: bool = False


SCENARIOS = [
    Scenario("slow cooling failure", "cold_room", "cold_room",
             [{"kind": "cooling_failure", "rate_c_per_h": 0.5}], "forecast",
             "predicted >= 30 min before 8 °C is crossed"),
    Scenario("compressor duty drift", "compressor", "hvac_compressor", [], "duty_drift",
             "flagged within 24 h of the drift's start", duty_drift=True),
    Scenario("compressor short-cycling", "compressor", "hvac_compressor",
             [{"kind": "short_cycling"}], "short_cycling", "within 1 h"),
    Scenario("stuck sensor", "cold_room", "cold_room", [{"kind": "stuck"}], "flatline",
             "within 10 intervals"),
    Scenario("healthy cold room", "cold_room", "cold_room"),
    Scenario("healthy freezer", "freezer", "freezer"),
    Scenario("healthy server room", "server_room", "server_room"),
    Scenario("healthy compressor", "compressor", "hvac_compressor"),
    Scenario("healthy door", "door", "door"),
]


def _climate(scenario: Scenario, seed: int, days: float, interval_s: float
             ) -> Iterator[tuple[float, dict[str, float]]]:
    faults = [FaultConfig.model_validate({**f, "start_s": FAULT_DAY * DAY_S})
              for f in scenario.faults]
    model = ClimateModel(scenario.kind, seed, faults)
    steps = int(days * DAY_S / interval_s)
    for step in range(steps):
        elapsed = step * interval_s
        yield START_WALL_S + elapsed, model.sample(elapsed, START_WALL_S + elapsed)


def _drifting_edges(seed: int, days: float) -> Iterator[tuple[float, bool]]:
    """Compressor cycles whose duty rises from ~50 % to 85 % over 3 days from FAULT_DAY."""
    rng = random.Random(seed)
    t, active = 0.0, False
    end = days * DAY_S
    while t < end:
        progress = min(1.0, max(0.0, (t - FAULT_DAY * DAY_S) / (3 * DAY_S)))
        duty = 0.5 + 0.35 * progress
        cycle_s = rng.uniform(1080.0, 1800.0)
        hold_s = cycle_s * (duty if active else 1.0 - duty)
        t += hold_s
        active = not active
        yield t, active


def _contact(scenario: Scenario, seed: int, days: float, interval_s: float
             ) -> Iterator[tuple[float, dict[str, float]]]:
    faults = [FaultConfig.model_validate({**f, "start_s": FAULT_DAY * DAY_S})
              for f in scenario.faults]
    if scenario.duty_drift:
        edges: Iterator[tuple[float, bool]] = _drifting_edges(seed, days)
    else:
        schedule = PinSchedule(scenario.kind, seed, faults, start_s=0.0)
        edges = iter(schedule.edges_until(days * DAY_S))
    counters = EquipmentCounters()
    counters.record(False, 0.0)
    pending = next(edges, None)
    field_name = "open" if scenario.kind == "door" else "running"
    steps = int(days * DAY_S / interval_s)
    for step in range(steps):
        now = step * interval_s
        while pending is not None and pending[0] <= now:
            counters.record(pending[1], pending[0])
            pending = next(edges, None)
        fields: dict[str, float] = {field_name: float(bool(counters.state))}
        if field_name == "running":
            fields.update(counters.snapshot(now))
        yield START_WALL_S + now, fields


def _run(scenario: Scenario, seed: int, days: float, interval_s: float) -> list[Decision]:
    config = DetectionConfig.model_validate(
        {"rules": [{"name": scenario.profile, "profile": scenario.profile}]}
    )
    decisions: list[Decision] = []
    detection = Detection(config, SensorCatalog(), on_decision=decisions.append)
    source: Callable[..., Iterator[tuple[float, dict[str, float]]]] = (
        _contact if scenario.kind in ("compressor", "door") else _climate
    )
    for seq, (wall_s, fields) in enumerate(source(scenario, seed, days, interval_s), 1):
        reading: dict[str, Any] = {"sensor": "s", "ts": int(wall_s * 1000), "quality": "ok"}
        for name, value in fields.items():
            reading[name] = bool(value) if name in ("running", "open") else value
        detection.observe(TelemetryMessage.model_validate_json(json.dumps(
            {"site": "bench", "device": "pi", "boot_id": "b0b0b0b0", "seq": seq,
             "readings": [reading]})))
        detection.tick(wall_s + interval_s / 2)
    return decisions


def _breach_s(seed: int, days: float, interval_s: float, limit_c: float) -> float | None:
    scenario = SCENARIOS[0]
    for wall_s, fields in _climate(scenario, seed, days, interval_s):
        if wall_s >= START_WALL_S + FAULT_DAY * DAY_S and fields["temperature_c"] > limit_c:
            return wall_s
    return None


def _hm(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    return f"{sign}{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} m"


def main() -> int:
    parser = argparse.ArgumentParser(description="predictive alerts on simulated faults")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=2, help="sensors per scenario")
    args = parser.parse_args()
    fault_start = START_WALL_S + FAULT_DAY * DAY_S
    print(f"{args.days:.0f} simulated days per sensor, a reading every {args.interval_s:.0f} s,"
          f" {args.seeds} sensors per scenario, faults start on day {FAULT_DAY}")
    false_alerts = 0
    sensor_weeks = 0.0
    by_detector: Counter[str] = Counter()
    for scenario in SCENARIOS:
        for seed in range(1, args.seeds + 1):
            decisions = [d for d in _run(scenario, seed, args.days, args.interval_s)
                         if d.verdict == "fire"]
            if scenario.expect is None:
                false_alerts += len(decisions)
                sensor_weeks += args.days / 7.0
                by_detector.update(f"{d.rule}/{d.detector}" for d in decisions)
                first = ", ".join(
                    f"{d.rule}/{d.detector} day {(d.ts_ms / 1000 - START_WALL_S) / DAY_S:.1f}"
                    for d in decisions[:4]
                )
                print(f"  {scenario.name:28} seed {seed}: {len(decisions)} alerts {first}")
                continue
            before = [d for d in decisions if d.ts_ms / 1000 < fault_start]
            false_alerts += len(before)
            sensor_weeks += FAULT_DAY / 7.0
            by_detector.update(f"{d.rule}/{d.detector}" for d in before)
            caught = [d for d in decisions
                      if d.detector == scenario.expect and d.ts_ms / 1000 >= fault_start]
            if not caught:
                print(f"{scenario.name:30} seed {seed}: NOT CAUGHT by {scenario.expect} "
                      f"(target: {scenario.target})")
                continue
            first_s = caught[0].ts_ms / 1000
            if scenario.expect == "forecast":
                breach = _breach_s(seed, args.days, args.interval_s, 8.0)
                lead = (breach - first_s) if breach is not None else float("nan")
                print(f"{scenario.name:30} seed {seed}: forecast alert {_hm(lead)} before the "
                      f"crossing ({caught[0].message}); target: {scenario.target}")
            else:
                delay = first_s - fault_start
                print(f"{scenario.name:30} seed {seed}: {scenario.expect} after {_hm(delay)} "
                      f"({delay / args.interval_s:.0f} intervals); target: {scenario.target}")
    rate = false_alerts / sensor_weeks if sensor_weeks else 0.0
    print(f"false alerts on healthy data: {false_alerts} in {sensor_weeks:.1f} sensor-weeks = "
          f"{rate:.3f} per sensor-week (target <= 0.1); by rule/detector: {dict(by_detector)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
