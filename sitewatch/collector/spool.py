"""The collector's on-disk spool: batches of line protocol kept, in order, while InfluxDB
cannot take them.

The writer appends a batch here when InfluxDB asks it to retry later (or while older batches
are still waiting), acknowledges the batch's MQTT messages once the append has committed,
and drains the spool oldest-first when InfluxDB is back: ``head``, write, ``delete`` (or
``replace`` the head with the lines still to write, after part of it was stored).

SQLite in WAL mode with ``synchronous=NORMAL``: a committed batch survives a crash of the
process; a power cut may roll back the last commits (the broker then still holds those
messages only if they were not yet acknowledged, so keep the state directory on a disk
that survives power loss when that matters). The spool is capped by the bytes of line
protocol it holds (``max_bytes``, SQLite's own overhead not counted) and by age
(``max_age_s``, by the wall clock, so it holds across restarts); beyond either, the oldest
batches are dropped and their lines and readings counted; with ``count_points`` (the
collector passes ``dropcount.points_by_device``) also the readings and events each device
lost, so per device, readings produced = stored + dropped can be checked. The counters live in the
same database and survive restarts.

>>> import tempfile, pathlib
>>> from sitewatch.clock import FakeClock
>>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "spool.db", clock=FakeClock())
>>> first = spool.append(["m v=1.0 1", "m v=2.0 2"], readings=2)
>>> second = spool.append(["m v=3.0 3"], readings=1)
>>> spool.head().lines
['m v=1.0 1', 'm v=2.0 2']
>>> spool.delete(first)
>>> spool.stats().batches, spool.stats().lines, spool.head().id == second
(1, 1, True)
>>> spool.close()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sitewatch.clock import Clock, SystemClock
from sitewatch.sqlitefile import open_wal

__all__ = ["SPOOL_FILE", "Spool", "SpoolStats", "SpooledBatch"]

SPOOL_FILE = "spool.db"
"""The spool's file name in the collector's state directory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_s REAL NOT NULL,
    lines INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dropped_by_device (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (site, device, kind)
);
"""

PointCounter = Callable[[Sequence[str]], Mapping[tuple[str, str, str], int]]
"""Lines → points per ``(site, device, kind)`` (``dropcount.points_by_device``)."""

_COUNTERS = ("dropped_lines", "dropped_batches", "dropped_readings")


@dataclass(frozen=True)
class SpooledBatch:
    """A batch waiting in the spool: its lines in order, and when it was spooled."""

    id: int
    lines: list[str]
    readings: int
    created_s: float


@dataclass(frozen=True)
class SpoolStats:
    """What the spool holds now (``batches``, ``lines``, ``bytes`` of line protocol) and
    what its caps have dropped since it was created."""

    batches: int
    lines: int
    bytes: int
    dropped_lines: int
    dropped_batches: int
    dropped_readings: int


class Spool:
    """A capped, persistent FIFO of line-protocol batches. Thread-safe.

    ``max_bytes``: cap on the line protocol held (bytes, default 1 GiB).
    ``max_age_s``: batches spooled longer ago than this are dropped (seconds, default 7 days).
    ``count_points``: counts a dropped batch's points per device and kind (readings, events:
    ``dropped_by_device``); without it only totals are kept.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        max_age_s: float = 7 * 86400.0,
        clock: Clock | None = None,
        count_points: PointCounter | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.clock: Clock = clock or SystemClock()
        self.count_points = count_points
        self._lock = threading.Lock()
        self._db = open_wal(path, journal_size_limit_bytes=64 << 20)
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(lines), 0), COALESCE(SUM(bytes), 0) FROM batches"
        ).fetchone()
        self._batches, self._lines, self._bytes = int(row[0]), int(row[1]), int(row[2])
        stored = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._dropped = {name: int(stored.get(name, 0)) for name in _COUNTERS}
        self._dropped_by_device = self._load_dropped_by_device()

    def _load_dropped_by_device(self) -> dict[tuple[str, str, str], int]:
        rows = self._db.execute("SELECT site, device, kind, count FROM dropped_by_device")
        return {(str(site), str(device), str(kind)): int(n) for site, device, kind, n in rows}

    def dropped_by_device(self) -> dict[tuple[str, str, str], int]:
        """Points the caps dropped per ``(site, device, kind)``, since the spool was created
        (empty without ``count_points``)."""
        with self._lock:
            return dict(self._dropped_by_device)

    def append(self, lines: Sequence[str], readings: int) -> int:
        """Add a batch at the tail (committed when this returns); its id.

        ``readings``: how many readings the lines carry, for counting drops. If the spool is
        then over its caps, the oldest batches are dropped (this one too, if it alone is
        larger than ``max_bytes``).
        """
        if not lines:
            raise ValueError("cannot spool an empty batch")
        body = "\n".join(lines).encode("utf-8")
        now_s = self.clock.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO batches (created_s, lines, readings, bytes, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (now_s, len(lines), readings, len(body), body),
                )
                self._batches += 1
                self._lines += len(lines)
                self._bytes += len(body)
                self._enforce_caps(now_s)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def head(self) -> SpooledBatch | None:
        """The oldest batch (after dropping those past ``max_age_s``), or None when empty."""
        now_s = self.clock.time()
        with self._lock:
            if self._batches and self._db.execute(
                "SELECT 1 FROM batches WHERE created_s < ? LIMIT 1", (now_s - self.max_age_s,)
            ).fetchone():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._enforce_caps(now_s)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            row = self._db.execute(
                "SELECT id, body, readings, created_s FROM batches ORDER BY id LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return SpooledBatch(int(row[0]), bytes(row[1]).decode("utf-8").split("\n"), row[2], row[3])

    def delete(self, batch_id: int) -> None:
        """Remove a batch once it is stored (no-op if it is gone already)."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM batches WHERE id = ? RETURNING lines, bytes", (batch_id,)
            ).fetchone()
            if row is not None:
                self._batches -= 1
                self._lines -= int(row[0])
                self._bytes -= int(row[1])

    def replace(self, batch_id: int, lines: Sequence[str], readings: int | None = None) -> None:
        """Keep only ``lines`` of a batch (those still to write), in place, so it stays the
        head. ``readings`` defaults to the old count less one per removed line."""
        if not lines:
            self.delete(batch_id)
            return
        body = "\n".join(lines).encode("utf-8")
        with self._lock:
            old = self._db.execute(
                "SELECT lines, readings, bytes FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            if old is None:
                return
            if readings is None:
                readings = max(0, int(old[1]) - (int(old[0]) - len(lines)))
            self._db.execute(
                "UPDATE batches SET lines = ?, readings = ?, bytes = ?, body = ? WHERE id = ?",
                (len(lines), readings, len(body), body, batch_id),
            )
            self._lines += len(lines) - int(old[0])
            self._bytes += len(body) - int(old[2])

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                batches=self._batches,
                lines=self._lines,
                bytes=self._bytes,
                dropped_lines=self._dropped["dropped_lines"],
                dropped_batches=self._dropped["dropped_batches"],
                dropped_readings=self._dropped["dropped_readings"],
            )

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enforce_caps(self, now_s: float) -> None:
        """Drop batches past the age cap, then the oldest until under the byte cap (inside
        the caller's transaction, with the lock held)."""
        expired = self._db.execute(
            "SELECT id, lines, readings, bytes FROM batches WHERE created_s < ? ORDER BY id",
            (now_s - self.max_age_s,),
        ).fetchall()
        victims = list(expired)
        over = self._bytes - sum(int(row[3]) for row in victims) - self.max_bytes
        if over > 0:
            expired_ids = {row[0] for row in expired}
            cursor = self._db.execute("SELECT id, lines, readings, bytes FROM batches ORDER BY id")
            for row in cursor:
                if row[0] in expired_ids:
                    continue
                victims.append(row)
                over -= int(row[3])
                if over <= 0:
                    break
            cursor.close()
        if not victims:
            return
        if self.count_points is not None:
            self._count_dropped_points([row[0] for row in victims])
        self._db.executemany("DELETE FROM batches WHERE id = ?", [(row[0],) for row in victims])
        dropped = {
            "dropped_batches": len(victims),
            "dropped_lines": sum(int(row[1]) for row in victims),
            "dropped_readings": sum(int(row[2]) for row in victims),
        }
        for name, count in dropped.items():
            self._dropped[name] += count
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, self._dropped[name]),
            )
        self._batches -= dropped["dropped_batches"]
        self._lines -= dropped["dropped_lines"]
        self._bytes -= sum(int(row[3]) for row in victims)

    def _count_dropped_points(self, batch_ids: list[int]) -> None:
        """Count the points of batches about to be dropped, per device and kind (inside the
        caller's transaction, with the lock held)."""
        assert self.count_points is not None
        lost: dict[tuple[str, str, str], int] = {}
        for batch_id in batch_ids:
            row = self._db.execute("SELECT body FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                continue
            lines = bytes(row[0]).decode("utf-8").split("\n")
            for key, count in self.count_points(lines).items():
                lost[key] = lost.get(key, 0) + count
        for (site, device, kind), count in lost.items():
            self._db.execute(
                "INSERT INTO dropped_by_device (site, device, kind, count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(site, device, kind) DO UPDATE SET count = count + excluded.count",
                (site, device, kind, count),
            )
            key = (site, device, kind)
            self._dropped_by_device[key] = self._dropped_by_device.get(key, 0) + count

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction was already gone; the original error is what matters
        # The in-memory totals may have moved before the failure: recount from the file.
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(lines), 0), COALESCE(SUM(bytes), 0) FROM batches"
        ).fetchone()
        self._batches, self._lines, self._bytes = int(row[0]), int(row[1]), int(row[2])
        stored = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._dropped = {name: int(stored.get(name, 0)) for name in _COUNTERS}
        self._dropped_by_device = self._load_dropped_by_device()
