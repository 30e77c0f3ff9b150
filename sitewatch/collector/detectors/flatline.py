"""Flatline: a stuck sensor repeating its last value, told apart from a quiet room."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value, unit_of
from sitewatch.collector.protocols import JsonValue

__all__ = ["Flatline", "FlatlineParams"]

_LEVELS = (3, 6, 12, 24, 48)
"""Run lengths at which the tail is measured: how often runs reach each length, and how
likely a run past it goes on for one more reading. Real streams have heavier tails than a
coin toss (long runs happen while the true value sits mid-way between two sensor steps), so
the tail is read at the longest level the stream has reached often enough."""
_MIN_TAIL_RUNS = 10.0
"""Runs (decayed count) a level needs before its tail is trusted."""
_WEEK_S = 604800.0
_DEFAULT_INTERVAL_S = 60.0
"""Assumed until the stream's second reading shows its interval."""
_INTERVAL_RATE = 0.01
"""Learning rate of the reading interval (gaps are clipped to 0.25-4 × the interval)."""
_WARMUP_S = 86400.0
_WARMUP_REPEATS = 30
"""During a new stream's first day the run statistics are too thin to trust on their own:
a run must also be this long."""


class FlatlineParams(DetectorParams):
    """``tolerance``: readings within this of the run's first value count as repeats (stream
    unit, default 0: exact repeats); ``false_alarms_per_week``: how often a healthy stream
    may show a run as long as the one that alerts (default 0.05); ``min_repeats`` /
    ``max_repeats``: bounds on the run length that alerts (readings, default 8 and 240);
    ``memory_s``: how long the stream's own run statistics are remembered (seconds, default
    7 days); ``field``: the stream's field name, for the unit in messages (the rules engine
    fills it in)."""

    model_config = ConfigDict(allow_inf_nan=False)

    tolerance: Annotated[float, Field(ge=0, le=1e9)] = 0.0
    false_alarms_per_week: Annotated[float, Field(gt=0, le=100)] = 0.05
    min_repeats: Annotated[int, Field(ge=2, le=100000)] = 8
    max_repeats: Annotated[int, Field(ge=2, le=100000)] = 240
    memory_s: Annotated[float, Field(ge=3600, le=365 * 86400)] = 7 * 86400.0
    field: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> FlatlineParams:
        if self.min_repeats > self.max_repeats:
            raise ValueError(
                f"min_repeats ({self.min_repeats}) must not exceed max_repeats ({self.max_repeats})"
            )
        return self


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_value: float | None
    run_length: int
    run_start_s: float | None
    last_ts_s: float | None
    interval_s: float | None
    readings: float
    pending_readings: int
    runs: list[float]
    repeats: list[float]
    learned_at_s: float | None
    warm_until_s: float | None
    warming: bool
    required: int


@register("flatline", FlatlineParams)
class Flatline:
    """N consecutive (near-)identical readings, N learned from the stream itself.

    A quantised sensor repeats itself when all is well: a DHT22 reports 0.1 °C steps and the
    agent publishes the median of the last few reads, so a quiet cold room shows runs of 20
    to 40 equal readings in a week while a room with a compressor cycle rarely passes 8. A
    fixed N either floods the quiet room with alerts or misses the busy room's stuck sensor
    for hours. So N is the run length that the stream's own history says a healthy stream
    shows less than ``false_alarms_per_week`` times a week. For run lengths 3, 6, 12, 24 and
    48 the detector counts how often runs get that long and how likely such a run goes on
    for one more reading; at the longest length ``k`` reached often enough, N is where
    (runs reaching k per week) × chance^(N - k) drops under the target, bounded by
    ``min_repeats`` and ``max_repeats``. Runs teach only once they end, and a run that
    alerted is learned as if it had stopped at N, so a stuck spell does not teach that
    being stuck is normal. The score is 1 while the current run is N readings or longer.

    Parameters
    ----------
    params : FlatlineParams
        ``tolerance`` (stream unit, default 0), ``false_alarms_per_week`` (default 0.05),
        ``min_repeats`` / ``max_repeats`` (readings, default 8 / 240), ``memory_s``
        (seconds, default 604800), ``field`` (for the unit in messages).

    Works on analog fields (temperature, humidity, pressure) from sensors noisy enough to
    change now and then. Fails on fields that are flat by nature: equipment booleans
    (``running``, ``open``), counters at rest, a humidity pinned at 100 %RH in a wet room
    (which does look stuck). Detection time follows the stream: on the simulator's rooms
    read every 60 s a stuck sensor is flagged after 8-10 readings on humidity and 9-12 on a
    cold room's temperature (read every 10 s: about 14 and 30); a very quiet room needs 40
    or more. During a stream's first day a run must also be 30 readings long, and a very
    quiet room can still raise one alert in that day.

    Examples
    --------
    A cold-room humidity channel, published every minute, stuck after two days:

    >>> import random
    >>> rng = random.Random(11)
    >>> detector = Flatline(FlatlineParams(field="humidity_pct"))
    >>> alerts = []
    >>> for minute in range(3 * 1440):
    ...     value = round(85.0 + 2.0 * rng.gauss(0, 1), 1) if minute < 2880 else 86.3
    ...     if detector.score_one(minute * 60.0, value):
    ...         alerts.append(minute)
    ...     detector.learn_one(minute * 60.0, value)
    >>> alerts[0] - 2880, detector.required
    (7, 8)
    >>> detector.details()["message"]
    '86.3 % repeated 1440 times over 23 h 59 m (alerts at 8)'
    """

    # One small object per stream, and there can be thousands of streams.
    __slots__ = (
        "_interval_s", "_last_ts_s", "_learned_at_s", "_memory_s", "_pending_readings", "_readings",
        "_repeats", "_run_length", "_run_start_s", "_run_value", "_runs", "_target", "_tolerance",
        "_unit", "_warm_until_s", "_warming", "params", "required",
    )  # fmt: skip

    def __init__(self, params: FlatlineParams) -> None:
        self.params = params
        self._tolerance = params.tolerance
        self._target = params.false_alarms_per_week
        self._memory_s = params.memory_s
        self._unit = unit_of(params.field)
        self._run_value: float | None = None
        self._run_length = 0
        self._run_start_s: float | None = None
        self._last_ts_s: float | None = None
        self._interval_s: float | None = None
        self._readings = 0.0
        self._pending_readings = 0
        self._runs = [0.0] * len(_LEVELS)
        self._repeats = [0.0] * len(_LEVELS)
        self._learned_at_s: float | None = None
        self._warm_until_s: float | None = None
        self._warming = True
        self.required = self._required_length()

    def score_one(self, ts_s: float, value: float) -> float:
        run_value = self._run_value
        if run_value is not None and abs(value - run_value) <= self._tolerance:
            return 1.0 if self._run_length + 1 >= self.required else 0.0
        return 0.0

    def learn_one(self, ts_s: float, value: float) -> None:
        self.update_one(ts_s, value)

    def update_one(self, ts_s: float, value: float) -> float:
        run_value = self._run_value
        repeated = run_value is not None and abs(value - run_value) <= self._tolerance
        # The score, from the state before learning (which may change ``required``).
        score = 1.0 if repeated and self._run_length + 1 >= self.required else 0.0
        if self._warming:  # (written out: it runs for every reading of a stream's first day)
            warm_until = self._warm_until_s
            if warm_until is None:
                self._warm_until_s = ts_s + _WARMUP_S
            elif ts_s >= warm_until:
                self._warming = False
                self.required = self._required_length()
        last = self._last_ts_s
        if last is None or ts_s > last:
            self._last_ts_s = ts_s
        if repeated:
            self._run_length += 1
            return score
        start = self._run_start_s
        if run_value is not None and start is not None:
            self._learn_run(self._run_length, ts_s - start, ts_s)
        self._run_value = value
        self._run_length = 1
        self._run_start_s = ts_s
        return score

    def _learn_run(self, length: int, span_s: float, ts_s: float) -> None:
        """Fold a finished run of ``length`` readings over ``span_s`` seconds into the
        statistics (decayed over ``memory_s``).

        The reading interval is learned here too, from the run's span, each gap counted at
        0.25-4 × the interval. Short runs then only add to a pending count of readings, so
        the common case (the value changed after one or two readings) stays cheap.
        """
        if span_s > 0.0:
            gap_s = span_s / length
            interval = self._interval_s
            if interval is None:
                self._interval_s = gap_s
            else:  # conditionals rather than min()/max(): this runs for most readings
                low, high = 0.25 * interval, 4.0 * interval
                gap_s = low if gap_s < low else high if gap_s > high else gap_s
                rate = _INTERVAL_RATE * length
                self._interval_s = interval + (rate if rate < 1.0 else 1.0) * (gap_s - interval)
        if length > self.required:
            length = self.required  # a stuck spell teaches no more than its alert
        if length < _LEVELS[0]:
            self._pending_readings += length
            return
        runs, repeats = self._runs, self._repeats
        keep = 1.0
        if self._learned_at_s is not None and ts_s > self._learned_at_s:
            keep = math.exp(-(ts_s - self._learned_at_s) / self._memory_s)
        self._learned_at_s = ts_s
        self._readings = self._readings * keep + self._pending_readings + length
        self._pending_readings = 0
        for level, start in enumerate(_LEVELS):
            runs[level] *= keep
            repeats[level] *= keep
            if length >= start:
                runs[level] += 1.0
                repeats[level] += length - start
        self.required = self._required_length()

    def _required_length(self) -> int:
        level = 0
        for candidate in range(len(_LEVELS) - 1, 0, -1):
            if self._runs[candidate] >= _MIN_TAIL_RUNS:
                level = candidate
                break
        start, runs, repeats = _LEVELS[level], self._runs[level], self._repeats[level]
        interval = self._interval_s or _DEFAULT_INTERVAL_S
        readings = self._readings + self._pending_readings
        runs_per_week = _WEEK_S / interval * runs / readings if readings else 0.0
        if runs_per_week <= self._target:
            length = start
        elif repeats <= 0.0:
            length = start + 1  # every run so far stopped right at this length
        elif repeats / (repeats + runs) >= 0.9999:
            length = self.params.max_repeats
        else:
            carry_on = repeats / (repeats + runs)
            extra = math.log(self._target / runs_per_week) / math.log(carry_on)
            length = start + math.ceil(extra)
        if self._warming:
            length = max(length, _WARMUP_REPEATS)
        return min(self.params.max_repeats, max(self.params.min_repeats, length))

    @property
    def run_length(self) -> int:
        """How many readings in a row have repeated the current value (1: it just changed)."""
        return self._run_length

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {
            "run_length": float(self._run_length),
            "required": float(self.required),
        }
        if self._run_value is None or self._run_start_s is None or self._last_ts_s is None:
            out["message"] = "no reading yet"
            out["score"] = 0.0
            return out
        run_s = self._last_ts_s - self._run_start_s
        out["value"] = self._run_value
        out["run_s"] = run_s
        out["score"] = score = 1.0 if self._run_length >= self.required else 0.0
        value = describe_value(self._run_value) + self._unit
        if score:
            out["message"] = (
                f"{value} repeated {self._run_length} times over {describe_duration(run_s)}"
                f" (alerts at {self.required})"
            )
        else:
            out["message"] = (
                f"{value} for {self._run_length} reading(s); a stuck value alerts at"
                f" {self.required}"
            )
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            run_value=self._run_value,
            run_length=self._run_length,
            run_start_s=self._run_start_s,
            last_ts_s=self._last_ts_s,
            interval_s=self._interval_s,
            readings=self._readings,
            pending_readings=self._pending_readings,
            runs=list(self._runs),
            repeats=list(self._repeats),
            learned_at_s=self._learned_at_s,
            warm_until_s=self._warm_until_s,
            warming=self._warming,
            required=self.required,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        if len(restored.runs) != len(_LEVELS) or len(restored.repeats) != len(_LEVELS):
            raise ValueError(f"flatline state needs {len(_LEVELS)} runs and repeats")
        self._run_value = restored.run_value
        self._run_length = restored.run_length
        self._run_start_s = restored.run_start_s
        self._last_ts_s = restored.last_ts_s
        self._interval_s = restored.interval_s
        self._readings = restored.readings
        self._pending_readings = restored.pending_readings
        self._runs = list(restored.runs)
        self._repeats = list(restored.repeats)
        self._learned_at_s = restored.learned_at_s
        self._warm_until_s = restored.warm_until_s
        self._warming = restored.warming
        bounds = self.params
        self.required = min(bounds.max_repeats, max(bounds.min_repeats, restored.required))
