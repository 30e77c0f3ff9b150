"""A small stoppable background loop for drivers that do work on edges and deadlines.

The loop calls ``step()``, which does what is due and returns the monotonic time it next
has work (None: nothing scheduled), then waits on an ``Event`` until that time, a
``wake()`` (a new edge) or ``stop()``. It never busy-loops and never sleeps blindly; the
wait is capped at ``max_wait_s`` (1 s) so that a clock other than the one ``Event.wait``
measures (a ``FakeClock`` in a test) is still followed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sitewatch.clock import Clock

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker:
    """Runs ``step`` in a daemon thread named ``name`` between ``start()`` and ``stop()``."""

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        clock: Clock,
        *,
        max_wait_s: float = 1.0,
    ) -> None:
        self.name = name
        self._step = step
        self._clock = clock
        self._max_wait_s = max_wait_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread (once; a no-op if started or stopped before)."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run ``step`` again now (safe from any thread, e.g. a GPIO callback)."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and join the thread; logs an error if it does not end within ``timeout_s``."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("worker %s did not stop within %.0f s", self.name, timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            deadline_s = self._step()
            wait_s = self._max_wait_s
            if deadline_s is not None:
                wait_s = min(wait_s, max(0.0, deadline_s - self._clock.monotonic()))
            self._wake.wait(wait_s)
