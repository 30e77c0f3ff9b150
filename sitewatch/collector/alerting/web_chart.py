"""A line chart of one sensor field as inline SVG, drawn on the server: the alert page shows
it without JavaScript, external files or a charting library.

Long series are thinned to the lowest and highest value of each of ~300 time buckets, so a
spike stays visible however many points the window holds and the page stays small on a
phone. Gaps (no reading for more than 5 × the usual spacing, and at least a minute) break
the line instead of bridging it. The y axis fits the data (and the limit, when there is one)
with round ticks; the x axis shows UTC clock times. Marks are vertical lines at given times
(when the alert started, for instance).

>>> t0 = 1_795_464_000_000
>>> points = [(t0 + i * 60_000, 4.0 + (i % 10) / 10) for i in range(360)]
>>> svg = line_chart(points, since_ms=t0, until_ms=t0 + 6 * 3600_000, label="temperature_c",
...                  unit="°C", marks=[(t0 + 3 * 3600_000, "alert")], limit=8.0)
>>> svg.startswith("<svg") and svg.count("<polyline") == 1 and "8 limit" in svg
True
>>> [tick for tick, _ in y_ticks(3.7, 8.3)]
[4.0, 5.0, 6.0, 7.0, 8.0]
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from html import escape

__all__ = ["line_chart", "thin", "y_ticks"]

WIDTH, HEIGHT = 480, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 10, 18, 26
_BUCKETS = 300
_TIME_STEPS_S = (300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def thin(points: Sequence[tuple[int, float]], since_ms: int, until_ms: int,
         buckets: int = _BUCKETS) -> list[tuple[int, float]]:  # fmt: skip
    """At most ``2 × buckets`` points: the lowest and highest of each time bucket, in time
    order (all points when there are few).

    >>> thin([(t, v) for t, v in enumerate([1, 9, 2, 8, 3, 7])], 0, 6, buckets=2)
    [(0, 1), (1, 9), (3, 8), (4, 3)]
    """
    if len(points) <= 2 * buckets:
        return list(points)
    span = max(1, until_ms - since_ms)
    groups: dict[int, list[tuple[int, float]]] = {}
    for point in points:
        index = min(buckets - 1, max(0, (point[0] - since_ms) * buckets // span))
        groups.setdefault(index, []).append(point)
    out: list[tuple[int, float]] = []
    for index in sorted(groups):
        group = groups[index]
        low = min(group, key=lambda p: p[1])
        high = max(group, key=lambda p: p[1])
        out.extend(sorted({low, high}))
    return out


def _nice_step(low: float, high: float, count: int) -> float:
    """The 1/2/2.5/5 × 10^k step whose number of ticks over [low, high] is nearest
    ``count`` (the larger step on a tie)."""
    exponent = math.floor(math.log10((high - low) / max(1, count - 1)))
    candidates = [f * 10.0**e for e in (exponent - 1, exponent, exponent + 1)
                  for f in (1.0, 2.0, 2.5, 5.0)]  # fmt: skip

    def misfit(step: float) -> tuple[float, float]:
        ticks = math.floor(high / step + 1e-9) - math.ceil(low / step - 1e-9) + 1
        return abs(ticks - count), -step

    return min(candidates, key=misfit)


def y_ticks(low: float, high: float, count: int = 5) -> list[tuple[float, str]]:
    """Round tick values covering [low, high] with about ``count`` ticks, and their labels."""
    if not high > low:
        high = low + 1.0
    step = _nice_step(low, high, count)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals % 1:  # 2.5, 0.25: one more decimal
        decimals += 1
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [(round(i * step, decimals), f"{i * step:.{decimals}f}") for i in range(first, last + 1)]


def _segments(points: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """Split where readings stopped for well over their usual spacing."""
    if len(points) < 3:
        return [points] if points else []
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    gap_ms = max(60_000, 5 * spacings[len(spacings) // 2])
    segments = [[points[0]]]
    for previous, point in itertools.pairwise(points):
        if point[0] - previous[0] > gap_ms:
            segments.append([])
        segments[-1].append(point)
    return segments


def _clock(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%H:%M")


def line_chart(
    points: Sequence[tuple[int, float]],
    *,
    since_ms: int,
    until_ms: int,
    label: str,
    unit: str = "",
    marks: Sequence[tuple[int, str]] = (),
    limit: float | None = None,
) -> str:
    """An ``<svg>`` element (scales to the page's width) of ``(ts_ms, value)`` points
    between ``since_ms`` and ``until_ms``. ``label`` names the series for screen readers;
    ``unit``, when given, is written above the y axis; ``marks`` are ``(ts_ms, text)``
    vertical lines; ``limit`` a dashed horizontal line."""
    shown = thin([p for p in points if since_ms <= p[0] <= until_ms], since_ms, until_ms)
    values = [v for _, v in shown] + ([limit] if limit is not None else [])
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 0.5)
    ticks = y_ticks(low - pad, high + pad)
    y_low, y_high = min(ticks[0][0], low - pad), max(ticks[-1][0], high + pad)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    span_ms = max(1, until_ms - since_ms)

    def x(ts_ms: int) -> float:
        return _LEFT + (ts_ms - since_ms) / span_ms * plot_w

    def y(value: float) -> float:
        return _TOP + (y_high - value) / (y_high - y_low) * plot_h

    title = f"{label} ({unit})" if unit else label
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg"'
        f' role="img" aria-label="{escape(title)}, {len(points)} readings">',
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for value, text in ticks:
        if y_low <= value <= y_high:
            at = y(value)
            parts.append(f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                         f'y1="{at:.1f}" y2="{at:.1f}"/>')  # fmt: skip
            parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{at + 4:.1f}" '
                         f'text-anchor="end">{escape(text)}</text>')  # fmt: skip
    step_s = next((s for s in _TIME_STEPS_S if span_ms / 1000 / s <= 7), _TIME_STEPS_S[-1])
    tick_ms = -(-since_ms // (step_s * 1000)) * step_s * 1000
    while tick_ms <= until_ms:
        at = x(tick_ms)
        parts.append(f'<text class="tick" x="{at:.1f}" y="{HEIGHT - 8}" '
                     f'text-anchor="middle">{_clock(tick_ms)}</text>')  # fmt: skip
        tick_ms += step_s * 1000
    if limit is not None:
        at = y(limit)
        parts.append(f'<line class="limit" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                     f'y1="{at:.1f}" y2="{at:.1f}"/>')  # fmt: skip
        parts.append(f'<text class="limit-label" x="{WIDTH - _RIGHT - 4}" y="{at - 4:.1f}" '
                     f'text-anchor="end">{limit:g} limit</text>')  # fmt: skip
    for ts_ms, text in marks:
        if since_ms <= ts_ms <= until_ms:
            at = x(ts_ms)
            parts.append(f'<line class="mark" x1="{at:.1f}" x2="{at:.1f}" y1="{_TOP}" '
                         f'y2="{_TOP + plot_h}"/>')  # fmt: skip
            left = at > WIDTH - _RIGHT - 60  # near the right edge: label on the left
            parts.append(f'<text class="mark-label" x="{at - 4 if left else at + 4:.1f}" '
                         f'y="{_TOP + 14}" text-anchor="{"end" if left else "start"}">'
                         f"{escape(text)}</text>")  # fmt: skip
    for segment in _segments(shown):
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in segment)
        if len(segment) == 1:
            t, v = segment[0]
            parts.append(f'<circle class="series" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2"/>')
        else:
            parts.append(f'<polyline class="series" points="{coords}"/>')
    if unit:
        parts.append(f'<text class="axis-title" x="4" y="{_TOP - 5}">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)
