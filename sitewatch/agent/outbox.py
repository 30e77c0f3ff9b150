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
message does not fit, the oldest telemetry goes first and events last:

- A row that never got a PUBACK is deleted and counted as dropped (``dropped_for_size``);
  rows published and still waiting for their PUBACK are spared while others can go.
- A row the broker acknowledged but the collector has not confirmed loses only its payload: it
  stays as a *stub* (its identity and counts, ``STUB_BYTES`` of the cap) because the broker
  may still lose it, and the agent must be able to tell. The collector's confirmation covers
  it like any row (confirmed). If the collector keeps confirming the device, and holds a
  later seq, but still lacks the stub's after ``delivery.confirm_timeout_s``, the broker lost
  it: the stub is counted as dropped (``dropped_unconfirmed``) and the collector is told to
  move past it (``give_up_stubs``, then a ``wire.SkipMessage``).
- Stubs may fill at most half the cap, so new data always has the other half: beyond that
  (or when nothing but stubs is left) the oldest stubs go, counted as acked and ``released``:
  left to the broker's care, which the agent can no longer follow. With the default 64 MiB
  cap that is over half a million messages the broker acknowledged while no collector
  confirmed them.

So for readings ``produced == acked + pending + dropped`` always holds; ``confirmed <= acked``
counts what the collector confirmed stored, and ``released`` what was acked without a
confirmation under end-to-end delivery (also the fallback's release). The counters live in
the same database and survive restarts.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sitewatch.sqlitefile import open_wal

__all__ = [
    "STUB_BYTES",
    "Confirmed",
    "GivenUp",
    "Outbox",
    "OutboxRow",
    "OutboxStats",
    "UnconfirmedBoot",
    "read_stats",
]

_Victim = tuple[int, int, int, int, int | None, int, int | None]
"""A row leaving the outbox: id, readings, events, size, pubacked_ms, whether a stub (0/1),
seq."""

_VICTIMS = (
    "SELECT id, readings, events, size, pubacked_ms, length(payload) = 0, seq FROM messages"
)

STUB_BYTES = 64
"""What a stub (a row whose payload the cap evicted after its PUBACK) counts against
``max_bytes``: its identity and counts still take room on disk, so stubs are bounded too."""

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
    "dropped_unconfirmed",
    "released",
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
class GivenUp:
    """Stubs counted as lost by ``give_up_stubs``: how many, their readings and events, and
    their lowest and highest seq (0 when none)."""

    messages: int
    readings: int
    events: int
    first_seq: int
    last_seq: int


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
    ``pending``) what the broker acknowledged but the collector has not confirmed yet;
    ``stubbed`` (part of ``unconfirmed``) the readings of stubs, whose payload the cap
    evicted. Drops by reason: ``dropped_for_size`` and ``dropped_for_age`` (never reached the
    broker), ``dropped_unconfirmed`` (stubs the broker lost). ``released`` (part of
    ``acked``): unconfirmed readings the agent stopped following (fallback, or stubs evicted).
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
    dropped_unconfirmed: int
    released: int
    stubbed: int
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
        self._sent: set[int] = set()  # published, PUBACK not yet applied (see mark_sent)
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
        self._recount()

    def _recount(self) -> None:
        """Read the payload bytes and the stubs' share of them (kept in memory after)."""
        self._pending_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM messages")
        self._stub_bytes = STUB_BYTES * self._scalar(
            "SELECT COUNT(*) FROM messages WHERE length(payload) = 0"
        )

    def _forget(self, size: int, stub: int) -> None:
        """A row left: take its bytes off the totals."""
        self._pending_bytes -= size
        if stub:
            self._stub_bytes -= size

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

    def _drop(self, rows: list[_Victim], reason: str) -> None:
        """Delete rows that never reached the collector, counted as dropped for ``reason``."""
        for row_id, readings, events, size, _, stub, _ in rows:
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._forget(size, stub)
            self._bump("dropped", readings)
            self._bump("events_dropped", events)
            self._bump("messages_dropped", 1)
            self._bump(reason, readings)

    def _release(self, rows: list[_Victim]) -> None:
        """Delete acknowledged rows without their confirmation: the broker's care from now."""
        for row_id, readings, events, size, _, stub, _ in rows:
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._forget(size, stub)
            self._bump("acked", readings)
            self._bump("events_acked", events)
            self._bump("released", readings)

    def _stub(self, row: _Victim) -> None:
        """Keep an acknowledged, unconfirmed row without its payload (see the module doc)."""
        self._db.execute(
            "UPDATE messages SET payload = x'', size = ? WHERE id = ?", (STUB_BYTES, row[0])
        )
        self._pending_bytes -= row[3] - STUB_BYTES
        self._stub_bytes += STUB_BYTES

    def _evict(self, row: _Victim) -> int:
        """Make room for the cap with one row; returns the bytes freed."""
        size, pubacked_ms, stub = row[3], row[4], row[5]
        if pubacked_ms is None:
            self._drop([row], "dropped_for_size")
            return size
        if not stub and size > STUB_BYTES:
            self._stub(row)
            return size - STUB_BYTES
        self._release([row])
        return size

    def _expire(self, cutoff_ms: int) -> None:
        rows: list[_Victim] = self._db.execute(
            f"{_VICTIMS} WHERE created_ms < ?", (cutoff_ms,)
        ).fetchall()
        self._drop([r for r in rows if r[4] is None], "dropped_for_age")
        self._release([r for r in rows if r[4] is not None])

    def _enforce_size(self) -> None:
        while self._pending_bytes > self.max_bytes:
            # Stubs may fill half the cap, so new data always has the other half; within that,
            # the oldest telemetry goes first, then events, and stubs when nothing else is left.
            stubs_first = self._stub_bytes > self.max_bytes // 2
            rows: list[_Victim] = self._db.execute(
                f"{_VICTIMS} ORDER BY (length(payload) = 0) != ?, kind = 'event', id LIMIT ?",
                (stubs_first, 64 + len(self._sent)),
            ).fetchall()
            if not rows:
                break
            # A row on its way to the broker may well arrive: dropping it would count a loss
            # that does not happen. Spare those while anything else can go.
            rows = [row for row in rows if row[0] not in self._sent] or rows
            excess = self._pending_bytes - self.max_bytes
            for row in rows:
                excess -= self._evict(row)
                if excess <= 0 or stubs_first != (self._stub_bytes > self.max_bytes // 2):
                    break  # done, or the stubs' share crossed half the cap: choose again
        if self._scalar("PRAGMA freelist_count") > 256:
            self._db.execute("PRAGMA incremental_vacuum(256)")

    def mark_sent(self, row_id: int) -> None:
        """The row was published; until its PUBACK is applied (``hold``/``ack``) or the
        connection drops (``forget_sent``), the cap spares it if it can."""
        with self._lock:
            self._sent.add(row_id)

    def forget_sent(self) -> None:
        """The connection dropped: what was on its way gets no PUBACK now."""
        with self._lock:
            self._sent.clear()

    def fetch(self, after_id: int, limit: int, up_to_id: int | None = None) -> list[OutboxRow]:
        """Up to ``limit`` messages with ``after_id < id [<= up_to_id]``, oldest first
        (stubs, which have nothing to send, are left out)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, created_ms, readings, events, payload, boot_id, seq,"
                " pubacked_ms IS NOT NULL FROM messages"
                " WHERE id > ? AND id <= ? AND length(payload) > 0 ORDER BY id LIMIT ?",
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
                "DELETE FROM messages WHERE id = ?"
                " RETURNING readings, events, size, length(payload) = 0", (row_id,)
            ).fetchone()
            if row is None:
                continue
            removed += 1
            self._bump("acked", row[0])
            self._bump("events_acked", row[1])
            self._forget(row[2], row[3])
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
            self._sent.difference_update(row_ids)
            return self._delete_acked(row_ids)

    def hold(self, row_ids: list[int], *, at_ms: int) -> int:
        """The broker acknowledged these messages: keep them, marked unconfirmed (last
        acknowledged at ``at_ms``), until the collector confirms them. Rows without an
        identity (written by an older agent) cannot be confirmed and are deleted as
        acknowledged. Returns how many rows were still there."""
        if not row_ids:
            return 0
        with self._transaction():
            self._sent.difference_update(row_ids)
            kept = 0
            legacy = []
            for row_id in row_ids:
                row = self._db.execute(
                    "UPDATE messages SET pubacked_ms = ? WHERE id = ? RETURNING seq",
                    (at_ms, row_id),
                ).fetchone()
                if row is None:
                    continue
                if row[0] is None:
                    legacy.append(row_id)
                else:
                    kept += 1
            return kept + self._delete_acked(legacy)

    def confirm(
        self,
        boot_id: str,
        durable_seq: int,
        *,
        at_ms: int,
        above: Sequence[tuple[int, int]] = (),
    ) -> Confirmed:
        """The collector has stored everything of ``boot_id`` up to ``durable_seq``, and the
        seqs of the ``above`` ranges ([first, last]): delete those rows (acknowledged or not:
        a copy of an earlier connection may be what got there) and count them acked and
        confirmed."""
        spans = [(0, durable_seq), *above]
        with self._transaction():
            rows = []
            for first, last in spans:
                rows += self._db.execute(
                    "DELETE FROM messages WHERE boot_id = ? AND seq BETWEEN ? AND ?"
                    " RETURNING readings, events, size, length(payload) = 0",
                    (boot_id, first, last),
                ).fetchall()
            readings = sum(r[0] for r in rows)
            events = sum(r[1] for r in rows)
            for row in rows:
                self._forget(row[2], row[3])
            for name in ("acked", "confirmed"):
                self._bump(name, readings)
                self._bump(f"events_{name}", events)
            self._mark("last_confirmation_ms", at_ms)
            return Confirmed(len(rows), readings, events)

    def release_unconfirmed(self) -> int:
        """Delete every acknowledged but unconfirmed row, counted as acked and released (the
        broker has them): the fallback when no collector confirms. Returns how many were
        removed."""
        with self._transaction():
            rows: list[_Victim] = self._db.execute(
                f"{_VICTIMS} WHERE pubacked_ms IS NOT NULL"
            ).fetchall()
            self._release(rows)
            return len(rows)

    def give_up_stubs(self, boot_id: str, *, below_seq: int) -> GivenUp:
        """The collector waited too long for stubs of ``boot_id`` while it holds a later seq
        (``below_seq``, its highest durable one): the broker lost them. Count them as dropped
        (``dropped_unconfirmed``) and delete them, so ``held_from`` moves past them and the
        collector is told to stop waiting. Stubs above ``below_seq`` may still be on their
        way and are kept. Returns what was dropped.
        """
        with self._transaction():
            lost: list[_Victim] = self._db.execute(
                _VICTIMS + " WHERE boot_id = ? AND length(payload) = 0 AND seq < ?",
                (boot_id, below_seq),
            ).fetchall()
            self._drop(lost, "dropped_unconfirmed")
            seqs = [row[6] or 0 for row in lost] or [0]
            return GivenUp(len(lost), sum(r[1] for r in lost), sum(r[2] for r in lost),
                           min(seqs), max(seqs))

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
                box._recount()
        finally:
            box._lock.release()


_PENDING = (
    "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(events), 0), COUNT(*),"
    " COALESCE(SUM(size), 0), MIN(created_ms),"
    " COALESCE(SUM(CASE WHEN pubacked_ms IS NOT NULL THEN readings ELSE 0 END), 0),"
    " COALESCE(SUM(pubacked_ms IS NOT NULL), 0),"
    " COALESCE(SUM(CASE WHEN length(payload) = 0 THEN readings ELSE 0 END), 0) FROM messages"
)
_PENDING_OLD = (  # an outbox an older agent is still writing (read by a newer `status`)
    "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(events), 0), COUNT(*),"
    " COALESCE(SUM(size), 0), MIN(created_ms), 0, 0, 0 FROM messages"
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
        dropped_unconfirmed=counters.get("dropped_unconfirmed", 0),
        released=counters.get("released", 0),
        stubbed=int(pending[7]),
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
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        # The agent has created the file but not its tables yet (its first second).
        raise FileNotFoundError(f"the outbox at {path} is not set up yet") from error
    finally:
        db.close()
