"""The on-disk outbox: every message is committed here before it is published.

A message row is written (and committed) when the agent forms it, with the message's
``(boot_id, seq)``. What removes it depends on how delivery is confirmed
(``delivery.confirm``):

- ``end_to_end`` (the default): the broker's PUBACK only marks the row *unconfirmed*
  (``hold``), because mosquitto acknowledges a QoS1 publish before it is on disk. The row is
  deleted when the collector confirms that everything of its boot up to its seq is durably
  stored (``confirm``), or released to the broker's care when no collector confirms
  (``release_unconfirmed``, the fallback of ``sitewatch.agent.confirm``).
- ``broker``: the PUBACK deletes the row (``ack``), as before end-to-end confirmation existed.

A crash, a reboot or a broker outage therefore loses nothing that was committed; what is sent
again after a crash is at most what was not yet confirmed. The database is SQLite in WAL mode
with ``synchronous=NORMAL``: safe from corruption, and a commit survives a crash of the process
(a power cut may roll back the last commits, which is the price of not wearing out the SD card).

The outbox is capped by payload bytes (``max_bytes``) and by age (``max_age_s``). When a new
message does not fit, the oldest telemetry goes first and events last. A row that never got a
PUBACK is counted as dropped; one the broker had acknowledged is counted as acked (the broker
has it; only the collector's confirmation was still missing). So for readings
``produced == acked + pending + dropped`` always holds, and ``confirmed <= acked`` counts what
the collector confirmed stored. The counters live in the same database and survive restarts.

>>> import tempfile, pathlib
>>> box = Outbox(pathlib.Path(tempfile.mkdtemp()) / "outbox.db", max_bytes=1 << 20)
>>> row_id = box.add("telemetry", "t", b'{"seq": 1}', readings=3, created_ms=1_000,
...                  boot_id="b1", seq=1)
>>> box.hold([row_id], at_ms=1_100), box.stats().unconfirmed
(1, 3)
>>> box.confirm("b1", 1, at_ms=2_000).readings, box.stats().confirmed, box.stats().pending
(3, 3, 0)
>>> box.close()
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from sitewatch.sqlitefile import open_wal

__all__ = ["Confirmed", "Outbox", "OutboxRow", "OutboxStats", "UnconfirmedBoot", "read_stats"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    events INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    boot_id TEXT,
    seq INTEGER,
    pubacked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER);
"""

# Added after the first release: an outbox written by an older agent gains them on open
# (its rows have no identity and leave on PUBACK, as they always did).
_LATER_COLUMNS = {"boot_id": "TEXT", "seq": "INTEGER", "pubacked_ms": "INTEGER"}

_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages (boot_id, seq);
CREATE INDEX IF NOT EXISTS messages_unconfirmed ON messages (boot_id, pubacked_ms)
    WHERE pubacked_ms IS NOT NULL;
"""

_COUNTERS = (
    "produced",
    "acked",
    "confirmed",
    "dropped",
    "events_produced",
    "events_acked",
    "events_confirmed",
    "events_dropped",
    "messages_dropped",
    "dropped_for_size",
    "dropped_for_age",
    "resent",
)

_MARKS = ("broker_fallback", "last_confirmation_ms")
"""Delivery state shown by ``status``: whether the agent fell back to the broker's PUBACK
(0/1), and when the collector last confirmed anything (ms)."""


@dataclass(frozen=True)
class OutboxRow:
    """A committed message. ``pubacked``: the broker acknowledged it before (so sending it
    again is a resend)."""

    id: int
    kind: str
    topic: str
    created_ms: int
    readings: int
    events: int
    payload: bytes
    boot_id: str | None = None
    seq: int | None = None
    pubacked: bool = False


@dataclass(frozen=True)
class Confirmed:
    """What one confirmation removed from the outbox."""

    messages: int
    readings: int
    events: int


@dataclass(frozen=True)
class UnconfirmedBoot:
    """PUBACKed rows of one boot still waiting for the collector: how many, the oldest
    PUBACK (ms) and the lowest such row id."""

    boot_id: str
    messages: int
    oldest_pubacked_ms: int
    first_id: int


@dataclass(frozen=True)
class OutboxStats:
    """Delivery accounting. Reading counts are sensor readings; events are counted apart.

    ``produced == acked + pending + dropped`` (and likewise for events). ``confirmed`` (part
    of ``acked``) is what the collector confirmed stored; ``unconfirmed`` (part of
    ``pending``) what the broker acknowledged but the collector has not confirmed yet.
    ``resent``: messages published again after a PUBACK because no confirmation came.
    """

    produced: int
    acked: int
    confirmed: int
    pending: int
    unconfirmed: int
    dropped: int
    events_produced: int
    events_acked: int
    events_confirmed: int
    events_pending: int
    events_dropped: int
    pending_messages: int
    unconfirmed_messages: int
    pending_bytes: int
    messages_dropped: int
    dropped_for_size: int
    dropped_for_age: int
    resent: int
    oldest_pending_ms: int | None
    broker_fallback: bool
    last_confirmation_ms: int | None

    def as_dict(self) -> dict[str, int | bool | None]:
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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        for name, kind in _LATER_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")
        self._db.executescript(_INDEXES)
        for name in _COUNTERS:
            self._db.execute("INSERT OR IGNORE INTO counters VALUES (?, 0)", (name,))
        for name in _MARKS:
            self._db.execute("INSERT OR IGNORE INTO marks VALUES (?, NULL)", (name,))
        self._pending_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM messages")

    def _scalar(self, sql: str, args: tuple[object, ...] = ()) -> int:
        row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (amount, name))

    def _mark(self, name: str, value: int | None) -> None:
        self._db.execute("UPDATE marks SET value = ? WHERE name = ?", (value, name))

    def add(
        self,
        kind: str,
        topic: str,
        payload: bytes,
        *,
        readings: int = 0,
        events: int = 0,
        created_ms: int,
        boot_id: str | None = None,
        seq: int | None = None,
    ) -> int:
        """Commit one message; drop the oldest to stay within the caps. Returns its row id.

        ``boot_id``/``seq`` are the message's identity, which the collector's confirmations
        name; a row without them leaves on its PUBACK even under end-to-end confirmation.
        """
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO messages"
                " (kind, topic, created_ms, readings, events, size, payload, boot_id, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, topic, created_ms, readings, events, len(payload), payload, boot_id, seq),
            )
            self._bump("produced", readings)
            self._bump("events_produced", events)
            self._pending_bytes += len(payload)
            self._expire(created_ms - self.max_age_ms)
            self._enforce_size()
        row_id = cursor.lastrowid
        assert row_id is not None
        return row_id

    def _drop(self, rows: list[tuple[int, int, int, int, int | None]], reason: str) -> None:
        for row_id, readings, events, size, pubacked_ms in rows:
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._pending_bytes -= size
            if pubacked_ms is not None:
                # The broker acknowledged it: it is in the broker's care, not lost here.
                self._bump("acked", readings)
                self._bump("events_acked", events)
                continue
            self._bump("dropped", readings)
            self._bump("events_dropped", events)
            self._bump("messages_dropped", 1)
            self._bump(reason, readings)

    def _expire(self, cutoff_ms: int) -> None:
        rows = self._db.execute(
            "SELECT id, readings, events, size, pubacked_ms FROM messages WHERE created_ms < ?",
            (cutoff_ms,),
        ).fetchall()
        self._drop(rows, "dropped_for_age")

    def _enforce_size(self) -> None:
        while self._pending_bytes > self.max_bytes:
            # Oldest telemetry first; events only when no telemetry is left.
            rows = self._db.execute(
                "SELECT id, readings, events, size, pubacked_ms FROM messages"
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
                "SELECT id, kind, topic, created_ms, readings, events, payload, boot_id, seq,"
                " pubacked_ms IS NOT NULL FROM messages"
                " WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, up_to_id if up_to_id is not None else 2**62, limit),
            ).fetchall()
        return [
            OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), r[7], r[8], bool(r[9]))
            for r in rows
        ]

    def last_id(self) -> int:
        """The newest row id (0 when empty): the end of the backlog at connect time."""
        with self._lock:
            return self._scalar("SELECT COALESCE(MAX(id), 0) FROM messages")

    def _delete_acked(self, row_ids: list[int]) -> int:
        removed = 0
        for row_id in row_ids:
            row = self._db.execute(
                "DELETE FROM messages WHERE id = ? RETURNING readings, events, size", (row_id,)
            ).fetchone()
            if row is None:
                continue
            removed += 1
            self._bump("acked", row[0])
            self._bump("events_acked", row[1])
            self._pending_bytes -= row[2]
        return removed

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def ack(self, row_ids: list[int]) -> int:
        """Delete messages the broker acknowledged (``broker`` confirmation) in one
        transaction; returns how many were still there.

        A message dropped for the cap while in flight and acknowledged afterwards is not
        counted twice: it stays counted as dropped.
        """
        if not row_ids:
            return 0
        with self._transaction():
            return self._delete_acked(row_ids)

    def hold(self, row_ids: list[int], *, at_ms: int) -> int:
        """The broker acknowledged these messages: keep them, marked unconfirmed since
        ``at_ms``, until the collector confirms them. Rows without an identity (written by an
        older agent) cannot be confirmed and are deleted as acknowledged. Returns how many
        rows were still there."""
        if not row_ids:
            return 0
        with self._transaction():
            kept = 0
            legacy = []
            for row_id in row_ids:
                row = self._db.execute(
                    "UPDATE messages SET pubacked_ms = COALESCE(pubacked_ms, ?)"
                    " WHERE id = ? RETURNING seq",
                    (at_ms, row_id),
                ).fetchone()
                if row is None:
                    continue
                if row[0] is None:
                    legacy.append(row_id)
                else:
                    kept += 1
            return kept + self._delete_acked(legacy)

    def confirm(self, boot_id: str, durable_seq: int, *, at_ms: int) -> Confirmed:
        """The collector has stored everything of ``boot_id`` up to ``durable_seq``: delete
        those rows (acknowledged or not: a copy of an earlier connection may be what got
        there) and count them acked and confirmed."""
        with self._transaction():
            rows = self._db.execute(
                "DELETE FROM messages WHERE boot_id = ? AND seq <= ?"
                " RETURNING readings, events, size",
                (boot_id, durable_seq),
            ).fetchall()
            readings = sum(r[0] for r in rows)
            events = sum(r[1] for r in rows)
            self._pending_bytes -= sum(r[2] for r in rows)
            for name in ("acked", "confirmed"):
                self._bump(name, readings)
                self._bump(f"events_{name}", events)
            self._mark("last_confirmation_ms", at_ms)
            return Confirmed(len(rows), readings, events)

    def release_unconfirmed(self) -> int:
        """Delete every acknowledged but unconfirmed row, counted as acked (the broker has
        them): the fallback when no collector confirms. Returns how many were removed."""
        with self._transaction():
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM messages WHERE pubacked_ms IS NOT NULL"
            ).fetchall()]
            return self._delete_acked(ids)

    def held_from(self, boot_id: str) -> int | None:
        """The lowest seq of ``boot_id`` still in the outbox (None: nothing of that boot)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(seq) FROM messages WHERE boot_id = ?", (boot_id,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def unconfirmed_boots(self) -> list[UnconfirmedBoot]:
        """Per boot, the acknowledged rows still waiting for the collector (cheap: an index
        holds only those rows)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT boot_id, COUNT(*), MIN(pubacked_ms), MIN(id) FROM messages"
                " WHERE pubacked_ms IS NOT NULL AND boot_id IS NOT NULL GROUP BY boot_id"
            ).fetchall()
        return [UnconfirmedBoot(r[0], r[1], r[2], r[3]) for r in rows]

    def count_resent(self, messages: int) -> None:
        """Count messages published again after their PUBACK."""
        if messages:
            with self._transaction():
                self._bump("resent", messages)

    def forget_confirmations(self) -> None:
        """The collector withdrew its confirmations: no longer remember having had any."""
        with self._transaction():
            self._mark("last_confirmation_ms", None)

    def set_fallback(self, on: bool) -> None:
        """Record whether delivery fell back to the broker's PUBACK (shown by ``status``)."""
        with self._transaction():
            self._mark("broker_fallback", int(on))

    def stats(self) -> OutboxStats:
        """The delivery accounting, read in one consistent snapshot."""
        with self._lock:
            return _stats(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """``with``: the outbox's lock and one SQLite transaction (rolled back on error)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> None:
        self.outbox._lock.acquire()
        try:
            self.outbox._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.outbox._lock.release()
            raise

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        box = self.outbox
        try:
            if kind is None:
                box._db.execute("COMMIT")
            else:
                box._db.execute("ROLLBACK")
                box._pending_bytes = box._scalar("SELECT COALESCE(SUM(size), 0) FROM messages")
        finally:
            box._lock.release()


_PENDING = (
    "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(events), 0), COUNT(*),"
    " COALESCE(SUM(size), 0), MIN(created_ms),"
    " COALESCE(SUM(CASE WHEN pubacked_ms IS NOT NULL THEN readings ELSE 0 END), 0),"
    " COALESCE(SUM(pubacked_ms IS NOT NULL), 0) FROM messages"
)
_PENDING_OLD = (  # an outbox an older agent is still writing (read by a newer `status`)
    "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(events), 0), COUNT(*),"
    " COALESCE(SUM(size), 0), MIN(created_ms), 0, 0 FROM messages"
)


def _stats(db: sqlite3.Connection) -> OutboxStats:
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    try:
        marks = dict(db.execute("SELECT name, value FROM marks").fetchall())
    except sqlite3.OperationalError:  # an outbox an older agent wrote, read by `status`
        marks = {}
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    pending = db.execute(_PENDING if "pubacked_ms" in columns else _PENDING_OLD).fetchone()
    last_confirmation = marks.get("last_confirmation_ms")
    return OutboxStats(
        produced=counters.get("produced", 0),
        acked=counters.get("acked", 0),
        confirmed=counters.get("confirmed", 0),
        pending=int(pending[0]),
        unconfirmed=int(pending[5]),
        dropped=counters.get("dropped", 0),
        events_produced=counters.get("events_produced", 0),
        events_acked=counters.get("events_acked", 0),
        events_confirmed=counters.get("events_confirmed", 0),
        events_pending=int(pending[1]),
        events_dropped=counters.get("events_dropped", 0),
        pending_messages=int(pending[2]),
        unconfirmed_messages=int(pending[6]),
        pending_bytes=int(pending[3]),
        messages_dropped=counters.get("messages_dropped", 0),
        dropped_for_size=counters.get("dropped_for_size", 0),
        dropped_for_age=counters.get("dropped_for_age", 0),
        resent=counters.get("resent", 0),
        oldest_pending_ms=pending[4],
        broker_fallback=bool(marks.get("broker_fallback") or 0),
        last_confirmation_ms=None if last_confirmation is None else int(last_confirmation),
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
