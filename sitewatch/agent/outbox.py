"""The on-disk outbox: every message is committed here before it is published.

A message row is written (and committed) when the agent forms it and deleted only when the
broker has acknowledged it (PUBACK, QoS1). A crash, a reboot or a broker outage therefore
loses nothing that was committed; what is sent again after a crash is at most the messages
that were in flight. The database is SQLite in WAL mode with ``synchronous=NORMAL``: safe
from corruption, and a commit survives a crash of the process (a power cut may roll back the
last commits, which is the price of not wearing out the SD card).

The outbox is capped by payload bytes (``max_bytes``) and by age (``max_age_s``). When a new
message does not fit, the oldest telemetry is dropped first and events last; every dropped
reading and event is counted, so ``produced == acked + pending + dropped`` always holds for
readings. The counters live in the same database and survive restarts.

>>> import tempfile, pathlib
>>> box = Outbox(pathlib.Path(tempfile.mkdtemp()) / "outbox.db", max_bytes=1 << 20)
>>> row_id = box.add("telemetry", "t", b'{"seq": 1}', readings=3, created_ms=1_000)
>>> box.stats().pending, box.ack([row_id]), box.stats().acked
(3, 1, 3)
>>> box.close()
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from sitewatch.sqlitefile import open_wal

__all__ = ["Outbox", "OutboxRow", "OutboxStats", "read_stats"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    events INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COUNTERS = (
    "produced",
    "acked",
    "dropped",
    "events_produced",
    "events_acked",
    "events_dropped",
    "messages_dropped",
    "dropped_for_size",
    "dropped_for_age",
)


@dataclass(frozen=True)
class OutboxRow:
    """A committed message waiting for its PUBACK."""

    id: int
    kind: str
    topic: str
    created_ms: int
    readings: int
    events: int
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    """Delivery accounting. Reading counts are sensor readings; events are counted apart.

    ``produced == acked + pending + dropped`` (and likewise for events).
    """

    produced: int
    acked: int
    pending: int
    dropped: int
    events_produced: int
    events_acked: int
    events_pending: int
    events_dropped: int
    pending_messages: int
    pending_bytes: int
    messages_dropped: int
    dropped_for_size: int
    dropped_for_age: int
    oldest_pending_ms: int | None

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


class Outbox:
    """A capped, persistent FIFO of encoded messages (one writer, thread-safe).

    ``max_bytes``: cap on the sum of queued payload sizes (bytes, default 64 MiB).
    ``max_age_s``: messages older than this (seconds, default 14 days) are dropped.
    """

    def __init__(
        self, path: Path, *, max_bytes: int = 64 << 20, max_age_s: float = 14 * 86400.0
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_ms = int(max_age_s * 1000)
        self._lock = threading.Lock()
        # A small page cache: the outbox is written and read sequentially, and the agent must
        # stay light on a Pi.
        self._db = open_wal(path, journal_size_limit_bytes=8 << 20, cache_kib=256)
        self._db.executescript(_SCHEMA)
        for name in _COUNTERS:
            self._db.execute("INSERT OR IGNORE INTO counters VALUES (?, 0)", (name,))
        self._pending_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM messages")

    def _scalar(self, sql: str, args: tuple[object, ...] = ()) -> int:
        row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (amount, name))

    def add(
        self,
        kind: str,
        topic: str,
        payload: bytes,
        *,
        readings: int = 0,
        events: int = 0,
        created_ms: int,
    ) -> int:
        """Commit one message; drop the oldest to stay within the caps. Returns its row id."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO messages"
                    " (kind, topic, created_ms, readings, events, size, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, topic, created_ms, readings, events, len(payload), payload),
                )
                self._bump("produced", readings)
                self._bump("events_produced", events)
                self._pending_bytes += len(payload)
                self._expire(created_ms - self.max_age_ms)
                self._enforce_size()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM messages")
                raise
            row_id = cursor.lastrowid
            assert row_id is not None
            return row_id

    def _drop(self, rows: list[tuple[int, int, int, int]], reason: str) -> None:
        for row_id, readings, events, size in rows:
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._bump("dropped", readings)
            self._bump("events_dropped", events)
            self._bump("messages_dropped", 1)
            self._bump(reason, readings)
            self._pending_bytes -= size

    def _expire(self, cutoff_ms: int) -> None:
        rows = self._db.execute(
            "SELECT id, readings, events, size FROM messages WHERE created_ms < ?", (cutoff_ms,)
        ).fetchall()
        self._drop(rows, "dropped_for_age")

    def _enforce_size(self) -> None:
        while self._pending_bytes > self.max_bytes:
            # Oldest telemetry first; events only when no telemetry is left.
            rows = self._db.execute(
                "SELECT id, readings, events, size FROM messages"
                " ORDER BY kind = 'event', id LIMIT 64"
            ).fetchall()
            if not rows:
                break
            excess = self._pending_bytes - self.max_bytes
            victims = []
            for row in rows:
                victims.append(row)
                excess -= row[3]
                if excess <= 0:
                    break
            self._drop(victims, "dropped_for_size")
        if self._scalar("PRAGMA freelist_count") > 256:
            self._db.execute("PRAGMA incremental_vacuum(256)")

    def fetch(self, after_id: int, limit: int, up_to_id: int | None = None) -> list[OutboxRow]:
        """Up to ``limit`` messages with ``after_id < id [<= up_to_id]``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, created_ms, readings, events, payload FROM messages"
                " WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, up_to_id if up_to_id is not None else 2**62, limit),
            ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6])) for r in rows]

    def last_id(self) -> int:
        """The newest row id (0 when empty): the end of the backlog at connect time."""
        with self._lock:
            return self._scalar("SELECT COALESCE(MAX(id), 0) FROM messages")

    def ack(self, row_ids: list[int]) -> int:
        """Delete acknowledged messages in one transaction; returns how many were still there.

        A message dropped for the cap while in flight and acknowledged afterwards is not
        counted twice: it stays counted as dropped.
        """
        if not row_ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            removed = 0
            try:
                for row_id in row_ids:
                    row = self._db.execute(
                        "DELETE FROM messages WHERE id = ? RETURNING readings, events, size",
                        (row_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    removed += 1
                    self._bump("acked", row[0])
                    self._bump("events_acked", row[1])
                    self._pending_bytes -= row[2]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return removed

    def stats(self) -> OutboxStats:
        """The delivery accounting, read in one consistent snapshot."""
        with self._lock:
            return _stats(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stats(db: sqlite3.Connection) -> OutboxStats:
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    pending = db.execute(
        "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(events), 0), COUNT(*),"
        " COALESCE(SUM(size), 0), MIN(created_ms) FROM messages"
    ).fetchone()
    return OutboxStats(
        produced=counters.get("produced", 0),
        acked=counters.get("acked", 0),
        pending=int(pending[0]),
        dropped=counters.get("dropped", 0),
        events_produced=counters.get("events_produced", 0),
        events_acked=counters.get("events_acked", 0),
        events_pending=int(pending[1]),
        events_dropped=counters.get("events_dropped", 0),
        pending_messages=int(pending[2]),
        pending_bytes=int(pending[3]),
        messages_dropped=counters.get("messages_dropped", 0),
        dropped_for_size=counters.get("dropped_for_size", 0),
        dropped_for_age=counters.get("dropped_for_age", 0),
        oldest_pending_ms=pending[4],
    )


def read_stats(path: Path) -> OutboxStats:
    """Read the accounting of an outbox another process may be writing (read-only)."""
    if not path.exists():
        raise FileNotFoundError(f"no outbox at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("BEGIN")
        return _stats(db)
    finally:
        db.close()
