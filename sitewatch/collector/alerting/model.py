"""The alerting vocabulary every module shares: alert states, the ``Alert`` record, the
audit entries that say who did what, and the ``Notification`` handed to the dispatcher.

An alert is one problem: one (site, device, sensor, rule), its ``key``. Several detectors or
fields of the same rule on the same sensor update the same alert; each firing one is a
*condition* ``"field/detector"``, and the alert resolves by itself only when all of its
conditions have cleared.

States: ``pending`` (decided, held for the route's ``pending_s`` before anyone is told),
``firing``, ``acknowledged`` (someone owns it; lasts until the problem clears), ``resolved``
and ``silenced`` (notifications suppressed until ``silenced_until_ms``, with a reason; if the
problem is still there when the silence ends the alert goes back to firing and notifies).

Times are milliseconds since the Unix epoch, UTC (``*_ms``), like every timestamp that leaves
the process in sitewatch.

>>> alert = Alert(id="c0ffee", key="plant-a/pi-01/cold-room/cold-room", site="plant-a",
...               device="pi-01", sensor="cold-room", rule="cold-room", severity="critical",
...               audience="technician", labels={"zone": "kitchen"}, state=AlertState.FIRING,
...               message="above 8.0 for 10 min", value=8.4, limit=None,
...               predicted_breach_s=None, conditions={"temperature_c/threshold"},
...               created_ms=1795464000000, updated_ms=1795464000000)
>>> alert.is_open, alert.conditions
(True, frozenset({'temperature_c/threshold'}))
>>> Alert.from_dict(alert.to_dict()) == alert
True
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "INTERNAL_SITE",
    "OPEN_STATES",
    "SEVERITY_RANK",
    "Alert",
    "AlertState",
    "AuditAction",
    "AuditEntry",
    "Contact",
    "Notification",
    "NotificationKind",
]


class AlertState(enum.StrEnum):
    """Where an alert is in its life; see the module docstring."""

    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SILENCED = "silenced"


OPEN_STATES = frozenset(
    {AlertState.PENDING, AlertState.FIRING, AlertState.ACKNOWLEDGED, AlertState.SILENCED}
)
"""Every state but ``resolved``: the problem is (still) there."""

INTERNAL_SITE = "_collector"
"""The site of the collector's own (self-check) alerts."""

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
"""Sort key: the most severe first; unknown severities sort last."""


@dataclass(frozen=True)
class Alert:
    """One problem, from the first decision to its resolution (see the module docstring).

    ``id``: short random hex, stable for the alert's life (links, CLI, audit).
    ``key``: ``site/device/sensor/rule``. ``labels``: the sensor's labels from its birth
    (zone, equipment, …). ``value``/``limit``: the latest value behind it and the limit it
    broke, when known. ``predicted_breach_s``: for forecasts, seconds from ``updated_ms`` to
    the predicted crossing. ``conditions``: the ``"field/detector"`` pairs firing now.

    ``created_ms``: the first decision. ``updated_ms``: the latest decision that changed its
    message, value or conditions (not an ack or a silence: those have their own times).
    ``fired_ms``: when it started firing (after ``pending``; None if it never did).
    ``acked_by``/``acked_ms``, ``resolved_by``/``resolved_ms`` (``resolved_by`` is
    ``detection`` when the problem cleared by itself), ``silenced_by``/``silenced_until_ms``/
    ``silence_reason``. ``escalation_level``: 0 for the route's first level;
    ``level_since_ms``: when it reached that level (the escalation timer).
    ``last_notified_ms``/``notify_count``: the latest message to people and how many there
    were (reminders and escalations included). ``resolve_message_due_ms``: when a held-back
    "resolved" message is due (None when none is).
    """

    id: str
    key: str
    site: str
    device: str
    sensor: str
    rule: str
    severity: str
    audience: str
    labels: Mapping[str, str]
    state: AlertState
    message: str
    value: float | None
    limit: float | None
    predicted_breach_s: float | None
    conditions: frozenset[str]
    created_ms: int
    updated_ms: int
    fired_ms: int | None = None
    acked_by: str | None = None
    acked_ms: int | None = None
    resolved_by: str | None = None
    resolved_ms: int | None = None
    silenced_by: str | None = None
    silenced_until_ms: int | None = None
    silence_reason: str | None = None
    escalation_level: int = 0
    level_since_ms: int | None = None
    last_notified_ms: int | None = None
    notify_count: int = 0
    resolve_message_due_ms: int | None = None

    def __post_init__(self) -> None:
        # Accept any iterable/mapping from callers, keep immutable copies (the alert is handed
        # to the dispatcher thread as a snapshot).
        object.__setattr__(self, "conditions", frozenset(self.conditions))
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "state", AlertState(self.state))

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def equipment(self) -> str | None:
        return self.labels.get("equipment") or None

    @property
    def zone(self) -> str | None:
        return self.labels.get("zone") or None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (MQTT payloads, ``--json``, the web page); ``from_dict`` reverses it."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["state"] = str(self.state)
        data["labels"] = dict(self.labels)
        data["conditions"] = sorted(self.conditions)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


AuditAction = Literal[
    "fire",            # opened (pending or firing), reopened, or pending → firing
    "update",          # a condition was added or cleared, or the message/value changed
    "ack",             # someone acknowledged it
    "resolve",         # someone resolved it by hand
    "auto_resolve",    # every condition cleared
    "silence",         # someone silenced it (comment: the reason)
    "unsilence",       # the silence expired
    "escalate",        # unacknowledged too long: sent to the route's next level
    "remind",          # still firing, unacknowledged: reminder sent
    "notify",          # a channel delivered a notification (actor: the channel)
    "notify_failed",   # a channel failed (comment: the error, free of secrets)
    "notify_dropped",  # the dispatcher's queue was full: nothing was sent
]  # fmt: skip


@dataclass(frozen=True)
class AuditEntry:
    """One row of an alert's audit trail: who (``actor``: a person, ``detection``,
    ``engine`` or a channel) did what, when, with what comment; ``state`` is the alert's
    state right after. ``id`` orders the trail (None until stored)."""

    alert_id: str
    ts_ms: int
    action: AuditAction
    actor: str
    comment: str | None = None
    state: AlertState | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "ts_ms": self.ts_ms,
            "action": self.action,
            "actor": self.actor,
            "comment": self.comment,
            "state": None if self.state is None else str(self.state),
        }


@dataclass(frozen=True)
class Contact:
    """A person to notify: ``name``, the ``team`` they were reached through, and their
    ``apprise`` URLs. URLs may hold passwords and tokens: they are left out of ``repr`` so a
    logged contact never leaks one."""

    name: str
    team: str
    apprise: Sequence[str] = field(default=(), repr=False)


NotificationKind = Literal["firing", "escalation", "reminder", "resolved", "update"]
"""``firing``: first news of a problem (or a silence ended with it still there).
``escalation``: unacknowledged too long, sent to the next level. ``reminder``: still firing,
unacknowledged, ``renotify_interval_s`` after the last message. ``resolved``: it cleared.
``update``: the state changed (acknowledged, silenced, reopened): for machine channels (MQTT,
Alertmanager) only, so its ``recipients`` are empty."""


@dataclass(frozen=True)
class Notification:
    """What the engine hands the dispatcher: a ``kind``, a snapshot of the ``alert``, the
    people to tell and the link to acknowledge it.

    Machine channels (MQTT, Alertmanager) follow every notification, so they always hold the
    alert's current state. People are told only through ``recipients``: a notification with
    none (an ``update``, or a ``resolved`` that nobody needs to read) is for the machine
    channels alone, which is how a flapping problem keeps its retained MQTT state right
    without paging anyone twice.
    """

    kind: NotificationKind
    alert: Alert
    recipients: Sequence[Contact] = ()
    ack_url: str | None = None
