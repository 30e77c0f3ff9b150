"""Sending notifications without ever blocking ingestion: the ``Channel`` seam and the
``Dispatcher`` thread.

The engine decides on the collector's ingest thread; a send may take seconds (SMTP, HTTP) or
fail for minutes (a broker or mail server away). So the engine only calls
``Dispatcher.submit``, which puts the notification on a bounded queue and returns at once; when
the queue is full the notification is dropped and counted, never waited for. The dispatcher's
own thread hands each notification to every channel (or the ones named at submit; a channel
for people only when the notification has recipients), and a failed send is retried per
channel with exponential back-off and jitter until it succeeds, a newer notification for the
same alert gets through on that channel (the old one is then stale: it is *superseded*), or
it has used ``max_attempts`` or is older than ``max_age_s``.

Every attempt's outcome goes to ``on_result(alert_id, channel, ok, error)`` (the engine turns
it into audit rows; the self-check counts consecutive failures), and per-channel counters
(``sent``, ``failed``, ``retried``, ``dropped``, ``superseded``) feed status and metrics.

Secrets: apprise URLs carry passwords and tokens, so nothing here logs a URL; channels use
``redact_url`` (scheme and host only) in their errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import ipaddress
import itertools
import logging
import queue
import random
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.model import Notification

__all__ = [
    "Channel",
    "ChannelStats",
    "DeliveryError",
    "Dispatcher",
    "Notification",
    "ResultCallback",
    "redact_url",
]

log = logging.getLogger(__name__)

ResultCallback = Callable[[str, str, bool, str | None], None]
"""``on_result(alert_id, channel, ok, error)``: called on the dispatcher thread after every
attempt; ``error`` is None when ``ok``, else a message free of secrets."""


class Channel(Protocol):
    """One way out (apprise, MQTT, Alertmanager). ``send`` runs on the dispatcher thread only,
    may block (bounded by the channel's own timeouts) and raises on failure: ``DeliveryError``
    to say what may be retried, anything else counts as a retryable failure.

    A channel that mirrors the alert's state for machines (MQTT, Alertmanager) sets a class
    attribute ``mirrors_state = True``: it gets every notification, and once a newer one for
    an alert is delivered, older ones still waiting for a retry are dropped. A channel without
    it tells people: it gets only notifications with ``recipients``, and only a delivered
    ``resolved`` drops older retries (each other message is news to someone).
    """

    @property
    def name(self) -> str:
        """Short, unique among the dispatcher's channels; used in counters, logs and audit."""
        ...

    def send(self, notification: Notification) -> None: ...


class DeliveryError(Exception):
    """A send failed. ``permanent``: retrying cannot help (a malformed URL, a 400), so the
    dispatcher gives up at once. ``retry_with``: what is left to send when part of the send
    succeeded (e.g. the notification narrowed to the recipients that failed), so a retry does
    not send twice to those who already have it; None retries the whole notification."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_with: Notification | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_with = retry_with


@dataclass
class ChannelStats:
    """Counters of one channel since the dispatcher was built.

    ``sent``: notifications delivered. ``failed``: given up on (attempts or age exhausted, or
    a permanent error). ``retried``: failed attempts that were scheduled again. ``dropped``:
    lost unsent because the queue or the retry backlog was full, or the dispatcher stopped.
    ``superseded``: pending retries abandoned because a newer notification for the same alert
    was delivered (see ``Channel``). ``consecutive_failures``: failed attempts since the last
    success (the self-check's signal). ``last_error``: the latest failure's message.
    """

    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    superseded: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None


@dataclass(order=True)
class _Job:
    """One notification for one channel; ordered by when it is due (then by submit order)."""

    due_s: float
    seq: int
    channel: str = field(compare=False)
    notification: Notification = field(compare=False)
    submitted_s: float = field(compare=False)
    attempts: int = field(default=0, compare=False)


class Dispatcher:
    """Delivers notifications to ``channels`` on its own thread, with retries and counters.

    Parameters
    ----------
    channels
        The channels; their names must be unique.
    on_result
        ``on_result(alert_id, channel, ok, error)`` after every attempt (on the dispatcher
        thread; an exception it raises is logged and ignored).
    clock
        Monotonic time for back-off and age; waits between retries use ``clock.sleep`` so a
        ``FakeClock`` makes retries happen at once in fake time.
    queue_size
        Notifications waiting to be sent (default 1000); ``submit`` drops beyond it. The
        retry backlog is bounded by the same number (the oldest retry is dropped).
    max_attempts
        Attempts per notification and channel, the first included (default 6).
    max_age_s
        A notification is not retried once this old (s since submit; default 3600).
    backoff_initial_s, backoff_max_s
        The delay before the n-th retry is ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``
        (defaults 5 s and 300 s) times a random factor in ``[1 - jitter, 1]``.
    jitter
        Fraction of the delay that is random (default 0.5), so channels that failed together
        do not retry in lockstep.
    rng
        The jitter's random source (seed it in tests).
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        on_result: ResultCallback | None = None,
        clock: Clock | None = None,
        queue_size: int = 1000,
        max_attempts: int = 6,
        max_age_s: float = 3600.0,
        backoff_initial_s: float = 5.0,
        backoff_max_s: float = 300.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        names = [channel.name for channel in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique: {names}")
        if queue_size < 1 or max_attempts < 1 or not 0.0 <= jitter <= 1.0:
            raise ValueError("queue_size and max_attempts must be >= 1, jitter in [0, 1]")
        self._channels = {channel.name: channel for channel in channels}
        self._on_result = on_result
        self._clock: Clock = clock or SystemClock()
        self._queue_size = queue_size
        self.max_attempts = max_attempts
        self.max_age_s = max_age_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._intake: queue.Queue[tuple[Notification, tuple[str, ...]]] = queue.Queue(queue_size)
        self._jobs: list[_Job] = []  # a heap: due now or later (retries); worker thread only
        self._seq = itertools.count()
        self._stats = {name: ChannelStats() for name in self._channels}
        self._lock = threading.Lock()  # guards _stats (written by submit and the worker)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- any thread -----------------------------------------------------------------------
    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def submit(self, notification: Notification, channels: Collection[str] | None = None) -> bool:
        """Queue ``notification`` for ``channels`` (names; default all) and return at once:
        True if queued, False if dropped (queue full, or the dispatcher is stopped)."""
        targets = tuple(self._channels) if channels is None else tuple(channels)
        unknown = [name for name in targets if name not in self._channels]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; have {list(self._channels)}")
        if not targets:
            return True
        if self._stopping.is_set():
            self._count_dropped(targets, 1)
            return False
        try:
            self._intake.put_nowait((notification, targets))
        except queue.Full:
            self._count_dropped(targets, 1)
            return False
        self._wake.set()
        return True

    def stats(self) -> dict[str, ChannelStats]:
        """A snapshot of every channel's counters."""
        with self._lock:
            return {name: dataclasses.replace(stats) for name, stats in self._stats.items()}

    def snapshot(self) -> dict[str, Any]:
        """JSON-able status for the collector's status file and ``/metrics``: ``queued``
        (in the queue), ``pending`` (taken from it, waiting for an attempt or a retry) and, per
        channel, its ``ChannelStats`` fields."""
        return {
            "queued": self.queued,
            "pending": len(self._jobs),
            "channels": {name: dataclasses.asdict(s) for name, s in self.stats().items()},
        }

    @property
    def queued(self) -> int:
        """Notifications waiting for their first attempt."""
        return self._intake.qsize()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; does nothing while it runs."""
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it (a send in progress finishes
        first, bounded by its channel's timeouts); RuntimeError if it does not end. What has
        not been sent by then is dropped and counted. Safe to call twice."""
        thread = self._thread
        self._stopping.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                raise RuntimeError(f"the alert dispatcher did not stop within {timeout_s} s")
            self._thread = None
        self._drop_pending()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dispatcher thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._take_intake()
            if self._jobs and self._jobs[0].due_s <= self._clock.monotonic():
                self._attempt(heapq.heappop(self._jobs))
                continue
            if self._jobs:
                self._clock.sleep(self._jobs[0].due_s - self._clock.monotonic(), self._wake)
            else:
                self._wake.wait()
            self._wake.clear()

    def _take_intake(self) -> None:
        """Move submitted notifications into the heap, due now (one job per channel)."""
        now_s = self._clock.monotonic()
        while True:
            try:
                notification, targets = self._intake.get_nowait()
            except queue.Empty:
                return
            for name in targets:
                if not notification.recipients and not _mirrors_state(self._channels[name]):
                    continue  # nobody to tell on a channel for people
                job = _Job(now_s, next(self._seq), name, notification, now_s)
                heapq.heappush(self._jobs, job)
            self._bound_backlog()

    def _attempt(self, job: _Job) -> None:
        channel = self._channels[job.channel]
        alert_id = job.notification.alert.id
        job.attempts += 1
        try:
            channel.send(job.notification)
        except Exception as error:  # the boundary: any send failure is counted
            self._failed(job, error)
            return
        with self._lock:
            stats = self._stats[job.channel]
            stats.sent += 1
            stats.consecutive_failures = 0
        self._supersede(job)
        self._report(alert_id, job.channel, True, None)

    def _failed(self, job: _Job, error: Exception) -> None:
        message = str(error) or type(error).__name__
        permanent = isinstance(error, DeliveryError) and error.permanent
        if isinstance(error, DeliveryError) and error.retry_with is not None:
            job.notification = error.retry_with
        now_s = self._clock.monotonic()
        delay_s = self._backoff_s(job.attempts)
        give_up = (
            permanent
            or job.attempts >= self.max_attempts
            or now_s + delay_s - job.submitted_s > self.max_age_s
        )
        with self._lock:
            stats = self._stats[job.channel]
            stats.consecutive_failures += 1
            stats.last_error = message
            if give_up:
                stats.failed += 1
            else:
                stats.retried += 1
        alert_id = job.notification.alert.id
        if give_up:
            log.warning(
                "alert %s: %s notification via %s failed, giving up after %d attempt(s): %s",
                alert_id, job.notification.kind, job.channel, job.attempts, message,
            )  # fmt: skip
            self._report(alert_id, job.channel, False, f"{message} (gave up)")
            return
        log.info(
            "alert %s: %s notification via %s failed (attempt %d/%d), retry in %.0f s: %s",
            alert_id, job.notification.kind, job.channel, job.attempts, self.max_attempts,
            delay_s, message,
        )  # fmt: skip
        job.due_s = now_s + delay_s
        heapq.heappush(self._jobs, job)
        self._report(
            alert_id, job.channel, False, f"{message} (attempt {job.attempts}, will retry)"
        )

    def _backoff_s(self, attempts: int) -> float:
        ceiling_s = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempts - 1, 30))
        return ceiling_s * self._rng.uniform(1.0 - self.jitter, 1.0)

    def _supersede(self, delivered: _Job) -> None:
        """Drop pending retries of older notifications for the same alert on that channel
        when delivering them would overwrite newer news: on a ``mirrors_state`` channel (a
        retained MQTT state, an Alertmanager alert) after any newer delivery, elsewhere after
        a delivered ``resolved`` (no "firing" email after the "resolved" one)."""
        mirror = _mirrors_state(self._channels[delivered.channel])
        if not mirror and delivered.notification.kind != "resolved":
            return
        alert_id = delivered.notification.alert.id
        keep = [
            job
            for job in self._jobs
            if not (
                job.channel == delivered.channel
                and job.seq < delivered.seq
                and job.notification.alert.id == alert_id
            )
        ]
        if len(keep) != len(self._jobs):
            with self._lock:
                self._stats[delivered.channel].superseded += len(self._jobs) - len(keep)
            heapq.heapify(keep)
            self._jobs = keep

    def _bound_backlog(self) -> None:
        """Keep the heap within ``queue_size`` jobs per channel on average: drop the oldest
        submissions first (a long broker outage must not grow memory without bound)."""
        limit = self._queue_size * max(1, len(self._channels))
        if len(self._jobs) <= limit:
            return
        by_age = sorted(self._jobs, key=lambda job: job.seq)
        excess, keep = by_age[: len(by_age) - limit], by_age[len(by_age) - limit :]
        for job in excess:
            self._count_dropped((job.channel,), 1)
        heapq.heapify(keep)
        self._jobs = keep

    def _drop_pending(self) -> None:
        for job in self._jobs:
            self._count_dropped((job.channel,), 1)
        self._jobs = []
        while True:
            try:
                _, targets = self._intake.get_nowait()
            except queue.Empty:
                break
            self._count_dropped(targets, 1)

    def _count_dropped(self, names: Iterable[str], count: int) -> None:
        with self._lock:
            for name in names:
                self._stats[name].dropped += count

    def _report(self, alert_id: str, channel: str, ok: bool, error: str | None) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(alert_id, channel, ok, error)
        except Exception:  # a broken callback must not stop deliveries
            log.exception("on_result callback failed for alert %s via %s", alert_id, channel)


def _mirrors_state(channel: Channel) -> bool:
    return bool(getattr(channel, "mirrors_state", False))


def redact_url(url: str) -> str:
    """``scheme://host`` of a notification URL, safe to log: no user, password, path or query.

    Many apprise services carry a token where the host goes (``tgram://<bot token>/...``,
    ``slack://<token>/...``), so the host is shown only when it looks like a host name or an
    address; otherwise it is replaced by ``…``.

    >>> redact_url("mailtos://ana:secret@smtp.example.com:465?to=ana@example.com")
    'mailtos://smtp.example.com'
    >>> redact_url("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321")
    'tgram://…'
    >>> redact_url("not a url")
    '…'
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or "://" not in url:
        return "…"
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return f"{parts.scheme}://{host}"
    labels = host.split(".")
    looks_like_name = host == "localhost" or (
        len(labels) >= 2
        and all(label and len(label) <= 63 for label in labels)
        and not labels[-1].isdigit()
    )
    return f"{parts.scheme}://{host if looks_like_name else '…'}"
