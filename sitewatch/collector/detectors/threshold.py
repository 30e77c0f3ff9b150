"""Fixed limits with hysteresis and a for-duration: the rule every monitoring tool has.

Also home of the wording every rule detector's message uses: ``describe_duration`` ("2 h
40 m"), ``describe_value`` and ``unit_of``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.protocols import JsonValue

__all__ = ["Threshold", "ThresholdParams", "describe_duration", "describe_value", "unit_of"]

_UNITS = {"_c": " °C", "_pct": " %", "_h": " h", "_s": " s"}


def describe_duration(seconds: float) -> str:
    """A duration for people: ``45 s``, ``4 m 5 s``, ``12 m``, ``2 h 40 m``, ``3 d 4 h``.

    Seconds are shown under 10 minutes only, minutes under a day only.

    >>> [describe_duration(s) for s in (4.6, 245, 725, 9600, 273600)]
    ['5 s', '4 m 5 s', '12 m', '2 h 40 m', '3 d 4 h']
    """
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} m {secs} s" if secs else f"{minutes} m"
    total = round(total / 60) * 60
    if total < 3600:
        return f"{total // 60} m"
    if total < 86400:
        hours, minutes = divmod(total // 60, 60)
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    days, hours = divmod(round(total / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def describe_value(value: float) -> str:
    """A reading for people: at most two decimals, no trailing zeros (``8.4``, ``-19``)."""
    return f"{round(value, 2) + 0.0:g}"  # + 0.0 turns -0.0 into 0.0


def unit_of(field: str | None) -> str:
    """The unit a field name carries, for messages (`` °C`` for ``temperature_c``).

    >>> unit_of("temperature_c"), unit_of("humidity_pct"), unit_of(None)
    (' °C', ' %', '')
    """
    return next((unit for end, unit in _UNITS.items() if (field or "").endswith(end)), "")


class ThresholdParams(DetectorParams):
    """Limits in the stream's own unit (°C for ``temperature_c``), durations in seconds.

    ``above`` / ``below``: the alarm starts when the value goes above / below them (at least
    one is required). ``clear_above`` / ``clear_below``: where it clears again (default: the
    limit itself, no hysteresis); a clear level must lie on the normal side of its limit.
    ``for_s``: how long the condition must hold before the score becomes 1 (default 0).
    ``field``: the stream's field name, for the unit in messages (the rules engine fills it
    in).
    """

    model_config = ConfigDict(allow_inf_nan=False)

    above: float | None = None
    clear_above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    for_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 0.0
    field: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _levels_make_sense(self) -> ThresholdParams:
        if self.above is None and self.below is None:
            raise ValueError("set at least one limit: above and/or below")
        if self.clear_above is not None:
            if self.above is None:
                raise ValueError("clear_above needs above")
            if self.clear_above > self.above:
                raise ValueError(
                    f"clear_above ({self.clear_above}) must be at or below above ({self.above}):"
                    " the alarm clears when the value falls back under it"
                )
        if self.clear_below is not None:
            if self.below is None:
                raise ValueError("clear_below needs below")
            if self.clear_below < self.below:
                raise ValueError(
                    f"clear_below ({self.clear_below}) must be at or above below ({self.below}):"
                    " the alarm clears when the value rises back over it"
                )
        if self.above is not None and self.below is not None:
            top = self.above if self.clear_above is None else self.clear_above
            bottom = self.below if self.clear_below is None else self.clear_below
            if bottom >= top:
                raise ValueError(
                    f"below/clear_below ({bottom}) must be under above/clear_above ({top}):"
                    " otherwise a value could be in alarm on both sides at once"
                )
        return self


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    side: Literal["above", "below"] | None
    since_s: float | None
    last_ts_s: float | None
    last_value: float | None


_SIDE_NAMES: dict[int, Literal["above", "below"] | None] = {1: "above", -1: "below", 0: None}
_SIDE_CODES = {"above": 1, "below": -1, None: 0}


@register("threshold", ThresholdParams)
class Threshold:
    """Value above and/or below fixed limits, with hysteresis and a for-duration.

    The condition starts when a value goes beyond a limit and ends only when a value comes
    back past the clear level, so a reading that hovers at the limit does not flap. The score
    is 1 once the condition has held for ``for_s`` (measured from the first reading beyond
    the limit, so a restart that restores the state keeps counting), else 0.

    Parameters
    ----------
    params : ThresholdParams
        ``above`` / ``below`` (stream unit, e.g. °C): the limits; ``clear_above`` /
        ``clear_below`` (same unit): clear levels, default the limits; ``for_s`` (seconds,
        default 0): how long the condition must hold before the score is 1; ``field`` (for
        the unit in messages).

    Works on any numeric stream whose bad values are known in advance (a cold room above
    8 °C, a freezer above -15 °C). Fails, by design, on everything relative: it knows no
    baseline, so a slow drift inside the limits or a stuck sensor stays unseen. Readings
    are evaluated as they come: a gap in the data while the condition holds counts as held.
    Call ``learn_one`` for every reading, even when the score is 1: the state machine moves
    only there.

    Examples
    --------
    A cold room warming past 8 °C, alarm after 10 minutes, cleared under 7.5 °C:

    >>> import random
    >>> rng = random.Random(4)
    >>> params = ThresholdParams(above=8.0, clear_above=7.5, for_s=600, field="temperature_c")
    >>> detector = Threshold(params)
    >>> scores = []
    >>> for minute in range(60):
    ...     value = 7.0 + 0.1 * minute if minute < 30 else 10.0 - 0.1 * (minute - 30)
    ...     value += rng.gauss(0, 0.05)
    ...     scores.append(detector.score_one(minute * 60.0, value))
    ...     detector.learn_one(minute * 60.0, value)
    >>> scores.index(1.0), len(scores) - scores[::-1].index(1.0) - 1
    (21, 54)
    >>> detector.details()["message"]
    'back to normal: 7.0... °C (above 8 °C clears under 7.5 °C)'
    """

    def __init__(self, params: ThresholdParams) -> None:
        self.params = params
        self._above = params.above
        self._below = params.below
        self._clear_above = params.above if params.clear_above is None else params.clear_above
        self._clear_below = params.below if params.clear_below is None else params.clear_below
        self._for_s = params.for_s
        self._unit = unit_of(params.field)
        self._side = 0
        self._since_s: float | None = None
        self._last_ts_s: float | None = None
        self._last_value: float | None = None

    @classmethod
    def _test_params(cls) -> ThresholdParams:
        return ThresholdParams(above=8.0, clear_above=7.5, below=0.0, for_s=300.0)

    def _side_after(self, value: float) -> int:
        """Which side's condition holds once ``value`` is seen: 1 above, -1 below, 0 none."""
        side = self._side
        if side == 1 and self._clear_above is not None and value >= self._clear_above:
            return 1
        if side == -1 and self._clear_below is not None and value <= self._clear_below:
            return -1
        if self._above is not None and value > self._above:
            return 1
        if self._below is not None and value < self._below:
            return -1
        return 0

    def score_one(self, ts_s: float, value: float) -> float:
        if value != value:  # NaN carries no evidence: keep the current verdict
            return self._score_at(ts_s)
        return self._score_for(ts_s, self._side_after(value))

    def learn_one(self, ts_s: float, value: float) -> None:
        self.update_one(ts_s, value)

    def update_one(self, ts_s: float, value: float) -> float:
        if value != value:  # NaN carries no evidence: keep the current verdict, learn nothing
            return self._score_at(ts_s)
        side = self._side_after(value)  # once, for the score and for learning
        score = self._score_for(ts_s, side)
        if side != self._side:
            self._side = side
            self._since_s = ts_s if side else None
        self._last_ts_s = ts_s
        self._last_value = value
        return score

    def _score_for(self, ts_s: float, side: int) -> float:
        """The score of a reading at ``ts_s`` that puts the stream on ``side``."""
        if side == 0:
            return 0.0
        since = self._since_s if side == self._side and self._since_s is not None else ts_s
        return 1.0 if ts_s - since >= self._for_s else 0.0

    def _score_at(self, ts_s: float) -> float:
        if self._side == 0 or self._since_s is None:
            return 0.0
        return 1.0 if ts_s - self._since_s >= self._for_s else 0.0

    @property
    def held_s(self) -> float:
        """How long the current condition has held at the latest reading (0 if none)."""
        if self._since_s is None or self._last_ts_s is None:
            return 0.0
        return max(0.0, self._last_ts_s - self._since_s)

    @property
    def side(self) -> Literal["above", "below"] | None:
        """The side whose condition holds now, if any."""
        return _SIDE_NAMES[self._side]

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"for_s": self._for_s, "held_s": self.held_s}
        if self._last_value is None or self._last_ts_s is None:
            out["message"] = "no reading yet"
            out["score"] = 0.0
            return out
        score = self._score_at(self._last_ts_s)
        value = describe_value(self._last_value) + self._unit
        out["value"] = self._last_value
        out["score"] = score
        if self._side == 0:
            out["message"] = f"back to normal: {value} ({self._limits_text()})"
            return out
        limit = self._above if self._side == 1 else self._below
        assert limit is not None  # a side is only entered through its limit
        out["limit"] = limit
        where = "above" if self._side == 1 else "below"
        held = describe_duration(self.held_s)
        if score >= 1.0:
            out["message"] = f"{value} {where} {describe_value(limit)}{self._unit} for {held}"
        else:
            wait = describe_duration(self._for_s)
            out["message"] = (
                f"{value} {where} {describe_value(limit)}{self._unit} for {held};"
                f" alerts after {wait}"
            )
        return out

    def _limits_text(self) -> str:
        parts = []
        for name, limit, clear, word in (
            ("above", self._above, self._clear_above, "under"),
            ("below", self._below, self._clear_below, "over"),
        ):
            if limit is None or clear is None:
                continue
            text = f"{name} {describe_value(limit)}{self._unit}"
            if clear != limit:
                text += f" clears {word} {describe_value(clear)}{self._unit}"
            parts.append(text)
        return ", ".join(parts)

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            side=_SIDE_NAMES[self._side],
            since_s=self._since_s,
            last_ts_s=self._last_ts_s,
            last_value=self._last_value,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._side = _SIDE_CODES[restored.side]
        self._since_s = restored.since_s
        self._last_ts_s = restored.last_ts_s
        self._last_value = restored.last_value
