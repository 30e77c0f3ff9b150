"""Time, injected: every poller, debouncer, back-off and cooldown takes a ``Clock``.

``SystemClock`` is the real one. ``FakeClock`` only moves when told to (or when something
waits on it), so tests of timing behaviour run instantly and never sleep for luck.

>>> clock = FakeClock(wall_s=1_000.0)
>>> clock.sleep(2.5)
False
>>> clock.monotonic(), clock.time()
(2.5, 1002.5)
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time for intervals, wall time for timestamps, and an interruptible sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and deadlines)."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch, UTC (for timestamps that leave the process)."""
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; return True if ``stop`` was set."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic``, ``time.time`` and ``Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


class FakeClock:
    """A clock that advances only through ``advance`` or ``sleep`` (which returns at once).

    ``wall_s`` is the initial wall time (seconds since the epoch). Thread-safe.
    """

    def __init__(self, wall_s: float = 1_795_464_000.0, monotonic_s: float = 0.0) -> None:
        self.wall_s = wall_s
        self.monotonic_s = monotonic_s
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.monotonic_s

    def time(self) -> float:
        with self._lock:
            return self.wall_s

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        with self._lock:
            self.monotonic_s += seconds
            self.wall_s += seconds

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return stop is not None and stop.is_set()
