"""Duty-cycle drift: a machine running more (or less) than its own usual for this hour."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value
from sitewatch.collector.protocols import JsonValue

__all__ = ["DutyDrift", "DutyDriftParams"]

_BINS = 24
"""One baseline per hour of the day (UTC): load follows the day, and an hour-of-day
baseline keeps a hot afternoon from looking like a failing compressor."""
_MAX_STEP_S = 3600.0
"""A longer gap between readings counts as one hour: the averages do not jump to a value
seen once after an outage."""


class DutyDriftParams(DetectorParams):
    """``short_window_s``: time constant of the recent duty (seconds, default 3 h);
    ``baseline_window_s``: how many days of the same hour make the usual duty (seconds,
    default 7 days); ``min_change_pct``: smallest change that alerts (percentage points,
    default 5); ``sigmas``: the change must also exceed this many times its usual
    day-to-day wobble (default 4.5); ``warmup_s``: no score before this much history
    (seconds, default 4 days); ``direction``: ``rising`` (default), ``falling`` or
    ``both``."""

    model_config = ConfigDict(allow_inf_nan=False)

    short_window_s: Annotated[float, Field(ge=600, le=7 * 86400)] = 3 * 3600.0
    baseline_window_s: Annotated[float, Field(ge=86400, le=365 * 86400)] = 7 * 86400.0
    min_change_pct: Annotated[float, Field(gt=0, le=100)] = 5.0
    sigmas: Annotated[float, Field(gt=0, le=100)] = 4.5
    warmup_s: Annotated[float, Field(ge=0, le=365 * 86400)] = 4 * 86400.0
    direction: Literal["rising", "falling", "both"] = "rising"

    @model_validator(mode="after")
    def _windows_ordered(self) -> DutyDriftParams:
        if self.short_window_s * 4 > self.baseline_window_s:
            raise ValueError(
                f"baseline_window_s ({self.baseline_window_s}) must be at least 4 ×"
                f" short_window_s ({self.short_window_s}): the baseline is the slow average"
            )
        return self


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_ts_s: float | None
    last_ts_s: float | None
    recent_pct: float | None
    baseline_pct: list[float | None]
    variance: float | None
    score: float


@register("duty_drift", DutyDriftParams)
class DutyDrift:
    """Short-term duty cycle against the stream's own slow baseline for the hour of day.

    Input is the ``duty_cycle_pct`` stream (0-100) rather than ``running``: the agent
    computes it from the debounced contact edges over a rolling hour, so it is exact
    whatever the reading interval, while ``running`` sampled once a minute aliases with the
    compressor's cycle and needs the same averaging done again, worse. The recent duty is a
    time-weighted average of the input (``short_window_s``); the baseline is the recent duty
    seen at the same hour of day over ``baseline_window_s``, so a daily load cycle is part
    of normal. The change (recent minus baseline) alerts when it is beyond both
    ``min_change_pct`` and ``sigmas`` times its own usual wobble (an average of squared
    changes, not learned while the score is above 0). The score rises from 0 at half that
    trigger to 1 at the trigger. The baseline keeps learning, so a change that persists
    becomes the new normal after one to two weeks; after a repair or a season change that
    is what one wants.

    Parameters
    ----------
    params : DutyDriftParams
        ``short_window_s`` (seconds, default 10800), ``baseline_window_s`` (seconds,
        default 604800), ``min_change_pct`` (percentage points, default 5.0), ``sigmas``
        (default 4.5), ``warmup_s`` (seconds, default 345600), ``direction`` (default
        ``rising``).

    Works for compressors, pumps and fans whose duty follows a daily pattern: a cold room
    going from 60 % to 85 % over two or three days is flagged within a day of the drift
    starting (about ``short_window_s`` plus the time to move ``min_change_pct``). Fails on
    drifts slower than the baseline (over weeks), on weekly patterns (a weekend delivery
    day counts as wobble), and cannot tell a failing machine from a heat wave: both make it
    run more.

    Examples
    --------
    Duty around 60 % with a daily swing, drifting to 85 % over two days from day 10:

    >>> import math, random
    >>> rng = random.Random(9)
    >>> detector = DutyDrift(DutyDriftParams())
    >>> first_alert = None
    >>> for minute in range(14 * 1440):
    ...     ts = minute * 60.0
    ...     drift = 25.0 * min(1.0, max(0.0, ts - 10 * 86400) / (2 * 86400))
    ...     duty = 60.0 + 8.0 * math.sin(2 * math.pi * ts / 86400) + drift + rng.gauss(0, 4)
    ...     if detector.score_one(ts, duty) >= 1.0 and first_alert is None:
    ...         first_alert = ts
    ...     detector.learn_one(ts, duty)
    >>> round((first_alert - 10 * 86400) / 3600, 1)
    12.0
    >>> detector.details()["message"]
    'duty 80.58 % over recent hours vs 64.93 % usual at this hour: +15.65 points (alerts at +5)'
    """

    def __init__(self, params: DutyDriftParams) -> None:
        self.params = params
        self._short_tau_s = params.short_window_s
        self._bin_tau_s = params.baseline_window_s / _BINS
        self._var_tau_s = params.baseline_window_s
        self._min_change = params.min_change_pct
        self._sigmas = params.sigmas
        self._warmup_s = params.warmup_s
        self._settle_s = 2.0 * params.short_window_s
        self._sign = {"rising": 1.0, "falling": -1.0, "both": 0.0}[params.direction]
        self._first_ts_s: float | None = None
        self._last_ts_s: float | None = None
        self._recent: float | None = None
        self._baseline: list[float | None] = [None] * _BINS
        self._variance: float | None = None
        self._trigger = params.min_change_pct
        self._score = 0.0

    def _set_variance(self, variance: float | None) -> None:
        self._variance = variance
        wobble = 0.0 if variance is None else self._sigmas * math.sqrt(variance)
        self._trigger = max(self._min_change, wobble)

    def _judge(self, change: float) -> float:
        """0 up to half the trigger, rising to 1 at the trigger (no min()/max(): hot path)."""
        size = (change if change >= 0.0 else -change) if self._sign == 0.0 else change * self._sign
        score = 2.0 * size / self._trigger - 1.0
        return 0.0 if score < 0.0 else 1.0 if score > 1.0 else score

    def score_one(self, ts_s: float, value: float) -> float:
        recent, first = self._recent, self._first_ts_s
        if recent is None or first is None or ts_s - first < self._warmup_s:
            return 0.0
        baseline = self._baseline[int(ts_s // 3600.0) % _BINS]
        return 0.0 if baseline is None else self._judge(recent - baseline)

    def learn_one(self, ts_s: float, value: float) -> None:
        last, recent, first = self._last_ts_s, self._recent, self._first_ts_s
        if last is None or recent is None or first is None:
            self._first_ts_s = self._last_ts_s = ts_s
            self._recent = value
            return
        if ts_s <= last:
            return
        step_s = ts_s - last
        if step_s > _MAX_STEP_S:
            step_s = _MAX_STEP_S
        self._last_ts_s = ts_s
        # Linear weights (steps are far shorter than the windows; a gap counts as an hour).
        # Conditional expressions rather than min()/max(): this runs for every reading.
        weight = step_s / self._short_tau_s
        recent += (value - recent) * (weight if weight < 1.0 else 1.0)
        self._recent = recent
        # The recent average starts from one reading (after an install, the agent's first
        # hour of duty is computed over minutes): the baseline waits until it has settled.
        age_s = ts_s - first - self._settle_s
        if age_s < 0.0:
            return
        index = int(ts_s // 3600.0) % _BINS
        baseline = self._baseline[index]
        if baseline is None:
            self._baseline[index] = recent
            return
        change = recent - baseline
        # Both averages start as plain means (each hour of the day has had about age / 24 of
        # data) and become moving averages once their window is full.
        span_s = age_s / _BINS
        span_s = self._bin_tau_s if span_s > self._bin_tau_s else span_s
        weight = step_s / span_s if span_s > step_s else 1.0
        self._baseline[index] = baseline + change * weight
        warm = ts_s - first >= self._warmup_s
        self._score = score = self._judge(change) if warm else 0.0
        if score <= 0.0 and age_s >= 86400.0:
            # From the second day on, when every hour of the day has a baseline; after one
            # more day a single odd hour counts as at most five times the usual wobble.
            span_s = age_s - 86400.0
            span_s = self._var_tau_s if span_s > self._var_tau_s else span_s
            weight = step_s / span_s if span_s > step_s else 1.0
            variance = self._variance
            squared = change * change
            if variance is None:
                variance = squared
            else:
                if span_s >= 86400.0 and squared > 25.0 * variance:
                    squared = 25.0 * variance
                variance += (squared - variance) * weight
            self._variance = variance
            wobble = self._sigmas * math.sqrt(variance)
            self._trigger = wobble if wobble > self._min_change else self._min_change

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"trigger_pct": self._trigger, "score": self._score}
        last, recent = self._last_ts_s, self._recent
        if last is None or recent is None:
            out["message"] = "no reading yet"
            return out
        out["recent_pct"] = recent
        if self._variance is not None:
            out["wobble_pct"] = math.sqrt(self._variance)
        baseline = self._baseline[int(last // 3600.0) % _BINS]
        first = self._first_ts_s if self._first_ts_s is not None else last
        if baseline is None or last - first < self._warmup_s:
            left = describe_duration(max(0.0, self._warmup_s - (last - first)))
            out["message"] = f"duty {describe_value(recent)} %; learning its usual ({left} left)"
            return out
        change = recent - baseline
        out["baseline_pct"] = baseline
        out["change_pct"] = change
        sign = "+" if change >= 0 else "-"
        out["message"] = (
            f"duty {describe_value(recent)} % over recent hours vs {describe_value(baseline)}"
            f" % usual at this hour: {sign}{describe_value(abs(change))} points"
            f" (alerts at {'-' if self._sign < 0 else '+'}{describe_value(self._trigger)})"
        )
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            first_ts_s=self._first_ts_s,
            last_ts_s=self._last_ts_s,
            recent_pct=self._recent,
            baseline_pct=list(self._baseline),
            variance=self._variance,
            score=self._score,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        if len(restored.baseline_pct) != _BINS:
            raise ValueError(f"duty_drift state needs {_BINS} hourly baselines")
        self._first_ts_s = restored.first_ts_s
        self._last_ts_s = restored.last_ts_s
        self._recent = restored.recent_pct
        self._baseline = list(restored.baseline_pct)
        self._set_variance(restored.variance)
        self._score = restored.score
