"""Rate of change: how fast the value moved over the last few minutes."""

from __future__ import annotations

from collections import deque
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value, unit_of
from sitewatch.collector.protocols import JsonValue

__all__ = ["RateOfChange", "RateOfChangeParams"]

_SLOTS = 5
"""The window is kept as this many slot means: memory stays fixed at any reading rate."""


class RateOfChangeParams(DetectorParams):
    """``limit_per_min``: the largest normal change per minute, in the stream's unit
    (default 1.0, e.g. °C/min); ``window_s``: how far back the change is measured (seconds,
    default 300); ``direction``: ``rising``, ``falling`` or ``both`` (default); ``field``:
    the stream's field name, for the unit in messages (the rules engine fills it in)."""

    model_config = ConfigDict(allow_inf_nan=False)

    limit_per_min: Annotated[float, Field(gt=0, le=1e9)] = 1.0
    window_s: Annotated[float, Field(ge=10, le=86400)] = 300.0
    direction: Literal["rising", "falling", "both"] = "both"
    field: Annotated[str, Field(max_length=64)] | None = None


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slots: list[tuple[float, float]]
    slot_start_s: float | None
    slot_sum_ts_s: float
    slot_sum_value: float
    slot_count: int
    rate_per_min: float | None
    span_s: float
    last_ts_s: float | None
    last_value: float | None


@register("rate_of_change", RateOfChangeParams)
class RateOfChange:
    """|dv/dt| per minute over a short window above a limit.

    The rate is the change from the mean of the readings about ``window_s`` ago to the new
    reading, divided by the time between them: averaging the old end halves its noise, and
    the new end is the reading itself so that a jump is seen at once. History is kept as
    ``window_s / 5`` slot means, so memory does not grow with the reading rate. With less
    than half a window of history (start, or after a gap longer than the window) there is no
    rate and the score is 0. The score is 1 while the rate exceeds ``limit_per_min`` in the
    watched direction, else 0.

    Parameters
    ----------
    params : RateOfChangeParams
        ``limit_per_min`` (stream unit per minute, default 1.0), ``window_s`` (seconds,
        default 300), ``direction`` (``rising``, ``falling`` or ``both``, default ``both``),
        ``field`` (for the unit in messages).

    Works for fast events that limits alone see late: a server room whose cooling tripped
    (°C per minute), a door opened into a cold room, humidity jumping when a wash-down
    starts. Fails on slow trends (a cold room warming 1 °C per hour moves 0.02 °C/min; the
    forecast detector is for that), and flags single garbage readings as fast changes
    (the plausibility detector tells those apart). Noise of ``n`` units gives rates of about
    ``n / window`` per minute: keep ``limit_per_min`` well above it.

    Examples
    --------
    A server room at 22 °C whose cooling trips at minute 30 (+1.5 °C per minute):

    >>> import random
    >>> rng = random.Random(7)
    >>> detector = RateOfChange(RateOfChangeParams(limit_per_min=0.5, field="temperature_c"))
    >>> scores = []
    >>> for step in range(120):
    ...     ts = step * 30.0
    ...     value = 22.0 + rng.gauss(0, 0.1) + max(0.0, ts - 1800.0) / 40.0
    ...     scores.append(detector.score_one(ts, value))
    ...     detector.learn_one(ts, value)
    >>> scores.index(1.0) * 30.0
    1920.0
    >>> detector.details()["message"]
    'rising 1.48 °C per minute over the last 5 m 15 s (limit 0.5 °C)'
    """

    def __init__(self, params: RateOfChangeParams) -> None:
        self.params = params
        self._window_s = params.window_s
        self._slot_s = params.window_s / _SLOTS
        self._limit = params.limit_per_min
        self._sign = {"rising": 1, "falling": -1, "both": 0}[params.direction]
        self._unit = unit_of(params.field)
        self._slots: deque[tuple[float, float]] = deque(maxlen=_SLOTS)
        self._slot_start_s: float | None = None
        self._slot_sum_ts_s = 0.0
        self._slot_sum_value = 0.0
        self._slot_count = 0
        self._rate: float | None = None
        self._span_s = 0.0
        self._last_ts_s: float | None = None
        self._last_value: float | None = None

    def _rate_at(self, ts_s: float, value: float) -> tuple[float, float] | None:
        """(rate per minute, span in seconds) from the oldest usable slot to this reading."""
        oldest_ok = ts_s - self._window_s - self._slot_s
        for ref_ts, ref_value in self._slots:
            if ref_ts < oldest_ok:
                continue  # left over from before a gap
            span = ts_s - ref_ts
            if span < 0.5 * self._window_s:
                return None
            return 60.0 * (value - ref_value) / span, span
        return None

    def _judge(self, rate: float) -> float:
        if self._sign == 0:
            return 1.0 if abs(rate) > self._limit else 0.0
        return 1.0 if rate * self._sign > self._limit else 0.0

    def score_one(self, ts_s: float, value: float) -> float:
        found = self._rate_at(ts_s, value)
        return 0.0 if found is None else self._judge(found[0])

    def learn_one(self, ts_s: float, value: float) -> None:
        found = self._rate_at(ts_s, value)
        self._rate, self._span_s = (None, 0.0) if found is None else found
        self._last_ts_s, self._last_value = ts_s, value
        start = self._slot_start_s
        if start is not None and ts_s - start >= self._slot_s:
            count = self._slot_count
            self._slots.append((self._slot_sum_ts_s / count, self._slot_sum_value / count))
            start = None
        if start is None:
            self._slot_start_s = ts_s
            self._slot_sum_ts_s = self._slot_sum_value = 0.0
            self._slot_count = 0
        self._slot_sum_ts_s += ts_s
        self._slot_sum_value += value
        self._slot_count += 1

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"limit_per_min": self._limit}
        rate = self._rate
        if rate is None:
            out["message"] = "not enough recent history for a rate"
            out["score"] = 0.0
            return out
        out["rate_per_min"] = rate
        out["span_s"] = self._span_s
        out["score"] = score = self._judge(rate)
        way = "rising" if rate >= 0 else "falling"
        text = (
            f"{way} {describe_value(abs(rate))}{self._unit} per minute over the last "
            f"{describe_duration(self._span_s)}"
        )
        limit = describe_value(self._limit) + self._unit
        out["message"] = f"{text} (limit {limit})" if score else f"{text}: within {limit}"
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            slots=list(self._slots),
            slot_start_s=self._slot_start_s,
            slot_sum_ts_s=self._slot_sum_ts_s,
            slot_sum_value=self._slot_sum_value,
            slot_count=self._slot_count,
            rate_per_min=self._rate,
            span_s=self._span_s,
            last_ts_s=self._last_ts_s,
            last_value=self._last_value,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._slots = deque(restored.slots[-_SLOTS:], maxlen=_SLOTS)
        self._slot_start_s = restored.slot_start_s
        self._slot_sum_ts_s = restored.slot_sum_ts_s
        self._slot_sum_value = restored.slot_sum_value
        self._slot_count = restored.slot_count
        self._rate = restored.rate_per_min
        self._span_s = restored.span_s
        self._last_ts_s = restored.last_ts_s
        self._last_value = restored.last_value
