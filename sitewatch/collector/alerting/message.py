"""The words of a notification: what a technician reads on a phone at 3 am.

Every message answers, in this order: what happened (the rule and the detector's message),
where (site, zone, equipment, sensor and device), how bad (the value against the limit), how
soon (the predicted breach, for forecasts), since when (UTC and relative), the alert's state,
and how to acknowledge (the web page's link and the CLI command). ``render`` gives a subject,
a plain-text body (email, Alertmanager description) and a short form (chat, ntfy, SMS).

Times are passed in (``now_ms``), never read from a clock here, so the text is reproducible.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sitewatch.collector.alerting.model import Alert, Notification

__all__ = [
    "MessageText",
    "ack_command",
    "ack_url",
    "duration_text",
    "render",
    "state_line",
    "utc_text",
]

# Field-name suffix → unit shown after a value (the project names fields with their unit).
_UNITS = {
    "_c": "°C",
    "_pct": "%",
    "_s": "s",
    "_v": "V",
    "_a": "A",
    "_w": "W",
    "_hz": "Hz",
    "_ppm": "ppm",
    "_pa": "Pa",
    "_hpa": "hPa",
    "_lux": "lx",
}

# The sensor-catalog labels that say where, from the widest to the narrowest.
_PLACES = ("zone", "equipment")

_HEADLINES = {
    "firing": "FIRING",
    "escalation": "ESCALATED",
    "reminder": "STILL FIRING",
    "resolved": "RESOLVED",
}


@dataclass(frozen=True)
class MessageText:
    """``subject``: one line (email subject, Alertmanager summary, chat title). ``body``: the
    full plain text. ``short``: two lines at most, for chat, ntfy and SMS."""

    subject: str
    body: str
    short: str


def ack_url(public_url: str | None, alert_id: str) -> str | None:
    """The alert's page on the collector's web UI, where it can be acknowledged.

    >>> ack_url("http://collector.local:8080/", "c0ffee")
    'http://collector.local:8080/alerts/c0ffee'
    >>> ack_url(None, "c0ffee") is None
    True
    """
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/alerts/{alert_id}"


def ack_command(alert_id: str) -> str:
    """The CLI command that acknowledges the alert (run on the collector).

    >>> ack_command("c0ffee")
    'sitewatch-collector alerts ack c0ffee --by NAME'
    """
    return f"sitewatch-collector alerts ack {alert_id} --by NAME"


def duration_text(seconds: float) -> str:
    """A duration rounded down for humans: ``45 s``, ``12 m``, ``2 h 40 m``, ``3 d 4 h``.

    >>> [duration_text(s) for s in (0, 45, 720, 9600, 7200, 273600)]
    ['0 s', '45 s', '12 m', '2 h 40 m', '2 h', '3 d 4 h']
    """
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} m"
    return f"{secs} s"


def utc_text(ts_ms: int) -> str:
    """A UTC time to the minute.

    >>> utc_text(1795464000123)
    '2026-11-23 20:00 UTC'
    """
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def render(notification: Notification, now_ms: int) -> MessageText:
    """The text of ``notification`` as of ``now_ms`` (for the relative times).

    >>> from sitewatch.collector.alerting.model import Alert, AlertState, Notification
    >>> t0 = 1795464000000
    >>> alert = Alert(
    ...     id="c0ffee", key="plant-a/pi-01/cold-room/cold-room-high", site="plant-a",
    ...     device="pi-01", sensor="cold-room", rule="cold-room-high", severity="critical",
    ...     audience="technician", labels={"zone": "kitchen", "equipment": "walk-in-1"},
    ...     state=AlertState.FIRING, message="forecast: above 8.0 within 3 h",
    ...     value=6.9, limit=8.0, predicted_breach_s=9600.0,
    ...     conditions={"temperature_c/forecast"}, created_ms=t0, updated_ms=t0 + 2_100_000)
    >>> text = render(Notification("firing", alert, [], "http://collector.local:8080/alerts/c0ffee"),
    ...               now_ms=t0 + 2_100_000)
    >>> print(text.subject)
    [CRITICAL] FIRING: cold-room-high at plant-a · kitchen · walk-in-1 · cold-room
    >>> print(text.body)
    FIRING: cold-room-high (critical)
    <BLANKLINE>
    What:   forecast: above 8.0 within 3 h
    Where:  site plant-a, zone kitchen, equipment walk-in-1, sensor cold-room (device pi-01)
    Value:  6.9 °C, limit 8.0 °C (1.1 below)
    Breach: predicted in 2 h 40 m (around 2026-11-23 23:15 UTC)
    Since:  2026-11-23 20:00 UTC (35 m ago)
    State:  firing, not acknowledged
    Alert:  c0ffee
    <BLANKLINE>
    To acknowledge:
      open http://collector.local:8080/alerts/c0ffee
      or run: sitewatch-collector alerts ack c0ffee --by NAME
    >>> print(text.short)
    [CRITICAL] FIRING cold-room-high at plant-a · kitchen · walk-in-1 · cold-room: forecast: above
    8.0 within 3 h; 6.9 °C, limit 8.0 °C; breach in 2 h 40 m; for 35 m.
    Ack: http://collector.local:8080/alerts/c0ffee

    Once resolved, the message says when and after how long, and asks for nothing:

    >>> from dataclasses import replace
    >>> done = replace(alert, state=AlertState.RESOLVED, resolved_ms=t0 + 3_900_000,
    ...                predicted_breach_s=None)
    >>> print(render(Notification("resolved", done, [], None), now_ms=t0 + 3_900_000).body)
    RESOLVED: cold-room-high (critical)
    <BLANKLINE>
    What:   forecast: above 8.0 within 3 h
    Where:  site plant-a, zone kitchen, equipment walk-in-1, sensor cold-room (device pi-01)
    Value:  6.9 °C, limit 8.0 °C (1.1 below)
    Since:  2026-11-23 20:00 UTC (1 h 5 m ago)
    State:  resolved at 2026-11-23 21:05 UTC, after 1 h 5 m
    Alert:  c0ffee
    """
    alert = notification.alert
    headline = _HEADLINES.get(notification.kind, notification.kind.upper())
    if notification.kind == "escalation":
        headline += f" (level {alert.escalation_level + 1})"
    where_short = " · ".join(_where_parts(alert))
    how_bad = _value_text(alert)
    breach = _breach_text(alert, now_ms)
    since_ago = duration_text((now_ms - alert.created_ms) / 1000)
    open_for_ack = _needs_ack(alert)

    subject = f"[{alert.severity.upper()}] {headline}: {alert.rule} at {where_short}"

    lines = [
        f"{headline}: {alert.rule} ({alert.severity})",
        "",
        f"What:   {alert.message}",
        f"Where:  {_where_long(alert)}",
    ]
    if how_bad:
        lines.append(f"Value:  {how_bad}")
    if breach:
        lines.append(f"Breach: predicted {breach[0]} (around {breach[1]})")
    lines += [
        f"Since:  {utc_text(alert.created_ms)} ({since_ago} ago)",
        f"State:  {_state_text(alert)}",
        f"Alert:  {alert.id}",
    ]
    if open_for_ack:
        lines += ["", "To acknowledge:"]
        if notification.ack_url:
            lines.append(f"  open {notification.ack_url}")
            lines.append(f"  or run: {ack_command(alert.id)}")
        else:
            lines.append(f"  run: {ack_command(alert.id)}")

    facts = [alert.message]
    short_value = _value_text(alert, with_delta=False)
    if short_value:
        facts.append(short_value)
    if breach:
        facts.append(f"breach {breach[0]}")
    if alert.state == "resolved" and alert.resolved_ms is not None:
        facts.append(f"after {duration_text((alert.resolved_ms - alert.created_ms) / 1000)}")
    else:
        facts.append(f"for {since_ago}")
    short = f"[{alert.severity.upper()}] {headline} {alert.rule} at {where_short}: "
    short += "; ".join(facts) + "."
    if open_for_ack:
        short += "\nAck: " + (notification.ack_url or ack_command(alert.id))
    return MessageText(subject=subject, body="\n".join(lines), short=short)


def _where_parts(alert: Alert) -> list[str]:
    parts = [alert.site]
    parts += [alert.labels[key] for key in _PLACES if alert.labels.get(key)]
    parts.append(alert.sensor)
    return parts


def _where_long(alert: Alert) -> str:
    parts = [f"site {alert.site}"]
    parts += [f"{key} {alert.labels[key]}" for key in _PLACES if alert.labels.get(key)]
    parts.append(f"sensor {alert.sensor} (device {alert.device})")
    return ", ".join(parts)


def _unit(alert: Alert) -> str:
    """The unit of the alert's field when all its conditions are on one field, else ""."""
    fields = {condition.split("/", 1)[0] for condition in alert.conditions}
    if len(fields) != 1:
        return ""
    (name,) = fields
    for suffix, unit in _UNITS.items():
        if name.endswith(suffix):
            return unit
    return ""


def _number(value: float) -> str:
    """Six significant digits, and a whole number still reads as a measurement (``8.0``)."""
    return f"{value:.1f}" if float(value).is_integer() and abs(value) < 1e6 else f"{value:.6g}"


def _value_text(alert: Alert, *, with_delta: bool = True) -> str:
    if alert.value is None:
        return ""
    unit = _unit(alert)
    sep = " " if unit else ""
    text = f"{_number(alert.value)}{sep}{unit}"
    if alert.limit is None:
        return text
    text += f", limit {_number(alert.limit)}{sep}{unit}"
    delta = alert.value - alert.limit
    if with_delta and delta:
        text += f" ({_number(abs(delta))} {'above' if delta > 0 else 'below'})"
    return text


def _breach_text(alert: Alert, now_ms: int) -> tuple[str, str] | None:
    """("in 2 h 40 m", "<UTC time>") for a forecast: the breach is predicted
    ``predicted_breach_s`` after the alert's last update."""
    if alert.predicted_breach_s is None or alert.state == "resolved":
        return None
    at_ms = alert.updated_ms + int(alert.predicted_breach_s * 1000)
    left_s = (at_ms - now_ms) / 1000
    when = f"in {duration_text(left_s)}" if left_s >= 60 else "any moment now"
    return when, utc_text(at_ms)


def _needs_ack(alert: Alert) -> bool:
    return alert.state not in ("acknowledged", "resolved")


def _state_text(alert: Alert) -> str:
    state = str(alert.state)
    if state == "acknowledged":
        who = alert.acked_by or "someone"
        when = f" at {utc_text(alert.acked_ms)}" if alert.acked_ms is not None else ""
        return f"acknowledged by {who}{when}"
    if state == "resolved":
        if alert.resolved_ms is None:
            return "resolved"
        lasted = duration_text((alert.resolved_ms - alert.created_ms) / 1000)
        return f"resolved at {utc_text(alert.resolved_ms)}, after {lasted}"
    if state == "silenced":
        until = alert.silenced_until_ms
        return "silenced" + (f" until {utc_text(until)}" if until is not None else "")
    if state == "pending":
        return "pending (waiting before notifying)"
    return f"{state}, not acknowledged"


def state_line(alert: Alert) -> str:
    """The alert's state with who and when, as the CLI and the alert page show it."""
    if alert.state == "acknowledged" and alert.acked_ms is not None:
        return f"acknowledged by {alert.acked_by} at {utc_text(alert.acked_ms)}"
    if alert.state == "silenced" and alert.silenced_until_ms is not None:
        return (f"silenced by {alert.silenced_by} until {utc_text(alert.silenced_until_ms)}: "
                f"{alert.silence_reason}")  # fmt: skip
    if alert.state == "resolved" and alert.resolved_ms is not None:
        return f"resolved by {alert.resolved_by} at {utc_text(alert.resolved_ms)}"
    return str(alert.state)
