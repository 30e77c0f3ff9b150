"""Opening the SQLite files that hold data in flight (the agent's outbox, the collector's spool).

Both want the same guarantees: WAL with ``synchronous=NORMAL`` (safe from corruption; a commit
survives a crash of the process, and only a power cut may roll back the last commits, the
price of not wearing out an SD card), incremental auto-vacuum so freed pages go back to the
file system without a full VACUUM rewriting the file, and a bounded WAL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["open_wal"]


def open_wal(
    path: Path, *, journal_size_limit_bytes: int, cache_kib: int | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread
    under the caller's lock. ``cache_kib`` bounds SQLite's page cache (default ~2 MiB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # auto_vacuum must be set before the first table exists.
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA journal_size_limit={int(journal_size_limit_bytes)}")
    if cache_kib is not None:
        db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    return db
