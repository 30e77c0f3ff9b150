"""The HTML of the collector's web page: plain server-rendered pages a phone shows well (a
viewport, one column, buttons a thumb can hit), with a little inline CSS, no JavaScript and
no external files. Every value from the store or the request is escaped here.

Each page is a function from what it shows to a ``str``; ``web`` decides who may see it.
Every form that changes something posts the session's CSRF token (``csrf``) and the page to
come back to (``back``).

>>> html = login_page(next_path="/alerts/c0ffee", nonce="n0nce", error=None)
>>> '<input type="hidden" name="next" value="/alerts/c0ffee">' in html
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from sitewatch.collector.alerting.message import duration_text, state_line, utc_text
from sitewatch.collector.alerting.model import SEVERITY_RANK, Alert, AlertState, AuditEntry

__all__ = [
    "SILENCE_CHOICES",
    "ChartView",
    "Viewer",
    "alert_page",
    "alerts_page",
    "devices_page",
    "login_page",
    "message_page",
    "recheck_page",
]

SILENCE_CHOICES = ("30m", "1h", "2h", "4h", "8h", "24h", "3d", "7d")
"""The durations offered by the silence form (the server accepts any up to 30 days)."""

_CSS = """
:root{color-scheme:light dark;--fg:#111;--bg:#fff;--muted:#666;--line:#ccc;--card:#f6f6f6;
--crit:#b00020;--warn:#a15c00;--info:#0b5cad;--ok:#1b6e20;--accent:#0b5cad}
@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#121212;--muted:#aaa;--line:#444;
--card:#1e1e1e;--crit:#ff6b7f;--warn:#ffb74d;--info:#7fb8ff;--ok:#81c784;--accent:#7fb8ff}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;padding:.6rem 1rem;
border-bottom:1px solid var(--line)}
header a{color:var(--accent);font-weight:600;text-decoration:none;padding:.4rem 0}
header .who{margin-left:auto;color:var(--muted)}header form{margin:0}
.scroll{overflow-x:auto}
main{max-width:48rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
.card{background:var(--card);border-left:6px solid var(--line);border-radius:6px;
padding:.8rem 1rem;margin:0 0 1rem}
.card.critical{border-left-color:var(--crit)}.card.warning{border-left-color:var(--warn)}
.card.info{border-left-color:var(--info)}
.card h3{font-size:1.05rem;margin:0 0 .3rem}.card h3 a{color:inherit}
.muted{color:var(--muted)}.small{font-size:.9rem}
.badge{display:inline-block;border-radius:999px;padding:0 .55rem;font-size:.85rem;
font-weight:600;border:1px solid currentColor;white-space:nowrap}
.sev-critical{color:var(--crit)}.sev-warning{color:var(--warn)}.sev-info{color:var(--info)}
.state-firing{color:var(--crit)}.state-pending{color:var(--warn)}
.state-acknowledged{color:var(--info)}.state-silenced{color:var(--muted)}
.state-resolved,.state-online{color:var(--ok)}.state-offline,.state-stale,
.state-sensor-fault{color:var(--crit)}.state-unknown{color:var(--muted)}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.7rem}
.act{margin-top:.7rem}.act form{margin:0}.act .actions{margin-top:.5rem}
button,select,input[type=text],input[type=password]{font:inherit;min-height:48px;
border-radius:6px;border:1px solid var(--line);padding:.5rem .9rem;background:var(--bg);
color:var(--fg)}
button{font-weight:600;cursor:pointer;min-width:7rem}
button.primary{background:var(--accent);border-color:var(--accent);color:var(--bg)}
button.danger{border-color:var(--crit);color:var(--crit)}
input[type=text],input[type=password],select{width:100%}
label{display:block;margin:.6rem 0 .2rem;font-weight:600}
details{margin-top:.5rem}summary{cursor:pointer;min-height:44px;padding:.6rem 0;
color:var(--accent);font-weight:600}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:.4rem .3rem;border-bottom:1px solid var(--line);
vertical-align:top}
.notice{border:1px solid var(--ok);color:var(--ok);border-radius:6px;padding:.6rem 1rem;
margin-bottom:1rem}
.error{border:1px solid var(--crit);color:var(--crit);border-radius:6px;padding:.6rem 1rem;
margin-bottom:1rem}
svg.chart{width:100%;height:auto;display:block;margin:.4rem 0 1rem}
svg .frame{fill:none;stroke:var(--line)}svg .grid{stroke:var(--line);stroke-dasharray:2 4}
svg .tick,svg .axis-title,svg .mark-label{fill:var(--muted);font-size:13px}
svg .series{fill:none;stroke:var(--accent);stroke-width:2}
svg circle.series{fill:var(--accent)}
svg .limit{stroke:var(--crit);stroke-dasharray:6 4}svg .limit-label{fill:var(--crit);
font-size:13px}svg .mark{stroke:var(--warn);stroke-dasharray:3 3}
.login{max-width:22rem;margin:2rem auto}.login button{width:100%;margin-top:1rem}
"""


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page (``user``, shown in the header) and the CSRF value forms
    carry (``csrf``: None for token clients, whose pages get no forms)."""

    user: str
    csrf: str | None


@dataclass(frozen=True)
class ChartView:
    """One chart on an alert page: the ``field``, its ``svg`` (None when there is nothing
    to draw) and a ``note`` saying why, or how many readings it shows."""

    field: str
    svg: str | None
    note: str


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str, viewer: Viewer | None) -> str:
    header = ""
    if viewer is not None:
        logout = ""
        if viewer.csrf is not None:
            logout = (
                '<form method="post" action="/logout">'
                f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'
                '<button type="submit" id="logout">Log out</button></form>'
            )
        header = (
            '<header><a href="/">Alerts</a><a href="/devices">Devices</a>'
            f'<span class="who">Signed in as <strong id="user">{_e(viewer.user)}</strong></span>'
            f"{logout}</header>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)} · sitewatch</title><style>{_CSS}</style></head>"
        f"<body>{header}<main>{body}</main></body></html>"
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">'


def _where(alert: Alert) -> str:
    parts = [alert.site]
    parts += [value for value in (alert.zone, alert.equipment) if value]
    parts.append(f"{alert.device}/{alert.sensor}")
    return " · ".join(parts)


def _ago(ts_ms: int, now_ms: int) -> str:
    return f"{duration_text((now_ms - ts_ms) / 1000)} ago"


def _badge(kind: str, value: str) -> str:
    return f'<span class="badge {kind}-{_e(value)}">{_e(value)}</span>'


def _number(value: float) -> str:
    return f"{value:.6g}"




def _actions(alert: Alert, viewer: Viewer, back: str, *, with_comment: bool) -> str:
    """Ack / resolve / silence forms for an open alert (none for token clients)."""
    if viewer.csrf is None or alert.state == AlertState.RESOLVED:
        return ""
    base = f"/alerts/{_e(alert.id)}"
    hidden = _hidden("csrf", viewer.csrf) + _hidden("back", back)
    comment = ""
    if with_comment:
        comment = ('<input type="text" name="comment" maxlength="2000" '
                   'placeholder="Comment (optional)" aria-label="Comment">')  # fmt: skip
    # One form, a button per action (formaction): the comment goes with either.
    buttons = ""
    if alert.acked_by is None:
        buttons += (f'<button type="submit" formaction="{base}/ack" class="primary" '
                    f'id="ack-{_e(alert.id)}">Acknowledge</button>')  # fmt: skip
    buttons += (f'<button type="submit" formaction="{base}/resolve" '
                f'id="resolve-{_e(alert.id)}">Resolve</button>')  # fmt: skip
    forms = [f'<form method="post" action="{base}/ack">{hidden}{comment}'
             f'<div class="actions">{buttons}</div></form>']  # fmt: skip
    options = "".join(
        f'<option value="{d}"{" selected" if d == "2h" else ""}>{d}</option>'
        for d in SILENCE_CHOICES
    )
    silence = (
        f'<details><summary id="silence-open-{_e(alert.id)}">Silence…</summary>'
        f'<form method="post" action="{base}/silence">{hidden}'
        f'<label for="duration-{_e(alert.id)}">For</label>'
        f'<select name="duration" id="duration-{_e(alert.id)}">{options}</select>'
        f'<label for="reason-{_e(alert.id)}">Reason</label>'
        f'<input type="text" name="reason" id="reason-{_e(alert.id)}" required '
        'maxlength="2000" placeholder="e.g. defrost cycle, technician on site">'
        f'<div class="actions"><button type="submit" class="danger" '
        f'id="silence-{_e(alert.id)}">Silence</button></div></form></details>'
    )
    return f'<div class="act">{"".join(forms)}</div>{silence}'


def _notice(notice: str | None, error: str | None) -> str:
    out = ""
    if notice:
        out += f'<p class="notice" id="notice" role="status">{_e(notice)}</p>'
    if error:
        out += f'<p class="error" id="error" role="alert">{_e(error)}</p>'
    return out


def login_page(*, next_path: str, nonce: str, error: str | None) -> str:
    """The login form; ``nonce`` pairs the form with the login cookie set alongside."""
    body = (
        '<div class="login"><h1>sitewatch</h1>'
        f"{_notice(None, error)}"
        '<form method="post" action="/login">'
        f'{_hidden("csrf", nonce)}{_hidden("next", next_path)}'
        '<label for="username">Name</label>'
        '<input type="text" id="username" name="username" autocomplete="username" '
        'autocapitalize="none" spellcheck="false" required maxlength="100">'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required maxlength="1024">'
        '<button type="submit" class="primary" id="login">Log in</button></form></div>'
    )
    return _page("Log in", body, None)


def recheck_page(next_path: str) -> str:
    """Reloads ``next_path`` once: a link followed from an email or a chat app arrives
    without the session cookie (it is SameSite=Strict), and the reload, a navigation from
    this site itself, carries it."""
    body = (
        f'<p>Checking your login… <a href="{_e(next_path)}">continue</a></p>'
    )
    html = _page("Checking login", body, None)
    refresh = f'<meta http-equiv="refresh" content="0; url={_e(next_path)}">'
    return html.replace("<head>", "<head>" + refresh, 1)


def message_page(title: str, text: str, viewer: Viewer | None, back: str = "/") -> str:
    """A short page saying something went wrong (or right), with a way back."""
    body = (f"<h1>{_e(title)}</h1>{_notice(None, text)}"
            f'<p><a href="{_e(back)}">Back</a></p>')  # fmt: skip
    return _page(title, body, viewer)


def _card(alert: Alert, viewer: Viewer, now_ms: int) -> str:
    value = "" if alert.value is None else f" · value {_number(alert.value)}"
    state = state_line(alert)
    state_html = "" if state == str(alert.state) else f'<div class="small">{_e(state)}</div>'
    return (
        f'<article class="card {_e(alert.severity)}" id="alert-{_e(alert.id)}">'
        f'<h3><a href="/alerts/{_e(alert.id)}">{_e(alert.rule)}</a> '
        f'{_badge("state", str(alert.state))}</h3>'
        f"<div>{_e(alert.message)}</div>"
        f'<div class="muted small">{_e(_where(alert))}{_e(value)} · since '
        f"{_e(utc_text(alert.created_ms))} ({_e(_ago(alert.created_ms, now_ms))})</div>"
        f"{state_html}"
        f"{_actions(alert, viewer, '/', with_comment=False)}</article>"
    )


def alerts_page(
    alerts: Sequence[Alert],
    viewer: Viewer,
    *,
    now_ms: int,
    notice: str | None = None,
    error: str | None = None,
) -> str:
    """Open alerts grouped by severity, the most severe group first."""
    groups: dict[str, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(alert.severity, []).append(alert)
    order = sorted(groups, key=lambda s: (SEVERITY_RANK.get(s, 9), s))
    body = f"<h1>Open alerts ({len(alerts)})</h1>{_notice(notice, error)}"
    if not alerts:
        body += '<p class="muted" id="no-alerts">No open alerts.</p>'
    for severity in order:
        cards = "".join(_card(alert, viewer, now_ms) for alert in groups[severity])
        heading = f"{severity.capitalize()} ({len(groups[severity])})"
        body += (f'<section id="severity-{_e(severity)}"><h2 class="sev-{_e(severity)}">'
                 f"{_e(heading)}</h2>{cards}</section>")  # fmt: skip
    return _page("Open alerts", body, viewer)


def _facts(alert: Alert, now_ms: int) -> str:
    rows: list[tuple[str, str, str]] = [
        ("what", "What", f"{alert.rule}: {alert.message}"),
        ("severity", "Severity", alert.severity),
        ("site", "Site", alert.site),
    ]
    rows += [(key, key.capitalize(), value) for key, value in
             (("zone", alert.zone), ("equipment", alert.equipment)) if value]  # fmt: skip
    rows.append(("sensor", "Sensor", f"{alert.sensor} (device {alert.device})"))
    if alert.conditions:
        rows.append(("conditions", "Conditions", ", ".join(sorted(alert.conditions))))
    if alert.value is not None:
        value = _number(alert.value)
        if alert.limit is not None:
            value += f" (limit {_number(alert.limit)})"
        rows.append(("value", "Value", value))
    if alert.predicted_breach_s is not None and alert.state != AlertState.RESOLVED:
        at_ms = alert.updated_ms + int(alert.predicted_breach_s * 1000)
        left = (at_ms - now_ms) / 1000
        when = f"in {duration_text(left)}" if left >= 60 else "any moment now"
        rows.append(("breach", "Predicted breach", f"{when} (around {utc_text(at_ms)})"))
    rows.append(("since", "Since",
                 f"{utc_text(alert.created_ms)} ({_ago(alert.created_ms, now_ms)})"))  # fmt: skip
    rows.append(("state", "State", state_line(alert)))
    if alert.acked_by is not None and alert.state != AlertState.ACKNOWLEDGED:
        acked = utc_text(alert.acked_ms) if alert.acked_ms is not None else "?"
        rows.append(("acked", "Acknowledged", f"by {alert.acked_by} at {acked}"))
    messages = "1 message" if alert.notify_count == 1 else f"{alert.notify_count} messages"
    rows.append(("notified", "Notified",
                 f"{messages}, escalation level {alert.escalation_level + 1}"))  # fmt: skip
    return "<dl>" + "".join(
        f'<dt>{_e(label)}</dt><dd id="{key}">{_e(text)}</dd>' for key, label, text in rows
    ) + "</dl>"


def _trail(trail: Sequence[AuditEntry]) -> str:
    rows = "".join(
        f'<tr class="audit-{_e(entry.action)}"><td>{_e(utc_text(entry.ts_ms))}</td>'
        f"<td>{_e(entry.action)}</td><td>{_e(entry.actor)}</td>"
        f'<td>{_e(entry.comment or "")}</td></tr>'
        for entry in trail
    )
    return (
        '<div class="scroll"><table id="audit"><thead><tr><th>When (UTC)</th><th>What</th>'
        f"<th>Who</th><th>Comment</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def alert_page(
    alert: Alert,
    trail: Sequence[AuditEntry],
    charts: Sequence[ChartView],
    viewer: Viewer,
    *,
    now_ms: int,
    notice: str | None = None,
    error: str | None = None,
) -> str:
    """One alert: the facts, the actions, the recent readings and the audit trail."""
    back = f"/alerts/{alert.id}"
    body = (
        f'<h1><span class="sev-{_e(alert.severity)}">{_e(alert.severity.upper())}</span> '
        f'{_e(alert.rule)} {_badge("state", str(alert.state))}</h1>'
        f"{_notice(notice, error)}{_facts(alert, now_ms)}"
        f"{_actions(alert, viewer, back, with_comment=True)}"
        "<h2>Recent readings</h2>"
    )
    if not charts:
        body += '<p class="muted">No chart: this alert names no stored field.</p>'
    for chart in charts:
        body += f'<h3 class="small">{_e(chart.field)}</h3>'
        if chart.svg is not None:
            body += chart.svg
        body += f'<p class="muted small chart-note">{_e(chart.note)}</p>'
    body += f"<h2>Audit trail</h2>{_trail(trail)}"
    body += f'<p class="muted small">Alert {_e(alert.id)}</p>'
    return _page(f"{alert.rule} at {alert.site}", body, viewer)


def devices_page(
    devices: Sequence[Mapping[str, Any]] | None,
    open_alerts: Mapping[tuple[str, str], int],
    viewer: Viewer,
    *,
    now_ms: int,
) -> str:
    """Each device's state as the collector sees it, with its open alerts."""
    body = "<h1>Devices</h1>"
    if devices is None:
        body += '<p class="muted">Device states are not available here.</p>'
        return _page("Devices", body, viewer)
    if not devices:
        body += '<p class="muted">No device heard from yet.</p>'
    rows = ""
    for device in devices:
        site, name = str(device.get("site", "")), str(device.get("device", ""))
        seen = device.get("last_seen_ms")
        seen_text = _ago(int(seen), now_ms) if isinstance(seen, int | float) else "never"
        faulted = ", ".join(str(s) for s in device.get("faulted_sensors") or []) or "-"
        rows += (
            f'<tr id="device-{_e(site)}-{_e(name)}"><td>{_e(site)}</td><td>{_e(name)}</td>'
            f'<td>{_badge("state", str(device.get("state", "unknown")))}</td>'
            f"<td>{_e(seen_text)}</td><td>{_e(faulted)}</td>"
            f"<td>{open_alerts.get((site, name), 0)}</td>"
            f'<td>{_e(device.get("agent_version") or "-")}</td></tr>'
        )
    if rows:
        body += (
            '<div class="scroll"><table id="devices"><thead><tr><th>Site</th><th>Device</th>'
            "<th>State</th><th>Last heard</th><th>Faulted sensors</th><th>Open alerts</th>"
            "<th>Agent</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return _page("Devices", body, viewer)
