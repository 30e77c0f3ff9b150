"""``AlertmanagerChannel``: alerts pushed to a Prometheus Alertmanager (API v2), for teams
that already route, group and silence there.

Each alert is POSTed to ``<url>/api/v2/alerts`` with labels ``alertname`` (the rule),
``site``, ``device``, ``sensor``, ``severity``, ``audience`` and, when the sensor catalog knows
them, ``zone`` and ``equipment``; annotations ``summary`` and ``description`` (the message's
subject and body), ``state`` and ``alert_id``; ``startsAt`` (when it fired) and
``generatorURL`` (the ack link). A resolve sends ``endsAt`` (when it resolved): Alertmanager
then marks it resolved. Labels identify an alert in Alertmanager, so only things that never
change during an alert's life are labels; the state goes in an annotation.

Alertmanager forgets an alert that is not re-sent (after its ``resolve_timeout``, 5 min by
default) and expects clients to repeat every 30 s to 3 min. The channel remembers what it
last posted for each open alert; ``resend_due`` returns the notifications to post again (every
``resend_interval_s``, default 60), and the collector submits them to the dispatcher for this
channel, so the network stays on the dispatcher's thread.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from typing import Any

import urllib3

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.message import render
from sitewatch.collector.alerting.model import Notification
from sitewatch.collector.alerting.notify import DeliveryError, redact_url

__all__ = ["AlertmanagerChannel", "alertmanager_alert", "rfc3339"]


def rfc3339(ts_ms: int) -> str:
    """Epoch milliseconds as the RFC 3339 UTC time the API wants.

    >>> rfc3339(1795464000123)
    '2026-11-23T20:00:00.123Z'
    """
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_alert(notification: Notification, now_ms: int) -> dict[str, Any]:
    """The API v2 ``postableAlert`` for a notification, as of ``now_ms`` (for the text's
    relative times, and ``endsAt`` of a resolved alert whose resolve time is unknown)."""
    alert = notification.alert
    labels = {
        "alertname": alert.rule,
        "site": alert.site,
        "device": alert.device,
        "sensor": alert.sensor,
        "severity": alert.severity,
        "audience": alert.audience,
    }
    labels |= {key: alert.labels[key] for key in ("zone", "equipment") if alert.labels.get(key)}
    text = render(notification, now_ms)
    document: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": text.subject,
            "description": text.body,
            "state": str(alert.state),
            "alert_id": alert.id,
        },
        "startsAt": rfc3339(alert.created_ms),
    }
    if alert.state == "resolved":
        document["endsAt"] = rfc3339(alert.resolved_ms if alert.resolved_ms else now_ms)
    if notification.ack_url:
        document["generatorURL"] = notification.ack_url
    return document


class AlertmanagerChannel:
    """POSTs alerts to the Alertmanager at ``url`` (e.g. ``http://127.0.0.1:9093``).

    ``headers`` are added to every request (e.g. ``Authorization``; never logged).
    ``timeout_s`` bounds connecting and reading (default 10 s). ``resend_interval_s``: how
    often ``resend_due`` returns an open alert again (default 60 s). ``clock`` gives the wall
    time for the text and the monotonic time for re-sends. Failures raise ``DeliveryError``:
    permanent for a 4xx other than 408/429 (Alertmanager refused the document), else
    retryable.
    """

    mirrors_state = True  # every notification; only the newest state matters (see Channel)

    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        resend_interval_s: float = 60.0,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.resend_interval_s = resend_interval_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._clock: Clock = clock or SystemClock()
        self._pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s), retries=False
        )
        self._lock = threading.Lock()
        # alert id → (the last notification posted, monotonic time of that post)
        self._open: dict[str, tuple[Notification, float]] = {}

    def send(self, notification: Notification) -> None:
        """POST the alert; DeliveryError if Alertmanager did not take it."""
        now_ms = int(self._clock.time() * 1000)
        body = json.dumps([alertmanager_alert(notification, now_ms)]).encode()
        where = f"{redact_url(self.url)}/api/v2/alerts"
        try:
            response = self._pool.request(
                "POST", f"{self.url}/api/v2/alerts", body=body, headers=self._headers
            )
        except urllib3.exceptions.HTTPError as error:
            raise DeliveryError(f"{where}: {error}") from None
        if response.status >= 300:
            detail = response.data[:300].decode(errors="replace").strip()
            permanent = 400 <= response.status < 500 and response.status not in (408, 429)
            raise DeliveryError(f"{where}: HTTP {response.status} {detail}", permanent=permanent)
        alert = notification.alert
        with self._lock:
            if alert.state == "resolved":
                self._open.pop(alert.id, None)
            else:
                self._open[alert.id] = (notification, self._clock.monotonic())

    def resend_due(self, now_s: float | None = None) -> list[Notification]:
        """The open alerts last posted ``resend_interval_s`` or more ago (``now_s``: the
        channel clock's monotonic time, default now). Each is marked as posted now, so it is
        returned once per interval even while its re-send waits in the dispatcher's queue.
        Submit them with ``dispatcher.submit(n, channels=[channel.name])``."""
        now = self._clock.monotonic() if now_s is None else now_s
        due: list[Notification] = []
        with self._lock:
            for alert_id, (notification, posted_s) in self._open.items():
                if now - posted_s >= self.resend_interval_s:
                    due.append(notification)
                    self._open[alert_id] = (notification, now)
        return due

    def forget(self, alert_id: str) -> None:
        """Stop re-sending an alert (e.g. deleted from the store without a resolve)."""
        with self._lock:
            self._open.pop(alert_id, None)

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.clear()
