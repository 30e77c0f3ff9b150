"""Condensation risk: the dew-point margin stays too small for too long."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import (
    Threshold,
    ThresholdParams,
    describe_duration,
    describe_value,
)
from sitewatch.collector.protocols import JsonValue

__all__ = ["Condensation", "CondensationParams"]


class CondensationParams(DetectorParams):
    """``margin_c``: risk when surface temperature minus dew point is under it (°C, default
    2.0); ``clear_margin_c``: the risk clears once the margin is back above it (°C, default
    3.0); ``for_s``: how long the margin must stay low (seconds, default 600)."""

    model_config = ConfigDict(allow_inf_nan=False)

    margin_c: Annotated[float, Field(ge=-10, le=30)] = 2.0
    clear_margin_c: Annotated[float, Field(ge=-10, le=40)] = 3.0
    for_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 600.0

    @model_validator(mode="after")
    def _clear_above_margin(self) -> CondensationParams:
        if self.clear_margin_c < self.margin_c:
            raise ValueError(
                f"clear_margin_c ({self.clear_margin_c}) must be at or above margin_c "
                f"({self.margin_c}): the risk clears when the margin grows back past it"
            )
        return self


@register("condensation", CondensationParams)
class Condensation:
    """Condensation (and mould) risk from the dew-point margin, in °C.

    The input is not a raw reading: the engine feeds the margin between a surface's
    temperature (or the air temperature when there is no surface probe) and the air's dew
    point, both in °C. Water condenses when the margin reaches 0; a DHT22's humidity is only
    good to a few %RH, which is about 0.5-1 °C of dew point, hence the default 2 °C margin,
    the 1 °C of hysteresis and the 10 minute for-duration. The score is 1 while the risk
    holds, else 0.

    Parameters
    ----------
    params : CondensationParams
        ``margin_c`` (°C, default 2.0), ``clear_margin_c`` (°C, default 3.0), ``for_s``
        (seconds, default 600).

    Works for cold surfaces in humid air: a cold-room door frame, chilled-water pipes, a
    server inlet next to an open window. Fails where the margin itself is wrong: with air
    temperature as the surface, a cold spot colder than the room (the coil, the door gasket)
    condenses before the margin says so; a humidity sensor stuck at 100 % RH gives a margin
    near 0 and a false risk (the flatline detector catches that sensor).

    Examples
    --------
    Margin shrinking from 5 °C to 1 °C, then recovering:

    >>> import random
    >>> rng = random.Random(2)
    >>> detector = Condensation(CondensationParams())
    >>> scores = []
    >>> for minute in range(120):
    ...     margin = 5.0 - 0.1 * minute if minute < 40 else 1.0 + 0.05 * (minute - 40)
    ...     margin += rng.gauss(0, 0.1)
    ...     scores.append(detector.score_one(minute * 60.0, margin))
    ...     detector.learn_one(minute * 60.0, margin)
    >>> scores.index(1.0), sum(scores)
    (40, 41.0)
    >>> detector.details()["message"]
    'dew-point margin 4.9 °C: no condensation risk'
    """

    def __init__(self, params: CondensationParams) -> None:
        self.params = params
        self._rule = Threshold(
            ThresholdParams(
                below=params.margin_c, clear_below=params.clear_margin_c, for_s=params.for_s
            )
        )

    def score_one(self, ts_s: float, value: float) -> float:
        return self._rule.score_one(ts_s, value)

    def learn_one(self, ts_s: float, value: float) -> None:
        self._rule.learn_one(ts_s, value)

    def details(self) -> dict[str, float | str]:
        inner = self._rule.details()
        out: dict[str, float | str] = {
            "margin_limit_c": self.params.margin_c,
            "held_s": inner["held_s"],
            "for_s": self.params.for_s,
            "score": inner["score"],
        }
        margin = inner.get("value")
        if not isinstance(margin, float):
            out["message"] = "no dew-point margin yet"
            return out
        out["margin_c"] = margin
        text = f"dew-point margin {describe_value(margin)} °C"
        if self._rule.side is None:
            out["message"] = f"{text}: no condensation risk"
        elif inner["score"] == 1.0:
            held = describe_duration(self._rule.held_s)
            out["message"] = (
                f"{text}, under {describe_value(self.params.margin_c)} °C for {held}:"
                " condensation risk"
            )
        else:
            held = describe_duration(self._rule.held_s)
            wait = describe_duration(self.params.for_s)
            out["message"] = (
                f"{text}, under {describe_value(self.params.margin_c)} °C for {held};"
                f" alerts after {wait}"
            )
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return self._rule.get_state()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        self._rule.set_state(state)
