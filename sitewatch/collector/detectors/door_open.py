"""Door open: a door or contact left open longer than allowed."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration
from sitewatch.collector.protocols import JsonValue

__all__ = ["DoorOpen", "DoorOpenParams"]


class DoorOpenParams(DetectorParams):
    """``max_open_s``: how long the door may stay open (seconds, default 300)."""

    model_config = ConfigDict(allow_inf_nan=False)

    max_open_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 300.0


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    open_since_s: float | None
    last_ts_s: float | None
    checked_s: float | None


@register("door_open", DoorOpenParams)
class DoorOpen:
    """An ``open`` contact (1.0 open, 0.0 closed) open longer than ``max_open_s``.

    The door counts as open from the first reading that found it open; the score is 1 once
    it has been open for more than ``max_open_s``, else 0. ``check(now_s)``, called on a
    timer, keeps scoring while no reading comes: a door that opened and never sent another
    reading is still open as far as anyone knows. A door found open by the very first
    reading counts from that reading, since its opening was not seen.

    Parameters
    ----------
    params : DoorOpenParams
        ``max_open_s`` (seconds, default 300).

    Works for cold-room and freezer doors, cabinet doors, hatches: anything whose reed
    contact is read every interval or reported on change. Fails to tell an open door from
    a broken or unplugged reed switch that reads open (pair it with the room's temperature
    detectors), and an agent that went silent with the door open keeps the alert going
    (the silence detector says why).

    Examples
    --------
    A cold-room door opened for a minute, then left open:

    >>> detector = DoorOpen(DoorOpenParams(max_open_s=300))
    >>> for ts, value in [(0, 0.0), (60, 1.0), (120, 0.0), (600, 1.0), (660, 1.0)]:
    ...     _ = detector.score_one(float(ts), value)
    ...     detector.learn_one(float(ts), value)
    >>> [detector.check(now) for now in (700.0, 900.0, 901.0, 1500.0)]
    [0.0, 0.0, 1.0, 1.0]
    >>> detector.details()["message"]
    'open for 15 m (allowed 5 m); no reading for 14 m'
    """

    def __init__(self, params: DoorOpenParams) -> None:
        self.params = params
        self._max_open_s = params.max_open_s
        self._open_since_s: float | None = None
        self._last_ts_s: float | None = None
        self._checked_s: float | None = None

    def score_one(self, ts_s: float, value: float) -> float:
        if value < 0.5:
            return 0.0
        since = ts_s if self._open_since_s is None else self._open_since_s
        return 1.0 if ts_s - since > self._max_open_s else 0.0

    def learn_one(self, ts_s: float, value: float) -> None:
        if value < 0.5:
            self._open_since_s = None
        elif self._open_since_s is None:
            self._open_since_s = ts_s
        if self._last_ts_s is None or ts_s > self._last_ts_s:
            self._last_ts_s = ts_s

    def check(self, now_s: float) -> float:
        self._checked_s = now_s
        since = self._open_since_s
        return 0.0 if since is None else (1.0 if now_s - since > self._max_open_s else 0.0)

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"max_open_s": self._max_open_s}
        last = self._last_ts_s
        if last is None:
            out["message"] = "no reading yet"
            out["score"] = 0.0
            return out
        since = self._open_since_s
        if since is None:
            out["open_s"] = 0.0
            out["score"] = 0.0
            out["message"] = "closed"
            return out
        now = last if self._checked_s is None else max(last, self._checked_s)
        out["open_s"] = open_s = now - since
        out["open_since_s"] = since
        out["score"] = score = 1.0 if open_s > self._max_open_s else 0.0
        allowed = describe_duration(self._max_open_s)
        text = f"open for {describe_duration(open_s)} (allowed {allowed})"
        if now - last > self._max_open_s:
            text += f"; no reading for {describe_duration(now - last)}"
        out["message"] = text if score else f"{text}: not yet too long"
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            open_since_s=self._open_since_s, last_ts_s=self._last_ts_s, checked_s=self._checked_s
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._open_since_s = restored.open_since_s
        self._last_ts_s = restored.last_ts_s
        self._checked_s = restored.checked_s
