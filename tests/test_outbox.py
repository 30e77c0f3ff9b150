"""The outbox on a real SQLite file: order, acknowledgement, caps and crash survival."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sitewatch.agent.outbox import STUB_BYTES, Outbox, read_stats


def _add(box: Outbox, kind: str, size: int, created_ms: int, readings: int = 1) -> int:
    events = 1 if kind == "event" else 0
    return box.add(
        kind,
        f"t/{kind}",
        b"x" * size,
        readings=0 if events else readings,
        events=events,
        created_ms=created_ms,
    )


def test_outbox_fetches_oldest_first_and_acks_delete(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [_add(box, "telemetry", 10, 1000 + i, readings=2) for i in range(5)]
    rows = box.fetch(0, 3)
    assert [r.id for r in rows] == ids[:3]
    assert [r.id for r in box.fetch(ids[2], 10)] == ids[3:]
    assert box.ack([ids[0], ids[1]]) == 2
    assert box.ack([ids[0]]) == 0  # a second PUBACK for the same row is not counted twice
    stats = box.stats()
    assert (stats.produced, stats.acked, stats.pending, stats.dropped) == (10, 4, 6, 0)
    box.close()


def test_outbox_survives_reopen_with_counters(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    first = _add(box, "telemetry", 10, 1000, readings=3)
    _add(box, "telemetry", 10, 1001, readings=4)
    box.ack([first])
    box.close()  # as after a crash: nothing else is written on close
    again = Outbox(path)
    stats = again.stats()
    assert (stats.produced, stats.acked, stats.pending) == (7, 3, 4)
    assert [r.readings for r in again.fetch(0, 10)] == [4]
    again.close()


def test_outbox_cap_drops_oldest_telemetry_before_events(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=10_000)
    event_id = _add(box, "event", 1000, 1000)
    telemetry_ids = [_add(box, "telemetry", 1000, 1001 + i, readings=5) for i in range(12)]
    stats = box.stats()
    assert stats.pending_bytes <= 10_000
    remaining = [r.id for r in box.fetch(0, 100)]
    assert event_id in remaining  # events go last
    assert remaining[1:] == telemetry_ids[-len(remaining) + 1 :]  # the newest telemetry stays
    assert stats.dropped == 5 * (12 - (len(remaining) - 1))
    assert stats.produced == stats.acked + stats.pending + stats.dropped
    assert stats.events_dropped == 0
    box.close()


def test_outbox_cap_drops_events_only_when_no_telemetry_is_left(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=4096)
    for i in range(6):
        _add(box, "event", 1000, 1000 + i)
    stats = box.stats()
    assert stats.events_dropped == 2
    assert stats.events_pending == 4
    assert stats.events_produced == stats.events_acked + stats.events_pending + stats.events_dropped
    box.close()


def test_outbox_drops_messages_older_than_max_age(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_age_s=60)
    _add(box, "telemetry", 10, 0, readings=2)
    _add(box, "telemetry", 10, 30_000, readings=2)
    _add(box, "telemetry", 10, 70_000, readings=2)  # the first is now 70 s old
    stats = box.stats()
    assert (stats.pending, stats.dropped, stats.dropped_for_age) == (4, 2, 2)
    box.close()


def test_outbox_file_stays_bounded_under_churn(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_bytes=64 * 1024)
    for i in range(3000):
        _add(box, "telemetry", 500, 1000 + i)
    assert box.stats().pending_bytes <= 64 * 1024
    box.close()
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total < 4 * 1024 * 1024  # the WAL is truncated and free pages are reused


def test_outbox_stats_readable_by_another_process_while_open(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    _add(box, "telemetry", 10, 1000, readings=7)
    stats = read_stats(path)  # what `sitewatch-agent status` does while the agent runs
    assert (stats.produced, stats.pending) == (7, 7)
    box.close()
    assert read_stats(path).produced == 7


# -- end-to-end confirmation ---------------------------------------------------------------


def _add_seq(box: Outbox, boot: str, seq: int, readings: int = 2, size: int = 10) -> int:
    return box.add("telemetry", "t/telemetry", b"x" * size, readings=readings,
                   created_ms=1000 + seq, boot_id=boot, seq=seq)


def test_outbox_puback_holds_rows_until_the_collector_confirms_them(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [_add_seq(box, "b1", seq) for seq in range(1, 6)]
    assert box.hold(ids[:4], at_ms=5000) == 4
    held = box.stats()
    assert (held.pending, held.unconfirmed, held.unconfirmed_messages) == (10, 8, 4)
    assert (held.acked, held.confirmed) == (0, 0)  # a PUBACK alone deletes nothing
    assert [r.pubacked for r in box.fetch(0, 10)] == [True, True, True, True, False]

    done = box.confirm("b1", 3, at_ms=6000)
    assert (done.messages, done.readings) == (3, 6)
    after = box.stats()
    assert (after.acked, after.confirmed, after.pending, after.unconfirmed) == (6, 6, 4, 2)
    assert after.last_confirmation_ms == 6000
    # A confirmation covers rows whose PUBACK never came (a copy from an earlier connection).
    assert box.confirm("b1", 5, at_ms=7000).messages == 2
    assert box.confirm("other", 99, at_ms=7000).messages == 0  # another boot's seqs are apart
    final = box.stats()
    assert (final.produced, final.acked, final.confirmed, final.pending) == (10, 10, 10, 0)
    box.close()


def test_outbox_confirmation_is_per_boot(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    old = [_add_seq(box, "b1", seq) for seq in (7, 8)]
    new = [_add_seq(box, "b2", seq) for seq in (1, 2)]
    box.hold(old + new, at_ms=5000)
    box.confirm("b2", 8, at_ms=6000)
    assert [r.id for r in box.fetch(0, 10)] == old
    assert box.held_from("b1") == 7 and box.held_from("b2") is None
    [boot] = box.unconfirmed_boots()
    assert (boot.boot_id, boot.messages, boot.oldest_pubacked_ms, boot.first_id) == (
        "b1", 2, 5000, old[0])
    box.close()


def test_outbox_release_counts_unconfirmed_rows_as_acked_not_confirmed(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [_add_seq(box, "b1", seq) for seq in range(1, 4)]
    box.hold(ids[:2], at_ms=5000)
    assert box.release_unconfirmed() == 2
    stats = box.stats()
    assert (stats.acked, stats.confirmed, stats.pending, stats.unconfirmed) == (4, 0, 2, 0)
    assert stats.produced == stats.acked + stats.pending + stats.dropped
    box.close()


def _balanced(box: Outbox) -> bool:
    stats = box.stats()
    return stats.produced == stats.acked + stats.pending + stats.dropped


def test_outbox_cap_keeps_a_stub_of_each_unconfirmed_row_and_drops_unsent_ones(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=5000)
    first = [_add_seq(box, "b1", seq, size=1000) for seq in (1, 2)]
    box.hold(first, at_ms=5000)  # in the broker's care, not yet confirmed
    for seq in range(3, 10):
        _add_seq(box, "b1", seq, size=1000)
    stats = box.stats()
    assert stats.pending_bytes == 4 * 1000 + 2 * STUB_BYTES
    # Seqs 1 and 2 lost their payload but not their place; 3, 4, 5 were never sent.
    assert (stats.acked, stats.dropped, stats.dropped_for_size) == (0, 6, 6)
    assert (stats.unconfirmed, stats.stubbed, stats.pending) == (4, 4, 12)
    assert _balanced(box)
    assert [r.seq for r in box.fetch(0, 10)] == [6, 7, 8, 9]  # a stub has nothing to send
    assert box.held_from("b1") == 1  # so the collector is not told to skip the stubs
    assert box.confirm("b1", 2, at_ms=6000).readings == 4  # the broker delivered them
    stats = box.stats()
    assert (stats.acked, stats.confirmed, stats.stubbed, stats.released) == (4, 4, 0, 0)
    box.close()


def test_outbox_gives_up_only_stubs_below_the_highest_seq_the_collector_holds(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=3000)
    for seq in range(1, 7):
        box.hold([_add_seq(box, "b1", seq, size=1000)], at_ms=5000)
    assert box.stats().stubbed == 8  # seqs 1-4 lost their payload; 5 and 6 kept it
    # The collector has 1, and 3 past the hole at 2: both leave the outbox, confirmed.
    done = box.confirm("b1", 1, at_ms=6000, above=[(3, 3)])
    assert (done.messages, done.readings) == (2, 4)
    lost = box.give_up_stubs("b1", below_seq=3)  # seq 2: the broker lost it
    assert (lost.messages, lost.readings, lost.first_seq, lost.last_seq) == (1, 2, 2, 2)
    stats = box.stats()
    assert (stats.dropped, stats.dropped_unconfirmed, stats.confirmed, stats.stubbed) == (
        2, 2, 4, 2)
    assert box.held_from("b1") == 4  # seq 4, above the collector's highest, may be on its way
    assert box.give_up_stubs("b1", below_seq=3).messages == 0
    assert [r.seq for r in box.fetch(0, 10)] == [5, 6]
    assert _balanced(box)
    box.close()


def test_outbox_cap_spares_rows_on_their_way_to_the_broker(tmp_path: Path) -> None:
    """Dropping a row whose publish may yet be acknowledged would count a loss that does not
    happen (the collector stores it): the cap takes the next row instead."""
    box = Outbox(tmp_path / "o.db", max_bytes=3000)
    first = [_add_seq(box, "b1", seq, size=1000) for seq in (1, 2, 3)]
    box.mark_sent(first[0])
    fourth = _add_seq(box, "b1", 4, size=1000)
    assert [r.seq for r in box.fetch(0, 10)] == [1, 3, 4]  # seq 2 went, not seq 1
    box.hold([first[0]], at_ms=5000)  # its PUBACK came: it is an ordinary held row again
    _add_seq(box, "b1", 5, size=1000)
    assert box.stats().stubbed == 2  # seq 1, as any acknowledged row, became a stub
    assert [r.seq for r in box.fetch(0, 10)] == [4, 5]  # and seq 3 was dropped
    box.mark_sent(fourth)
    box.forget_sent()  # the connection dropped: no PUBACK will come for seq 4
    _add_seq(box, "b1", 6, size=1000)
    assert [r.seq for r in box.fetch(0, 10)] == [5, 6]
    box.close()


def test_outbox_evicts_stubs_last_and_counts_them_released(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=3 * STUB_BYTES)
    for seq in range(1, 6):
        box.hold([_add_seq(box, "b1", seq, size=STUB_BYTES * 2)], at_ms=5000)
    stats = box.stats()
    assert stats.pending_bytes <= 3 * STUB_BYTES
    # Stubs may use half the cap (one stub here): the older ones were released.
    assert (stats.stubbed, stats.released, stats.acked, stats.dropped) == (2, 6, 6, 0)
    assert _balanced(box)
    assert box.held_from("b1") == 4
    assert [r.seq for r in box.fetch(0, 10)] == [5]
    box.close()


def test_outbox_rows_without_identity_leave_on_puback_even_when_held(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    legacy = _add(box, "telemetry", 10, 1000, readings=3)
    modern = _add_seq(box, "b1", 1)
    assert box.hold([legacy, modern], at_ms=5000) == 2
    assert [r.id for r in box.fetch(0, 10)] == [modern]
    assert box.stats().acked == 3
    box.close()


def test_outbox_opens_an_older_agents_file_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
        " topic TEXT NOT NULL, created_ms INTEGER NOT NULL, readings INTEGER NOT NULL,"
        " events INTEGER NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO counters VALUES ('produced', 5), ('acked', 2);"
        "INSERT INTO messages (kind, topic, created_ms, readings, events, size, payload)"
        " VALUES ('telemetry', 't', 1000, 3, 0, 4, x'7b7d7b7d');"
    )
    old.commit()
    old.close()
    assert read_stats(path).pending == 3  # `status` reads the old layout too
    box = Outbox(path)
    [row] = box.fetch(0, 10)
    assert (row.boot_id, row.seq, row.pubacked) == (None, None, False)
    box.hold([row.id], at_ms=5000)  # no identity: the PUBACK is all it can get
    stats = box.stats()
    assert (stats.produced, stats.acked, stats.pending) == (5, 5, 0)
    box.close()


def test_outbox_counts_resends_and_remembers_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.count_resent(3)
    box.set_fallback(True)
    box.close()
    stats = read_stats(path)
    assert (stats.resent, stats.broker_fallback, stats.last_confirmation_ms) == (3, True, None)


def test_outbox_stats_of_a_file_without_tables_yet_say_so(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    sqlite3.connect(path).close()  # the agent's first moment: the file, no tables
    with pytest.raises(FileNotFoundError, match="not set up yet"):
        read_stats(path)
