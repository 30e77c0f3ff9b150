"""The collector watching itself: is detection still evaluating, are notifications getting
out?

Two findings, each an internal alert the engine raises and clears (site ``_collector``):

- ``detection``: readings arrive (one within ``max_idle_s``) but no rule was evaluated for
  more than ``max_idle_s``: detection is stuck or misconfigured, and every alert it should
  raise is missing. When no readings arrive there is nothing to evaluate, so it stays quiet
  (silent sensors are detection's own ``silence`` rule).
- ``notifier-<channel>``: a channel failed ``notifier_failures`` attempts in a row; it clears
  at the channel's next success.

Inputs are plain timestamps and counters set from any thread (``note_*``); ``findings`` is
read on the engine's tick.

>>> from sitewatch.collector.alerting.config import SelfCheckConfig
>>> check = SelfCheck(SelfCheckConfig(max_idle_s=600, notifier_failures=2), started_s=0.0)
>>> check.note_reading(650.0)
>>> [(f.sensor, f.firing) for f in check.findings(700.0)]
[('detection', True)]
>>> check.note_evaluated(700.0)
>>> check.note_result("mqtt", False, "broker away")
>>> check.note_result("mqtt", False, "broker away")
>>> [(f.sensor, f.firing, f.cleared) for f in check.findings(701.0)]
[('detection', False, True), ('notifier-mqtt', True, False)]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sitewatch.collector.alerting.config import SelfCheckConfig

__all__ = ["Finding", "SelfCheck"]


@dataclass(frozen=True)
class Finding:
    """One internal condition now: ``firing`` (raise it if not open), ``cleared`` (resolve
    it if open); neither: leave it as it is. ``sensor`` and ``condition`` name it."""

    sensor: str
    condition: str
    firing: bool
    cleared: bool
    message: str
    value: float


class SelfCheck:
    """See the module docstring. ``started_s``: wall time at start (the idle clock's zero)."""

    def __init__(self, config: SelfCheckConfig, started_s: float) -> None:
        self.config = config
        self._last_evaluated_s = started_s
        self._last_reading_s: float | None = None
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._last_error: dict[str, str] = {}

    def note_evaluated(self, now_s: float) -> None:
        self._last_evaluated_s = now_s

    def note_reading(self, now_s: float) -> None:
        self._last_reading_s = now_s

    def note_result(self, channel: str, ok: bool, error: str | None) -> None:
        with self._lock:
            if ok:
                self._failures[channel] = 0
            else:
                self._failures[channel] = self._failures.get(channel, 0) + 1
                self._last_error[channel] = error or "failed"

    def failures(self) -> dict[str, int]:
        """Consecutive failed attempts per channel."""
        with self._lock:
            return dict(self._failures)

    def findings(self, now_s: float) -> list[Finding]:
        if not self.config.enabled:
            return []
        limit_s = self.config.max_idle_s
        idle_s = now_s - self._last_evaluated_s
        last_reading_s = self._last_reading_s
        flowing = last_reading_s is not None and now_s - last_reading_s <= limit_s
        found = [
            Finding(
                "detection", "evaluations/idle", firing=flowing and idle_s > limit_s,
                cleared=idle_s <= limit_s,
                message=f"readings arrive but no rule was evaluated for {idle_s:.0f} s",
                value=idle_s,
            )
        ]  # fmt: skip
        with self._lock:
            failures = sorted(self._failures.items())
            errors = dict(self._last_error)
        for channel, count in failures:
            found.append(Finding(
                f"notifier-{channel}", "notify/failures",
                firing=count >= self.config.notifier_failures, cleared=count == 0,
                message=f"notifications via {channel} failed {count} times in a row: "
                        f"{errors.get(channel, '')}",
                value=float(count),
            ))  # fmt: skip
        return found
