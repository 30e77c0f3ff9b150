"""The general anomaly detector on crafted streams: what it flags, what it learns, its state."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sitewatch.collector.detectors import REGISTRY, build_detector
from sitewatch.collector.detectors.anomaly import AnomalyDetector, AnomalyParams
from sitewatch.collector.protocols import Checkpointable, Explaining

START_S = 1_700_000_000.0
DAY_S = 86400.0
ALARM = 0.2  # healthy streams practically never score above it (see the module docstring)


def series(
    days: float, interval_s: float, shape: Callable[[float, random.Random], float], seed: int = 1
) -> Iterator[tuple[float, float]]:
    """(ts_s, value) every ``interval_s`` for ``days``; ``shape(t_s, rng)`` gives the value."""
    rng = random.Random(seed)
    for k in range(int(days * DAY_S / interval_s)):
        t_s = k * interval_s
        yield START_S + t_s, shape(t_s, rng)


def run(detector: AnomalyDetector, points: Iterator[tuple[float, float]]) -> list[float]:
    """Score then learn each point, as the live path does."""
    scores = []
    for ts_s, value in points:
        scores.append(detector.score_one(ts_s, value))
        detector.learn_one(ts_s, value)
    return scores


def noise(t_s: float, rng: random.Random) -> float:
    return 50.0 + rng.gauss(0.0, 1.0)


def daily_cycle(t_s: float, rng: random.Random) -> float:
    return 5.0 + 3.0 * math.sin(2 * math.pi * t_s / DAY_S) + rng.gauss(0.0, 0.3)


def shape_of(state: Any) -> Any:
    """The structure of a state, without its numbers: keys and list lengths."""
    if isinstance(state, dict):
        return {key: shape_of(value) for key, value in state.items()}
    if isinstance(state, list):
        return [shape_of(item) for item in state]
    return type(state).__name__


def test_anomaly_is_registered_checkpointable_and_explaining() -> None:
    detector = build_detector("anomaly")
    assert REGISTRY["anomaly"].params is AnomalyParams
    assert isinstance(detector, AnomalyDetector)
    assert isinstance(detector, Checkpointable)
    assert isinstance(detector, Explaining)


def test_anomaly_scores_zero_while_warming_up() -> None:
    detector = AnomalyDetector(AnomalyParams())
    # Even a wild value scores 0 before two days and 150 readings.
    points = list(series(1.9, 300.0, noise))
    points[-1] = (points[-1][0], 1e6)
    assert max(run(detector, iter(points))) == 0.0


def test_anomaly_spike_scores_high_and_noise_low() -> None:
    interval_s = 300.0
    spike_at = int(4 * DAY_S / interval_s)

    def spiky(t_s: float, rng: random.Random) -> float:
        return noise(t_s, rng) + (12.0 if t_s == spike_at * interval_s else 0.0)

    detector = AnomalyDetector(AnomalyParams())
    scores = run(detector, series(6, interval_s, spiky))
    warm = int(2 * DAY_S / interval_s)
    assert scores[spike_at] > 0.5
    others = scores[warm:spike_at] + scores[spike_at + 1 :]
    assert max(others) < ALARM


def test_anomaly_spike_details_name_the_view_and_range() -> None:
    detector = AnomalyDetector(AnomalyParams())
    run(detector, series(3, 300.0, noise))
    ts_s = START_S + 3 * DAY_S
    score = detector.score_one(ts_s, 80.0)
    details = detector.details()
    assert score == details["score"]
    assert details["view"] == "value"
    assert float(details["reference_high"]) < 80.0
    assert "beyond its recent range" in str(details["message"])


def test_anomaly_works_the_same_at_any_sampling_interval() -> None:
    """Time scales come from timestamps: a sensor read every 2.5 s and a metric sampled every
    5 minutes see the same spike the same way, with the same default parameters."""
    for interval_s in (2.5, 60.0, 300.0, 3600.0):
        spike_s = 7 * DAY_S  # hourly readings need a week for 150 readings of warm-up

        def spiky(t_s: float, rng: random.Random, spike_s: float = spike_s) -> float:
            return noise(t_s, rng) + (12.0 if t_s == spike_s else 0.0)

        detector = AnomalyDetector(AnomalyParams())
        scores = run(detector, series(7.5, interval_s, spiky))
        spike_at = int(spike_s / interval_s)
        warm = int(2 * DAY_S / interval_s) + 1
        assert scores[spike_at] > 0.4, interval_s
        assert max(scores[warm:spike_at]) < ALARM, interval_s


def test_anomaly_level_shift_is_alarmed_then_relearned() -> None:
    interval_s = 300.0
    shift_s = 4 * DAY_S
    late_spike_s = 9 * DAY_S

    def shifted(t_s: float, rng: random.Random) -> float:
        value = noise(t_s, rng) + (10.0 if t_s >= shift_s else 0.0)
        return value + (12.0 if t_s == late_spike_s else 0.0)

    detector = AnomalyDetector(AnomalyParams())
    scores = run(detector, series(10, interval_s, shifted))
    shift_at = int(shift_s / interval_s)
    spike_at = int(late_spike_s / interval_s)
    # The shift is news at once ...
    assert max(scores[shift_at : shift_at + 3]) > 0.5
    # ... then the new level is normal: a day after it, nothing scores but a new spike,
    # which is still caught on top of the new level.
    settled = scores[shift_at + int(DAY_S / interval_s) : spike_at]
    assert max(settled) < ALARM
    assert scores[spike_at] > 0.3


def test_anomaly_daily_cycle_does_not_alarm() -> None:
    for interval_s in (60.0, 300.0):
        detector = AnomalyDetector(AnomalyParams())
        scores = run(detector, series(10, interval_s, daily_cycle))
        assert max(scores) < ALARM, interval_s


def test_anomaly_missing_daily_peak_is_flagged_by_the_seasonal_view() -> None:
    """A day without its afternoon peak stays inside the range, but not inside the profile."""
    interval_s = 300.0
    odd_day = 8

    def cycle_with_a_flat_day(t_s: float, rng: random.Random) -> float:
        if int(t_s // DAY_S) == odd_day:
            return 5.0 + rng.gauss(0.0, 0.3)
        return daily_cycle(t_s, rng)

    detector = AnomalyDetector(AnomalyParams())
    flagged = []
    for ts_s, value in series(10, interval_s, cycle_with_a_flat_day):
        if detector.score_one(ts_s, value) > ALARM:
            flagged.append((ts_s - START_S) // DAY_S)
            assert detector.details()["view"] == "seasonal"
        detector.learn_one(ts_s, value)
    assert flagged and set(flagged) <= {odd_day, odd_day + 1}


def test_anomaly_state_round_trips_through_json_and_continues_identically() -> None:
    points = list(series(9, 300.0, daily_cycle, seed=3))
    points[2000] = (points[2000][0], 40.0)  # something to remember: a spike, an excursion
    half = len(points) // 2
    original = AnomalyDetector(AnomalyParams())
    run(original, iter(points[:half]))
    state = original.get_state()
    text = json.dumps(state)
    assert json.loads(text) == state
    restored = AnomalyDetector(AnomalyParams())
    restored.set_state(json.loads(text))
    assert restored.get_state() == state
    assert run(restored, iter(points[half:])) == run(original, iter(points[half:]))
    assert restored.get_state() == original.get_state()


def test_anomaly_restore_mid_hour_after_score_one_continues_identically() -> None:
    """A checkpoint taken between readings, in the middle of an hour being accumulated."""
    points = list(series(4, 60.0, noise, seed=5))
    cut = len(points) - 17
    original = AnomalyDetector(AnomalyParams())
    run(original, iter(points[:cut]))
    restored = AnomalyDetector(AnomalyParams())
    restored.set_state(json.loads(json.dumps(original.get_state())))
    assert run(restored, iter(points[cut:])) == run(original, iter(points[cut:]))


def test_anomaly_state_size_is_bounded() -> None:
    short = AnomalyDetector(AnomalyParams())
    long = AnomalyDetector(AnomalyParams())
    run(short, series(10_000 * 60.0 / DAY_S, 60.0, daily_cycle))
    run(long, series(100_000 * 60.0 / DAY_S, 60.0, daily_cycle))
    assert short.get_state()["n"] == 10_000
    assert long.get_state()["n"] == 100_000
    assert shape_of(short.get_state()) == shape_of(long.get_state())


def test_anomaly_rejects_a_malformed_state() -> None:
    detector = AnomalyDetector(AnomalyParams())
    run(detector, series(1, 300.0, noise))
    good = detector.get_state()
    for broken in (
        {**good, "version": 99},
        {key: value for key, value in good.items() if key != "env"},
        {**good, "daily": good["daily"][:-1]},  # type: ignore[index]
        {**good, "n": -1},
        {**good, "suppress": "high"},
        {**good, "first_ts": float("nan")},
    ):
        with pytest.raises(ValueError):
            AnomalyDetector(AnomalyParams()).set_state(broken)


def test_anomaly_survives_gaps_repeats_and_missing_values() -> None:
    """Irregular timestamps, a clock step back and non-finite values neither raise nor poison
    the state: the scores stay in [0, 1] and the detector still sees a later spike."""
    detector = AnomalyDetector(AnomalyParams())
    rng = random.Random(9)
    ts_s = START_S
    scores = []
    for k in range(3000):
        ts_s += rng.choice((300.0, 300.0, 600.0, 0.0, -120.0, 7200.0))
        value = float("nan") if k % 97 == 0 else noise(0.0, rng)
        scores.append(detector.score_one(ts_s, value))
        detector.learn_one(ts_s, value)
    assert all(0.0 <= score <= 1.0 for score in scores)
    daily = detector.get_state()["daily"]
    assert isinstance(daily, list) and all(isinstance(v, float) and math.isfinite(v) for v in daily)
    assert detector.score_one(ts_s + 300.0, 90.0) > 0.5


def test_anomaly_first_change_of_a_constant_stream_scores_high() -> None:
    detector = AnomalyDetector(AnomalyParams())
    scores = run(detector, series(3, 300.0, lambda t_s, rng: 45.0))
    assert max(scores) == 0.0
    assert detector.score_one(START_S + 3 * DAY_S, 45.5) > 0.9


def test_anomaly_is_deterministic() -> None:
    first = run(AnomalyDetector(AnomalyParams()), series(5, 300.0, daily_cycle, seed=11))
    second = run(AnomalyDetector(AnomalyParams()), series(5, 300.0, daily_cycle, seed=11))
    assert first == second
