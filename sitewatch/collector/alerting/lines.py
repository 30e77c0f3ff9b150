"""The ``alerts`` measurement: one InfluxDB point per alert transition, so Grafana shows
alerts beside the readings (an annotation query on ``state``, a table of the latest).

Tags: site, device, sensor, rule, severity (as in ``decisions.alerts_line``, without field
and detector: an alert is one problem, whatever fields and detectors it gathers). Fields:
``state`` (after the transition), ``action`` (what happened: fire, ack, escalate, …),
``message``, ``alert_id``, ``actor`` (who: a person, ``detection`` or ``engine``), and
``value``/``predicted_breach_s`` when known.

For MTTA and MTTR in InfluxQL (which cannot subtract the times of two points), the point of
an acknowledgement carries ``acknowledged_after_s`` and the point of a resolution (by hand or
by itself) ``resolved_after_s``: seconds from when the alert started firing to this point,
as ``report`` measures them; ``mean()`` of each over a period is its MTTA or MTTR. Alerts
that never fired (pending, then cleared) carry neither.

>>> from sitewatch.collector.alerting.model import Alert, AlertState
>>> alert = Alert(id="c0ffee", key="plant-a/pi-01/cold-room/cold-room", site="plant-a",
...               device="pi-01", sensor="cold-room", rule="cold-room", severity="critical",
...               audience="technician", labels={}, state=AlertState.ACKNOWLEDGED,
...               message="above 8.0 for 10 min", value=8.4, limit=None,
...               predicted_breach_s=None, conditions=set(), created_ms=1795463880123,
...               updated_ms=1795463880123, fired_ms=1795463880123)
>>> print(alert_line(alert, action="ack", actor="Ana Lima", ts_ms=1795464000123))
... # doctest: +NORMALIZE_WHITESPACE
alerts,device=pi-01,rule=cold-room,sensor=cold-room,severity=critical,site=plant-a \
state="acknowledged",action="ack",message="above 8.0 for 10 min",alert_id="c0ffee",\
actor="Ana Lima",value=8.4,acknowledged_after_s=120.0 1795464000123
"""

from __future__ import annotations

import math

from sitewatch.collector.alerting.model import Alert
from sitewatch.collector.escaping import string_field, tag_set

__all__ = ["alert_line"]

_RESOLVING = frozenset({"resolve", "auto_resolve"})
"""The actions that resolve an alert (``model.AuditAction``)."""


def alert_line(alert: Alert, *, action: str, actor: str, ts_ms: int) -> str:
    """The ``alerts`` point for ``alert`` right after ``action`` by ``actor`` at ``ts_ms``."""
    tags = tag_set((
        ("site", alert.site), ("device", alert.device), ("sensor", alert.sensor),
        ("rule", alert.rule), ("severity", alert.severity),
    ))  # fmt: skip
    fields = (
        f"state={string_field(str(alert.state))},action={string_field(action)},"
        f"message={string_field(alert.message)},alert_id={string_field(alert.id)},"
        f"actor={string_field(actor)}"
    )
    # NaN and infinities have no line-protocol spelling: leave such a field out.
    if alert.value is not None and math.isfinite(alert.value):
        fields += f",value={float(alert.value)!r}"
    if alert.predicted_breach_s is not None and math.isfinite(alert.predicted_breach_s):
        fields += f",predicted_breach_s={float(alert.predicted_breach_s)!r}"
    if alert.fired_ms is not None:
        after_s = max(0, int(ts_ms) - alert.fired_ms) / 1000
        if action == "ack":
            fields += f",acknowledged_after_s={after_s!r}"
        elif action in _RESOLVING:
            fields += f",resolved_after_s={after_s!r}"
    return f"alerts,{tags} {fields} {int(ts_ms)}"
