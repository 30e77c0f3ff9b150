"""Binary equipment inputs as logic: state confirmation (debounce) and equipment counters.

Nothing here touches GPIO; ``sensors/gpio_input.py`` feeds it edges from gpiozero.

``StateConfirmer`` turns raw contact levels into confirmed states. A raw level becomes the
confirmed state only after it has stayed there for ``confirm_active_s`` (to active) or
``confirm_inactive_s`` (to inactive), so a bouncing contact, or a door that swings open for
half a second, gives at most one confirmed change. The change carries the time of the raw
edge that started the stable run, not the time it was confirmed.

>>> confirmer = StateConfirmer(confirm_active_s=2.0, confirm_inactive_s=2.0)
>>> confirmer.start(False, monotonic_s=0.0, wall_s=1000.0).state
False
>>> [confirmer.observe(level, t, 1000.0 + t) for level, t in [(True, 5.0), (False, 5.003),
...     (True, 5.006)]]
[[], [], []]
>>> confirmer.advance(7.006)
[Transition(state=True, monotonic_s=5.006, wall_s=1005.006, previous_duration_s=None)]

``EquipmentCounters`` derives maintenance figures from confirmed transitions: duty cycle over
a rolling window, starts in the last hour, and total runtime hours. ``equipment_store.py``
keeps them in a small JSON file so a restart loses neither the runtime hours nor the last
hour's history.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

__all__ = [
    "COUNTERS_FILE_VERSION",
    "DEFAULT_MAX_SEGMENTS",
    "EquipmentCounters",
    "StateConfirmer",
    "Transition",
]

DEFAULT_MAX_SEGMENTS = 2000
"""Most state segments the counters keep. One hour of a compressor short-cycling every
minute needs ~120; the cap only bites on a chattering input, and then the oldest history
goes first (duty cycle is computed over the part still known)."""

COUNTERS_FILE_VERSION = 1
STARTS_WINDOW_S = 3600.0
"""Starts are counted over the last hour, whatever the duty-cycle window."""


@dataclass(frozen=True)
class Transition:
    """A confirmed state: ``state`` since the raw edge at ``monotonic_s``/``wall_s``.

    ``previous_duration_s`` is how long the previous confirmed state lasted, edge to edge
    (seconds); None when the previous state's beginning was never seen (the state found at
    start, or the first state itself).
    """

    state: bool
    monotonic_s: float
    wall_s: float
    previous_duration_s: float | None


class StateConfirmer:
    """Time-based debounce: a raw level must hold before it becomes the confirmed state.

    Times are passed in (monotonic seconds for ordering and durations, wall seconds for the
    reported timestamp), so the caller's clock, real or fake, decides. Edges must arrive in
    time order; ``observe`` first settles anything that would have been confirmed before the
    edge, so the result does not depend on how often ``advance`` is called.
    """

    def __init__(self, confirm_active_s: float, confirm_inactive_s: float) -> None:
        if confirm_active_s < 0 or confirm_inactive_s < 0:
            raise ValueError("confirmation times must be >= 0 seconds")
        self.confirm_active_s = confirm_active_s
        self.confirm_inactive_s = confirm_inactive_s
        self._state: bool | None = None
        self._state_since: float | None = None
        self._raw = False
        self._raw_since = (0.0, 0.0)

    @property
    def state(self) -> bool | None:
        """The confirmed state; None before ``start``."""
        return self._state

    def start(self, level: bool, monotonic_s: float, wall_s: float) -> Transition:
        """Confirm the level found at start at once (no edge to wait for)."""
        self._state, self._state_since = level, None
        self._raw, self._raw_since = level, (monotonic_s, wall_s)
        return Transition(level, monotonic_s, wall_s, None)

    def observe(self, level: bool, monotonic_s: float, wall_s: float) -> list[Transition]:
        """A raw edge to ``level``; returns the confirmed changes it settles (0 to 2)."""
        if self._state is None:
            raise RuntimeError("StateConfirmer.start() must be called before observe()")
        out = self.advance(monotonic_s)
        if level != self._raw:
            self._raw, self._raw_since = level, (monotonic_s, wall_s)
            out += self.advance(monotonic_s)  # a zero confirmation time confirms at the edge
        return out

    def advance(self, now_s: float) -> list[Transition]:
        """Confirm the pending level if it has held long enough by ``now_s`` (monotonic)."""
        deadline = self.deadline()
        if deadline is None or now_s < deadline:
            return []
        edge_mono, edge_wall = self._raw_since
        previous = None if self._state_since is None else edge_mono - self._state_since
        self._state, self._state_since = self._raw, edge_mono
        return [Transition(self._raw, edge_mono, edge_wall, previous)]

    def deadline(self) -> float | None:
        """When (monotonic s) the pending raw level will be confirmed; None if none pends."""
        if self._state is None or self._raw == self._state:
            return None
        hold_s = self.confirm_active_s if self._raw else self.confirm_inactive_s
        return self._raw_since[0] + hold_s


class EquipmentCounters:
    """Duty cycle, starts per hour and runtime hours from confirmed states.

    The history is a timeline of segments ``(start_monotonic_s, state)`` where state None
    means unknown (the agent was not running). Duty cycle is on-time over *known* time within
    the last ``window_s`` (default 3600 s); starts are known off→on changes in the last hour
    (a counted number, not extrapolated from a shorter span); runtime is the total on-time,
    carried over restarts by ``CounterStore``. Memory is bounded: segments older than the
    window are pruned and at most ``max_segments`` are kept.
    """

    def __init__(self, window_s: float = 3600.0, max_segments: int = DEFAULT_MAX_SEGMENTS) -> None:
        self.window_s = window_s
        self._keep_s = max(window_s, STARTS_WINDOW_S)
        self._segments: deque[tuple[float, bool | None]] = deque(maxlen=max_segments)
        self._runtime_closed_s = 0.0

    def record(self, state: bool | None, monotonic_s: float) -> None:
        """The state from ``monotonic_s`` on (a confirmed transition, or None: unknown)."""
        if self._segments:
            last_start, last_state = self._segments[-1]
            monotonic_s = max(monotonic_s, last_start)
            if state == last_state:
                return
            if last_state:
                self._runtime_closed_s += monotonic_s - last_start
        self._segments.append((monotonic_s, state))
        self._prune(monotonic_s)

    @property
    def state(self) -> bool | None:
        """The latest recorded state (None: unknown or nothing recorded)."""
        return self._segments[-1][1] if self._segments else None

    @property
    def segment_count(self) -> int:
        """How many segments are held (bounded by pruning and ``max_segments``)."""
        return len(self._segments)

    def runtime_s(self, now_s: float) -> float:
        """Total on-time (seconds), including the current run up to ``now_s``."""
        total = self._runtime_closed_s
        if self._segments and self._segments[-1][1]:
            total += max(0.0, now_s - self._segments[-1][0])
        return total

    def duty_cycle_pct(self, now_s: float) -> float:
        """On-time as a percentage of the known time in the last ``window_s``."""
        self._prune(now_s)
        window_start = now_s - self.window_s
        known = on = 0.0
        items = list(self._segments)
        for index, (start, state) in enumerate(items):
            end = items[index + 1][0] if index + 1 < len(items) else now_s
            span = min(end, now_s) - max(start, window_start)
            if span > 0 and state is not None:
                known += span
                on += span if state else 0.0
        if known <= 0:
            return 100.0 if self.state else 0.0
        return min(100.0, 100.0 * on / known)

    def starts_last_hour(self, now_s: float) -> int:
        """Known off→on transitions in the last 3600 s."""
        self._prune(now_s)
        since = now_s - STARTS_WINDOW_S
        items = list(self._segments)
        return sum(
            1
            for (_, before), (start, after) in itertools.pairwise(items)
            if before is False and after is True and since < start <= now_s
        )

    def snapshot(self, now_s: float) -> dict[str, float]:
        """The three published counters as reading fields."""
        return {
            "duty_cycle_pct": round(self.duty_cycle_pct(now_s), 2),
            "starts_per_h": float(self.starts_last_hour(now_s)),
            "runtime_h": round(self.runtime_s(now_s) / 3600.0, 4),
        }

    def _prune(self, now_s: float) -> None:
        horizon = now_s - self._keep_s
        while len(self._segments) >= 2 and self._segments[1][0] <= horizon:
            self._segments.popleft()

    def to_json(self, now_mono_s: float, now_wall_s: float) -> dict[str, object]:
        """The persisted form: segment starts as wall seconds, mapped from monotonic now
        (``wall = now_wall - (now_mono - start)``; see ``equipment_store.CounterStore``)."""
        offset = now_wall_s - now_mono_s
        return {
            "version": COUNTERS_FILE_VERSION,
            "saved_wall_s": now_wall_s,
            "runtime_s": self.runtime_s(now_mono_s),
            "segments": [[start + offset, state] for start, state in self._segments],
        }

    def load_json(self, data: object, now_mono_s: float, now_wall_s: float) -> None:
        """Restore from ``to_json`` output; the time since the save becomes unknown."""
        if not isinstance(data, dict) or data.get("version") != COUNTERS_FILE_VERSION:
            raise ValueError("not a version 1 counters file")
        saved_wall, runtime = data["saved_wall_s"], data["runtime_s"]
        segments = data["segments"]
        if not isinstance(saved_wall, int | float) or not isinstance(runtime, int | float):
            raise ValueError("saved_wall_s and runtime_s must be numbers")
        if not isinstance(segments, list):
            raise ValueError("segments must be a list")
        to_mono = now_mono_s - now_wall_s  # a wall time in the future is clamped to now
        self._segments.clear()
        for entry in segments:
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], int | float)
                and (entry[1] is None or isinstance(entry[1], bool))
            ):
                raise ValueError(f"bad segment {entry!r}")
            self._segments.append((min(entry[0], now_wall_s) + to_mono, entry[1]))
        # runtime_s already includes any run up to the save, so the unknown gap closes no run.
        self._runtime_closed_s = max(0.0, float(runtime))
        gap_start = min(float(saved_wall), now_wall_s) + to_mono
        if self._segments and self._segments[-1][0] > gap_start:
            gap_start = self._segments[-1][0]
        self._segments.append((gap_start, None))
        self._prune(now_mono_s)
