"""The writer: batching, rejected and oversized batches, spooling, draining, backpressure.

Every test writes through the real v1 sink to a real influxd started by the fixtures (or,
for a server that is down, to a loopback port where nothing listens). The first tests drive
``Writer.step`` with a ``FakeClock``: the writer's own timers (flush interval, back-off,
Retry-After) are injected, the server is real, so timing, splitting and draining are pinned
down without sleeping. The ``*_influxd_*`` tests run the writer thread on the system clock.

influxd gives each case for real: a field type conflict (a float field, then an integer),
malformed lines (quoted in its partial-write answer, so the sink names them), a body over
``max_body_size`` (413), and refused connections once it is killed. Retry-After alone comes
from the throttling proxy of ``test_influx_sinks`` in front of the real influxd, because no
real server throttles on demand.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sitewatch.clock import FakeClock, SystemClock
from sitewatch.collector.lineproto import SensorCatalog, telemetry_lines
from sitewatch.collector.protocols import Outcome, Sink, WriteResult
from sitewatch.collector.sinks.influx_v1 import InfluxV1Sink
from sitewatch.collector.spool import Spool
from sitewatch.collector.writer import Writer
from sitewatch.localrun import Influxd, free_port, wait_until
from sitewatch.wire import Quality, Reading, TelemetryMessage
from tests.lineparse import parse_line
from tests.test_influx_sinks import ThrottlingProxy

integration = pytest.mark.integration


class Outcomes:
    """What the writer reported: durable tokens in order, and dead-lettered lines."""

    def __init__(self) -> None:
        self.durable: list[object] = []
        self.dead: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_durable(self, tokens: list[object]) -> None:
        with self.lock:
            self.durable.extend(tokens)

    def on_dead_letter(self, line: str, reason: str) -> None:
        with self.lock:
            self.dead.append((line, reason))


class Recorded:
    """The real v1 sink, noting how many lines each request carried and every line influxd
    acknowledged (in acknowledgement order). It passes every write and answer through."""

    def __init__(self, sink: InfluxV1Sink) -> None:
        self.sink = sink
        self.requests: list[int] = []
        self.stored: list[str] = []

    def write(self, lines: Sequence[str]) -> WriteResult:
        self.requests.append(len(lines))
        result = self.sink.write(lines)
        if result.outcome is Outcome.OK:
            self.stored.extend(lines)
        return result

    def close(self) -> None:
        self.sink.close()


def _writer(
    sink: Sink,
    spool: Spool,
    clock: FakeClock | SystemClock,
    outcomes: Outcomes,
    *,
    batch_size: int = 10,
    flush_interval_s: float = 1.0,
    retry_min_s: float = 1.0,
    retry_max_s: float = 16.0,
    max_pending_batches: int = 4,
    idle_flush_s: float = 100.0,
) -> Writer:
    return Writer(
        sink, spool, clock,
        batch_size=batch_size, flush_interval_s=flush_interval_s, idle_flush_s=idle_flush_s,
        retry_min_s=retry_min_s, retry_max_s=retry_max_s,
        on_durable=outcomes.on_durable, on_dead_letter=outcomes.on_dead_letter,
        max_pending_batches=max_pending_batches, rng=random.Random(7),
    )


TS = 1_795_464_000_000


def _lines(batch: int, count: int, field: str = "temperature_c", value: str = "1.5") -> list[str]:
    """``count`` points of sensor ``s<batch>`` at TS, TS + 1 ms, ..."""
    return [
        f"environment,site=a,device=d,sensor=s{batch} {field}={value} {TS + i}"
        for i in range(count)
    ]


def _keys(lines: Sequence[str]) -> set[tuple[str, int]]:
    """The (sensor, time) of each line: what identifies its point in influxd."""
    return {(parse_line(line)[1]["sensor"], parse_line(line)[3]) for line in lines}


def _points(server: Influxd) -> set[tuple[str, int]]:
    """The (sensor, time) of every ``temperature_c`` point influxd holds."""
    rows = server.query("SELECT temperature_c, sensor FROM environment", "sitewatch")
    return {(row["sensor"], row["time"]) for row in rows}


def _v1(url: str) -> Recorded:
    return Recorded(InfluxV1Sink(url, "sitewatch", timeout_s=10))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.db", clock=clock) as spool:
        yield spool


@pytest.fixture
def sink(influxd: Influxd) -> Iterator[Recorded]:
    """The real v1 sink to the fixture's influxd."""
    sink = _v1(influxd.url)
    yield sink
    sink.close()


@pytest.fixture
def down_sink() -> Iterator[Recorded]:
    """The real v1 sink to a loopback port where nothing listens: every write is refused."""
    sink = _v1(f"http://127.0.0.1:{free_port()}")
    yield sink
    sink.close()


@integration
def test_writer_flushes_early_when_messages_stop_coming(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    """A broker with a small in-flight window stops sending until it gets acknowledgements;
    waiting out the flush interval then would cap throughput at one window per interval."""
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes, idle_flush_s=0.05)
    writer.submit(_lines(0, 2), "m1")
    clock.advance(0.04)
    writer.submit(_lines(2, 2), "m2")  # still coming: the idle timer starts again
    assert writer.step() == pytest.approx(0.05)
    clock.advance(0.04)
    assert writer.step() == pytest.approx(0.01) and sink.requests == []
    clock.advance(0.01)
    assert writer.step() == 0.0
    assert sink.requests == [4] and outcomes.durable == ["m1", "m2"]
    for n in range(30):  # a steady stream still goes out at the flush interval at the latest
        writer.submit(_lines(10 + n, 1), f"s{n}")
        clock.advance(0.04)
        writer.step()
    # 30 lines over 1.2 s: cut by the 1 s interval (and the batch size of 10)
    assert sum(sink.requests[1:]) >= 20 and max(sink.requests[1:]) <= 10


@integration
def test_writer_flushes_a_partial_batch_after_the_interval(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes)
    writer.submit([], "m0")  # a message with nothing to write keeps its place in the order
    writer.submit(_lines(0, 3), "m1")
    assert writer.step() == pytest.approx(1.0)
    clock.advance(0.999)
    assert writer.step() == pytest.approx(0.001) and sink.requests == []
    assert outcomes.durable == [] and _points(influxd) == set()
    clock.advance(0.001)
    assert writer.step() == 0.0
    assert sink.requests == [3] and outcomes.durable == ["m0", "m1"]
    assert _points(influxd) == _keys(_lines(0, 3))
    assert writer.step() is None  # nothing left to time
    writer.submit([], "m2")  # alone in its batch: still reported, in its turn
    clock.advance(1.0)
    assert writer.step() == 0.0 and outcomes.durable == ["m0", "m1", "m2"]
    assert sink.requests == [3]  # an empty batch makes no request
    assert writer.stats().stored_lines == 3 and writer.stats().pending_lines == 0


@integration
def test_writer_hands_over_a_full_batch_without_waiting(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes)
    writer.submit(_lines(0, 6), "m1")
    writer.submit(_lines(1, 5), "m2")  # a message is never split between batches
    assert writer.step() == 0.0
    assert sink.requests == [11] and outcomes.durable == ["m1", "m2"]
    assert _points(influxd) == _keys(_lines(0, 6) + _lines(1, 5))


@integration
def test_writer_type_conflict_dead_letters_only_that_line(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes, batch_size=40)
    writer.submit(_lines(0, 1), "m0")
    clock.advance(1.0)
    writer.step()  # temperature_c is now a float field
    lines = _lines(1, 40)
    lines[29] = _lines(2, 1, value="5i")[0]  # an integer: a field type conflict
    writer.submit(lines, "m1")
    writer.step()
    assert [line for line, _ in outcomes.dead] == [lines[29]]
    assert "field type conflict" in outcomes.dead[0][1]
    good = [line for i, line in enumerate(lines) if i != 29]
    assert _points(influxd) == _keys(_lines(0, 1) + good)  # not the conflicting line
    assert set(sink.stored) == {*_lines(0, 1), *good}
    assert outcomes.durable == ["m0", "m1"]
    assert len(sink.requests) <= 2 + 2 * 6  # halving finds one line in 40 in ~2·log2(40)
    stats = writer.stats()
    assert (stats.stored_lines, stats.dead_lettered_lines) == (40, 1)


@integration
def test_writer_uses_the_servers_rejected_indices(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes, batch_size=20)
    lines = _lines(0, 20)
    lines[3] = f"environment,site=a,device=d,sensor=s1 temperature_c= {TS}"  # no value
    lines[17] = "environment,site=a,device=d,sensor=s2 temperature_c=1.5 soon"  # no time
    writer.submit(lines, "m1")
    writer.step()
    assert [line for line, _ in outcomes.dead] == [lines[3], lines[17]]
    assert all("unable to parse" in reason for _, reason in outcomes.dead)
    assert sink.requests == [20, 18]  # the rest is written again: the server may keep none
    good = [line for i, line in enumerate(lines) if i not in (3, 17)]
    assert sink.stored == good and _points(influxd) == _keys(good)
    assert outcomes.durable == ["m1"] and writer.stats().dead_lettered_lines == 2


@integration
def test_writer_splits_a_batch_the_server_finds_too_large(
    tmp_path: Path, clock: FakeClock, spool: Spool
) -> None:
    server = Influxd(tmp_path / "influxd-small", max_body_size=300)  # 4 of these lines fit
    server.start()
    try:
        server.create_database("sitewatch")
        sink, outcomes = _v1(server.url), Outcomes()
        writer = _writer(sink, spool, clock, outcomes, batch_size=11)
        lines = _lines(0, 11)
        writer.submit(lines, "m1")
        writer.step()
        assert sink.stored == lines  # all stored, in order
        assert sink.requests == [11, 5, 2, 3, 6, 3, 3]  # halves, then their halves
        assert _points(server) == _keys(lines)
        assert outcomes.dead == [] and outcomes.durable == ["m1"]
        assert writer.stats().spooled_lines == 0
        sink.close()
    finally:
        server.kill()


@integration
def test_writer_spools_while_down_and_drains_in_order(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    influxd.kill()  # connections are refused until it starts again
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes)
    first, second, third = _lines(0, 10), _lines(1, 10), _lines(2, 10)
    writer.submit(first, "m1")
    assert writer.step() == 0.0
    assert outcomes.durable == ["m1"] and writer.stats().spool_lines == 10  # durable in spool
    assert writer.step() == pytest.approx(1.0)  # first retry after retry_min_s
    influxd.start()  # same port, same data
    writer.submit(second, "m2")
    writer.step()
    # the server is back, but the spool is not empty: the new batch queues behind it
    assert outcomes.durable == ["m1", "m2"] and sink.requests == [10]
    assert writer.stats().spool_batches == 2 and _points(influxd) == set()
    clock.advance(1.0)
    while writer.step() == 0.0:
        pass
    assert writer.stats().spool_batches == 0
    writer.submit(third, "m3")
    writer.step()
    assert sink.stored == first + second + third  # influxd received them in order
    assert _points(influxd) == _keys(first + second + third)
    assert sink.requests == [10, 10, 10, 10]
    stats = writer.stats()
    assert (stats.stored_lines, stats.spooled_lines) == (30, 20)
    assert (stats.last_error or "").startswith(
        f'retry: no answer from database "sitewatch" at {influxd.url}'
    )
    influxd.kill()  # a later outage starts its back-off afresh
    writer.submit(_lines(3, 10), "m4")
    assert writer.step() == 0.0 and writer.step() == pytest.approx(1.0)
    assert sink.requests == [10, 10, 10, 10, 10] and outcomes.durable == ["m1", "m2", "m3", "m4"]


def test_writer_backs_off_exponentially_with_jitter(
    down_sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(down_sink, spool, clock, outcomes, retry_min_s=1.0, retry_max_s=16.0)
    writer.submit(_lines(0, 10), "m1")
    writer.step()
    assert down_sink.requests == [10]
    waits = []
    for attempt in range(8):
        wait = writer.step()
        assert wait is not None and wait > 0
        assert len(down_sink.requests) == 1 + attempt  # nothing is tried before its time
        waits.append(wait)
        clock.advance(wait)
        assert writer.step() == 0.0  # one drain attempt, refused
        assert len(down_sink.requests) == 2 + attempt
    bases = [1, 2, 4, 8, 16, 16, 16, 16]
    for wait, base in zip(waits, bases, strict=True):
        assert max(1.0, base / 2) <= wait <= base
    assert len(set(waits[4:])) > 1  # jittered, so a fleet of collectors does not stampede
    assert down_sink.stored == [] and spool.stats().lines == 10 and outcomes.durable == ["m1"]


@integration
def test_writer_honours_the_servers_retry_after_when_longer(
    influxd: Influxd, clock: FakeClock, spool: Spool
) -> None:
    answers = [(503, {"Retry-After": "100"}), (429, {"Retry-After": "0"})]
    with ThrottlingProxy(influxd.url, answers) as proxy:
        sink, outcomes = _v1(proxy.url), Outcomes()
        writer = _writer(sink, spool, clock, outcomes, retry_min_s=1.0, retry_max_s=16.0)
        writer.submit(_lines(0, 10), "m1")
        writer.step()
        assert outcomes.durable == ["m1"] and spool.stats().lines == 10
        assert writer.step() == pytest.approx(100.0)  # longer than our back-off: honour it
        clock.advance(99.0)
        writer.step()
        assert sink.requests == [10]
        clock.advance(1.0)
        assert writer.step() == 0.0  # refused again, with a Retry-After shorter than ours
        wait = writer.step()
        assert wait is not None and 1.0 <= wait <= 2.0  # the back-off's second step
        clock.advance(wait)
        assert writer.step() == 0.0
        assert sink.requests == [10, 10, 10] and proxy.forwarded == 1
        assert spool.stats().batches == 0 and _points(influxd) == _keys(_lines(0, 10))
        sink.close()


@integration
def test_writer_retry_midway_through_a_split_spools_the_rest_in_order(
    influxd: Influxd, clock: FakeClock, spool: Spool
) -> None:
    class KilledBefore(Recorded):
        """influxd is killed just before this sink's requests number 7 and 10."""

        def write(self, lines: Sequence[str]) -> WriteResult:
            if len(self.requests) + 1 in (7, 10):
                influxd.kill()
            return super().write(lines)

    sink, outcomes = KilledBefore(InfluxV1Sink(influxd.url, "sitewatch")), Outcomes()
    seed = _lines(9, 1)  # temperature_c is a float field from now on
    assert sink.sink.write(seed).outcome is Outcome.OK
    writer = _writer(sink, spool, clock, outcomes, batch_size=16)
    lines = _lines(0, 16)
    lines[1] = _lines(1, 1, value="7i")[0]  # two field type conflicts
    lines[12] = _lines(2, 1, value="8i")[0]
    writer.submit(lines, "m1")
    writer.step()
    # 16, 8, 4 and 2 lines refused, lines[0] stored, lines[1] dead-lettered; then influxd
    # is gone while lines[2:4], lines[4:8] and lines[8:] are still to be written
    assert sink.requests == [16, 8, 4, 2, 1, 1, 2]
    assert outcomes.durable == ["m1"] and [line for line, _ in outcomes.dead] == [lines[1]]
    head = spool.head()
    assert head is not None and head.lines == lines[2:]  # all the rest, in order
    influxd.start()
    clock.advance(16.0)
    while writer.step() == 0.0:  # the spooled rest is split again; killed before its 2nd half
        pass
    assert sink.requests[7:] == [14, 7, 7]
    again = spool.head()
    assert again is not None and again.id == head.id and again.lines == lines[9:]
    influxd.start()
    clock.advance(16.0)
    while writer.step() == 0.0:
        pass
    assert [line for line, _ in outcomes.dead] == [lines[1], lines[12]]  # each once
    good = [line for i, line in enumerate(lines) if i not in (1, 12)]
    assert sink.stored == good  # in order, each once
    assert _points(influxd) == _keys(seed + good)
    stats = writer.stats()
    assert (stats.spool_batches, stats.stored_lines, stats.dead_lettered_lines) == (0, 14, 2)
    sink.close()


@integration
def test_writer_drains_a_spool_left_by_an_earlier_run(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    spool.append(_lines(0, 5), readings=5)
    writer = _writer(sink, spool, clock, Outcomes())
    assert writer.step() == 0.0
    assert sink.requests == [5] and spool.stats().batches == 0
    assert _points(influxd) == _keys(_lines(0, 5))


@integration
def test_writer_stop_writes_the_partial_batch_and_refuses_more(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes)
    writer.submit(_lines(0, 3), "m1")
    writer.stop()
    assert sink.requests == [3] and outcomes.durable == ["m1"]
    assert _points(influxd) == _keys(_lines(0, 3))
    with pytest.raises(RuntimeError, match="stopping"):
        writer.submit(_lines(1, 1), "m2")
    writer.stop()  # twice is fine
    assert sink.requests == [3]


def test_writer_stop_spools_when_the_server_is_down(
    down_sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(down_sink, spool, clock, outcomes)
    writer.submit(_lines(0, 3), "m1")
    writer.stop()
    assert outcomes.durable == ["m1"] and down_sink.requests == [3]
    head = spool.head()
    assert head is not None and head.lines == _lines(0, 3)


@integration
def test_writer_blocks_submit_while_batches_wait(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    outcomes = Outcomes()
    writer = _writer(sink, spool, clock, outcomes, batch_size=1, max_pending_batches=2)
    writer.submit(_lines(0, 1), "m1")
    writer.submit(_lines(1, 1), "m2")
    done = threading.Event()

    def third() -> None:
        writer.submit(_lines(2, 1), "m3")
        done.set()

    producer = threading.Thread(target=third)
    producer.start()
    wait_until(lambda: writer.stats().blocked_submits == 1, 10, "the third submit to block")
    assert not done.is_set() and writer.stats().pending_lines == 2
    writer.step()  # the writer takes a batch: room for one more
    producer.join(10)
    assert done.is_set()
    while writer.step() == 0.0:
        pass
    assert outcomes.durable == ["m1", "m2", "m3"]
    assert _points(influxd) == _keys(_lines(0, 1) + _lines(1, 1) + _lines(2, 1))


@integration
def test_writer_keeps_the_data_when_a_sink_raises(
    influxd: Influxd, sink: Recorded, clock: FakeClock, spool: Spool
) -> None:
    class RaisesOnce:
        """A sink with a bug: its first write raises instead of returning a result."""

        def __init__(self) -> None:
            self.raised = False

        def write(self, lines: Sequence[str]) -> WriteResult:
            if not self.raised:
                self.raised = True
                raise OSError("disk on fire")
            return sink.write(lines)

        def close(self) -> None:
            sink.close()

    outcomes = Outcomes()
    writer = _writer(RaisesOnce(), spool, clock, outcomes)
    writer.submit(_lines(0, 10), "m1")
    writer.step()
    assert outcomes.durable == ["m1"] and spool.stats().lines == 10
    assert "disk on fire" in (writer.stats().last_error or "")
    assert sink.requests == [] and _points(influxd) == set()
    clock.advance(1.0)
    assert writer.step() == 0.0  # the kept lines are written on the next try
    assert sink.stored == _lines(0, 10) and spool.stats().batches == 0
    assert _points(influxd) == _keys(_lines(0, 10))


def test_writer_thread_fails_loudly_when_the_spool_fails(
    tmp_path: Path, down_sink: Recorded
) -> None:
    spool = Spool(tmp_path / "spool.db")
    outcomes = Outcomes()
    writer = _writer(down_sink, spool, SystemClock(), outcomes, flush_interval_s=0.05)
    writer.start()
    spool.close()  # as if the disk went away: spooling raises
    writer.submit(_lines(0, 10), "m1")
    wait_until(lambda: writer.failure is not None, 10, "the writer to fail")
    assert down_sink.requests == [10]  # refused, so the batch had to be spooled
    assert outcomes.durable == []  # never acknowledged: the broker keeps the message
    assert not writer.alive
    with pytest.raises(RuntimeError, match="failed"):
        writer.submit(_lines(1, 1), "m2")
    with pytest.raises(RuntimeError, match="failed"):
        writer.stop()


# -- the writer thread against a real influxd, through the real v1 sink ----------------------


def _messages(first: int, count: int, readings: int = 50) -> dict[str, list[str]]:
    """Telemetry for ``count`` messages as line protocol, by token (the message's seq)."""
    catalog = SensorCatalog()
    catalog.set_sensor("plant-a", "pi-01", "s0", labels={"zone": "kitchen north"})
    out = {}
    for seq in range(first, first + count):
        message = TelemetryMessage(
            site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=seq,
            readings=[
                Reading(sensor=f"s{i % 5}", ts=TS + seq * 1000 + i, quality=Quality.OK,
                        temperature_c=20.0 + i / 10, humidity_pct=50.0)
                for i in range(readings)
            ],
        )
        out[f"m{seq}"] = telemetry_lines(message, catalog)
    return out


def _count(server: Influxd) -> int:
    rows = server.query("SELECT count(temperature_c) FROM environment", "sitewatch")
    return int(rows[0]["count"]) if rows else 0


def _spooled_now(path: Path) -> set[str]:
    """Every line in the spool's file right now, read through a connection of our own."""
    with sqlite3.connect(path) as db:
        bodies = db.execute("SELECT body FROM batches").fetchall()
    return {line for (body,) in bodies for line in bytes(body).decode().split("\n")}


@pytest.fixture
def system_spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.db") as spool:
        yield spool


@integration
def test_writer_influxd_stores_every_line_exactly_once(
    influxd: Influxd, system_spool: Spool
) -> None:
    sink, outcomes = InfluxV1Sink(influxd.url, "sitewatch", timeout_s=10), Outcomes()
    messages = _messages(1, 100)
    writer = _writer(sink, system_spool, SystemClock(), outcomes, batch_size=500,
                     flush_interval_s=0.1)
    with writer:
        for token, lines in messages.items():
            writer.submit(lines, token)
        wait_until(lambda: len(outcomes.durable) == 100, 30, "every message to be durable")
        assert outcomes.durable == list(messages)  # in submission order
        assert _count(influxd) == 5000
        for token in list(messages)[:10]:  # redelivered messages overwrite their own points
            writer.submit(messages[token], token)
        wait_until(lambda: len(outcomes.durable) == 110, 30, "the redeliveries to be durable")
    assert _count(influxd) == 5000
    stats = writer.stats()
    assert (stats.stored_lines, stats.spooled_lines, stats.dead_lettered_lines) == (5500, 0, 0)
    sink.close()


@integration
def test_writer_influxd_type_conflict_dead_letters_only_that_line(
    influxd: Influxd, system_spool: Spool
) -> None:
    sink, outcomes = InfluxV1Sink(influxd.url, "sitewatch", timeout_s=10), Outcomes()
    messages = _messages(1, 4)
    bad = f"environment,site=plant-a,device=pi-01,sensor=s1 temperature_c=21i {TS + 1}"
    batch = [*messages["m2"][:30], bad, *messages["m2"][30:]]
    with _writer(sink, system_spool, SystemClock(), outcomes, batch_size=1000,
                 flush_interval_s=0.05) as writer:
        writer.submit(messages["m1"], "m1")  # temperature_c is a float from now on
        wait_until(lambda: outcomes.durable == ["m1"], 30, "the first message")
        writer.submit(batch, "m2")
        wait_until(lambda: outcomes.durable == ["m1", "m2"], 30, "the batch with the conflict")
    assert [line for line, _ in outcomes.dead] == [bad]
    assert "field type conflict" in outcomes.dead[0][1]
    assert _count(influxd) == 100  # every other line of the batch is stored
    sink.close()


@integration
def test_writer_influxd_killed_midstream_spools_then_drains_in_order(
    influxd: Influxd, system_spool: Spool
) -> None:
    sink = Recorded(InfluxV1Sink(influxd.url, "sitewatch", timeout_s=5))
    messages = _messages(1, 80)
    tokens = list(messages)
    violations: list[str] = []

    class Checked(Outcomes):
        def on_durable(self, tokens: list[object]) -> None:
            # never before: each line is acknowledged by influxd or committed to the spool
            safe = set(sink.stored) | _spooled_now(system_spool.path)
            violations.extend(str(t) for t in tokens if not set(messages[str(t)]) <= safe)
            super().on_durable(tokens)

    outcomes = Checked()
    writer = _writer(sink, system_spool, SystemClock(), outcomes, batch_size=200,
                     flush_interval_s=0.05, retry_min_s=0.05, retry_max_s=0.5)
    with writer:
        for token in tokens[:20]:
            writer.submit(messages[token], token)
        wait_until(lambda: len(outcomes.durable) == 20, 30, "the first 20 messages")
        influxd.kill()
        for token in tokens[20:60]:  # while influxd is down
            writer.submit(messages[token], token)
        wait_until(lambda: len(outcomes.durable) == 60, 30, "the spooled messages")
        assert writer.stats().spool_lines == 40 * 50  # all durable, none in influxd yet
        influxd.start()
        for token in tokens[60:]:  # while the spool drains
            writer.submit(messages[token], token)
        wait_until(lambda: len(outcomes.durable) == 80 and writer.stats().spool_batches == 0,
                   30, "the spool to drain")
    assert violations == [] and outcomes.durable == tokens
    everything = [line for token in tokens for line in messages[token]]
    first_stored = list(dict.fromkeys(sink.stored))
    assert first_stored == everything  # influxd received everything in submission order
    assert _count(influxd) == 80 * 50
    assert writer.stats().spooled_lines >= 40 * 50 and writer.stats().dropped_lines == 0
    sink.close()


@integration
def test_writer_influxd_backpressure_blocks_while_influxd_hangs(
    influxd: Influxd, system_spool: Spool
) -> None:
    sink, outcomes = InfluxV1Sink(influxd.url, "sitewatch", timeout_s=60), Outcomes()
    messages = _messages(1, 10, readings=10)
    writer = _writer(sink, system_spool, SystemClock(), outcomes, batch_size=10,
                     flush_interval_s=0.05, max_pending_batches=2)
    produced: list[str] = []

    def produce() -> None:
        for token, lines in messages.items():
            writer.submit(lines, token)
            produced.append(token)

    assert influxd.proc is not None
    with writer:
        influxd.proc.send_signal(signal.SIGSTOP)  # influxd takes the request but never answers
        try:
            producer = threading.Thread(target=produce)
            producer.start()
            # one batch in the hung write, two waiting, and the fourth submit held back
            wait_until(
                lambda: writer.stats().blocked_submits == 1 and len(produced) == 3,
                30,
                "the fourth submit to block",
            )
            assert writer.stats().pending_lines == 30 and outcomes.durable == []
        finally:
            influxd.proc.send_signal(signal.SIGCONT)
        producer.join(30)
        wait_until(lambda: len(outcomes.durable) == 10, 30, "everything to be durable")
    assert outcomes.durable == list(messages) and _count(influxd) == 100
    assert writer.stats().spooled_lines == 0  # it was slow, not down: nothing was spooled
    sink.close()


@integration
def test_writer_influxd_stop_writes_the_partial_batch(
    influxd: Influxd, system_spool: Spool
) -> None:
    sink, outcomes = InfluxV1Sink(influxd.url, "sitewatch", timeout_s=10), Outcomes()
    writer = _writer(sink, system_spool, SystemClock(), outcomes, batch_size=5000,
                     flush_interval_s=60.0)
    writer.start()
    writer.submit(_messages(1, 1, readings=7)["m1"], "m1")
    assert outcomes.durable == []  # neither full nor due for a minute
    writer.stop(timeout_s=30)
    assert outcomes.durable == ["m1"] and _count(influxd) == 7
    sink.close()
