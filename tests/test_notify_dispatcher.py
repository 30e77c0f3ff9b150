"""The dispatcher: retries with back-off, counters, superseding, a queue that never blocks.

Time is a FakeClock: the dispatcher waits for a retry with ``clock.sleep``, which moves fake
time at once, so back-off intervals are checked exactly on the times a channel records and
no test sleeps. Tests wait for the dispatcher thread with ``wait_until`` (a deadline, not a
guess).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
from collections.abc import Iterator

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting.model import Alert, AlertState, Contact, Notification
from sitewatch.collector.alerting.notify import DeliveryError, Dispatcher
from sitewatch.localrun import wait_until

T0_MS = 1_795_464_000_000


def _alert(alert_id: str = "a1", state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        id=alert_id, key=f"plant-a/pi-01/cold-room/{alert_id}", site="plant-a", device="pi-01",
        sensor="cold-room", rule="too-warm", severity="critical", audience="technician",
        labels={"zone": "kitchen"}, state=state, message="above 8.0 for 10 min", value=8.4,
        limit=8.0, predicted_breach_s=None, conditions=frozenset({"temperature_c/threshold"}),
        created_ms=T0_MS, updated_ms=T0_MS,
    )  # fmt: skip


def _firing(alert_id: str = "a1") -> Notification:
    return Notification("firing", _alert(alert_id), [Contact("Ana", "cold", ["x://y"])], None)


def _resolved(alert_id: str = "a1") -> Notification:
    return Notification("resolved", _alert(alert_id, AlertState.RESOLVED), [], None)


@dataclasses.dataclass
class Attempt:
    at_s: float
    notification: Notification


class FlakyChannel:
    """Fails the first ``failures`` sends (permanently if ``permanent``), then succeeds;
    records every attempt with the fake time it happened at."""

    def __init__(
        self, clock: FakeClock, failures: int, *, name: str = "flaky", permanent: bool = False
    ) -> None:
        self.name = name
        self.clock = clock
        self.failures = failures
        self.permanent = permanent
        self.attempts: list[Attempt] = []
        self.delivered: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.attempts.append(Attempt(self.clock.monotonic(), notification))
        if len(self.attempts) <= self.failures:
            raise DeliveryError(f"server away ({len(self.attempts)})", permanent=self.permanent)
        self.delivered.append(notification)


class GatedChannel:
    """Holds the dispatcher thread inside ``send`` until the test opens the gate."""

    name = "gated"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.delivered: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        self.delivered.append(notification)


class Results:
    """The ``on_result`` callback: every attempt's outcome, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool, str | None]] = []
        self._lock = threading.Lock()

    def __call__(self, alert_id: str, channel: str, ok: bool, error: str | None) -> None:
        with self._lock:
            self.calls.append((alert_id, channel, ok, error))

    def snapshot(self) -> list[tuple[str, str, bool, str | None]]:
        with self._lock:
            return list(self.calls)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
def stopper() -> Iterator[list[Dispatcher]]:
    """Stops every dispatcher a test started, even when the test fails."""
    started: list[Dispatcher] = []
    yield started
    for dispatcher in started:
        dispatcher.stop()


def test_dispatcher_retries_with_exponential_backoff_and_jitter_then_sends(
    clock: FakeClock, results: Results, stopper: list[Dispatcher]
) -> None:
    channel = FlakyChannel(clock, failures=3)
    dispatcher = Dispatcher(
        [channel], on_result=results, clock=clock, backoff_initial_s=5.0, backoff_max_s=300.0,
        jitter=0.5, rng=random.Random(7),
    )  # fmt: skip
    stopper.append(dispatcher)
    dispatcher.start()
    assert dispatcher.submit(_firing())
    wait_until(lambda: dispatcher.stats()["flaky"].sent == 1, 10, "the fourth attempt")

    times = [attempt.at_s for attempt in channel.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    for n, gap in enumerate(gaps):
        ceiling = 5.0 * 2**n
        assert ceiling * 0.5 <= gap <= ceiling, (n, gap)
    assert len({round(gap / 2**n, 6) for n, gap in enumerate(gaps)}) > 1  # jittered
    stats = dispatcher.stats()["flaky"]
    assert (stats.sent, stats.retried, stats.failed, stats.dropped) == (1, 3, 0, 0)
    assert stats.consecutive_failures == 0
    calls = results.snapshot()
    assert [ok for _, _, ok, _ in calls] == [False, False, False, True]
    assert calls[0][:2] == ("a1", "flaky")
    assert calls[0][3] == "server away (1) (attempt 1, will retry)"
    assert calls[-1][3] is None


def test_dispatcher_gives_up_after_max_attempts(
    clock: FakeClock, results: Results, stopper: list[Dispatcher]
) -> None:
    channel = FlakyChannel(clock, failures=100)
    dispatcher = Dispatcher(
        [channel], on_result=results, clock=clock, max_attempts=4, rng=random.Random(1)
    )
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing())
    wait_until(lambda: dispatcher.stats()["flaky"].failed == 1, 10, "giving up")

    assert len(channel.attempts) == 4
    stats = dispatcher.stats()["flaky"]
    assert (stats.sent, stats.retried, stats.failed) == (0, 3, 1)
    assert stats.consecutive_failures == 4
    assert stats.last_error == "server away (4)"
    assert results.snapshot()[-1] == ("a1", "flaky", False, "server away (4) (gave up)")


def test_dispatcher_stops_retrying_a_notification_older_than_max_age(
    clock: FakeClock, stopper: list[Dispatcher]
) -> None:
    channel = FlakyChannel(clock, failures=100)
    dispatcher = Dispatcher(
        [channel], clock=clock, max_attempts=50, max_age_s=100.0, backoff_initial_s=5.0,
        jitter=0.0,
    )  # fmt: skip
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing())
    wait_until(lambda: dispatcher.stats()["flaky"].failed == 1, 10, "giving up")

    # Attempts at 0, 5, 15, 35, 75; the next would be at 155 s, past the 100 s age limit.
    first = channel.attempts[0].at_s
    assert [attempt.at_s - first for attempt in channel.attempts] == [0, 5, 15, 35, 75]


def test_dispatcher_does_not_retry_a_permanent_error(
    clock: FakeClock, results: Results, stopper: list[Dispatcher]
) -> None:
    channel = FlakyChannel(clock, failures=1, permanent=True)
    dispatcher = Dispatcher([channel], on_result=results, clock=clock)
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing())
    wait_until(lambda: dispatcher.stats()["flaky"].failed == 1, 10, "the failure")
    dispatcher.submit(_firing("a2"))
    wait_until(lambda: dispatcher.stats()["flaky"].sent == 1, 10, "the next notification")

    assert [a.notification.alert.id for a in channel.attempts] == ["a1", "a2"]
    assert dispatcher.stats()["flaky"].retried == 0


def test_dispatcher_retries_only_what_the_channel_says_is_left(
    clock: FakeClock, stopper: list[Dispatcher]
) -> None:
    full = _firing()
    full = dataclasses.replace(full, recipients=[Contact("Ana", "cold"), Contact("Ben", "cold")])
    left = dataclasses.replace(full, recipients=[Contact("Ben", "cold")])

    class HalfDone:
        name = "people"

        def __init__(self) -> None:
            self.seen: list[Notification] = []

        def send(self, notification: Notification) -> None:
            self.seen.append(notification)
            if len(self.seen) == 1:
                raise DeliveryError("Ben: mail server away", retry_with=left)

    channel = HalfDone()
    dispatcher = Dispatcher([channel], clock=clock)
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(full)
    wait_until(lambda: dispatcher.stats()["people"].sent == 1, 10, "the retry")

    assert channel.seen == [full, left]


class FailsFiringOnce:
    """Fails the first ``firing`` it is given; records the kinds it is asked to send."""

    name = "machine"

    def __init__(self, mirrors_state: bool) -> None:
        self.mirrors_state = mirrors_state
        self.attempts: list[str] = []

    def send(self, notification: Notification) -> None:
        self.attempts.append(notification.kind)
        if self.attempts == ["firing"]:
            raise DeliveryError("broker away")


@pytest.mark.parametrize(
    ("mirrors_state", "newer", "attempts", "superseded"),
    [
        # A state mirror: the old "firing" would overwrite the newer retained state.
        (True, "update", ["firing", "update", "firing"], 1),
        (True, "resolved", ["firing", "resolved", "firing"], 1),
        # People: an update does not tell them about the problem, so the firing is retried;
        # after the "resolved" it would only be noise.
        (False, "update", ["firing", "update", "firing", "firing"], 0),
        (False, "resolved", ["firing", "resolved", "firing"], 1),
    ],
)
def test_dispatcher_drops_a_pending_retry_once_newer_news_is_delivered(
    clock: FakeClock,
    stopper: list[Dispatcher],
    mirrors_state: bool,
    newer: str,
    attempts: list[str],
    superseded: int,
) -> None:
    channel = FailsFiringOnce(mirrors_state)
    dispatcher = Dispatcher([channel], clock=clock)
    stopper.append(dispatcher)
    newer_news = Notification(newer, _alert(), [Contact("Ana", "cold")], None)  # type: ignore[arg-type]
    # Queued before the start, so the order of the first attempts is fixed: the "firing"
    # for a1 fails, the newer news for a1 is delivered, then "firing" for another alert.
    dispatcher.submit(_firing())
    dispatcher.submit(newer_news)
    dispatcher.submit(_firing("other"))
    dispatcher.start()
    sent = len(attempts) - 1
    wait_until(lambda: dispatcher.stats()["machine"].sent == sent, 10, "the deliveries")
    dispatcher.stop()

    assert channel.attempts == attempts
    stats = dispatcher.stats()["machine"]
    assert (stats.retried, stats.superseded, stats.dropped) == (1, superseded, 0)


def test_dispatcher_gives_a_people_channel_only_notifications_with_recipients(
    clock: FakeClock, stopper: list[Dispatcher]
) -> None:
    people = FlakyChannel(clock, failures=0, name="people")
    mirror = FlakyChannel(clock, failures=0, name="mirror")
    mirror.mirrors_state = True  # type: ignore[attr-defined]
    dispatcher = Dispatcher([people, mirror], clock=clock)
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing())
    dispatcher.submit(Notification("update", _alert(state=AlertState.ACKNOWLEDGED), [], None))
    wait_until(lambda: dispatcher.stats()["mirror"].sent == 2, 10, "the mirror's deliveries")
    dispatcher.stop()

    assert [n.kind for n in people.delivered] == ["firing"]
    assert [n.kind for n in mirror.delivered] == ["firing", "update"]
    assert dispatcher.stats()["people"].sent == 1


def test_dispatcher_channels_fail_independently_and_submit_can_pick_channels(
    clock: FakeClock, stopper: list[Dispatcher]
) -> None:
    broken = FlakyChannel(clock, failures=100, name="broken")
    fine = FlakyChannel(clock, failures=0, name="fine")
    dispatcher = Dispatcher([broken, fine], clock=clock, max_attempts=3)
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing("a1"))
    dispatcher.submit(_firing("a2"), channels=["fine"])
    wait_until(lambda: dispatcher.stats()["broken"].failed == 1, 10, "the broken channel")
    wait_until(lambda: dispatcher.stats()["fine"].sent == 2, 10, "the fine channel")

    assert [n.alert.id for n in fine.delivered] == ["a1", "a2"]
    assert {a.notification.alert.id for a in broken.attempts} == {"a1"}
    with pytest.raises(ValueError, match="unknown channel"):
        dispatcher.submit(_firing(), channels=["nope"])


def test_dispatcher_submit_never_blocks_and_counts_drops_when_the_queue_is_full(
    stopper: list[Dispatcher],
) -> None:
    channel = GatedChannel()
    dispatcher = Dispatcher([channel], queue_size=3)
    stopper.append(dispatcher)
    dispatcher.start()
    assert dispatcher.submit(_firing("held"))
    wait_until(channel.entered.is_set, 10, "the dispatcher inside send")

    # The dispatcher thread is stuck in a send; three fit in the queue, the rest are dropped
    # at once (a blocking submit would hang this test until pytest's timeout).
    accepted = [dispatcher.submit(_firing(f"n{i}")) for i in range(8)]
    assert accepted == [True] * 3 + [False] * 5
    assert dispatcher.stats()["gated"].dropped == 5
    snapshot = dispatcher.snapshot()
    assert (snapshot["queued"], snapshot["channels"]["gated"]["dropped"]) == (3, 5)

    channel.gate.set()
    wait_until(lambda: dispatcher.stats()["gated"].sent == 4, 10, "the queued notifications")
    assert [n.alert.id for n in channel.delivered] == ["held", "n0", "n1", "n2"]


class StillClock(FakeClock):
    """Fake time that waiting does not move: a wait lasts until it is interrupted."""

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        return stop.wait(30) if stop is not None else False


def test_dispatcher_start_stop_are_idempotent_and_unsent_work_is_counted_dropped() -> None:
    clock = StillClock()
    channel = FlakyChannel(clock, failures=100)
    dispatcher = Dispatcher([channel], clock=clock)
    dispatcher.start()
    dispatcher.start()
    assert [t.name for t in threading.enumerate()].count("alert-dispatcher") == 1
    dispatcher.submit(_firing())
    wait_until(lambda: dispatcher.stats()["flaky"].retried == 1, 10, "the first attempt")
    dispatcher.stop()  # the retry is still waiting for its time
    dispatcher.stop()

    assert not dispatcher.running
    assert not dispatcher.submit(_firing("late"))
    stats = dispatcher.stats()["flaky"]
    assert (stats.retried, stats.dropped, len(channel.attempts)) == (1, 2, 1)


def test_dispatcher_survives_a_failing_result_callback(
    clock: FakeClock, stopper: list[Dispatcher]
) -> None:
    def broken_callback(alert_id: str, channel: str, ok: bool, error: str | None) -> None:
        raise RuntimeError("audit database locked")

    channel = FlakyChannel(clock, failures=0)
    dispatcher = Dispatcher([channel], on_result=broken_callback, clock=clock)
    stopper.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(_firing("a1"))
    dispatcher.submit(_firing("a2"))
    wait_until(lambda: dispatcher.stats()["flaky"].sent == 2, 10, "both sends")
    assert dispatcher.running


def test_dispatcher_refuses_duplicate_channel_names(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unique"):
        Dispatcher([FlakyChannel(clock, 0), FlakyChannel(clock, 0)])
