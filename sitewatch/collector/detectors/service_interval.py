"""Service interval: runtime hours past the next service, with a warning before."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value
from sitewatch.collector.protocols import JsonValue

__all__ = ["ServiceInterval", "ServiceIntervalParams"]

_RATE_TAU_S = 7 * 86400.0
"""How far back the runtime rate (runtime hours per hour) is averaged for the calendar
estimate: a week covers weekday and weekend use."""
_MAX_STEP_S = 86400.0
"""Longer gaps between readings say little about the rate in between: capped."""


class ServiceIntervalParams(DetectorParams):
    """``interval_h``: runtime hours between services (default 2000);
    ``last_service_runtime_h``: the runtime counter at the last service (hours, default 0);
    ``warn_before_h``: warn this many runtime hours before it is due (default 100)."""

    model_config = ConfigDict(allow_inf_nan=False)

    interval_h: Annotated[float, Field(gt=0, le=1e6)] = 2000.0
    last_service_runtime_h: Annotated[float, Field(ge=0, le=1e7)] = 0.0
    warn_before_h: Annotated[float, Field(ge=0, le=1e6)] = 100.0

    @model_validator(mode="after")
    def _warning_inside_interval(self) -> ServiceIntervalParams:
        if self.warn_before_h >= self.interval_h:
            raise ValueError(
                f"warn_before_h ({self.warn_before_h}) must be less than interval_h"
                f" ({self.interval_h}): the warning would start before the last service"
            )
        return self


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime_h: float | None
    last_ts_s: float | None
    rate: float | None


@register("service_interval", ServiceIntervalParams)
class ServiceInterval:
    """Runtime hours past ``last_service_runtime_h + interval_h``, warned ahead.

    Input is the ``runtime_h`` counter the agent publishes for a run contact (total hours
    the machine has run, kept across agent restarts). The score is 1 once the counter
    reaches the due point, 0.5 within ``warn_before_h`` of it, else 0. The detector also
    follows how fast the counter grows (runtime hours per hour, averaged over a week), so
    details can say when, on the calendar, the service falls due.

    Parameters
    ----------
    params : ServiceIntervalParams
        ``interval_h`` (runtime hours, default 2000), ``last_service_runtime_h`` (runtime
        hours, default 0), ``warn_before_h`` (runtime hours, default 100).

    Works for maintenance counted in running hours (compressor oil and filters, pump
    seals, fan belts). Fails when the counter restarts from zero (a new agent without its
    state directory): the service then looks far away until ``last_service_runtime_h`` is
    set again. After each service, set ``last_service_runtime_h`` to the counter reading.

    Examples
    --------
    A compressor at about 60 % duty, read hourly, approaching its 2000 h service:

    >>> import random
    >>> rng = random.Random(6)
    >>> detector = ServiceInterval(ServiceIntervalParams())
    >>> runtime_h, scores = 1800.0, []
    >>> for hour in range(24 * 21):
    ...     runtime_h += rng.uniform(0.5, 0.7)
    ...     scores.append(detector.score_one(hour * 3600.0, runtime_h))
    ...     detector.learn_one(hour * 3600.0, runtime_h)
    >>> scores.index(0.5) // 24, scores.index(1.0) // 24
    (6, 13)
    >>> detector.details()["message"]
    'service overdue by 102.8 h of runtime (due at 2000 h)'
    """

    def __init__(self, params: ServiceIntervalParams) -> None:
        self.params = params
        self._due_h = params.last_service_runtime_h + params.interval_h
        self._warn_h = params.warn_before_h
        self._runtime_h: float | None = None
        self._last_ts_s: float | None = None
        self._rate: float | None = None

    def _judge(self, runtime_h: float) -> float:
        left = self._due_h - runtime_h
        return 1.0 if left <= 0 else 0.5 if left <= self._warn_h else 0.0

    def score_one(self, ts_s: float, value: float) -> float:
        return self._judge(value)

    def learn_one(self, ts_s: float, value: float) -> None:
        last_h, last_ts = self._runtime_h, self._last_ts_s
        if last_h is not None and last_ts is not None and ts_s > last_ts and value >= last_h:
            step_s = min(ts_s - last_ts, _MAX_STEP_S)
            rate = min(1.0, (value - last_h) * 3600.0 / (ts_s - last_ts))
            previous = self._rate
            if previous is None:
                self._rate = rate
            else:
                self._rate = previous + (rate - previous) * -math.expm1(-step_s / _RATE_TAU_S)
        self._runtime_h, self._last_ts_s = value, ts_s

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"due_at_runtime_h": self._due_h}
        runtime = self._runtime_h
        if runtime is None:
            out["message"] = "no runtime reading yet"
            out["score"] = 0.0
            return out
        left = self._due_h - runtime
        out["runtime_h"] = runtime
        out["hours_left_h"] = left
        out["score"] = self._judge(runtime)
        due = describe_value(self._due_h)
        if left <= 0:
            out["message"] = (
                f"service overdue by {describe_value(-left)} h of runtime (due at {due} h)"
            )
            return out
        text = f"service due in {describe_value(left)} h of runtime (at {due} h)"
        rate = self._rate
        if rate is not None and rate > 0:
            out["runtime_rate"] = rate
            out["due_in_s"] = due_in_s = left / rate * 3600.0
            text += f", about {describe_duration(due_in_s)} at {rate:.0%} use"
        out["message"] = text
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            runtime_h=self._runtime_h, last_ts_s=self._last_ts_s, rate=self._rate
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._runtime_h = restored.runtime_h
        self._last_ts_s = restored.last_ts_s
        self._rate = restored.rate
