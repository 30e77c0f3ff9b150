"""Alerts and their audit trail in SQLite (``<state_dir>/alerts.db``).

The store is the only copy of alert state: the engine reads and writes it on every
operation, and the CLI and the web page open the same file while the collector runs (WAL
lets readers and one writer work at once; writers wait for each other, up to SQLite's busy
timeout of 5 s). So an acknowledgement from a phone is seen by the engine's next step, and a
restarted collector carries on exactly where it stopped.

Every change of state goes with an audit row (``AuditEntry``: who, when, what, with what
comment, and the state right after). Rows written by another process (the CLI, the web page)
are stored with ``emitted = 0``; the engine picks them up (``unemitted``), writes their
``alerts`` points, tells the machine channels, and marks them (``mark_emitted``).

Read-modify-write sequences go inside ``transaction()`` (``BEGIN IMMEDIATE``: the write lock
is taken before the read, so two processes cannot both act on a stale copy). Thread-safe
(one lock per store).

>>> import tempfile, pathlib
>>> from sitewatch.collector.alerting.model import Alert, AlertState, AuditEntry
>>> store = AlertStore(pathlib.Path(tempfile.mkdtemp()) / ALERTS_FILE)
>>> alert = Alert(id="c0ffee", key="a/pi/t1/hot", site="a", device="pi", sensor="t1",
...               rule="hot", severity="warning", audience="technician", labels={},
...               state=AlertState.FIRING, message="too hot", value=31.0, limit=30.0,
...               predicted_breach_s=None, conditions={"temperature_c/threshold"},
...               created_ms=1000, updated_ms=1000, fired_ms=1000)
>>> with store.transaction():
...     store.insert(alert)
...     entry = store.add_audit(AuditEntry("c0ffee", 1000, "fire", "detection",
...                                        state=AlertState.FIRING))
>>> store.open_by_key("a/pi/t1/hot") == alert, [e.action for e in store.audit("c0ffee")]
(True, ['fire'])
>>> store.close()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, cast

from sitewatch.collector.alerting.model import (
    SEVERITY_RANK,
    Alert,
    AlertState,
    AuditAction,
    AuditEntry,
)
from sitewatch.sqlitefile import open_wal

__all__ = ["ALERTS_FILE", "AlertStore"]

ALERTS_FILE = "alerts.db"
"""The store's file name in the collector's state directory."""

_SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    alert_key TEXT NOT NULL,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    sensor TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    audience TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    value REAL,
    limit_value REAL,
    predicted_breach_s REAL,
    conditions TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    fired_ms INTEGER,
    acked_by TEXT,
    acked_ms INTEGER,
    resolved_by TEXT,
    resolved_ms INTEGER,
    silenced_by TEXT,
    silenced_until_ms INTEGER,
    silence_reason TEXT,
    escalation_level INTEGER NOT NULL,
    level_since_ms INTEGER,
    last_notified_ms INTEGER,
    notify_count INTEGER NOT NULL,
    resolve_message_due_ms INTEGER
);
-- One open alert per problem, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key ON alerts (alert_key)
    WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_key_created ON alerts (alert_key, created_ms);
CREATE INDEX IF NOT EXISTS alerts_created ON alerts (created_ms);
CREATE INDEX IF NOT EXISTS alerts_resolve_due ON alerts (resolve_message_due_ms)
    WHERE resolve_message_due_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    comment TEXT,
    state TEXT,
    emitted INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS audit_alert ON audit (alert_id, id);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
CREATE INDEX IF NOT EXISTS audit_unemitted ON audit (id) WHERE emitted = 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Alert field → column, in the table's order. The statements below are built from these
# constant names only (never from input), hence the noqa for bandit's S608.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "id"), ("key", "alert_key"), ("site", "site"), ("device", "device"),
    ("sensor", "sensor"), ("rule", "rule"), ("severity", "severity"),
    ("audience", "audience"), ("labels", "labels"), ("state", "state"),
    ("message", "message"), ("value", "value"), ("limit", "limit_value"),
    ("predicted_breach_s", "predicted_breach_s"), ("conditions", "conditions"),
    ("created_ms", "created_ms"), ("updated_ms", "updated_ms"), ("fired_ms", "fired_ms"),
    ("acked_by", "acked_by"), ("acked_ms", "acked_ms"), ("resolved_by", "resolved_by"),
    ("resolved_ms", "resolved_ms"), ("silenced_by", "silenced_by"),
    ("silenced_until_ms", "silenced_until_ms"), ("silence_reason", "silence_reason"),
    ("escalation_level", "escalation_level"), ("level_since_ms", "level_since_ms"),
    ("last_notified_ms", "last_notified_ms"), ("notify_count", "notify_count"),
    ("resolve_message_due_ms", "resolve_message_due_ms"),
)  # fmt: skip
_SELECT = "SELECT " + ", ".join(column for _, column in _COLUMNS) + " FROM alerts"  # noqa: S608
_INSERT = (
    "INSERT INTO alerts (" + ", ".join(column for _, column in _COLUMNS) + ") VALUES ("  # noqa: S608
    + ", ".join("?" for _ in _COLUMNS) + ")"
)
_UPDATE = (
    "UPDATE alerts SET " + ", ".join(f"{column} = ?" for _, column in _COLUMNS[1:])  # noqa: S608
    + " WHERE id = ?"
)
_AUDIT_SELECT = "SELECT id, alert_id, ts_ms, action, actor, comment, state FROM audit"


def _row_values(alert: Alert) -> list[Any]:
    values: list[Any] = []
    for name, _ in _COLUMNS:
        value = getattr(alert, name)
        if name == "labels":
            value = json.dumps(dict(value), sort_keys=True)
        elif name == "conditions":
            value = json.dumps(sorted(value))
        elif name == "state":
            value = str(value)
        values.append(value)
    return values


def _alert(row: Sequence[Any]) -> Alert:
    data = {name: row[index] for index, (name, _) in enumerate(_COLUMNS)}
    data["labels"] = json.loads(data["labels"])
    data["conditions"] = frozenset(json.loads(data["conditions"]))
    data["state"] = AlertState(data["state"])
    return Alert(**data)


def _entry(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        alert_id=row[1],
        ts_ms=int(row[2]),
        action=cast(AuditAction, row[3]),
        actor=row[4],
        comment=row[5],
        state=None if row[6] is None else AlertState(row[6]),
        id=int(row[0]),
    )


def _order(alerts: Iterable[Alert]) -> list[Alert]:
    """Most severe first, then oldest first."""
    return sorted(alerts, key=lambda a: (SEVERITY_RANK.get(a.severity, 9), a.created_ms, a.id))


class AlertStore:
    """The alert database at ``path`` (created if missing); see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._db = open_wal(path, journal_size_limit_bytes=16 << 20)
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)",
                (_SCHEMA_VERSION,),
            )

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> AlertStore:
        return cls(state_dir / ALERTS_FILE)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store (and SQLite's write lock) until the block ends: committed if it
        ends normally, rolled back if it raises. Nested blocks join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- writing ----------------------------------------------------------------------------
    def insert(self, alert: Alert) -> None:
        """Add a new alert (``sqlite3.IntegrityError`` if its key already has an open one)."""
        with self._lock:
            self._db.execute(_INSERT, _row_values(alert))

    def save(self, alert: Alert) -> None:
        """Write every field of an existing alert (found by id)."""
        values = _row_values(alert)
        with self._lock:
            self._db.execute(_UPDATE, [*values[1:], values[0]])

    def add_audit(self, entry: AuditEntry, *, emitted: bool = True) -> AuditEntry:
        """Append to the audit trail; the entry with its id. ``emitted=False`` leaves its
        ``alerts`` point and machine-channel update to the engine (``unemitted``)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO audit (alert_id, ts_ms, action, actor, comment, state, emitted)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.alert_id, entry.ts_ms, entry.action, entry.actor, entry.comment,
                    None if entry.state is None else str(entry.state), int(emitted),
                ),
            )  # fmt: skip
        assert cursor.lastrowid is not None
        return AuditEntry(
            entry.alert_id, entry.ts_ms, entry.action, entry.actor, entry.comment,
            entry.state, cursor.lastrowid,
        )  # fmt: skip

    def mark_emitted(self, entry_ids: Iterable[int]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE audit SET emitted = 1 WHERE id = ?", [(i,) for i in entry_ids]
            )

    # -- reading ----------------------------------------------------------------------------
    def _alerts(self, where: str, params: Sequence[Any] = ()) -> list[Alert]:
        with self._lock:
            rows = self._db.execute(f"{_SELECT} {where}", params).fetchall()
        return [_alert(row) for row in rows]

    def get(self, alert_id: str) -> Alert | None:
        found = self._alerts("WHERE id = ?", (alert_id,))
        return found[0] if found else None

    def find(self, prefix: str, limit: int = 2) -> list[Alert]:
        """Alerts whose id starts with ``prefix`` (for short ids typed by hand)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._alerts(
            "WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", (escaped + "%", limit)
        )

    def open_alerts(self, site: str | None = None) -> list[Alert]:
        """Every alert not resolved, most severe first, then oldest first."""
        if site is None:
            return _order(self._alerts("WHERE state != 'resolved'"))
        return _order(self._alerts("WHERE state != 'resolved' AND site = ?", (site,)))

    def open_by_key(self, key: str) -> Alert | None:
        """The open alert of a problem (there is at most one)."""
        found = self._alerts("WHERE state != 'resolved' AND alert_key = ?", (key,))
        return found[0] if found else None

    def latest_by_key(self, key: str) -> Alert | None:
        """The most recently created alert of a problem, open or not."""
        found = self._alerts(
            "WHERE alert_key = ? ORDER BY created_ms DESC, rowid DESC LIMIT 1", (key,)
        )
        return found[0] if found else None

    def history(
        self, since_ms: int, until_ms: int | None = None, site: str | None = None
    ) -> list[Alert]:
        """Alerts created in ``[since_ms, until_ms)``, oldest first (optionally one site)."""
        where = "WHERE created_ms >= ?"
        params: list[Any] = [since_ms]
        if until_ms is not None:
            where += " AND created_ms < ?"
            params.append(until_ms)
        if site is not None:
            where += " AND site = ?"
            params.append(site)
        return self._alerts(where + " ORDER BY created_ms, id", params)

    def resolve_messages_due(self, now_ms: int) -> list[Alert]:
        """Resolved alerts whose held-back "resolved" message is due."""
        return self._alerts(
            "WHERE resolve_message_due_ms IS NOT NULL AND resolve_message_due_ms <= ?"
            " ORDER BY resolve_message_due_ms",
            (now_ms,),
        )

    def audit(self, alert_id: str) -> list[AuditEntry]:
        """One alert's audit trail, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"{_AUDIT_SELECT} WHERE alert_id = ? ORDER BY id", (alert_id,)
            ).fetchall()
        return [_entry(row) for row in rows]

    def recent_audit(self, since_ms: int, limit: int = 100) -> list[AuditEntry]:
        """The newest audit rows of every alert since ``since_ms``, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"{_AUDIT_SELECT} WHERE ts_ms >= ? ORDER BY id DESC LIMIT ?", (since_ms, limit)
            ).fetchall()
        return [_entry(row) for row in rows]

    def unemitted(self, limit: int = 500) -> list[AuditEntry]:
        """Audit rows written by other processes whose effects the engine has not sent yet."""
        with self._lock:
            rows = self._db.execute(
                f"{_AUDIT_SELECT} WHERE emitted = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [_entry(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many alerts are in each open state (zeros included)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM alerts WHERE state != 'resolved' GROUP BY state"
            ).fetchall()
        counts = {str(state): 0 for state in AlertState if state != AlertState.RESOLVED}
        counts.update({str(state): int(count) for state, count in rows})
        return counts
