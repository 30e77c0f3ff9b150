"""Decisions: what detection hands to the alert engine, and how they are stored.

A ``Decision`` says that an alert fires or resolves for one (site, device, sensor, field,
rule, detector), with the value and score behind it, a human message and, for forecasts,
the predicted time to the breach. ``DecisionSink`` is the narrow interface the alert engine
implements; until it exists, decisions are logged and written to InfluxDB's ``alerts``
measurement (``alerts_line``).

``alert_id`` names one alert from firing to resolving (the resolve carries the id of the
fire it ends); ``dedupe_key`` names the condition, the same for every alert it ever raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from sitewatch.collector.escaping import string_field, tag_set

__all__ = ["Decision", "DecisionSink", "alerts_line"]


@dataclass(frozen=True)
class Decision:
    """An alert fires or resolves. ``ts_ms``: the reading (or check) that decided it."""

    verdict: Literal["fire", "resolve"]
    site: str
    device: str
    sensor: str
    field: str
    rule: str
    detector: str
    severity: str
    audience: str
    ts_ms: int
    value: float | None
    score: float
    message: str
    alert_id: str
    predicted_breach_s: float | None = None

    @property
    def dedupe_key(self) -> str:
        return "/".join(
            (self.site, self.device, self.sensor, self.field, self.rule, self.detector)
        )

    @property
    def state(self) -> str:
        return "firing" if self.verdict == "fire" else "resolved"


class DecisionSink(Protocol):
    """Receives every decision, in order, on the collector's ingest thread."""

    def decided(self, decision: Decision) -> None: ...


def alerts_line(decision: Decision) -> str:
    """The ``alerts`` point for a decision (tags: site, device, sensor, field, rule, detector,
    severity, each left out when empty; ``state`` is ``firing`` or ``resolved``; a value or
    predicted breach that is not finite is left out).

    >>> print(alerts_line(Decision("fire", "plant-a", "pi-01", "cold-room", "temperature_c",
    ...     "cold-room", "threshold", "critical", "technician", 1795464000123, 8.4, 1.0,
    ...     "above 8.0 for 10 min", "c0ffee", None)))
    ... # doctest: +NORMALIZE_WHITESPACE
    alerts,detector=threshold,device=pi-01,field=temperature_c,rule=cold-room,sensor=cold-room,\
severity=critical,site=plant-a state="firing",score=1.0,message="above 8.0 for 10 min",\
alert_id="c0ffee",audience="technician",value=8.4 1795464000123
    """
    d = decision
    tags = tag_set((
        ("site", d.site), ("device", d.device), ("sensor", d.sensor), ("field", d.field),
        ("rule", d.rule), ("detector", d.detector), ("severity", d.severity),
    ))  # fmt: skip
    fields = (
        f"state={string_field(d.state)},score={float(d.score)!r},"
        f"message={string_field(d.message)},alert_id={string_field(d.alert_id)},"
        f"audience={string_field(d.audience)}"
    )
    # NaN and infinities have no line-protocol spelling: leave such a field out.
    if d.value is not None and math.isfinite(d.value):
        fields += f",value={float(d.value)!r}"
    if d.predicted_breach_s is not None and math.isfinite(d.predicted_breach_s):
        fields += f",predicted_breach_s={float(d.predicted_breach_s)!r}"
    return f"alerts,{tags} {fields} {d.ts_ms}"
