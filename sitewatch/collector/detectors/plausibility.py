"""Plausibility: values a working sensor cannot produce (DHT22 garbage, impossible jumps)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value, unit_of
from sitewatch.collector.protocols import JsonValue

__all__ = ["FIELD_DEFAULTS", "FieldDefaults", "Plausibility", "PlausibilityParams"]

_STEP_CONFIRM = 3
"""Readings in a row that agree on a new level make a jump a real step (a sensor moved, a
heater switched on), as the agent's own spike gate does."""

Reason = Literal["", "not_finite", "out_of_range", "sentinel", "jump"]


@dataclass(frozen=True)
class FieldDefaults:
    """What a working sensor can report for one field (stream unit)."""

    min_value: float
    max_value: float
    max_step: float
    sentinels: tuple[float, ...]


FIELD_DEFAULTS: dict[str, FieldDefaults] = {
    # DHT22 range -40..80 °C; -40.0 and 0.0 are what a DHT22 reports from an all-ones or
    # all-zeros frame. A jump of 10 °C within minutes is not room air.
    "temperature_c": FieldDefaults(-40.0, 80.0, 10.0, (-40.0, 0.0)),
    # RH above 100 % is garbage (DHT22s report 260 %); 0-2 % RH are sentinel frames.
    "humidity_pct": FieldDefaults(0.0, 100.0, 30.0, (0.0, 1.0, 2.0)),
    "dew_point_c": FieldDefaults(-60.0, 60.0, 10.0, ()),
}
"""Field name → default limits; ``PlausibilityParams`` overrides any of them."""


class PlausibilityParams(DetectorParams):
    """``field``: the stream's field name, which picks default limits (``temperature_c``,
    ``humidity_pct``, ``dew_point_c``). ``min_value`` / ``max_value``: the plausible range
    (stream unit; required for other fields). ``sentinels``: exact values a broken sensor
    emits, implausible when they appear out of nowhere, i.e. more than ``sentinel_jump``
    (stream unit, default 1.0) away from the last plausible value. ``max_step``: the largest
    possible change between readings less than ``step_window_s`` (seconds, default 300)
    apart."""

    model_config = ConfigDict(allow_inf_nan=False)

    field: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    max_step: Annotated[float, Field(gt=0)] | None = None
    step_window_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    sentinels: tuple[float, ...] | None = None
    sentinel_jump: Annotated[float, Field(ge=0)] = 1.0

    def resolved(self) -> FieldDefaults:
        """The limits in force: explicit values over the field's defaults."""
        base = FIELD_DEFAULTS.get(self.field or "")
        low, high = self.min_value, self.max_value
        step, sentinels = self.max_step, self.sentinels
        if base is not None:
            low = base.min_value if low is None else low
            high = base.max_value if high is None else high
            step = base.max_step if step is None else step
            sentinels = base.sentinels if sentinels is None else sentinels
        if low is None or high is None:
            known = ", ".join(sorted(FIELD_DEFAULTS))
            raise ValueError(
                f"no default range for field {self.field!r}: set min_value and max_value, "
                f"or a field with defaults ({known})"
            )
        return FieldDefaults(low, high, math.inf if step is None else step, sentinels or ())

    @model_validator(mode="after")
    def _range_makes_sense(self) -> PlausibilityParams:
        limits = self.resolved()
        if limits.min_value >= limits.max_value:
            raise ValueError(
                f"min_value ({limits.min_value}) must be below max_value ({limits.max_value})"
            )
        return self


_SENTINEL_SETS: dict[tuple[float, ...], frozenset[float]] = {}


def _sentinel_set(sentinels: tuple[float, ...]) -> frozenset[float]:
    """One frozenset per distinct tuple of sentinels, shared by every stream that uses it
    (one object fewer per stream to keep in memory and in cache)."""
    shared = _SENTINEL_SETS.get(sentinels)
    if shared is None:
        shared = _SENTINEL_SETS[sentinels] = frozenset(sentinels)
    return shared


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref_value: float | None
    ref_ts_s: float | None
    candidate_value: float | None
    candidate_count: int
    last_value: float | None
    last_reason: Reason


@register("plausibility", PlausibilityParams)
class Plausibility:
    """Physically implausible values for the field.

    A reading is implausible when it is not finite, outside ``[min_value, max_value]``, a
    sentinel value (DHT22 frames of all zeros or all ones decode to 0.0 °C / 0 % or
    -40.0 °C) that jumped more than ``sentinel_jump`` from the last plausible value, or a
    change of more than ``max_step`` from the last plausible value within ``step_window_s``.
    A jump is judged against the last plausible value, so both a spike and the way back
    are read correctly (only the spike is flagged); after three readings in a row agree on
    the new level it is accepted as a real step. The score is 1 for an implausible reading,
    else 0.

    Parameters
    ----------
    params : PlausibilityParams
        ``field`` (picks defaults), ``min_value`` / ``max_value`` (stream unit),
        ``sentinels`` (stream unit), ``sentinel_jump`` (stream unit, default 1.0),
        ``max_step`` (stream unit), ``step_window_s`` (seconds, default 300). Defaults:
        temperature_c -40..80 °C, sentinels -40.0 and 0.0, step 10 °C; humidity_pct
        0..100 %, sentinels 0, 1, 2 %, step 30 %; dew_point_c -60..60 °C, step 10 °C.

    Works on raw sensor fields whose physics is known. Fails on garbage that looks
    physical: a DHT22 that drifts or reads 3 °C high passes every test here (the anomaly
    and flatline detectors see other faults). A sentinel reached gradually (a blast freezer
    going down to -40 °C) is plausible by design. The agent already drops most garbage
    before publishing; this detector catches what gets through, and other agents' data.

    Examples
    --------
    A humidity stream with one DHT22 garbage frame (260 %) and one all-zero frame:

    >>> import random
    >>> rng = random.Random(5)
    >>> detector = Plausibility(PlausibilityParams(field="humidity_pct"))
    >>> flagged = []
    >>> for minute in range(30):
    ...     value = round(80.0 + rng.gauss(0, 0.5), 1)
    ...     value = {10: 260.0, 20: 0.0}.get(minute, value)
    ...     if detector.score_one(minute * 60.0, value):
    ...         flagged.append((minute, detector.reason_for(minute * 60.0, value)))
    ...     detector.learn_one(minute * 60.0, value)
    >>> flagged
    [(10, 'out_of_range'), (20, 'sentinel')]
    """

    # One small object per stream, and there can be thousands of streams.
    __slots__ = (
        "_candidate", "_candidate_count", "_last_reason", "_last_value", "_max", "_min",
        "_quiet", "_ref_ts_s", "_ref_value", "_sentinel_jump", "_sentinels", "_step", "_unit",
        "_window_s", "params",
    )  # fmt: skip

    def __init__(self, params: PlausibilityParams) -> None:
        self.params = params
        limits = params.resolved()
        self._min = limits.min_value
        self._max = limits.max_value
        self._step = limits.max_step
        self._sentinels = _sentinel_set(limits.sentinels)
        self._sentinel_jump = params.sentinel_jump
        # A change from the last plausible value within this is neither a sentinel's jump
        # nor a step: the common case, told apart without the full test (stream unit).
        self._quiet = min(self._sentinel_jump, self._step)
        self._window_s = params.step_window_s
        self._unit = unit_of(params.field)
        self._ref_value: float | None = None
        self._ref_ts_s: float | None = None
        self._candidate: float | None = None
        self._candidate_count = 0
        self._last_value: float | None = None
        self._last_reason: Reason = ""

    @classmethod
    def _test_params(cls) -> PlausibilityParams:
        return PlausibilityParams(field="temperature_c")

    def reason_for(self, ts_s: float, value: float) -> Reason:
        """Why ``value`` at ``ts_s`` is implausible ("" when it is plausible)."""
        if not math.isfinite(value):
            return "not_finite"
        if value < self._min or value > self._max:
            return "out_of_range"
        ref = self._ref_value
        if ref is None or self._ref_ts_s is None:
            return ""
        change = abs(value - ref)
        if value in self._sentinels and change > self._sentinel_jump:
            return "sentinel"
        if change > self._step and ts_s - self._ref_ts_s <= self._window_s:
            if self._candidate_count + 1 >= _STEP_CONFIRM and self._agrees(value):
                return ""  # the third agreeing reading: a real step
            return "jump"
        return ""

    def _agrees(self, value: float) -> bool:
        candidate = self._candidate
        return candidate is not None and abs(value - candidate) <= self._step

    def score_one(self, ts_s: float, value: float) -> float:
        return 1.0 if self.reason_for(ts_s, value) else 0.0

    def learn_one(self, ts_s: float, value: float) -> None:
        self.update_one(ts_s, value)

    def update_one(self, ts_s: float, value: float) -> float:
        ref, quiet = self._ref_value, self._quiet
        if (
            ref is not None
            and self._min <= value <= self._max  # (NaN fails it)
            and -quiet <= value - ref <= quiet
            and self._ref_ts_s is not None
        ):
            reason: Reason = ""  # in range, and close to the last plausible value
        else:
            reason = self.reason_for(ts_s, value)  # once, for the score and for learning
        self._last_value, self._last_reason = value, reason
        if reason == "jump":
            if self._agrees(value):
                self._candidate_count += 1
            else:
                self._candidate, self._candidate_count = value, 1
            return 1.0
        if reason:
            return 1.0  # garbage neither moves the reference nor breaks a step in progress
        self._ref_value, self._ref_ts_s = value, ts_s
        self._candidate, self._candidate_count = None, 0
        return 0.0

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"min_value": self._min, "max_value": self._max}
        value, reason = self._last_value, self._last_reason
        out["score"] = 1.0 if reason else 0.0
        out["reason"] = reason or "plausible"
        if value is None:
            out["message"] = "no reading yet"
            return out
        if math.isfinite(value):
            out["value"] = value
        text = f"{describe_value(value)}{self._unit}"
        low, high = describe_value(self._min), describe_value(self._max)
        ref = self._ref_value
        ref_text = "" if ref is None else f"{describe_value(ref)}{self._unit}"
        if reason == "not_finite":
            out["message"] = f"{value} is not a number"
        elif reason == "out_of_range":
            out["message"] = f"{text} is outside the plausible range {low}..{high}{self._unit}"
        elif reason == "sentinel":
            out["message"] = f"{text} is a known garbage value (last plausible {ref_text})"
        elif reason == "jump":
            out["message"] = (
                f"{text} jumped from {ref_text} (more than {describe_value(self._step)}"
                f"{self._unit} within {describe_duration(self._window_s)})"
            )
        else:
            out["message"] = f"{text} is plausible"
        return out

    def get_state(self) -> dict[str, JsonValue]:
        finite = self._last_value is not None and math.isfinite(self._last_value)
        return _State(
            ref_value=self._ref_value,
            ref_ts_s=self._ref_ts_s,
            candidate_value=self._candidate,
            candidate_count=self._candidate_count,
            last_value=self._last_value if finite else None,
            last_reason=self._last_reason,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._ref_value = restored.ref_value
        self._ref_ts_s = restored.ref_ts_s
        self._candidate = restored.candidate_value
        self._candidate_count = restored.candidate_count
        self._last_value = restored.last_value
        self._last_reason = restored.last_reason
