"""Short-cycling: a compressor starting too often, or stopping and starting too soon."""

from __future__ import annotations

from collections import deque
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration
from sitewatch.collector.protocols import JsonValue

__all__ = ["ShortCycling", "ShortCyclingParams"]

_HOUR_S = 3600.0


class ShortCyclingParams(DetectorParams):
    """``max_starts_per_h``: more starts than this within an hour is short-cycling (default
    6); ``min_on_s`` / ``min_off_s``: a run or a rest shorter than this is too short
    (seconds, default 180 each; 0 turns the check off); ``min_short_phases``: how many too
    short runs or rests within an hour make short-cycling (default 3)."""

    model_config = ConfigDict(allow_inf_nan=False)

    max_starts_per_h: Annotated[int, Field(ge=1, le=60)] = 6
    min_on_s: Annotated[float, Field(ge=0, le=86400)] = 180.0
    min_off_s: Annotated[float, Field(ge=0, le=86400)] = 180.0
    min_short_phases: Annotated[int, Field(ge=1, le=60)] = 3


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    running: bool | None
    phase_start_s: float | None
    starts: list[float]
    short_phases: list[float]
    last_ts_s: float | None


@register("short_cycling", ShortCyclingParams)
class ShortCycling:
    """Starts per hour above a limit, or runs and rests shorter than the minimum.

    Input is the ``running`` stream (1.0 running, 0.0 stopped; values from 0.5 up count as
    running). A start is a reading that finds the machine running after one that found it
    stopped. The times of the last ``max_starts_per_h + 1`` starts and of the last
    ``min_short_phases`` too-short phases are kept (fixed memory): the score is 1 while more
    than ``max_starts_per_h`` starts, or ``min_short_phases`` too-short runs or rests, fall
    within the last hour, else 0. It clears by itself an hour after the cycling stops. A
    phase's length is measured between the first readings of consecutive phases, so it is
    only as exact as the reading interval; the phase running when the stream starts has no
    known beginning and is not judged.

    Parameters
    ----------
    params : ShortCyclingParams
        ``max_starts_per_h`` (starts, default 6), ``min_on_s`` / ``min_off_s`` (seconds,
        default 180), ``min_short_phases`` (phases, default 3).

    Works on compressors, pumps and burners whose run contact is sampled well inside their
    shortest phase (the agent sends state changes as they happen, and readings every
    interval). A normal thermostat cycle (2-4 starts an hour, runs and rests of 9-15
    minutes) stays at 0; short-cycling at 10-20 starts an hour is flagged within about 25
    minutes. Fails when readings are sparser than the cycles (at one reading a minute,
    cycles under two minutes are partly invisible), and says nothing about why the machine
    cycles (a thermostat next to the evaporator, low refrigerant, an oversized unit).

    Examples
    --------
    A compressor cycling every ~24 minutes that starts short-cycling after 3 hours:

    >>> import random
    >>> rng = random.Random(8)
    >>> detector = ShortCycling(ShortCyclingParams())
    >>> running, next_change, first_alert = False, 600.0, None
    >>> for minute in range(6 * 60):
    ...     ts = minute * 60.0
    ...     while ts >= next_change:
    ...         running = not running
    ...         normal = next_change < 3 * 3600
    ...         next_change += rng.uniform(540, 900) if normal else rng.uniform(60, 150)
    ...     score = detector.score_one(ts, 1.0 if running else 0.0)
    ...     if score and first_alert is None:
    ...         first_alert = ts
    ...     detector.learn_one(ts, 1.0 if running else 0.0)
    >>> (first_alert - 3 * 3600) / 60
    10.0
    >>> detector.details()["message"]
    'at least 7 starts in the last hour (limit 6); at least 3 runs or rests shorter than 3 m;
    running for 1 m'
    """

    def __init__(self, params: ShortCyclingParams) -> None:
        self.params = params
        self._max_starts = params.max_starts_per_h
        self._min_on_s = params.min_on_s
        self._min_off_s = params.min_off_s
        self._running: bool | None = None
        self._phase_start_s: float | None = None
        self._starts: deque[float] = deque(maxlen=params.max_starts_per_h + 1)
        self._short: deque[float] = deque(maxlen=params.min_short_phases)
        self._last_ts_s: float | None = None

    def _change(self, ts_s: float, running: bool) -> tuple[bool, bool]:
        """(is a start, ends a too-short phase) for a reading ``running`` at ``ts_s``."""
        was = self._running
        if was is None or was == running:
            return False, False
        start = self._phase_start_s
        if start is None:
            return running, False
        minimum = self._min_on_s if was else self._min_off_s
        return running, ts_s - start < minimum

    def _judge(self, ts_s: float, start: bool, short: bool) -> float:
        since = ts_s - _HOUR_S
        starts = self._starts
        needed = self._max_starts + 1 - start
        if needed <= 0 or (len(starts) >= needed and starts[-needed] > since):
            return 1.0
        phases = self._short
        needed = (phases.maxlen or 1) - short
        if needed <= 0 or (len(phases) >= needed and phases[-needed] > since):
            return 1.0
        return 0.0

    def score_one(self, ts_s: float, value: float) -> float:
        start, short = self._change(ts_s, value >= 0.5)
        return self._judge(ts_s, start, short)

    def learn_one(self, ts_s: float, value: float) -> None:
        running = value >= 0.5
        start, short = self._change(ts_s, running)
        if start:
            self._starts.append(ts_s)
        if short:
            self._short.append(ts_s)
        if running != self._running:
            self._phase_start_s = ts_s if self._running is not None else None
            self._running = running
        self._last_ts_s = ts_s

    def starts_last_hour(self, now_s: float) -> int:
        """Starts seen in the hour before ``now_s`` (counted up to ``max_starts_per_h + 1``)."""
        return sum(1 for ts in self._starts if ts > now_s - _HOUR_S)

    def details(self) -> dict[str, float | str]:
        now = self._last_ts_s
        if now is None:
            return {"message": "no reading yet", "score": 0.0}
        starts = self.starts_last_hour(now)
        short = sum(1 for ts in self._short if ts > now - _HOUR_S)
        score = self._judge(now, False, False)
        out: dict[str, float | str] = {
            "starts_last_hour": float(starts),
            "short_phases_last_hour": float(short),
            "max_starts_per_h": float(self._max_starts),
            "score": score,
        }
        # The rings hold only what the decision needs: a full ring means "at least".
        more = "at least " if starts == self._starts.maxlen else ""
        parts = [f"{more}{starts} starts in the last hour (limit {self._max_starts})"]
        if self._min_on_s or self._min_off_s:
            shortest = describe_duration(min(x for x in (self._min_on_s, self._min_off_s) if x))
            more = "at least " if short == self._short.maxlen else ""
            parts.append(f"{more}{short} runs or rests shorter than {shortest}")
        if self._phase_start_s is not None:
            state = "running" if self._running else "stopped"
            since = now - self._phase_start_s
            out["phase_s"] = since
            parts.append(f"{state} for {describe_duration(since)}")
        out["message"] = "; ".join(parts)
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            running=self._running,
            phase_start_s=self._phase_start_s,
            starts=list(self._starts),
            short_phases=list(self._short),
            last_ts_s=self._last_ts_s,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._running = restored.running
        self._phase_start_s = restored.phase_start_s
        self._starts = deque(restored.starts, maxlen=self._starts.maxlen)
        self._short = deque(restored.short_phases, maxlen=self._short.maxlen)
        self._last_ts_s = restored.last_ts_s
