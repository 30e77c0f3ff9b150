"""The hand-off between the MQTT thread and the writer thread: batches by size and time,
with a bounded queue so a writer that falls behind pushes back on its producer.

``submit`` (producer) adds a message's lines and its token to the current batch. A batch is
ready when it holds ``batch_size`` lines; ``take`` (consumer) returns the oldest ready batch,
or the current one once ``flush_interval_s`` has passed since its first submit, or
``idle_flush_s`` since its last one. The idle flush matters because messages are
acknowledged only once written: a broker that allows few unacknowledged messages in flight
(mosquitto's default is 20) stops sending long before a batch is full, and without it every
batch would wait out the whole flush interval. At most
``max_pending`` ready batches wait; beyond that ``submit`` blocks until ``take`` makes room.
A message's lines are never split between batches, so a token belongs to exactly one batch
and tokens come out of ``take`` in the order they went into ``submit``.

>>> from sitewatch.clock import FakeClock
>>> clock = FakeClock()
>>> batcher = Batcher(clock, batch_size=3, flush_interval_s=1.0, max_pending=4,
...                   idle_flush_s=0.05)
>>> batcher.submit(["a v=1.0 1"], "m1")
>>> batcher.take() is None  # neither full nor old enough
True
>>> clock.advance(0.05)  # nothing more came: hand it over
>>> batcher.take().tokens
['m1']
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from sitewatch.clock import Clock

__all__ = ["Batch", "Batcher"]


@dataclass
class Batch:
    """Lines in submission order and the tokens of the messages they came from."""

    lines: list[str]
    tokens: list[object]
    deadline_s: float  # monotonic time it is handed over even if messages keep coming
    idle_due_s: float  # ... or when no message came for the idle interval

    @property
    def due_s(self) -> float:
        return min(self.deadline_s, self.idle_due_s)


class Batcher:
    """Thread-safe; one or more producers, one consumer. See the module docstring."""

    def __init__(
        self,
        clock: Clock,
        *,
        batch_size: int,
        flush_interval_s: float,
        max_pending: int,
        idle_flush_s: float = 0.05,
    ) -> None:
        self.clock = clock
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.idle_flush_s = idle_flush_s
        self.max_pending = max_pending
        self.wake = threading.Event()
        """Set when there is something new for the consumer (a batch started or ready)."""
        self._cond = threading.Condition()
        self._current: Batch | None = None
        self._ready: deque[Batch] = deque()
        self._closed: str | None = None
        self._pending_lines = 0
        self._blocked = 0

    def submit(self, lines: Sequence[str], token: object) -> None:
        """Add one message's lines; blocks while ``max_pending`` batches wait. Raises
        ``RuntimeError`` once closed (also while blocked): the lines were not taken."""
        with self._cond:
            self._blocked += 1
            try:
                while len(self._ready) >= self.max_pending and self._closed is None:
                    self._cond.wait()
            finally:
                self._blocked -= 1
            if self._closed is not None:
                raise RuntimeError(self._closed)
            batch = self._current
            wake = batch is None  # a new batch: the consumer must start its timer
            now = self.clock.monotonic()
            if batch is None:
                batch = Batch([], [], now + self.flush_interval_s, now + self.idle_flush_s)
                self._current = batch
            else:
                batch.idle_due_s = now + self.idle_flush_s
            batch.lines.extend(lines)
            batch.tokens.append(token)
            self._pending_lines += len(lines)
            if len(batch.lines) >= self.batch_size:
                self._ready.append(batch)
                self._current = None
                wake = True
        if wake:
            self.wake.set()

    def take(self, *, flush: bool = False) -> Batch | None:
        """The oldest ready batch, else the current one if it is due (or ``flush``)."""
        with self._cond:
            if self._ready:
                self._cond.notify_all()  # room for a blocked submit
                return self._ready.popleft()
            batch = self._current
            if batch is not None and (flush or self.clock.monotonic() >= batch.due_s):
                self._current = None
                return batch
        return None

    def next_due_s(self) -> float | None:
        """When the current batch is due (monotonic seconds), or None if there is none."""
        with self._cond:
            return self._current.due_s if self._current is not None else None

    def done(self, batch: Batch) -> None:
        """The consumer has finished with a batch (for ``pending_lines``)."""
        with self._cond:
            self._pending_lines -= len(batch.lines)

    def close(self, reason: str) -> None:
        """Refuse further submits (waking blocked ones with ``RuntimeError(reason)``);
        batches already taken in can still be taken out."""
        with self._cond:
            if self._closed is None:
                self._closed = reason
            self._cond.notify_all()
        self.wake.set()

    @property
    def empty(self) -> bool:
        """No batch is ready or being filled."""
        with self._cond:
            return self._current is None and not self._ready

    @property
    def pending_lines(self) -> int:
        """Lines submitted and not yet ``done``."""
        with self._cond:
            return self._pending_lines

    @property
    def blocked_submits(self) -> int:
        """``submit`` calls waiting for room right now (backpressure)."""
        with self._cond:
            return self._blocked
