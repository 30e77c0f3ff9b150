"""The writer: batches line protocol, stores it through a ``Sink``, spools it when the
database cannot take it, and says when each message's lines are safe (``on_durable``).

Flow. ``submit`` (on the MQTT thread) adds a message's lines to the current batch. A batch
goes to the writer thread when it holds ``batch_size`` lines or ``flush_interval_s`` after
its first submit, whichever comes first (``batching.Batcher``). Per batch, the writer thread:

- spools it if the spool holds anything (so InfluxDB receives everything in order);
- else writes it. ``ok``: stored. ``rejected``: the refused lines (the server's indices, or
  found by writing halves, recursively) are dead-lettered with the reason and the rest is
  written again (writes are idempotent: same series and timestamp overwrite, so rewriting
  what a partial write kept doubles nothing). ``too_large``: written in halves.
  ``retry``: whatever is not yet stored is spooled.
- then reports the batch's tokens durable: its lines are stored, spooled or dead-lettered.

Draining runs on the same thread: write the spool's head, delete it on success, else wait
(exponential back-off from ``retry_min_s`` to ``retry_max_s`` with jitter, or the server's
Retry-After when longer). One thread, because order needs it: with a second thread, a new
batch could be written while the last spooled one is still in flight. New batches are only
appended to the spool meanwhile (cheap), and each loop pass does at most one drain write,
so a down or slow InfluxDB delays new batches by at most one request (the sink's timeout).

Backpressure. At most ``max_pending_batches`` (default 4) full batches wait for the writer
thread; beyond that ``submit`` blocks. Blocking the MQTT thread stops it reading: the
broker keeps the unacknowledged messages (up to the session's in-flight limit) and queues
the rest in the persistent session, so a writer that falls behind slows delivery instead
of filling memory or losing anything. A block lasts at most about one request, so keep the
MQTT keepalive well above the sink's timeout.

``on_durable(tokens)`` runs on the writer thread, in submission order, and never before a
batch's lines are in InfluxDB or the spool. ``on_dead_letter(line, reason)`` likewise.
Lines the spool's caps later drop are counted (``dropped_lines``), never lost silently.
If the spool itself fails (disk full, I/O error), the writer thread stops with the error
(``failure``; ``submit`` and ``stop`` then raise): nothing more is acknowledged, the broker
keeps those messages, and the service should exit so systemd restarts it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sitewatch.clock import Clock
from sitewatch.collector.batching import Batch, Batcher
from sitewatch.collector.protocols import Outcome, Sink, WriteResult
from sitewatch.collector.spool import Spool

__all__ = ["Writer", "WriterStats"]

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 3600.0


@dataclass(frozen=True)
class WriterStats:
    """A snapshot. Line counts are since this writer started, except ``dropped_lines`` (by
    the spool's caps, since the spool was created) and the spool's depth."""

    stored_lines: int
    spooled_lines: int
    dead_lettered_lines: int
    dropped_lines: int
    spool_batches: int
    spool_lines: int
    pending_lines: int  # submitted, not yet durable
    blocked_submits: int  # submit calls waiting for room right now (backpressure)
    last_error: str | None


class Writer:
    """Batches, writes, spools and drains; see the module docstring. ``start`` runs the
    writer thread; ``step`` is one pass of its loop, for tests that drive a ``FakeClock``."""

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        clock: Clock,
        *,
        batch_size: int,
        flush_interval_s: float,
        retry_min_s: float,
        retry_max_s: float,
        on_durable: Callable[[list[object]], None],
        on_dead_letter: Callable[[str, str], None],
        max_pending_batches: int = 4,
        idle_flush_s: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.clock = clock
        self.retry_min_s = retry_min_s
        self.retry_max_s = max(retry_max_s, retry_min_s)
        self.on_durable = on_durable
        self.on_dead_letter = on_dead_letter
        self.batcher = Batcher(
            clock,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_pending=max_pending_batches,
            idle_flush_s=idle_flush_s,
        )
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._lock = threading.Lock()  # guards the counts below
        self._stored = self._spooled = self._dead_lettered = 0
        self._last_error: str | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        # The writer thread's own state:
        self._attempts = 0  # failed writes in a row
        self._retry_after_s: float | None = None  # the last retry's Retry-After
        self._retry_at = clock.monotonic()  # when to try the spool's head next

    def submit(self, lines: Sequence[str], token: object) -> None:
        """Add one message's lines (none is fine: the token is then reported in its turn).
        Blocks while the writer is behind; raises ``RuntimeError`` once stopping or failed.
        Lines must not contain newlines (``lineproto`` never makes any)."""
        self.batcher.submit(lines, token)

    def stats(self) -> WriterStats:
        """Thread-safe."""
        spool = self.spool.stats()
        with self._lock:
            return WriterStats(
                stored_lines=self._stored,
                spooled_lines=self._spooled,
                dead_lettered_lines=self._dead_lettered,
                dropped_lines=spool.dropped_lines,
                spool_batches=spool.batches,
                spool_lines=spool.lines,
                pending_lines=self.batcher.pending_lines,
                blocked_submits=self.batcher.blocked_submits,
                last_error=self._last_error,
            )

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the writer thread, if one did."""
        return self._failure

    @property
    def alive(self) -> bool:
        """The writer thread is running (for the watchdog: a dead writer acknowledges
        nothing more)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sitewatch-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Hand over the current batch and everything waiting, write or spool it all, and
        stop. When this returns, everything submitted is durable. Raises ``TimeoutError`` if
        the thread does not finish in ``timeout_s`` and ``RuntimeError`` if it had failed.
        Without a started thread, does the work on the calling thread. Safe to call twice."""
        self.batcher.close("the writer is stopping")  # first: no submit can follow the flush
        self._stopping = True
        self.batcher.wake.set()  # again: the thread may have slept since close() woke it
        if self._thread is None:
            while self.step() == 0.0:
                pass
        else:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise TimeoutError(f"the writer did not finish within {timeout_s} s")
        if self._failure is not None:
            raise RuntimeError(f"the writer failed: {self._failure!r}") from self._failure

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def step(self) -> float | None:
        """One pass of the writer loop: handle the next due batch, then (unless stopping)
        try the spool's head if its time has come. Returns how long to wait before the next
        pass (0: go on at once; None: nothing is timed, wait for a submit)."""
        batch = self.batcher.take(flush=self._stopping)
        if batch is not None:
            self._handle(batch)
        drained = False
        if not self._stopping and self.spool.stats().batches:
            if self.clock.monotonic() >= self._retry_at:
                self._drain_one()
                drained = True
        if batch is not None or drained:
            return 0.0
        waits = []
        due_s = self.batcher.next_due_s()
        if due_s is not None:
            waits.append(due_s)
        if not self._stopping and self.spool.stats().batches:
            waits.append(self._retry_at)
        return max(0.0, min(waits) - self.clock.monotonic()) if waits else None

    def _run(self) -> None:
        wake = self.batcher.wake
        try:
            while True:
                wake.clear()
                wait_s = self.step()
                if wait_s == 0.0:
                    continue
                if self._stopping and self.batcher.empty:
                    return
                self.clock.sleep(_IDLE_WAIT_S if wait_s is None else wait_s, wake)
        except Exception as error:  # the thread's top level: record, log, refuse submits
            log.exception("the writer stopped")
            self._failure = error
            self.batcher.close(f"the writer failed: {error!r}")

    def _handle(self, batch: Batch) -> None:
        if batch.lines:
            if self.spool.stats().batches:
                self._spool(batch.lines)
            else:
                rest = self._store(batch.lines)
                if rest:
                    self._spool(rest)
                    self._schedule_retry()
        if batch.tokens:
            self.on_durable(batch.tokens)
        self.batcher.done(batch)

    def _drain_one(self) -> None:
        head = self.spool.head()
        if head is None:
            return
        rest = self._store(head.lines)
        if not rest:
            self.spool.delete(head.id)
            self._attempts = 0
            return
        if len(rest) != len(head.lines):
            self.spool.replace(head.id, rest)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        """Exponential back-off with jitter, within [retry_min_s, retry_max_s]; the server's
        Retry-After instead when it asks for longer."""
        base = min(self.retry_max_s, self.retry_min_s * 2.0 ** min(self._attempts, 30))
        delay = self._rng.uniform(max(self.retry_min_s, base / 2.0), base)
        self._attempts += 1
        retry_after, self._retry_after_s = self._retry_after_s, None
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        self._retry_at = self.clock.monotonic() + delay

    def _spool(self, lines: list[str]) -> None:
        self.spool.append(lines, readings=len(lines))  # one line is one point
        with self._lock:
            self._spooled += len(lines)

    def _store(self, lines: list[str]) -> list[str]:
        """Write ``lines``, splitting and dead-lettering as the results say; return the
        lines still to write (in order; not empty only when the sink said retry)."""
        todo = [lines]  # a stack: its last chunk is the next (oldest) to write
        while todo:
            chunk = todo.pop()
            result = self._write(chunk)
            if result.outcome is Outcome.OK:
                with self._lock:
                    self._stored += len(chunk)
                continue
            if result.outcome is Outcome.RETRY:
                self._retry_after_s = result.retry_after_s
                return chunk + [line for later in reversed(todo) for line in later]
            bad = sorted({i for i in result.rejected if 0 <= i < len(chunk)})
            if result.outcome is Outcome.REJECTED and bad:
                for i in bad:
                    self._dead_letter(chunk[i], result)
                keep = set(range(len(chunk))) - set(bad)
                if keep:  # the server may have stored none of them: write them again
                    todo.append([chunk[i] for i in sorted(keep)])
            elif len(chunk) == 1:
                self._dead_letter(chunk[0], result)
            else:  # which line? write the halves (the good one is simply stored)
                middle = len(chunk) // 2
                todo.append(chunk[middle:])
                todo.append(chunk[:middle])
        return []

    def _write(self, lines: list[str]) -> WriteResult:
        try:
            result = self.sink.write(lines)
        except Exception as error:  # a sink must not raise; if one does, keep the data
            result = WriteResult(Outcome.RETRY, reason=f"the sink raised {error!r}")
        if result.outcome is not Outcome.OK:
            with self._lock:
                self._last_error = f"{result.outcome.value}: {result.reason}"
        return result

    def _dead_letter(self, line: str, result: WriteResult) -> None:
        self.on_dead_letter(line, result.reason or f"refused by the server ({result.outcome})")
        with self._lock:
            self._dead_lettered += 1
