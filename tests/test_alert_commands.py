"""The CLI's alert commands on a real store: list, show, ack, resolve, silence, and the
errors a person at a terminal must understand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sitewatch.collector.alerting import commands
from sitewatch.collector.alerting.commands import CommandError, parse_duration
from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.collector.alerting.store import AlertStore

NOW_S = 1_795_464_000.0


def _alert(alert_id: str, **fields: object) -> Alert:
    base = Alert(
        id=alert_id, key=f"plant-a/pi-01/{alert_id}/hot", site="plant-a", device="pi-01",
        sensor=f"s-{alert_id}", rule="hot", severity="critical", audience="technician",
        labels={"zone": "kitchen", "equipment": "walk-in-1"}, state=AlertState.FIRING,
        message="above 8.0 for 10 min", value=8.6, limit=None, predicted_breach_s=None,
        conditions=frozenset({"temperature_c/threshold"}), created_ms=int((NOW_S - 600) * 1000),
        updated_ms=int((NOW_S - 600) * 1000), fired_ms=int((NOW_S - 600) * 1000),
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    store = AlertStore(tmp_path / "alerts.db")
    store.insert(_alert("c0ffee000001"))
    store.insert(_alert("beef00000002", severity="info", site="plant-b", key="b/x/y/z"))
    store.insert(_alert("dead00000003", state=AlertState.RESOLVED, key="r/x/y/z",
                        resolved_ms=int(NOW_S * 1000) - 1000, resolved_by="detection"))
    return store


def test_alert_commands_parse_durations() -> None:
    assert parse_duration("30m") == 1800.0
    assert parse_duration("1h 30m") == 5400.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("2W") == 1209600.0
    assert parse_duration("90") == 90.0
    for bad in ("", "soon", "2x", "0m", "-5", "h"):
        with pytest.raises(CommandError):
            parse_duration(bad)


def test_alert_commands_list_open_and_all(store: AlertStore) -> None:
    result = commands.list_alerts(store, now_s=NOW_S)
    lines = result.text.splitlines()
    assert lines[0].split() == ["ID", "SEVERITY", "STATE", "AGE", "WHERE", "RULE", "MESSAGE"]
    assert lines[1].startswith("c0ffee000001  critical  firing")  # most severe first
    assert "plant-a · kitchen · walk-in-1 · pi-01/s-c0ffee000001" in lines[1]
    assert "10 m" in lines[1]
    assert len(lines) == 3
    assert [a["id"] for a in result.data["alerts"]] == ["c0ffee000001", "beef00000002"]
    json.dumps(result.data)
    everything = commands.list_alerts(store, include_resolved=True, now_s=NOW_S)
    assert len(everything.data["alerts"]) == 3
    assert commands.list_alerts(store, site="plant-c", now_s=NOW_S).text == "no open alerts"


def test_alert_commands_ack_records_who_when_and_why(store: AlertStore) -> None:
    result = commands.ack_alert(store, "c0ffee", by=" Ana Lima ", comment="checking the door",
                                now_s=NOW_S)  # fmt: skip
    assert result.text == "c0ffee000001: acknowledged by Ana Lima at 2026-11-23 20:00 UTC"
    assert result.data["alert"]["state"] == "acknowledged"
    shown = commands.show_alert(store, "c0ffee000001")
    assert shown.data["audit"][-1]["action"] == "ack"
    assert shown.data["audit"][-1]["actor"] == "Ana Lima"
    assert shown.data["audit"][-1]["comment"] == "checking the door"
    assert shown.data["audit"][-1]["ts_ms"] == int(NOW_S * 1000)
    assert "ack            Ana Lima  checking the door" in shown.text
    with pytest.raises(CommandError, match="was acknowledged by Ana Lima"):
        commands.ack_alert(store, "c0ffee000001", by="Bo", now_s=NOW_S)


def test_alert_commands_refuse_what_cannot_be_done(store: AlertStore) -> None:
    with pytest.raises(CommandError, match="no alert 'ffff'"):
        commands.ack_alert(store, "ffff", by="Ana", now_s=NOW_S)
    with pytest.raises(CommandError, match="say who acknowledged it"):
        commands.ack_alert(store, "c0ffee000001", by="  ", now_s=NOW_S)
    with pytest.raises(CommandError, match="resolved already"):
        commands.ack_alert(store, "dead00000003", by="Ana", now_s=NOW_S)
    with pytest.raises(CommandError, match="resolved already"):
        commands.resolve_alert(store, "dead00000003", by="Ana", now_s=NOW_S)
    with pytest.raises(CommandError, match="give a reason"):
        commands.silence_alert(store, "c0ffee000001", duration="1h", reason=" ", by="Ana")
    with pytest.raises(CommandError, match="at most 30 days"):
        commands.silence_alert(store, "c0ffee000001", duration="31d", reason="x", by="Ana")
    store.insert(_alert("c0ffee000009", key="other/key/x/y"))
    with pytest.raises(CommandError, match="matches several alerts"):
        commands.show_alert(store, "c0ffee")
    # Nothing was changed by the refused commands.
    assert [e.action for e in store.audit("c0ffee000001")] == []


def test_alert_commands_silence_and_resolve(store: AlertStore) -> None:
    result = commands.silence_alert(store, "c0ffee000001", duration="2h",
                                    reason="defrost cycle", by="Ana", now_s=NOW_S)  # fmt: skip
    alert = store.get("c0ffee000001")
    assert alert is not None and alert.state == AlertState.SILENCED
    assert alert.silenced_until_ms == int((NOW_S + 7200) * 1000)
    assert alert.silence_reason == "defrost cycle" and alert.silenced_by == "Ana"
    assert "silenced by Ana until 2026-11-23 22:00 UTC: defrost cycle" in result.text
    # Acknowledging a silenced alert keeps the silence (the engine acknowledges it after).
    commands.ack_alert(store, "c0ffee000001", by="Bo", now_s=NOW_S + 60)
    alert = store.get("c0ffee000001")
    assert alert is not None and alert.state == AlertState.SILENCED and alert.acked_by == "Bo"
    commands.resolve_alert(store, "c0ffee000001", by="Bo", comment="seal replaced",
                           now_s=NOW_S + 120)  # fmt: skip
    alert = store.get("c0ffee000001")
    assert alert is not None and alert.state == AlertState.RESOLVED
    assert alert.resolved_by == "Bo" and alert.conditions == frozenset()
    trail = [(e.action, e.actor, e.state) for e in store.audit("c0ffee000001")]
    assert trail == [
        ("silence", "Ana", AlertState.SILENCED),
        ("ack", "Bo", AlertState.SILENCED),
        ("resolve", "Bo", AlertState.RESOLVED),
    ]
    # All three wait for the engine to write their points and update MQTT/Alertmanager.
    assert len(store.unemitted()) == 3
