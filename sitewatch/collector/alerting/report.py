"""The report managers ask for: how fast alerts are acknowledged and resolved, how many get
resolved, which rules and equipment raise them, and the few offenders behind most of them.

Over the alerts that fired (pending alerts that cleared before firing never reached anyone)
and were created in ``[since, until)``, optionally of one site; the collector's own
self-check alerts (site ``_collector``) are left out unless that site is asked for.

- MTTA, mean time to acknowledge: the mean of ``acked_ms - fired_ms`` over acknowledged
  alerts. MTTR, mean time to resolve: the mean of ``resolved_ms - fired_ms`` over resolved
  alerts (by hand or by themselves). Both in seconds; None when no alert qualifies.
- Resolution rate: resolved alerts / alerts.
- Alerts per rule and per equipment (the sensor's ``equipment`` label).
- Pareto: offenders (equipment, or the sensor when it has no equipment label; or always the
  sensor with ``pareto_by="sensor"``) by alert count, most first, with each one's share and
  the cumulative share, so "these 3 cause 80 %" can be read off.

Text, JSON (``to_dict``) and one self-contained HTML file with an inline SVG Pareto chart.

>>> from sitewatch.collector.alerting.model import Alert, AlertState
>>> def alert(n, equipment, acked_s, resolved_s):
...     return Alert(id=f"a{n}", key=f"k{n}", site="plant-a", device="pi", sensor=f"t{n}",
...                  rule="hot", severity="warning", audience="technician",
...                  labels={"equipment": equipment}, state=AlertState.RESOLVED, message="",
...                  value=None, limit=None, predicted_breach_s=None, conditions=set(),
...                  created_ms=0, updated_ms=0, fired_ms=0,
...                  acked_ms=None if acked_s is None else acked_s * 1000,
...                  resolved_ms=resolved_s * 1000)
>>> report = build_report([alert(1, "fridge", 60, 600), alert(2, "fridge", None, 1200),
...                        alert(3, "oven", 180, 300)], since_ms=0, until_ms=1)
>>> report.mtta_s, report.mttr_s, report.resolution_rate
(120.0, 700.0, 1.0)
>>> [(o.name, o.alerts, round(o.cumulative_pct, 1)) for o in report.pareto]
[('fridge', 2, 66.7), ('oven', 1, 100.0)]
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sitewatch.collector.alerting.message import duration_text, utc_text
from sitewatch.collector.alerting.model import INTERNAL_SITE, Alert
from sitewatch.collector.alerting.store import AlertStore

__all__ = [
    "AlertReport",
    "Offender",
    "build_report",
    "pareto_svg",
    "render_html",
    "render_text",
    "report_from_store",
]

NO_EQUIPMENT = "(no equipment label)"
CHART_TOP = 20
"""Offenders drawn one by one in the chart; the rest form one "others" bar."""

ParetoBy = Literal["equipment", "sensor"]


@dataclass(frozen=True)
class Offender:
    """One bar of the Pareto: ``alerts`` raised, ``share_pct`` of all alerts, and
    ``cumulative_pct`` of this one and every bigger offender."""

    name: str
    alerts: int
    share_pct: float
    cumulative_pct: float


@dataclass(frozen=True)
class AlertReport:
    """The figures of one report; see the module docstring. Durations in seconds."""

    since_ms: int
    until_ms: int
    site: str | None
    total: int
    acknowledged: int
    resolved: int
    still_open: int
    mtta_s: float | None
    mttr_s: float | None
    resolution_rate: float | None
    per_rule: list[tuple[str, int]]
    per_equipment: list[tuple[str, int]]
    pareto_by: ParetoBy
    pareto: list[Offender]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for ``report --json``."""
        return {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "site": self.site,
            "alerts": self.total,
            "acknowledged": self.acknowledged,
            "resolved": self.resolved,
            "open": self.still_open,
            "mtta_s": self.mtta_s,
            "mttr_s": self.mttr_s,
            "resolution_rate": self.resolution_rate,
            "per_rule": dict(self.per_rule),
            "per_equipment": dict(self.per_equipment),
            "pareto_by": self.pareto_by,
            "pareto": [
                {
                    "name": o.name,
                    "alerts": o.alerts,
                    "share_pct": round(o.share_pct, 2),
                    "cumulative_pct": round(o.cumulative_pct, 2),
                }
                for o in self.pareto
            ],
        }


def _ranked(counter: Counter[str]) -> list[tuple[str, int]]:
    """Most first; ties by name, so the order never depends on the input's."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def build_report(
    alerts: Iterable[Alert],
    *,
    since_ms: int,
    until_ms: int,
    site: str | None = None,
    pareto_by: ParetoBy = "equipment",
) -> AlertReport:
    """The report over ``alerts`` (already limited to the period by the caller)."""
    chosen = [
        a
        for a in alerts
        if a.fired_ms is not None
        and (a.site == site if site is not None else a.site != INTERNAL_SITE)
    ]
    several_sites = len({a.site for a in chosen}) > 1

    def prefixed(alert: Alert, name: str) -> str:
        return f"{alert.site}/{name}" if several_sites else name

    def sensor_name(alert: Alert) -> str:
        return prefixed(alert, f"{alert.device}/{alert.sensor}")

    acked = [
        max(0, a.acked_ms - a.fired_ms) / 1000
        for a in chosen
        if a.acked_ms is not None and a.fired_ms is not None
    ]
    resolved = [
        max(0, a.resolved_ms - a.fired_ms) / 1000
        for a in chosen
        if a.resolved_ms is not None and a.fired_ms is not None and not a.is_open
    ]
    per_rule = Counter(a.rule for a in chosen)
    per_equipment = Counter(prefixed(a, a.equipment) if a.equipment else NO_EQUIPMENT
                            for a in chosen)  # fmt: skip
    if pareto_by == "sensor":
        offenders = Counter(sensor_name(a) for a in chosen)
    else:
        offenders = Counter(prefixed(a, a.equipment) if a.equipment else sensor_name(a)
                            for a in chosen)  # fmt: skip
    total = len(chosen)
    pareto = []
    running = 0
    for name, count in _ranked(offenders):
        running += count
        pareto.append(Offender(name, count, 100.0 * count / total, 100.0 * running / total))
    return AlertReport(
        since_ms=since_ms,
        until_ms=until_ms,
        site=site,
        total=total,
        acknowledged=len(acked),
        resolved=len(resolved),
        still_open=sum(1 for a in chosen if a.is_open),
        mtta_s=_mean(acked),
        mttr_s=_mean(resolved),
        resolution_rate=len(resolved) / total if total else None,
        per_rule=_ranked(per_rule),
        per_equipment=_ranked(per_equipment),
        pareto_by=pareto_by,
        pareto=pareto,
    )


def report_from_store(
    store: AlertStore,
    *,
    since_ms: int,
    until_ms: int,
    site: str | None = None,
    pareto_by: ParetoBy = "equipment",
) -> AlertReport:
    """The report over the alerts created in ``[since_ms, until_ms)``."""
    alerts = store.history(since_ms, until_ms, site)
    return build_report(alerts, since_ms=since_ms, until_ms=until_ms, site=site,
                        pareto_by=pareto_by)  # fmt: skip


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return duration_text(seconds) if seconds >= 60 else f"{seconds:.0f} s"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f} %"


def render_text(report: AlertReport, top: int = 10) -> str:
    """The report for a terminal."""
    where = f"site {report.site}" if report.site else "all sites"
    lines = [
        f"Alerts {utc_text(report.since_ms)} – {utc_text(report.until_ms)}, {where}",
        "",
        f"Alerts:           {report.total}",
        f"Acknowledged:     {report.acknowledged}",
        f"Resolved:         {report.resolved} ({_percent(report.resolution_rate)})",
        f"Still open:       {report.still_open}",
        f"MTTA:             {_duration(report.mtta_s)}",
        f"MTTR:             {_duration(report.mttr_s)}",
    ]
    for title, rows in (("per rule", report.per_rule), ("per equipment", report.per_equipment)):
        lines += ["", f"Alerts {title}:"]
        lines += [f"  {count:6d}  {name}" for name, count in rows[:top]] or ["  (none)"]
        if len(rows) > top:
            lines.append(f"  ({len(rows) - top} more)")
    lines += ["", f"Top offenders ({report.pareto_by}):  alerts  share  cumulative"]
    lines += [
        f"  {o.name[:40]:40s}  {o.alerts:6d}  {o.share_pct:4.0f} %  {o.cumulative_pct:5.0f} %"
        for o in report.pareto[:top]
    ] or ["  (none)"]
    if len(report.pareto) > top:
        lines.append(f"  ({len(report.pareto) - top} more)")
    return "\n".join(lines)


def _chart_bars(offenders: list[Offender], total: int) -> list[Offender]:
    if len(offenders) <= CHART_TOP:
        return offenders
    shown = offenders[: CHART_TOP - 1]
    rest = sum(o.alerts for o in offenders[CHART_TOP - 1 :])
    label = f"others ({len(offenders) - len(shown)})"
    return [*shown, Offender(label, rest, 100.0 * rest / total, 100.0)]


def pareto_svg(offenders: list[Offender], *, width: int = 760, height: int = 380) -> str:
    """An inline SVG Pareto chart: bars of alerts per offender (left axis), the cumulative
    share as a line (right axis, 0-100 %) and a dashed 80 % mark."""
    total = sum(o.alerts for o in offenders)
    left, right, top, bottom = 48, 52, 16, 120
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Pareto chart of alerts" '
        'font-family="sans-serif" font-size="11">',
    ]
    if not total:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                     "no alerts</text></svg>")  # fmt: skip
        return "".join(parts)
    bars = _chart_bars(offenders, total)
    peak = max(o.alerts for o in bars)
    band = plot_w / len(bars)
    base = top + plot_h

    def y_count(count: float) -> float:
        return base - plot_h * count / peak

    def y_pct(pct: float) -> float:
        return base - plot_h * pct / 100

    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" '
                 'stroke="#333"/>')  # fmt: skip
    for tick in sorted({0, peak // 2, peak}):
        y = y_count(tick)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for pct in (0, 50, 100):
        parts.append(f'<text x="{left + plot_w + 6}" y="{y_pct(pct) + 4:.1f}">{pct} %</text>')
    y80 = y_pct(80)
    parts.append(f'<line x1="{left}" y1="{y80:.1f}" x2="{left + plot_w}" y2="{y80:.1f}" '
                 'stroke="#c33" stroke-dasharray="4 3"/>')  # fmt: skip
    points = []
    for index, offender in enumerate(bars):
        x = left + index * band
        y = y_count(offender.alerts)
        name = html.escape(offender.name)
        parts.append(
            f'<rect x="{x + band * 0.1:.1f}" y="{y:.1f}" width="{band * 0.8:.1f}" '
            f'height="{base - y:.1f}" fill="#4a7fb5"><title>{name}: {offender.alerts} alerts '
            f"({offender.share_pct:.0f} %)</title></rect>"
        )
        centre = x + band / 2
        label = html.escape(offender.name if len(offender.name) <= 24
                            else offender.name[:23] + "…")  # fmt: skip
        parts.append(f'<text x="{centre:.1f}" y="{base + 12}" text-anchor="end" '
                     f'transform="rotate(-40 {centre:.1f} {base + 12})">{label}</text>')
        points.append(f"{centre:.1f},{y_pct(offender.cumulative_pct):.1f}")
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#e08a00" '
                 'stroke-width="2"/>')  # fmt: skip
    for point in points:
        cx, cy = point.split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="#e08a00"/>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.legend span { display: inline-block; margin-right: 1.5em; }
"""


def _table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{html.escape(cell)}</td>' if i in numeric
            else f"<td>{html.escape(cell)}</td>"
            for i, cell in enumerate(row)
        ) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: AlertReport) -> str:
    """One self-contained HTML page (inline CSS and SVG, nothing fetched)."""
    where = f"site {report.site}" if report.site else "all sites"
    title = f"Alerts {utc_text(report.since_ms)} – {utc_text(report.until_ms)}, {where}"
    summary = _table(
        ["Measure", "Value"],
        [
            ["Alerts", str(report.total)],
            ["Acknowledged", str(report.acknowledged)],
            ["Resolved", f"{report.resolved} ({_percent(report.resolution_rate)})"],
            ["Still open", str(report.still_open)],
            ["MTTA (mean time to acknowledge)", _duration(report.mtta_s)],
            ["MTTR (mean time to resolve)", _duration(report.mttr_s)],
        ],
        set(),
    )
    per_rule = _table(["Rule", "Alerts"], [[n, str(c)] for n, c in report.per_rule], {1})
    per_equipment = _table(
        ["Equipment", "Alerts"], [[n, str(c)] for n, c in report.per_equipment], {1}
    )
    pareto = _table(
        ["Offender", "Alerts", "Share", "Cumulative"],
        [
            [o.name, str(o.alerts), f"{o.share_pct:.1f} %", f"{o.cumulative_pct:.1f} %"]
            for o in report.pareto
        ],
        {1, 2, 3},
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{summary}"
        f"<h2>Top offenders ({html.escape(report.pareto_by)})</h2>"
        f"{pareto_svg(report.pareto)}"
        '<p class="legend"><span>bars: alerts</span><span>line: cumulative share</span>'
        "<span>dashed: 80 %</span></p>"
        f"{pareto}<h2>Alerts per rule</h2>{per_rule}"
        f"<h2>Alerts per equipment</h2>{per_equipment}</body></html>\n"
    )
