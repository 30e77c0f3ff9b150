"""Each rule detector on crafted streams: it fires when it should, stays quiet when it should,
and a checkpoint taken mid-way (a for-duration pending, a run in progress) continues as if
nothing had happened."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from pydantic import ValidationError

from sitewatch.collector.detectors.condensation import Condensation, CondensationParams
from sitewatch.collector.detectors.door_open import DoorOpen, DoorOpenParams
from sitewatch.collector.detectors.duty_drift import DutyDrift, DutyDriftParams
from sitewatch.collector.detectors.flatline import Flatline, FlatlineParams
from sitewatch.collector.detectors.forecast import Forecast, ForecastParams
from sitewatch.collector.detectors.plausibility import Plausibility, PlausibilityParams
from sitewatch.collector.detectors.rate_of_change import RateOfChange, RateOfChangeParams
from sitewatch.collector.detectors.service_interval import (
    ServiceInterval,
    ServiceIntervalParams,
)
from sitewatch.collector.detectors.short_cycling import ShortCycling, ShortCyclingParams
from sitewatch.collector.detectors.silence import Silence, SilenceParams
from sitewatch.collector.detectors.threshold import Threshold, ThresholdParams

T0_S = 1_795_464_000.0
DAY_S = 86400.0

Points = list[tuple[float, float]]


def feed(detector: Any, points: Iterable[tuple[float, float]]) -> list[float]:
    """Scores of each point, scored before it is learned (as the engine does)."""
    scores = []
    for ts, value in points:
        scores.append(detector.score_one(ts, value))
        detector.learn_one(ts, value)
    return scores


def restored(detector: Any, factory: Callable[[], Any]) -> Any:
    """A fresh detector from ``factory`` given ``detector``'s state through JSON text."""
    clone = factory()
    clone.set_state(json.loads(json.dumps(detector.get_state())))
    return clone


def first(scores: list[float], points: Points, at_least: float = 1.0) -> float | None:
    """The time of the first point whose score reached ``at_least``."""
    return next((ts for (ts, _), s in zip(points, scores, strict=True) if s >= at_least), None)


def alerts(scores: list[float]) -> int:
    """How many times the score went up (alert episodes, as a policy would count them)."""
    return sum(1 for before, after in itertools.pairwise(scores) if after > before)


def minutes(values: Iterable[float], start_s: float = T0_S, step_s: float = 60.0) -> Points:
    return [(start_s + i * step_s, v) for i, v in enumerate(values)]


# --- threshold ---------------------------------------------------------------------------


def test_threshold_fires_after_for_duration_and_clears_with_hysteresis() -> None:
    detector = Threshold(ThresholdParams(above=8.0, clear_above=7.5, for_s=600))
    points = minutes([7.0] * 5 + [8.5] * 15 + [7.8] * 5 + [7.4] * 5)
    scores = feed(detector, points)
    assert scores[:15] == [0.0] * 15  # above since minute 5, for_s not yet reached
    assert scores[15:25] == [1.0] * 10  # 10 minutes held, then 7.8 stays above the clear level
    assert scores[25:] == [0.0] * 5


def test_threshold_hovering_at_the_limit_does_not_flap() -> None:
    detector = Threshold(ThresholdParams(above=8.0, clear_above=7.5))
    scores = feed(detector, minutes([7.9, 8.1] * 30))
    assert scores[0] == 0.0 and scores[1:] == [1.0] * 59
    without = Threshold(ThresholdParams(above=8.0))
    assert feed(without, minutes([7.9, 8.1] * 30)) == [0.0, 1.0] * 30


def test_threshold_pending_restarts_when_the_value_comes_back() -> None:
    detector = Threshold(ThresholdParams(above=8.0, for_s=600))
    points = minutes([8.5] * 8 + [7.0] + [8.5] * 12)
    scores = feed(detector, points)
    assert first(scores, points) == points[19][0]  # 10 minutes after the second start


def test_threshold_below_side_and_details() -> None:
    detector = Threshold(ThresholdParams(below=-25.0, clear_below=-24.0, field="temperature_c"))
    scores = feed(detector, minutes([-20.0, -26.0, -24.5, -23.0]))
    assert scores == [0.0, 1.0, 1.0, 0.0]
    details = detector.details()
    assert details["message"] == "back to normal: -23 °C (below -25 °C clears over -24 °C)"


def test_threshold_restore_mid_pending_keeps_counting() -> None:
    params = ThresholdParams(above=8.0, for_s=600)
    points = minutes([7.0] * 3 + [8.4] * 20)
    straight = feed(Threshold(params), points)
    detector = Threshold(params)
    feed(detector, points[:9])  # above for 6 minutes: pending
    assert detector.details()["held_s"] == 300.0
    clone = restored(detector, lambda: Threshold(params))
    assert feed(clone, points[9:]) == straight[9:]
    assert first(straight, points) == points[13][0]


def test_threshold_params_reject_nonsense() -> None:
    with pytest.raises(ValidationError, match=r"clear_above .* must be at or below above"):
        ThresholdParams(above=8.0, clear_above=8.5)
    with pytest.raises(ValidationError, match=r"clear_below .* must be at or above below"):
        ThresholdParams(below=0.0, clear_below=-1.0)
    with pytest.raises(ValidationError, match="at least one limit"):
        ThresholdParams()
    with pytest.raises(ValidationError, match="alarm on both sides"):
        ThresholdParams(above=5.0, below=6.0)
    with pytest.raises(ValidationError, match="for_s"):
        ThresholdParams(above=5.0, for_s=-1)
    with pytest.raises(ValidationError, match="finite number"):
        ThresholdParams(above=math.inf)


# --- condensation ------------------------------------------------------------------------


def test_condensation_needs_a_sustained_small_margin_and_clears_above_the_clear_margin() -> None:
    detector = Condensation(CondensationParams(margin_c=2.0, clear_margin_c=3.0, for_s=600))
    margins = [4.0] * 5 + [1.5] * 5 + [2.5] + [1.5] * 12 + [2.8] * 3 + [3.2] * 2
    points = minutes(margins)
    scores = feed(detector, points)
    # 1.5 °C for 5 minutes, 2.5 keeps the risk (under the clear margin), so the 10 minutes
    # run from minute 5: the alert starts at minute 15 and holds through the 2.8 °C readings.
    assert first(scores, points) == points[15][0]
    assert scores[15:26] == [1.0] * 11
    assert scores[26:] == [0.0, 0.0]
    assert detector.details()["message"] == "dew-point margin 3.2 °C: no condensation risk"


def test_condensation_restore_mid_pending() -> None:
    params = CondensationParams()
    points = minutes([1.0] * 20)
    straight = feed(Condensation(params), points)
    detector = Condensation(params)
    feed(detector, points[:6])
    clone = restored(detector, lambda: Condensation(params))
    assert feed(clone, points[6:]) == straight[6:]
    assert straight.index(1.0) == 10
    assert clone.details()["message"] == (
        "dew-point margin 1 °C, under 2 °C for 19 m: condensation risk"
    )


def test_condensation_params_reject_a_clear_margin_below_the_margin() -> None:
    with pytest.raises(ValidationError, match="clear_margin_c"):
        CondensationParams(margin_c=3.0, clear_margin_c=2.0)


# --- rate of change ----------------------------------------------------------------------


def test_rate_of_change_fires_on_a_fast_rise_not_on_a_slow_one() -> None:
    rng = random.Random(1)
    slow = minutes(22.0 + 0.02 * i + rng.gauss(0, 0.1) for i in range(600))  # 1.2 °C/h
    assert max(feed(RateOfChange(RateOfChangeParams(limit_per_min=0.5)), slow)) == 0.0
    fast = minutes(22.0 + max(0, i - 30) * 1.0 + rng.gauss(0, 0.1) for i in range(60))
    detector = RateOfChange(RateOfChangeParams(limit_per_min=0.5))
    scores = feed(detector, fast)
    flagged_s = first(scores, fast)
    assert flagged_s is not None
    assert flagged_s <= fast[33][0]  # within three minutes of the start
    assert float(detector.details()["rate_per_min"]) == pytest.approx(1.0, abs=0.15)


def test_rate_of_change_direction_and_noise() -> None:
    falling = minutes(30.0 - max(0, i - 20) * 2.0 for i in range(40))
    assert max(feed(RateOfChange(RateOfChangeParams(direction="rising")), falling)) == 0.0
    assert max(feed(RateOfChange(RateOfChangeParams(direction="falling")), falling)) == 1.0
    rng = random.Random(2)
    noisy = minutes((4.0 + rng.uniform(-0.2, 0.2) for _ in range(8640)), step_s=10.0)
    assert max(feed(RateOfChange(RateOfChangeParams()), noisy)) == 0.0


def test_rate_of_change_does_not_measure_across_a_gap() -> None:
    detector = RateOfChange(RateOfChangeParams(limit_per_min=0.5))
    before = minutes([5.0] * 20)
    after = minutes([15.0] * 10, start_s=T0_S + 3 * 3600)  # 10 °C higher, three hours later
    assert max(feed(detector, before + after)) == 0.0


def test_rate_of_change_restore_continues_identically() -> None:
    rng = random.Random(3)
    points = minutes(5.0 + (i > 40) * (i - 40) * 0.8 + rng.gauss(0, 0.2) for i in range(80))
    params = RateOfChangeParams(limit_per_min=0.5)
    straight = feed(RateOfChange(params), points)
    detector = RateOfChange(params)
    feed(detector, points[:43])
    assert feed(restored(detector, lambda: RateOfChange(params)), points[43:]) == straight[43:]
    assert 1.0 in straight[43:]


# --- silence -----------------------------------------------------------------------------


def test_silence_learns_the_interval_and_fires_after_k_intervals() -> None:
    rng = random.Random(4)
    detector = Silence(SilenceParams(missed_intervals=5))
    ts = T0_S
    for _ in range(100):
        ts += 30.0 + rng.uniform(-1.0, 1.0)
        assert detector.score_one(ts, 1.0) == 0.0
        detector.learn_one(ts, 1.0)
    assert detector.expected_interval_s == pytest.approx(30.0, rel=0.05)
    assert detector.check(ts + 140.0) == 0.0  # under the 120 s floor and 5 × 30 s
    assert detector.check(ts + 160.0) == 1.0
    assert "no data for 2 m 40 s" in str(detector.details()["message"])
    detector.learn_one(ts + 170.0, 1.0)
    assert detector.check(ts + 171.0) == 0.0


def test_silence_estimate_survives_an_outage_a_burst_and_late_data() -> None:
    detector = Silence(SilenceParams())
    points = minutes([1.0] * 200)  # every 60 s
    points += minutes([1.0], start_s=points[-1][0] + 6 * 3600)  # six-hour outage
    points += [(points[-1][0] + i, 1.0) for i in range(1, 11)]  # ten readings 1 s apart
    points += [(points[-1][0] - 600.0 * i, 1.0) for i in range(1, 30)]  # late, older data
    feed(detector, points)
    assert detector.expected_interval_s == pytest.approx(60.0, rel=0.3)
    assert detector.check(points[-30][0] + 200.0) == 0.0  # late data did not move "last"
    assert detector.check(points[-30][0] + 301.0) == 1.0


def test_silence_with_a_fixed_interval_and_the_floor() -> None:
    detector = Silence(SilenceParams(expected_interval_s=10.0, missed_intervals=3.0))
    detector.learn_one(T0_S, 1.0)  # one reading is enough with a fixed interval
    assert detector.check(T0_S + 100.0) == 0.0  # 3 × 10 s is under min_silence_s (120)
    assert detector.check(T0_S + 121.0) == 1.0
    unknown = Silence(SilenceParams())
    unknown.learn_one(T0_S, 1.0)
    assert unknown.check(T0_S + 86400.0) == 0.0  # no interval yet: never silent


def test_silence_restore_keeps_the_last_reading() -> None:
    detector = Silence(SilenceParams())
    feed(detector, minutes([1.0] * 30))
    clone = restored(detector, lambda: Silence(SilenceParams()))
    last = T0_S + 29 * 60.0
    assert [clone.check(last + s) for s in (200.0, 400.0)] == [0.0, 1.0]
    assert clone.expected_interval_s == detector.expected_interval_s


def test_silence_params_reject_nonsense() -> None:
    with pytest.raises(ValidationError, match="missed_intervals"):
        SilenceParams(missed_intervals=0.5)
    with pytest.raises(ValidationError, match="expected_interval_s"):
        SilenceParams(expected_interval_s=0)


# --- flatline ----------------------------------------------------------------------------


def dht_medians(
    count: int, rng: random.Random, centre: float, noise: float, wander: float
) -> list[float]:
    """What the agent publishes for a DHT22 in a quiet room: the median of the last three
    reads, each rounded to 0.1 like the sensor, around a slowly wandering true value."""
    reads: list[float] = []
    out = []
    drift = 0.0
    for _ in range(count):
        drift += rng.gauss(0, wander) - 0.01 * drift
        reads = [*reads[-2:], round(centre + drift + rng.gauss(0, noise), 1)]
        out.append(statistics.median(reads))
    return out


def test_flatline_flags_a_stuck_busy_channel_within_ten_intervals() -> None:
    rng = random.Random(5)
    healthy = dht_medians(3 * 1440, rng, 85.0, 0.8, 0.02)  # humidity: changes most minutes
    stuck = [healthy[-1]] * 30
    points = minutes(healthy + stuck)
    detector = Flatline(FlatlineParams(field="humidity_pct"))
    scores = feed(detector, points)
    assert max(scores[1440 : 3 * 1440]) == 0.0  # after its first day, no false alarm
    alert = first(scores, points)
    assert alert is not None
    intervals = round((alert - points[3 * 1440 - 1][0]) / 60.0)
    assert intervals <= 10, detector.required


def test_flatline_does_not_fire_on_a_quiet_cold_room() -> None:
    # Medians of reads with 0.1 °C noise: runs of 20-30 equal readings happen every week.
    rng = random.Random(6)
    points = minutes(dht_medians(28 * 1440, rng, 3.0, 0.1, 0.005))
    detector = Flatline(FlatlineParams())
    scores = feed(detector, points)
    assert alerts(scores) <= 1
    fixed = Flatline(FlatlineParams(min_repeats=10, max_repeats=10))
    assert alerts(feed(fixed, points)) > 50  # what a fixed N of 10 would do there
    # ... and a stuck sensor there is still found, later.
    stuck = minutes([points[-1][1]] * 200, start_s=points[-1][0] + 60.0)
    alert = first(feed(detector, stuck), stuck)
    assert alert is not None and (alert - stuck[0][0]) / 60.0 < 80


def test_flatline_stuck_spell_does_not_teach_that_stuck_is_normal() -> None:
    rng = random.Random(7)
    healthy = minutes(dht_medians(3 * 1440, rng, 60.0, 0.8, 0.02))
    detector = Flatline(FlatlineParams())
    feed(detector, healthy)
    before = detector.required
    stuck = minutes([42.0] * 2000, start_s=healthy[-1][0] + 60.0)
    assert feed(detector, stuck)[-1] == 1.0
    after = minutes(dht_medians(60, rng, 60.0, 0.8, 0.02), start_s=stuck[-1][0] + 60.0)
    feed(detector, after)
    assert detector.required <= before + 2


def test_flatline_tolerance_counts_near_repeats() -> None:
    values = [20.0, 20.001, 19.999] * 20
    exact = Flatline(FlatlineParams(min_repeats=6, max_repeats=6))
    assert max(feed(exact, minutes(values))) == 0.0
    near = Flatline(FlatlineParams(tolerance=0.01, min_repeats=6, max_repeats=6))
    scores = feed(near, minutes(values))
    assert scores.index(1.0) == 5


def test_flatline_restore_mid_run() -> None:
    rng = random.Random(8)
    values = dht_medians(2 * 1440, rng, 50.0, 0.8, 0.02) + [50.0] * 40
    points = minutes(values)
    params = FlatlineParams()
    straight = feed(Flatline(params), points)
    detector = Flatline(params)
    cut = 2 * 1440 + 5  # five readings into the stuck run
    feed(detector, points[:cut])
    assert detector.run_length >= 5
    assert feed(restored(detector, lambda: Flatline(params)), points[cut:]) == straight[cut:]
    assert 1.0 in straight[cut:]


def test_flatline_params_reject_nonsense() -> None:
    with pytest.raises(ValidationError, match=r"min_repeats .* must not exceed max_repeats"):
        FlatlineParams(min_repeats=50, max_repeats=20)
    with pytest.raises(ValidationError, match="tolerance"):
        FlatlineParams(tolerance=-0.1)


# --- plausibility ------------------------------------------------------------------------


def test_plausibility_dht_garbage() -> None:
    humidity = Plausibility(PlausibilityParams(field="humidity_pct"))
    scores = feed(humidity, minutes([80.0, 80.2, 260.0, 80.1, 0.0, 80.3, 101.0]))
    assert scores == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    temperature = Plausibility(PlausibilityParams(field="temperature_c"))
    scores = feed(temperature, minutes([3.5, 3.6, -40.0, 3.5, 125.0, 0.0, 3.4, math.nan]))
    assert scores == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_plausibility_sentinel_reached_gradually_is_plausible() -> None:
    chiller = Plausibility(PlausibilityParams(field="temperature_c"))
    assert max(feed(chiller, minutes([1.0, 0.6, 0.3, 0.1, 0.0, 0.0, -0.2]))) == 0.0
    blast = Plausibility(PlausibilityParams(field="temperature_c"))
    assert max(feed(blast, minutes([-37.0 - 0.5 * i for i in range(7)]))) == 0.0


def test_plausibility_spike_is_flagged_not_the_way_back_and_a_real_step_is_accepted() -> None:
    detector = Plausibility(PlausibilityParams(field="temperature_c"))
    assert feed(detector, minutes([4.0, 4.1, 30.0, 4.0, 4.1])) == [0.0, 0.0, 1.0, 0.0, 0.0]
    moved = Plausibility(PlausibilityParams(field="temperature_c"))
    # A probe moved from a cold room to a 21 °C office: two jumps, then a confirmed step.
    scores = feed(moved, minutes([4.0, 4.1, 21.0, 21.2, 21.1, 21.3]))
    assert scores == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert moved.details()["message"] == "21.3 °C is plausible"


def test_plausibility_jump_after_a_long_gap_is_not_judged() -> None:
    detector = Plausibility(PlausibilityParams(field="temperature_c"))
    points = [(T0_S, 4.0), (T0_S + 3600.0, 21.0)]
    assert feed(detector, points) == [0.0, 0.0]


def test_plausibility_details_say_why() -> None:
    detector = Plausibility(PlausibilityParams(field="humidity_pct"))
    feed(detector, minutes([70.0, 260.0]))
    details = detector.details()
    assert details["reason"] == "out_of_range"
    assert details["message"] == "260 % is outside the plausible range 0..100 %"


def test_plausibility_params_need_a_range() -> None:
    with pytest.raises(ValidationError, match="no default range for field 'pressure_hpa'"):
        PlausibilityParams(field="pressure_hpa")
    with pytest.raises(ValidationError, match=r"min_value .* must be below max_value"):
        PlausibilityParams(field="temperature_c", min_value=50.0, max_value=10.0)
    custom = Plausibility(PlausibilityParams(field="pressure_hpa", min_value=900, max_value=1100))
    assert feed(custom, minutes([1013.0, 1200.0])) == [0.0, 1.0]


def test_plausibility_restore_keeps_a_step_in_progress() -> None:
    params = PlausibilityParams(field="temperature_c")
    points = minutes([4.0, 4.1, 21.0, 21.2, 21.1, 21.3])
    straight = feed(Plausibility(params), points)
    detector = Plausibility(params)
    feed(detector, points[:4])
    assert feed(restored(detector, lambda: Plausibility(params)), points[4:]) == straight[4:]


# --- short-cycling -----------------------------------------------------------------------


def cycling(
    rng: random.Random,
    hours: float,
    phases: Callable[[float], tuple[float, float]],
    step_s: float = 60.0,
) -> Points:
    """The ``running`` stream (one reading per ``step_s``) of a contact whose on and off
    times are drawn from ``phases(elapsed_s)`` -> (low, high) seconds."""
    points, running, change_s, elapsed = [], False, rng.uniform(0, 600), 0.0
    while elapsed < hours * 3600:
        while elapsed >= change_s:
            running = not running
            change_s += rng.uniform(*phases(change_s))
        points.append((T0_S + elapsed, 1.0 if running else 0.0))
        elapsed += step_s
    return points


def test_short_cycling_normal_thermostat_cycle_stays_quiet() -> None:
    points = cycling(random.Random(9), 72, lambda _: (540.0, 900.0))
    assert max(feed(ShortCycling(ShortCyclingParams()), points)) == 0.0


def test_short_cycling_flagged_within_an_hour_and_clears_after() -> None:
    start_s, stop_s = 6 * 3600.0, 9 * 3600.0

    def phases(at_s: float) -> tuple[float, float]:
        return (60.0, 150.0) if start_s <= at_s < stop_s else (540.0, 900.0)

    points = cycling(random.Random(10), 14, phases)
    scores = feed(ShortCycling(ShortCyclingParams()), points)
    alert = first(scores, points)
    assert alert is not None
    assert T0_S + start_s < alert <= T0_S + start_s + 3600
    late = [s for (ts, _), s in zip(points, scores, strict=True) if ts > T0_S + stop_s + 4500]
    assert max(late) == 0.0


def test_short_cycling_starts_per_hour_alone() -> None:
    params = ShortCyclingParams(max_starts_per_h=6, min_on_s=0, min_off_s=0)
    # A start every 10 minutes: 6 in any hour, never 7.
    six = minutes([1.0 if i % 10 < 5 else 0.0 for i in range(240)])
    assert max(feed(ShortCycling(params), six)) == 0.0
    # A start every 8 minutes (the state found first is not a start): the 7th start, 48
    # minutes after the first, fires.
    seven = minutes([1.0 if i % 8 < 4 else 0.0 for i in range(240)])
    scores = feed(ShortCycling(params), seven)
    assert first(scores, seven) == seven[56][0]


def test_short_cycling_minimum_run_time_alone() -> None:
    params = ShortCyclingParams(max_starts_per_h=60, min_on_s=300, min_off_s=0)
    # Runs of 2 minutes with rests of 20: three short runs within an hour.
    values = ([0.0] * 20 + [1.0] * 2) * 6
    points = minutes(values)
    detector = ShortCycling(params)
    cut = 20 + 22 * 2 + 2  # the reading that ends the third short run
    scores = feed(detector, points[: cut + 1])
    assert first(scores, points) == points[cut][0]
    assert detector.details()["message"] == (
        "3 starts in the last hour (limit 60); at least 3 runs or rests shorter than 5 m;"
        " stopped for 0 s"
    )


def test_short_cycling_restore_keeps_the_last_hour() -> None:
    params = ShortCyclingParams(min_on_s=0, min_off_s=0)
    points = minutes([1.0 if i % 8 < 4 else 0.0 for i in range(120)])
    straight = feed(ShortCycling(params), points)
    detector = ShortCycling(params)
    feed(detector, points[:45])
    clone = restored(detector, lambda: ShortCycling(params))
    assert feed(clone, points[45:]) == straight[45:]
    assert 1.0 in straight[45:]


# --- duty-cycle drift --------------------------------------------------------------------


def rolling_duty(rng: random.Random, days: float, duty_at: Callable[[float], float]) -> Points:
    """``duty_cycle_pct`` as the agent publishes it each minute: on-time over the last hour
    of a compressor whose cycles (~24 minutes) follow ``duty_at(elapsed_s)`` (0-1)."""
    runs: list[tuple[float, float]] = []
    t = rng.uniform(0, 1440)
    while t < days * DAY_S:
        duty = min(0.97, max(0.03, duty_at(t)))
        on_s = duty * 1440 * rng.uniform(0.75, 1.25)
        runs.append((t, t + on_s))
        t += on_s + (1 - duty) * 1440 * rng.uniform(0.75, 1.25)
    points, first_run = [], 0
    now = 3600.0
    while now < days * DAY_S:
        while runs[first_run][1] <= now - 3600:
            first_run += 1
        on = 0.0
        for start, end in runs[first_run:]:
            if start >= now:
                break
            on += min(end, now) - max(start, now - 3600)
        points.append((T0_S + now, 100.0 * on / 3600))
        now += 60.0
    return points


def daily(t: float) -> float:
    return 0.6 + 0.08 * math.sin(2 * math.pi * t / DAY_S)


def test_duty_drift_healthy_compressor_stays_quiet() -> None:
    points = rolling_duty(random.Random(11), 21, daily)
    scores = feed(DutyDrift(DutyDriftParams()), points)
    assert max(scores) < 1.0


def test_duty_drift_60_to_85_percent_flagged_within_a_day() -> None:
    start = 8 * DAY_S

    def drifting(t: float) -> float:
        return daily(t) + 0.25 * min(1.0, max(0.0, t - start) / (2 * DAY_S))

    points = rolling_duty(random.Random(12), 11, drifting)
    detector = DutyDrift(DutyDriftParams())
    scores = feed(detector, points)
    alert = first(scores, points)
    assert alert is not None
    assert T0_S + start < alert <= T0_S + start + DAY_S
    assert float(detector.details()["change_pct"]) > 10.0


def test_duty_drift_direction_and_warmup() -> None:
    start = 8 * DAY_S

    def dropping(t: float) -> float:
        return daily(t) - 0.3 * min(1.0, max(0.0, t - start) / DAY_S)

    points = rolling_duty(random.Random(13), 11, dropping)
    assert max(feed(DutyDrift(DutyDriftParams()), points)) < 1.0  # rising only
    both = feed(DutyDrift(DutyDriftParams(direction="both")), points)
    assert first(both, points) is not None
    early = DutyDrift(DutyDriftParams())
    early_points = [(ts, 100.0 if ts > T0_S + DAY_S else 10.0) for ts, _ in points[: 3 * 1440]]
    assert max(feed(early, early_points)) == 0.0  # still learning: no score yet


def test_duty_drift_restore_continues_identically() -> None:
    points = rolling_duty(random.Random(14), 9, lambda t: daily(t) + 0.2 * (t > 6 * DAY_S))
    params = DutyDriftParams()
    straight = feed(DutyDrift(params), points)
    detector = DutyDrift(params)
    cut = int(6.2 * 1440)
    feed(detector, points[:cut])
    assert feed(restored(detector, lambda: DutyDrift(params)), points[cut:]) == straight[cut:]


def test_duty_drift_params_reject_a_baseline_shorter_than_the_window() -> None:
    with pytest.raises(ValidationError, match=r"baseline_window_s .* must be at least 4"):
        DutyDriftParams(short_window_s=86400, baseline_window_s=2 * 86400)


# --- service interval --------------------------------------------------------------------


def test_service_interval_warns_then_falls_due() -> None:
    params = ServiceIntervalParams(interval_h=500, last_service_runtime_h=1000, warn_before_h=50)
    detector = ServiceInterval(params)
    hours = [1400.0, 1449.0, 1450.0, 1499.9, 1500.0, 1520.0]
    assert feed(detector, minutes(hours, step_s=3600.0)) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    details = detector.details()
    assert details["hours_left_h"] == -20.0
    assert details["message"] == "service overdue by 20 h of runtime (due at 1500 h)"


def test_service_interval_estimates_the_calendar_date() -> None:
    detector = ServiceInterval(ServiceIntervalParams(interval_h=2000, warn_before_h=100))
    # Half the time running: 12 runtime hours a day.
    feed(detector, [(T0_S + h * 3600.0, 1000.0 + 0.5 * h) for h in range(24 * 14)])
    details = detector.details()
    assert float(details["runtime_rate"]) == pytest.approx(0.5, rel=0.01)
    left_h = 2000 - (1000 + 0.5 * (24 * 14 - 1))
    assert float(details["due_in_s"]) == pytest.approx(left_h / 0.5 * 3600, rel=0.02)
    assert "about" in str(details["message"])


def test_service_interval_restore_and_params() -> None:
    params = ServiceIntervalParams()
    points = [(T0_S + h * 3600.0, 1800.0 + 0.6 * h) for h in range(600)]
    straight = feed(ServiceInterval(params), points)
    detector = ServiceInterval(params)
    feed(detector, points[:100])
    clone = restored(detector, lambda: ServiceInterval(params))
    assert feed(clone, points[100:]) == straight[100:]
    whole = ServiceInterval(params)
    feed(whole, points)
    assert clone.details() == whole.details()  # the runtime rate carried over too
    with pytest.raises(ValidationError, match=r"warn_before_h .* must be less than interval_h"):
        ServiceIntervalParams(interval_h=100, warn_before_h=100)


# --- door open ---------------------------------------------------------------------------


def test_door_open_fires_while_open_without_new_readings() -> None:
    detector = DoorOpen(DoorOpenParams(max_open_s=300))
    feed(detector, [(T0_S, 0.0), (T0_S + 60, 1.0)])
    scores = [detector.check(T0_S + 60 + s) for s in (100.0, 300.0, 301.0, 7200.0)]
    assert scores == [0.0, 0.0, 1.0, 1.0]
    assert feed(detector, [(T0_S + 8000, 0.0)]) == [0.0]
    assert detector.check(T0_S + 9000) == 0.0
    assert detector.details()["message"] == "closed"


def test_door_open_brief_openings_and_readings_while_open() -> None:
    detector = DoorOpen(DoorOpenParams(max_open_s=300))
    openings = [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0] * 10  # never more than two minutes
    assert max(feed(detector, minutes(openings))) == 0.0
    left_open = minutes([1.0] * 8, start_s=T0_S + 3600)
    scores = feed(detector, left_open)
    assert scores == [0.0] * 6 + [1.0] * 2  # open since the first reading, > 300 s at 6 min


def test_door_open_restore_while_open() -> None:
    detector = DoorOpen(DoorOpenParams())
    feed(detector, [(T0_S, 1.0), (T0_S + 60, 1.0)])
    clone = restored(detector, lambda: DoorOpen(DoorOpenParams()))
    assert clone.check(T0_S + 299) == 0.0
    assert clone.check(T0_S + 301) == 1.0


# --- forecast ----------------------------------------------------------------------------


def cold_room(
    rng: random.Random,
    hours: float,
    step_s: float,
    failure_at_s: float | None = None,
    rate_c_per_h: float = 1.5,
    door_every_s: float = 3600.0,
) -> Points:
    """A cold room at 3.5 °C: a ±1 °C compressor sawtooth (20 minutes), doors opened about
    every ``door_every_s`` (+2 °C, decaying over 5 minutes), DHT noise of ±0.2 °C and 0.1 °C
    steps. From ``failure_at_s`` the compressor stops and the room warms linearly."""
    points, door_s, next_door = [], -1e9, rng.uniform(0, door_every_s)
    t = 0.0
    while t < hours * 3600:
        if t >= next_door:
            door_s, next_door = t, t + rng.uniform(0.5, 1.5) * door_every_s
        phase = (t % 1200.0) / 1200.0
        saw = -1 + 2 * phase / 0.7 if phase < 0.7 else 1 - 2 * (phase - 0.7) / 0.3
        if failure_at_s is not None and t >= failure_at_s:
            phase = (failure_at_s % 1200.0) / 1200.0
            saw = -1 + 2 * phase / 0.7 if phase < 0.7 else 1 - 2 * (phase - 0.7) / 0.3
            saw += rate_c_per_h * (t - failure_at_s) / 3600
        door = 2.0 * math.exp(-(t - door_s) / 300.0) if t >= door_s else 0.0
        points.append((T0_S + t, round(3.5 + saw + door + rng.uniform(-0.2, 0.2), 1)))
        t += step_s
    return points


@pytest.mark.parametrize("step_s", [10.0, 60.0])
def test_forecast_healthy_cold_room_does_not_fire(step_s: float) -> None:
    points = cold_room(random.Random(15), 72, step_s)
    assert max(points, key=lambda p: p[1])[1] > 5.5  # the doors do show
    assert max(feed(Forecast(ForecastParams(limit=8.0)), points)) == 0.0


@pytest.mark.parametrize(("step_s", "rate_c_per_h"), [(10.0, 1.0), (60.0, 1.5), (30.0, 2.0)])
def test_forecast_predicts_a_slow_cooling_failure_half_an_hour_ahead(
    step_s: float, rate_c_per_h: float
) -> None:
    failure_s = 8 * 3600.0
    points = cold_room(random.Random(16), 16, step_s, failure_s, rate_c_per_h, 1e9)
    detector = Forecast(ForecastParams(limit=8.0, field="temperature_c"))
    alert = None
    for ts, value in points:
        if detector.score_one(ts, value) and alert is None and ts > T0_S + failure_s:
            alert, details = ts, detector.details()
        detector.learn_one(ts, value)
    crossed = next(ts for ts, value in points if value > 8.0)
    assert alert is not None
    assert crossed - alert >= 30 * 60
    predicted, ci = float(details["predicted_breach_s"]), float(details["ci_s"])
    assert 0 < ci < predicted
    assert abs(predicted - (crossed - alert)) <= ci + 15 * 60
    assert str(details["message"]).startswith("will pass 8 °C in ")


def test_forecast_below_direction_and_no_trend() -> None:
    rng = random.Random(17)
    falling = minutes(20.0 - 0.05 * i + rng.gauss(0, 0.1) for i in range(300))
    below = Forecast(ForecastParams(limit=5.0, direction="below", horizon_s=8 * 3600))
    assert 1.0 in feed(below, falling)
    above = Forecast(ForecastParams(limit=30.0))
    assert max(feed(above, falling)) == 0.0
    assert "not heading for 30" in str(above.details()["message"])
    flat = Forecast(ForecastParams(limit=30.0))
    feed(flat, minutes(20.0 + rng.gauss(0, 0.1) for _ in range(300)))
    assert flat.details()["score"] == 0.0


def test_forecast_past_the_limit_and_still_rising() -> None:
    detector = Forecast(ForecastParams(limit=8.0, field="temperature_c"))
    feed(detector, minutes(6.0 + 0.03 * i for i in range(180)))  # 1.8 °C/h, now past 8
    details = detector.details()
    assert details["predicted_breach_s"] == 0.0
    assert str(details["message"]).startswith("is past 8 °C, still rising 1.8 °C/h")


def test_forecast_restore_mid_trend() -> None:
    points = cold_room(random.Random(18), 12, 30.0, 6 * 3600.0, 1.5, 1e9)
    params = ForecastParams(limit=8.0)
    straight = feed(Forecast(params), points)
    detector = Forecast(params)
    cut = len(points) * 2 // 3
    feed(detector, points[:cut])
    assert feed(restored(detector, lambda: Forecast(params)), points[cut:]) == straight[cut:]
    assert 1.0 in straight[cut:]


def test_forecast_params_reject_nonsense() -> None:
    with pytest.raises(ValidationError, match="limit"):
        ForecastParams.model_validate({})
    with pytest.raises(ValidationError, match=r"decorrelation_s .* must not exceed window_s"):
        ForecastParams(limit=8.0, window_s=600, decorrelation_s=900)
