"""Equipment counters kept on disk, so restarts keep runtime hours and the last hour.

One small JSON file per input in the agent's state directory (systemd's ``StateDirectory``,
beside the outbox), written atomically because power cuts are routine on a Pi.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sitewatch.agent.equipment import EquipmentCounters
from sitewatch.atomicfile import write_atomic
from sitewatch.clock import Clock

__all__ = ["CounterStore"]

log = logging.getLogger(__name__)


class CounterStore:
    """``EquipmentCounters`` persisted to ``path`` (None: memory only).

    The file is written atomically (temp file, fsync, ``os.replace``, fsync of the
    directory) after every confirmed change and otherwise every ``save_interval_s`` (60 s),
    so a crash loses at most that much runtime. Monotonic time does not survive a reboot, so
    the file stores wall times: at save, each segment start becomes ``wall_now - (mono_now -
    start)``; at load, ``mono_now - (wall_now - wall)``. Durations inside one run stay exact
    even if NTP steps the wall clock; the time between the last save and the restart is
    recorded as unknown (excluded from the duty cycle, never counted as runtime or a start).
    A wall time later than the restart's (clock set back) is clamped to the restart.
    """

    def __init__(
        self,
        path: Path | None,
        clock: Clock,
        *,
        window_s: float = 3600.0,
        save_interval_s: float = 60.0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.save_interval_s = save_interval_s
        self.counters = EquipmentCounters(window_s)
        self._last_save_s = clock.monotonic()
        self._dirty = False
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            self.counters.load_json(data, self.clock.monotonic(), self.clock.time())
        except (OSError, ValueError, KeyError) as error:
            self.counters = EquipmentCounters(self.counters.window_s)
            aside = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path  # overwritten by the next save
            log.warning(
                "equipment counters in %s unreadable (%s); starting from zero, old file at %s",
                path,
                error,
                aside,
            )

    def record(self, state: bool | None, monotonic_s: float) -> None:
        """Record a confirmed state; it is saved by the next ``maybe_save``."""
        self.counters.record(state, monotonic_s)
        self._dirty = True

    def maybe_save(self, now_s: float | None = None) -> None:
        """Save if a change is pending or ``save_interval_s`` has passed since the last save."""
        now = self.clock.monotonic() if now_s is None else now_s
        if self._dirty or now - self._last_save_s >= self.save_interval_s:
            self.save()

    def next_save_s(self) -> float:
        """When (monotonic s) the periodic save is next due."""
        return self._last_save_s + self.save_interval_s

    def save(self) -> None:
        """Write the file now. A failed write is logged and retried at the next save."""
        self._last_save_s = self.clock.monotonic()
        if self.path is None:
            self._dirty = False
            return
        data = self.counters.to_json(self._last_save_s, self.clock.time())
        try:
            write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as error:
            log.warning("cannot save equipment counters to %s: %s", self.path, error)
            return
        self._dirty = False
