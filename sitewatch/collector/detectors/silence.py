"""Silence: a stream that stopped sending, judged against its own usual interval."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration
from sitewatch.collector.protocols import JsonValue

__all__ = ["Silence", "SilenceParams"]

_MIN_RATE = 0.02
"""Smallest learning rate of the interval estimate: it follows a new interval within ~50
readings once past the first few."""
_MAX_STEP = math.log(3.0)
"""Largest log-ratio one interval may move the estimate by: a one-hour outage or a burst
of replayed backlog nudges it, it does not reset it."""
_COUNT_CAP = 1000


class SilenceParams(DetectorParams):
    """``missed_intervals``: silence after this many expected intervals without data
    (default 5.0); ``expected_interval_s``: the interval in seconds (default: learned from
    the stream); ``min_silence_s``: never call a stream silent sooner than this (seconds,
    default 120; covers batching and clock skew on fast streams)."""

    model_config = ConfigDict(allow_inf_nan=False)

    missed_intervals: Annotated[float, Field(gt=1, le=10000)] = 5.0
    expected_interval_s: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    min_silence_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 120.0


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    last_ts_s: float | None
    log_interval: float | None
    intervals_seen: int
    checked_s: float | None


@register("silence", SilenceParams)
class Silence:
    """No data for ``missed_intervals`` × the expected interval.

    The expected interval is ``expected_interval_s`` when set, else learned from the gaps
    between readings: a running mean of log(gap) whose steps are clipped, so neither an
    outage (one huge gap) nor replayed backlog (many tiny gaps) moves it far. ``check(now_s)``
    (called on a timer) scores 1 once ``now_s`` is more than
    ``max(min_silence_s, missed_intervals × interval)`` past the newest reading's time, and
    0 before; ``score_one`` is always 0, since a reading has just arrived. Until an interval
    is known (two readings, or the parameter) the stream is never called silent.

    Parameters
    ----------
    params : SilenceParams
        ``missed_intervals`` (count, default 5.0), ``expected_interval_s`` (seconds, default
        learned), ``min_silence_s`` (seconds, default 120).

    Works for periodic streams (a sensor sampled every 10-60 s, counters published with
    every reading). Fails on event-only streams (a door contact that reports only on change:
    give it ``expected_interval_s`` of its heartbeat, or do not use this detector) and
    judges silence on the readings' own timestamps, so an agent clock running minutes off
    needs a larger ``min_silence_s``.

    Examples
    --------
    A sensor sending every 60 s (with jitter) that dies after an hour:

    >>> import random
    >>> rng = random.Random(3)
    >>> detector = Silence(SilenceParams())
    >>> ts = 0.0
    >>> for _ in range(60):
    ...     ts += 60.0 + rng.uniform(-2.0, 2.0)
    ...     _ = detector.score_one(ts, 4.0)
    ...     detector.learn_one(ts, 4.0)
    >>> round(detector.expected_interval_s or 0.0)
    60
    >>> [detector.check(ts + minutes * 60.0) for minutes in (1, 4, 6)]
    [0.0, 0.0, 1.0]
    >>> detector.details()["message"]
    'no data for 6 m (expected every 1 m, silent after 5 m 2 s)'
    """

    # One small object per stream, and there can be thousands of streams.
    __slots__ = (
        "_checked_s", "_factor", "_floor_s", "_last_ts_s", "_log_interval", "_seen", "params",
    )  # fmt: skip

    def __init__(self, params: SilenceParams) -> None:
        self.params = params
        self._factor = params.missed_intervals
        self._floor_s = params.min_silence_s
        self._last_ts_s: float | None = None
        self._log_interval: float | None = None
        self._seen = 0
        self._checked_s: float | None = None

    @property
    def expected_interval_s(self) -> float | None:
        """The interval the silence limit is built on (seconds), if known."""
        if self.params.expected_interval_s is not None:
            return self.params.expected_interval_s
        return None if self._log_interval is None else math.exp(self._log_interval)

    def limit_s(self) -> float | None:
        """How long without data counts as silence (seconds), if an interval is known."""
        interval = self.expected_interval_s
        return None if interval is None else max(self._floor_s, self._factor * interval)

    def score_one(self, ts_s: float, value: float) -> float:
        return 0.0

    def learn_one(self, ts_s: float, value: float) -> None:
        self.update_one(ts_s, value)

    def update_one(self, ts_s: float, value: float) -> float:
        """Learn the reading's time; the score is always 0 (a reading has just arrived)."""
        last = self._last_ts_s
        if last is None:
            self._last_ts_s = ts_s
            return 0.0
        if ts_s <= last:
            return 0.0  # late or repeated data says nothing about the interval
        self._last_ts_s = ts_s
        gap = math.log(ts_s - last)
        estimate = self._log_interval
        if estimate is None:
            self._log_interval = gap
        else:  # conditionals rather than min()/max(): this runs for every reading
            step = gap - estimate
            step = _MAX_STEP if step > _MAX_STEP else -_MAX_STEP if step < -_MAX_STEP else step
            rate = 1.0 / (self._seen + 1)
            self._log_interval = estimate + step * (rate if rate > _MIN_RATE else _MIN_RATE)
        if self._seen < _COUNT_CAP:
            self._seen += 1
        return 0.0

    def check(self, now_s: float) -> float:
        self._checked_s = now_s
        limit = self.limit_s()
        last = self._last_ts_s
        if limit is None or last is None:
            return 0.0
        return 1.0 if now_s - last > limit else 0.0

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {}
        interval, limit, last = self.expected_interval_s, self.limit_s(), self._last_ts_s
        if interval is not None:
            out["expected_interval_s"] = interval
        if limit is not None:
            out["limit_s"] = limit
        if last is None:
            out["message"] = "no reading yet"
            out["score"] = 0.0
            return out
        out["last_seen_s"] = last
        now = last if self._checked_s is None else max(last, self._checked_s)
        silent = now - last
        out["silent_s"] = silent
        out["score"] = score = 1.0 if limit is not None and silent > limit else 0.0
        if interval is None or limit is None:
            out["message"] = "interval not known yet: one reading so far"
        elif score:
            out["message"] = (
                f"no data for {describe_duration(silent)} (expected every "
                f"{describe_duration(interval)}, silent after {describe_duration(limit)})"
            )
        else:
            out["message"] = (
                f"last reading {describe_duration(silent)} ago "
                f"(expected every {describe_duration(interval)})"
            )
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            last_ts_s=self._last_ts_s,
            log_interval=self._log_interval,
            intervals_seen=self._seen,
            checked_s=self._checked_s,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._last_ts_s = restored.last_ts_s
        self._log_interval = restored.log_interval
        self._seen = restored.intervals_seen
        self._checked_s = restored.checked_s
