"""The alert store on real SQLite files: round trips, one open alert per problem, the
queries the engine, CLI, report and web page use, transactions, and a second process acting
on the same file while it is open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sitewatch.collector.alerting.model import Alert, AlertState, AuditEntry
from sitewatch.collector.alerting.store import AlertStore


def _alert(n: int, **fields: object) -> Alert:
    base = Alert(
        id=f"a{n:05d}", key=f"plant-a/pi-01/t{n}/hot", site="plant-a", device="pi-01",
        sensor=f"t{n}", rule="hot", severity="warning", audience="technician",
        labels={"zone": "cold room", "equipment": f"fridge-{n}"}, state=AlertState.FIRING,
        message="too hot", value=9.5, limit=8.0, predicted_breach_s=None,
        conditions=frozenset({"temperature_c/threshold"}), created_ms=1000 * n, updated_ms=1000 * n,
        fired_ms=1000 * n,
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


def test_alert_store_round_trips_every_field(tmp_path: Path) -> None:
    full = _alert(
        1, state=AlertState.SILENCED, predicted_breach_s=5400.5, acked_by="Ana",
        acked_ms=1500, silenced_by="Bo", silenced_until_ms=99_000, silence_reason="defrost",
        escalation_level=2, level_since_ms=1700, last_notified_ms=1800, notify_count=3,
        resolve_message_due_ms=None,
        conditions={"temperature_c/threshold", "temperature_c/forecast"},
    )  # fmt: skip
    bare = _alert(2, value=None, limit=None, labels={}, fired_ms=None,
                  state=AlertState.PENDING)  # fmt: skip
    with AlertStore(tmp_path / "alerts.db") as store:
        store.insert(full)
        store.insert(bare)
    with AlertStore(tmp_path / "alerts.db") as store:
        assert store.get(full.id) == full
        assert store.get(bare.id) == bare
        assert store.get("nope") is None


def test_alert_store_allows_one_open_alert_per_problem(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        first = _alert(1)
        store.insert(first)
        with pytest.raises(sqlite3.IntegrityError):
            store.insert(replace(first, id="other"))
        store.save(replace(first, state=AlertState.RESOLVED, resolved_ms=5000))
        again = replace(first, id="second", created_ms=6000)
        store.insert(again)  # the first is resolved: the problem may open a new alert
        assert store.open_by_key(first.key) == again
        assert store.latest_by_key(first.key) == again
        assert [a.id for a in store.history(0)] == [first.id, "second"]


def test_alert_store_open_alerts_most_severe_first(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        store.insert(_alert(1, severity="info"))
        store.insert(_alert(2, severity="critical", site="plant-b"))
        store.insert(_alert(3, severity="warning"))
        store.insert(_alert(4, severity="critical"))
        store.insert(_alert(5, severity="critical", state=AlertState.RESOLVED))
        assert [a.id for a in store.open_alerts()] == ["a00002", "a00004", "a00003", "a00001"]
        assert [a.id for a in store.open_alerts("plant-a")] == ["a00004", "a00003", "a00001"]
        assert store.counts() == {"pending": 0, "firing": 4, "acknowledged": 0, "silenced": 0}


def test_alert_store_history_by_period_and_site(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        for n in range(1, 7):
            store.insert(_alert(n, site="plant-b" if n % 2 else "plant-a"))
        assert [a.id for a in store.history(2000, 5000)] == ["a00002", "a00003", "a00004"]
        assert [a.id for a in store.history(2000, None, "plant-a")] == [
            "a00002", "a00004", "a00006"
        ]


def test_alert_store_audit_trail_and_unemitted_rows(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        store.insert(_alert(1))
        store.add_audit(AuditEntry("a00001", 1000, "fire", "detection", None, AlertState.FIRING))
        ack = store.add_audit(
            AuditEntry("a00001", 2000, "ack", "Ana", "on it", AlertState.ACKNOWLEDGED),
            emitted=False,
        )
        store.add_audit(AuditEntry("a00001", 2500, "notify", "apprise"))
        assert [(e.action, e.actor, e.comment) for e in store.audit("a00001")] == [
            ("fire", "detection", None), ("ack", "Ana", "on it"), ("notify", "apprise", None)
        ]
        assert store.unemitted() == [ack]
        assert ack.id is not None
        store.mark_emitted([ack.id])
        assert store.unemitted() == []
        assert [e.action for e in store.recent_audit(since_ms=2000)] == ["notify", "ack"]


def test_alert_store_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert(_alert(1))
            with store.transaction():  # nested: part of the outer one
                store.add_audit(AuditEntry("a00001", 1000, "fire", "detection"))
            raise RuntimeError("boom")
        assert store.get("a00001") is None and store.audit("a00001") == []
        with store.transaction():
            store.insert(_alert(1))
        assert store.get("a00001") is not None


def test_alert_store_finds_alerts_by_id_prefix(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        store.insert(_alert(1, id="c0ffee123456"))
        store.insert(_alert(2, id="c0ffab000000"))
        store.insert(_alert(3, id="c0_fee000000"))
        assert [a.id for a in store.find("c0ffe")] == ["c0ffee123456"]
        assert len(store.find("c0ff")) == 2
        assert [a.id for a in store.find("c0_")] == ["c0_fee000000"]  # "_" is no wildcard
        assert store.find("%") == []


def test_alert_store_resolve_messages_due(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        store.insert(_alert(1, state=AlertState.RESOLVED, resolve_message_due_ms=5000))
        store.insert(_alert(2, state=AlertState.RESOLVED, resolve_message_due_ms=9000))
        store.insert(_alert(3, state=AlertState.RESOLVED))
        assert [a.id for a in store.resolve_messages_due(6000)] == ["a00001"]


def test_alert_store_sees_a_change_made_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as store:
        store.insert(_alert(1))
        # The collector keeps its store open while the CLI acts on the same file.
        script = (
            "import sys; from pathlib import Path\n"
            "from sitewatch.collector.alerting import commands\n"
            "from sitewatch.collector.alerting.store import AlertStore\n"
            "with AlertStore(Path(sys.argv[1])) as s:\n"
            "    print(commands.ack_alert(s, 'a000', by='Ana', now_s=10.0).text)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True, text=True, timeout=60, check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("a00001: acknowledged by Ana")
        alert = store.get("a00001")
        assert alert is not None and alert.state == AlertState.ACKNOWLEDGED
        assert alert.acked_by == "Ana" and alert.acked_ms == 10_000
        assert [e.action for e in store.unemitted()] == ["ack"]
