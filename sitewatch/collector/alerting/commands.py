"""What ``sitewatch-collector alerts list|show|ack|resolve|silence`` and ``report`` do, as
functions on the alert store (the CLI parses arguments and prints; the web page calls the
same functions).

They work on the SQLite file directly, so they act while the collector runs: an ack is in
the store when the function returns, and the running engine sees it at its next step (no
escalation, no reminder). The audit rows they write are marked for the engine, which writes
the ``alerts`` points and updates the machine channels (MQTT, Alertmanager) at its next tick.

Each returns a ``CommandResult``: ``data`` (JSON-able, for ``--json``) and ``text`` (for a
terminal). A command that cannot be done raises ``CommandError`` saying why (unknown id,
already acknowledged, a duration that does not parse): print it and exit non-zero.

>>> parse_duration("2h"), parse_duration("1h30m"), parse_duration("45s"), parse_duration("7d")
(7200.0, 5400.0, 45.0, 604800.0)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sitewatch.atomicfile import write_atomic
from sitewatch.collector.alerting.message import duration_text, state_line, utc_text
from sitewatch.collector.alerting.model import Alert, AlertState, AuditEntry
from sitewatch.collector.alerting.report import (
    ParetoBy,
    render_html,
    render_text,
    report_from_store,
)
from sitewatch.collector.alerting.store import AlertStore

__all__ = [
    "CommandError",
    "CommandResult",
    "ack_alert",
    "list_alerts",
    "lookup",
    "parse_duration",
    "report",
    "resolve_alert",
    "show_alert",
    "silence_alert",
]

MAX_SILENCE_S = 30 * 86400.0
"""The longest silence (30 days): a forgotten silence must not hide a problem forever."""

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


class CommandError(ValueError):
    """The command cannot be done; the message says why, for the person who typed it."""


@dataclass(frozen=True)
class CommandResult:
    """``data``: JSON-able, for ``--json``; ``text``: for a terminal."""

    data: dict[str, Any]
    text: str


def parse_duration(text: str) -> float:
    """Seconds in ``2h``, ``30m``, ``1h30m``, ``90s``, ``7d``, ``1w`` (or a bare number of
    seconds); ``CommandError`` if it is none of these or not above zero."""
    spec = text.strip().lower().replace(" ", "")
    try:
        seconds = float(spec)
    except ValueError:
        if not spec or _DURATION.sub("", spec):
            raise CommandError(
                f"cannot read the duration {text!r}; write e.g. 30m, 2h, 1h30m, 7d"
            ) from None
        seconds = sum(float(n) * _UNITS_S[unit] for n, unit in _DURATION.findall(spec))
    if not seconds > 0:
        raise CommandError(f"the duration {text!r} must be above zero")
    return seconds


def _now_ms(now_s: float | None) -> int:
    return int((time.time() if now_s is None else now_s) * 1000)


def lookup(store: AlertStore, alert_id: str) -> Alert:
    """The alert with this id, or with an id starting with it (at least 4 characters);
    ``CommandError`` if there is none or the prefix is ambiguous."""
    wanted = alert_id.strip().lower()
    alert = store.get(wanted)
    if alert is not None:
        return alert
    if len(wanted) >= 4:
        found = store.find(wanted)
        if len(found) == 1:
            return found[0]
        if found:
            raise CommandError(f"{alert_id!r} matches several alerts; give more of the id")
    raise CommandError(f"no alert {alert_id!r}; `alerts list --all` shows the ids")


def _where(alert: Alert) -> str:
    parts = [alert.site]
    parts += [value for value in (alert.zone, alert.equipment) if value]
    parts.append(f"{alert.device}/{alert.sensor}")
    return " · ".join(parts)




def _by(name: str, what: str) -> str:
    name = name.strip()
    if not name:
        raise CommandError(f"say who {what} it (--by NAME)")
    if len(name) > 100:
        raise CommandError("--by is limited to 100 characters")
    return name


def _comment(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if len(text) > 2000:
        raise CommandError("the comment is limited to 2000 characters")
    return text.strip()


# -- reading ---------------------------------------------------------------------------------
def list_alerts(
    store: AlertStore,
    *,
    include_resolved: bool = False,
    site: str | None = None,
    since_s: float | None = None,
    now_s: float | None = None,
) -> CommandResult:
    """Open alerts, most severe first (``include_resolved``: every alert created in the
    last ``since_s``, default 7 days, newest first)."""
    now_ms = _now_ms(now_s)
    if include_resolved:
        since_ms = now_ms - int((since_s if since_s is not None else 7 * 86400.0) * 1000)
        alerts = list(reversed(store.history(since_ms, None, site)))
    else:
        alerts = store.open_alerts(site)
    rows = [
        [
            a.id, a.severity, str(a.state), duration_text((now_ms - a.created_ms) / 1000),
            _where(a), a.rule, a.message,
        ]
        for a in alerts
    ]  # fmt: skip
    if not rows:
        text = "no alerts" if include_resolved else "no open alerts"
    else:
        headers = ["ID", "SEVERITY", "STATE", "AGE", "WHERE", "RULE", "MESSAGE"]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, [*widths, 0], strict=True))]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)).rstrip()
            for row in rows
        ]
        text = "\n".join(line.rstrip() for line in lines)
    return CommandResult({"alerts": [a.to_dict() for a in alerts]}, text)


def show_alert(store: AlertStore, alert_id: str) -> CommandResult:
    """One alert with its audit trail."""
    alert = lookup(store, alert_id)
    trail = store.audit(alert.id)
    lines = [
        f"{alert.id}  {alert.severity.upper()}  {alert.rule}",
        f"State:      {state_line(alert)}",
        f"What:       {alert.message}",
        f"Where:      {_where(alert)}",
        f"Conditions: {', '.join(sorted(alert.conditions)) or '-'}",
        f"Created:    {utc_text(alert.created_ms)}",
    ]
    if alert.fired_ms is not None:
        lines.append(f"Fired:      {utc_text(alert.fired_ms)}")
    if alert.value is not None:
        lines.append(f"Value:      {alert.value:g}")
    lines.append(f"Level:      {alert.escalation_level + 1} ({alert.notify_count} messages)")
    lines += ["", "Audit:"]
    for entry in trail:
        comment = f"  {entry.comment}" if entry.comment else ""
        lines.append(f"  {utc_text(entry.ts_ms)}  {entry.action:14s} {entry.actor}{comment}")
    return CommandResult(
        {"alert": alert.to_dict(), "audit": [entry.to_dict() for entry in trail]},
        "\n".join(lines),
    )


# -- acting ----------------------------------------------------------------------------------
def _act(store: AlertStore, alert: Alert, entry: AuditEntry) -> CommandResult:
    store.save(alert)
    stored = store.add_audit(entry, emitted=False)
    return CommandResult(
        {"alert": alert.to_dict(), "audit": stored.to_dict()},
        f"{alert.id}: {state_line(alert)}",
    )


def ack_alert(
    store: AlertStore,
    alert_id: str,
    *,
    by: str,
    comment: str | None = None,
    now_s: float | None = None,
) -> CommandResult:
    """Acknowledge: someone owns it. Stops escalation and reminders until it resolves (a
    silenced alert stays silenced, and is acknowledged when the silence ends)."""
    who = _by(by, "acknowledged")
    note = _comment(comment)
    now_ms = _now_ms(now_s)
    with store.transaction():
        alert = lookup(store, alert_id)
        if alert.state == AlertState.RESOLVED:
            raise CommandError(f"{alert.id} is resolved already; nothing to acknowledge")
        if alert.acked_by is not None:
            raise CommandError(f"{alert.id} was acknowledged by {alert.acked_by} at "
                               f"{utc_text(alert.acked_ms or 0)}")  # fmt: skip
        state = alert.state if alert.state == AlertState.SILENCED else AlertState.ACKNOWLEDGED
        acked = replace(alert, state=state, acked_by=who, acked_ms=now_ms)
        return _act(store, acked, AuditEntry(alert.id, now_ms, "ack", who, note, state))


def resolve_alert(
    store: AlertStore,
    alert_id: str,
    *,
    by: str,
    comment: str | None = None,
    now_s: float | None = None,
) -> CommandResult:
    """Close it by hand (fixed, or a false alarm). If the problem is in fact still there,
    detection raises a new alert only after it has cleared and come back."""
    who = _by(by, "resolved")
    note = _comment(comment)
    now_ms = _now_ms(now_s)
    with store.transaction():
        alert = lookup(store, alert_id)
        if alert.state == AlertState.RESOLVED:
            raise CommandError(f"{alert.id} is resolved already ({state_line(alert)})")
        resolved = replace(
            alert, state=AlertState.RESOLVED, resolved_by=who, resolved_ms=now_ms,
            conditions=frozenset(), resolve_message_due_ms=None,
        )  # fmt: skip
        return _act(store, resolved,
                    AuditEntry(alert.id, now_ms, "resolve", who, note, AlertState.RESOLVED))


def silence_alert(
    store: AlertStore,
    alert_id: str,
    *,
    duration: str,
    reason: str,
    by: str,
    now_s: float | None = None,
) -> CommandResult:
    """Silence for ``duration`` (``2h``, ``30m``; at most 30 days) with a ``reason``: no
    messages, no escalation. When it ends with the problem still there, the alert fires
    again and people are told. Silencing a silenced alert replaces its silence."""
    who = _by(by, "silenced")
    seconds = parse_duration(duration)
    if seconds > MAX_SILENCE_S:
        raise CommandError("a silence lasts at most 30 days")
    why = _comment(reason)
    if why is None:
        raise CommandError("give a reason for the silence (--reason)")
    now_ms = _now_ms(now_s)
    with store.transaction():
        alert = lookup(store, alert_id)
        if alert.state == AlertState.RESOLVED:
            raise CommandError(f"{alert.id} is resolved already; nothing to silence")
        until_ms = now_ms + int(seconds * 1000)
        silenced = replace(
            alert, state=AlertState.SILENCED, silenced_by=who, silenced_until_ms=until_ms,
            silence_reason=why,
        )  # fmt: skip
        entry = AuditEntry(alert.id, now_ms, "silence", who,
                           f"until {utc_text(until_ms)}: {why}", AlertState.SILENCED)
        return _act(store, silenced, entry)


def report(
    store: AlertStore,
    *,
    since: str,
    site: str | None = None,
    html_path: Path | None = None,
    pareto_by: ParetoBy = "equipment",
    now_s: float | None = None,
) -> CommandResult:
    """The report over the last ``since`` (``7d``, ``24h``); ``html_path`` also writes the
    self-contained HTML page there."""
    until_ms = _now_ms(now_s)
    since_ms = until_ms - int(parse_duration(since) * 1000)
    result = report_from_store(store, since_ms=since_ms, until_ms=until_ms + 1, site=site,
                               pareto_by=pareto_by)  # fmt: skip
    text = render_text(result)
    if html_path is not None:
        write_atomic(html_path, render_html(result).encode("utf-8"), durable=False)
        text += f"\n\nHTML report written to {html_path}"
    return CommandResult(result.to_dict(), text)
