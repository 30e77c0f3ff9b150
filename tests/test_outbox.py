"""The outbox on a real SQLite file: order, acknowledgement, caps and crash survival."""

from __future__ import annotations

from pathlib import Path

from sitewatch.agent.outbox import Outbox, read_stats


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
