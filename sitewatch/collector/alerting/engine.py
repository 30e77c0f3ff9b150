"""The alert engine: detection's decisions in, one alert per problem out, with its
lifecycle, escalation, reminders, silences and a self-check.

``decided(decision)`` (the ``DecisionSink``) runs on the collector's ingest thread for every
fire/resolve decision; ``tick()`` runs about once a second on the same thread and moves
time-driven things along: pending → firing, escalation, reminders, silence expiry, held-back
"resolved" messages, the self-check, and the effects of acks, resolves and silences made by
the CLI or the web page. Neither blocks: the store is a local SQLite file (a few small
transactions per decision) and notifications only go into the dispatcher's queue
(``submit``), which sends them on its own thread and reports each outcome back through
``on_notify_result``.

One alert per problem: decisions share an alert when they share (site, device, sensor,
rule); each firing (field, detector) pair is a condition, and the alert resolves by itself
when its last condition clears.

When people are told (pages): when an alert starts firing (at once, or after the route's
``pending_s``), when it escalates (unacknowledged ``escalate_after_s`` at a level: the next
level is told), as a reminder (still firing, unacknowledged, ``renotify_interval_s`` after
the last message), when a silence ends with the problem still there, and, with
``notify_resolved``, when it cleared (held ``resolve_quiet_s``). A problem that clears and
comes back before people could believe it over (within ``renotify_interval_s`` of the last
message, or while the "resolved" message is still held) continues the same alert without
a message, so a flapping signal pages once. Machine channels (MQTT, Alertmanager) get every
state change, through notifications without recipients.

Nothing lives only in memory: every step reads and writes the store, so an ack from the CLI
is seen at the next tick, and a new engine on the same file carries on without sending
anything twice. Every transition is also written as an ``alerts`` point (``write_lines``).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.config import AlertingConfig
from sitewatch.collector.alerting.lines import alert_line
from sitewatch.collector.alerting.message import ack_url
from sitewatch.collector.alerting.model import (
    INTERNAL_SITE,
    SEVERITY_RANK,
    Alert,
    AlertState,
    AuditAction,
    AuditEntry,
    Contact,
    Notification,
    NotificationKind,
)
from sitewatch.collector.alerting.routing import Route, Router, Target
from sitewatch.collector.alerting.selfcheck import Finding, SelfCheck
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision

__all__ = [
    "DETECTION_ACTOR",
    "ENGINE_ACTOR",
    "INTERNAL_SITE",
    "AlertEngine",
    "Dispatcher",
]

log = logging.getLogger(__name__)

DETECTION_ACTOR = "detection"
"""``resolved_by`` and audit actor when detection fired or cleared a condition."""
ENGINE_ACTOR = "engine"
"""Audit actor of time-driven steps (escalation, reminders, silence expiry)."""
SELF_CHECK_RULE = "self-check"


class Dispatcher(Protocol):
    """What the engine needs from ``notify.Dispatcher``: queue a notification, return at
    once (False when it was dropped)."""

    def submit(self, notification: Notification) -> bool: ...


@dataclass(frozen=True)
class _Problem:
    """A condition of a problem: what a decision (or the self-check) says."""

    site: str
    device: str
    sensor: str
    rule: str
    condition: str
    severity: str
    audience: str
    message: str
    value: float | None
    predicted_breach_s: float | None
    labels: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}/{self.sensor}/{self.rule}"

    @property
    def target(self) -> Target:
        return Target(self.site, self.device, self.sensor, self.rule, self.severity,
                      self.audience, self.labels)  # fmt: skip


@dataclass
class _Effects:
    """What one step produced, sent once its transaction has committed."""

    lines: list[str] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


def _more_severe(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 9) <= SEVERITY_RANK.get(b, 9) else b


class AlertEngine:
    """The alert lifecycle for one collector; see the module docstring.

    Parameters
    ----------
    config
        The ``alerting`` section (routes, teams, timings, self-check).
    store
        The alert database (``AlertStore.in_state_dir(state_dir)``); the caller closes it.
    dispatcher
        Takes notifications (``submit``); None sends nothing (state, audit and lines only).
        May be set later through the ``dispatcher`` attribute, before the first decision.
    write_lines
        Receives the ``alerts`` points of every transition (line protocol), e.g. the
        collector's writer; None drops them.
    catalog
        Labels per sensor (zone, equipment) for routing and messages; None: no labels.
    clock
        Wall time for every timestamp (``clock.time()``); inject a ``FakeClock`` in tests.
    router
        Routes and contacts; built from ``config`` when None.
    collector_name
        The ``device`` of self-check alerts (site ``_collector``).
    """

    def __init__(
        self,
        config: AlertingConfig,
        store: AlertStore,
        *,
        dispatcher: Dispatcher | None = None,
        write_lines: Callable[[list[str]], None] | None = None,
        catalog: SensorCatalog | None = None,
        clock: Clock | None = None,
        router: Router | None = None,
        collector_name: str = "collector",
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.write_lines = write_lines
        self.catalog = catalog
        self.clock: Clock = clock or SystemClock()
        self.router = router or Router(config)
        self.collector_name = collector_name
        self._renotify_ms = int(config.renotify_interval_s * 1000)
        self._quiet_ms = int(config.resolve_quiet_s * 1000)
        self.self_check = SelfCheck(config.self_check, started_s=self.clock.time())
        # Counters since start (status and metrics).
        self.pages: dict[str, int] = {}
        self.dropped = 0
        self.store_errors = 0

    # -- inputs ---------------------------------------------------------------------------
    def decided(self, decision: Decision) -> None:
        """Take one decision (``DecisionSink``); ingest thread."""
        now_ms = self._now_ms()
        self.self_check.note_evaluated(now_ms / 1000)
        problem = self._problem(decision)
        if decision.verdict == "fire":
            self._step(lambda effects: self._fire(problem, now_ms, effects))
        else:
            self._step(lambda effects: self._clear(problem, now_ms, effects))

    def note_evaluated(self, now_s: float) -> None:
        """Detection evaluated at least one rule at ``now_s`` (wall s). Cheap enough for
        every reading: it only stores the time."""
        self.self_check.note_evaluated(now_s)

    def note_reading(self, now_s: float) -> None:
        """A reading arrived at ``now_s`` (wall s): the self-check's "readings flow"."""
        self.self_check.note_reading(now_s)

    def on_notify_result(self, alert_id: str, channel: str, ok: bool, error: str | None) -> None:
        """The dispatcher's ``on_result``: an audit row per attempt, and the consecutive
        failures per channel the self-check watches. Dispatcher thread; never raises for
        a store problem."""
        self.self_check.note_result(channel, ok, error)
        entry = AuditEntry(
            alert_id, self._now_ms(), "notify" if ok else "notify_failed", channel, error
        )
        try:
            self.store.add_audit(entry)
        except sqlite3.Error:
            self.store_errors += 1
            log.exception("cannot record the outcome of a notification for alert %s", alert_id)

    def tick(self, now_s: float | None = None) -> None:
        """Move time-driven things along; call about once a second. ``now_s``: wall time
        (``clock.time()``, the default), not the monotonic clock."""
        now_ms = self._now_ms() if now_s is None else int(now_s * 1000)
        self._step(lambda effects: self._tick(now_ms, effects))

    def resync(self) -> int:
        """Send every open alert that fired to the machine channels again (``update``, no
        recipients), e.g. at start-up: MQTT and Alertmanager then match the store even if
        acks or resolves happened while the collector was down. Tells no one; returns how
        many were sent."""
        try:
            alerts = [a for a in self.store.open_alerts() if a.fired_ms is not None]
        except sqlite3.Error:
            self.store_errors += 1
            log.exception("alert store failed; cannot resync the machine channels")
            return 0
        effects = _Effects()
        for alert in alerts:
            self._notify(alert, "update", effects)
        for notification in effects.notifications:
            self._submit(notification)
        return len(alerts)

    def stats(self) -> dict[str, Any]:
        """Counters for status and metrics: open alerts per state, pages per kind, dropped
        notifications, store errors, consecutive failures per channel."""
        failures = self.self_check.failures()
        try:
            open_alerts: dict[str, int] | None = self.store.counts()
        except sqlite3.Error:
            open_alerts = None
        return {
            "open": open_alerts,
            "pages": dict(self.pages),
            "dropped": self.dropped,
            "store_errors": self.store_errors,
            "channel_failures": failures,
        }

    # -- steps ----------------------------------------------------------------------------
    def _step(self, body: Callable[[_Effects], None]) -> None:
        """Run ``body`` in one transaction; its lines and notifications go out only once it
        committed. A store failure is logged and counted, never raised into ingestion."""
        effects = _Effects()
        try:
            with self.store.transaction():
                body(effects)
        except sqlite3.Error:
            self.store_errors += 1
            log.exception("alert store failed; this step's alert changes are lost")
            return
        if effects.lines and self.write_lines is not None:
            self.write_lines(effects.lines)
        for notification in effects.notifications:
            self._submit(notification)

    def _submit(self, notification: Notification) -> None:
        if self.dispatcher is None:
            return
        if self.dispatcher.submit(notification):
            return
        self.dropped += 1
        log.warning("alert %s: %s notification dropped (dispatcher queue full)",
                    notification.alert.id, notification.kind)  # fmt: skip
        try:
            self.store.add_audit(AuditEntry(
                notification.alert.id, self._now_ms(), "notify_dropped", "dispatcher",
                f"{notification.kind}: queue full",
            ))  # fmt: skip
        except sqlite3.Error:
            self.store_errors += 1
            log.exception("cannot record a dropped notification")

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _problem(self, decision: Decision) -> _Problem:
        labels: Mapping[str, str] = {}
        if self.catalog is not None:
            entry = self.catalog.get(decision.site, decision.device, decision.sensor)
            if entry is not None:
                labels = entry.labels
        return _Problem(
            site=decision.site, device=decision.device, sensor=decision.sensor,
            rule=decision.rule, condition=f"{decision.field}/{decision.detector}",
            severity=decision.severity, audience=decision.audience, message=decision.message,
            value=decision.value, predicted_breach_s=decision.predicted_breach_s, labels=labels,
        )  # fmt: skip

    def _record(
        self,
        alert: Alert,
        action: AuditAction,
        actor: str,
        now_ms: int,
        effects: _Effects,
        comment: str | None = None,
    ) -> None:
        """Store the alert, its audit row and its ``alerts`` point."""
        self.store.save(alert)
        self.store.add_audit(AuditEntry(alert.id, now_ms, action, actor, comment, alert.state))
        effects.lines.append(alert_line(alert, action=action, actor=actor, ts_ms=now_ms))

    def _page(
        self,
        alert: Alert,
        kind: NotificationKind,
        recipients: tuple[Contact, ...],
        now_ms: int,
        effects: _Effects,
    ) -> Alert:
        """Tell people (and the machine channels); the alert as stored, with the message
        counted. The time is stored before the send, so a crash cannot send it twice."""
        if recipients:
            alert = replace(alert, last_notified_ms=now_ms, notify_count=alert.notify_count + 1)
            self.pages[kind] = self.pages.get(kind, 0) + 1
        self.store.save(alert)
        self._notify(alert, kind, effects, recipients)
        return alert

    def _notify(
        self,
        alert: Alert,
        kind: NotificationKind,
        effects: _Effects,
        recipients: tuple[Contact, ...] = (),
    ) -> None:
        url = ack_url(self.config.public_url, alert.id)
        effects.notifications.append(Notification(kind, alert, recipients, url))

    # -- decisions --------------------------------------------------------------------------
    def _fire(self, problem: _Problem, now_ms: int, effects: _Effects) -> None:
        alert = self.store.open_by_key(problem.key)
        if alert is not None:
            self._add_condition(alert, problem, now_ms, effects)
            return
        latest = self.store.latest_by_key(problem.key)
        if latest is not None and self._reopens(latest, now_ms):
            self._reopen(latest, problem, now_ms, effects)
            return
        route = self.router.route(problem.target)
        firing = route.pending_s <= 0
        alert = Alert(
            id=secrets.token_hex(6), key=problem.key, site=problem.site,
            device=problem.device, sensor=problem.sensor, rule=problem.rule,
            severity=problem.severity, audience=problem.audience, labels=problem.labels,
            state=AlertState.FIRING if firing else AlertState.PENDING,
            message=problem.message, value=problem.value, limit=None,
            predicted_breach_s=problem.predicted_breach_s,
            conditions=frozenset({problem.condition}), created_ms=now_ms, updated_ms=now_ms,
            fired_ms=now_ms if firing else None, level_since_ms=now_ms,
        )  # fmt: skip
        self.store.insert(alert)
        comment = None if firing else f"pending for {route.pending_s:g} s"
        self._record(alert, "fire", DETECTION_ACTOR, now_ms, effects, comment)
        if firing:
            self._page(alert, "firing", route.contacts(0), now_ms, effects)

    def _add_condition(
        self, alert: Alert, problem: _Problem, now_ms: int, effects: _Effects
    ) -> None:
        updated = replace(
            alert,
            conditions=alert.conditions | {problem.condition},
            severity=_more_severe(alert.severity, problem.severity),
            message=problem.message,
            value=problem.value,
            predicted_breach_s=problem.predicted_breach_s,
            updated_ms=now_ms,
        )
        self._record(updated, "update", DETECTION_ACTOR, now_ms, effects,
                     f"{problem.condition} firing")  # fmt: skip
        if updated.fired_ms is not None:
            self._notify(updated, "update", effects)

    def _reopens(self, latest: Alert, now_ms: int) -> bool:
        """Whether a problem coming back continues its last alert (see the module
        docstring): only after it cleared by itself, and only while people could still
        believe it is on."""
        if latest.state != AlertState.RESOLVED or latest.resolved_by != DETECTION_ACTOR:
            return False
        assert latest.resolved_ms is not None
        if self.config.notify_resolved:
            if latest.resolve_message_due_ms is not None:
                return True  # the "resolved" message has not gone out yet
            if latest.last_notified_ms is not None:
                return False  # people were told it cleared: this is news
            return now_ms - latest.resolved_ms < self._quiet_ms
        since_ms = latest.last_notified_ms
        if since_ms is None:
            since_ms = latest.resolved_ms
        return now_ms - since_ms < self._renotify_ms

    def _reopen(self, latest: Alert, problem: _Problem, now_ms: int, effects: _Effects) -> None:
        silenced = latest.silenced_until_ms is not None and latest.silenced_until_ms > now_ms
        if silenced:
            state = AlertState.SILENCED
        elif latest.fired_ms is None:
            state = AlertState.PENDING
        else:
            state = AlertState.FIRING
        alert = replace(
            latest, state=state, conditions=frozenset({problem.condition}),
            severity=problem.severity, message=problem.message, value=problem.value,
            predicted_breach_s=problem.predicted_breach_s, updated_ms=now_ms,
            resolved_ms=None, resolved_by=None, acked_by=None, acked_ms=None,
            level_since_ms=now_ms, resolve_message_due_ms=None,
        )  # fmt: skip
        self._record(alert, "fire", DETECTION_ACTOR, now_ms, effects,
                     "came back: reopened without a new message")  # fmt: skip
        if state == AlertState.FIRING and alert.last_notified_ms is None:
            # Nobody was told the first time (it was silenced throughout): tell them now.
            route = self.router.route(alert)
            self._page(alert, "firing", route.contacts(alert.escalation_level), now_ms, effects)
        elif state != AlertState.PENDING:
            self._notify(alert, "firing", effects)

    def _clear(self, problem: _Problem, now_ms: int, effects: _Effects) -> None:
        alert = self.store.open_by_key(problem.key)
        if alert is None or problem.condition not in alert.conditions:
            return  # resolved by hand already, or fired before this store existed
        remaining = alert.conditions - {problem.condition}
        if remaining:
            updated = replace(alert, conditions=remaining, updated_ms=now_ms)
            self._record(updated, "update", DETECTION_ACTOR, now_ms, effects,
                         f"{problem.condition} cleared")  # fmt: skip
            return
        self._auto_resolve(alert, now_ms, effects)

    def _auto_resolve(self, alert: Alert, now_ms: int, effects: _Effects) -> None:
        tell = self.config.notify_resolved and alert.last_notified_ms is not None
        resolved = replace(
            alert, state=AlertState.RESOLVED, conditions=frozenset(), resolved_ms=now_ms,
            resolved_by=DETECTION_ACTOR,
            resolve_message_due_ms=now_ms + self._quiet_ms if tell else None,
        )  # fmt: skip
        self._record(resolved, "auto_resolve", DETECTION_ACTOR, now_ms, effects)
        if alert.fired_ms is None:
            return  # never left pending: nobody, not even a machine channel, heard of it
        if tell and self._quiet_ms == 0:
            route = self.router.route(resolved)
            done = replace(resolved, resolve_message_due_ms=None)
            self._page(done, "resolved", route.contacts_through(alert.escalation_level),
                       now_ms, effects)  # fmt: skip
        else:
            self._notify(resolved, "resolved", effects)

    # -- time -----------------------------------------------------------------------------
    def _tick(self, now_ms: int, effects: _Effects) -> None:
        self._apply_external(effects)
        for alert in self.store.open_alerts():
            self._advance(alert, now_ms, effects)
        for alert in self.store.resolve_messages_due(now_ms):
            route = self.router.route(alert)
            done = replace(alert, resolve_message_due_ms=None)
            self._page(done, "resolved", route.contacts_through(alert.escalation_level),
                       now_ms, effects)  # fmt: skip
        self._self_check(now_ms, effects)

    def _advance(self, alert: Alert, now_ms: int, effects: _Effects) -> None:
        route = self.router.route(alert)
        since_ms = alert.level_since_ms if alert.level_since_ms is not None else alert.created_ms
        if alert.state == AlertState.PENDING:
            if now_ms - since_ms >= int(route.pending_s * 1000):
                firing = replace(alert, state=AlertState.FIRING, fired_ms=now_ms,
                                 level_since_ms=now_ms)  # fmt: skip
                self._record(firing, "fire", ENGINE_ACTOR, now_ms, effects,
                             "still there after the pending time")  # fmt: skip
                self._page(firing, "firing", route.contacts(0), now_ms, effects)
            return
        if alert.state == AlertState.SILENCED:
            if alert.silenced_until_ms is not None and alert.silenced_until_ms <= now_ms:
                self._unsilence(alert, route, now_ms, effects)
            return
        if alert.state != AlertState.FIRING:
            return
        escalate_ms = None if route.escalate_after_s is None else route.escalate_after_s * 1000
        if (
            escalate_ms is not None
            and alert.escalation_level < route.last_level
            and now_ms - since_ms >= escalate_ms
        ):
            level = alert.escalation_level + 1
            escalated = replace(alert, escalation_level=level, level_since_ms=now_ms)
            self._record(escalated, "escalate", ENGINE_ACTOR, now_ms, effects,
                         f"unacknowledged for {(now_ms - since_ms) / 1000:.0f} s: level "
                         f"{level + 1}")  # fmt: skip
            self._page(escalated, "escalation", route.contacts(level), now_ms, effects)
        elif (
            alert.last_notified_ms is not None
            and now_ms - alert.last_notified_ms >= self._renotify_ms
        ):
            self.store.add_audit(AuditEntry(alert.id, now_ms, "remind", ENGINE_ACTOR,
                                            None, alert.state))  # fmt: skip
            self._page(alert, "reminder", route.contacts_through(alert.escalation_level),
                       now_ms, effects)  # fmt: skip

    def _unsilence(self, alert: Alert, route: Route, now_ms: int, effects: _Effects) -> None:
        acked = alert.acked_by is not None
        state = AlertState.ACKNOWLEDGED if acked else AlertState.FIRING
        if alert.fired_ms is None and not acked:
            state = AlertState.PENDING
        back = replace(alert, state=state, silenced_until_ms=None, level_since_ms=now_ms)
        self._record(back, "unsilence", ENGINE_ACTOR, now_ms, effects, "the silence ended")
        if state == AlertState.FIRING:
            self._page(back, "firing", route.contacts_through(back.escalation_level),
                       now_ms, effects)  # fmt: skip
        elif back.fired_ms is not None:
            self._notify(back, "update", effects)

    def _apply_external(self, effects: _Effects) -> None:
        """Lines and machine-channel updates for what the CLI or the web page changed."""
        entries = self.store.unemitted()
        for entry in entries:
            alert = self.store.get(entry.alert_id)
            if alert is None:
                continue
            as_then = alert if entry.state is None else replace(alert, state=entry.state)
            effects.lines.append(
                alert_line(as_then, action=entry.action, actor=entry.actor, ts_ms=entry.ts_ms)
            )
            if alert.fired_ms is not None and entry.action in ("ack", "silence", "resolve"):
                self._notify(as_then, "resolved" if entry.action == "resolve" else "update",
                             effects)  # fmt: skip
        self.store.mark_emitted(entry.id for entry in entries if entry.id is not None)

    # -- self-check -----------------------------------------------------------------------
    def _self_check(self, now_ms: int, effects: _Effects) -> None:
        for finding in self.self_check.findings(now_ms / 1000):
            self._internal(finding, now_ms, effects)

    def _internal(self, finding: Finding, now_ms: int, effects: _Effects) -> None:
        problem = _Problem(
            site=INTERNAL_SITE, device=self.collector_name, sensor=finding.sensor,
            rule=SELF_CHECK_RULE, condition=finding.condition, severity="warning",
            audience="installer", message=finding.message, value=finding.value,
            predicted_breach_s=None, labels={},
        )  # fmt: skip
        alert = self.store.open_by_key(problem.key)
        active = alert is not None and finding.condition in alert.conditions
        if finding.firing and not active:
            log.warning("self-check: %s", finding.message)
            self._fire(problem, now_ms, effects)
        elif finding.cleared and active:
            self._clear(problem, now_ms, effects)

