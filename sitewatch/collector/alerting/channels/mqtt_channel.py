"""``MqttChannel``: each open alert as a retained message, so a dashboard, a PLC or a phone
app that subscribes at any time sees what is wrong right now.

Topic: ``sitewatch/v1/<site>/alerts/<device>/<sensor>/<rule>`` (one per alert, the dedupe key
as topic levels). While the alert is pending, firing, acknowledged or silenced the payload is
the alert as JSON, retained; on resolve an empty retained payload deletes the retained
message (MQTT's way to clear it), so a fresh subscriber sees only open alerts. Subscribe to
``sitewatch/v1/+/alerts/#`` for all of them. The collector's ingest subscription
(``sitewatch/v1/<site>/<device>/<kind>``, five levels) never matches these seven-level topics.

The channel only builds topics and payloads; publishing is the collector's broker session
(only ``collector/mqtt.py`` imports paho), passed in as a callable.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from sitewatch.collector.alerting.model import Alert, Notification
from sitewatch.wire import TOPIC_ROOT

__all__ = ["MqttChannel", "Publish", "alert_payload", "alert_topic"]

_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


class Publish(Protocol):
    """``BrokerSession.publish`` (bind ``qos`` with ``functools.partial`` if wanted); it
    raises when the message cannot be handed to the client."""

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None: ...


def _level(text: str) -> str:
    """One topic level: MQTT's separators and wildcards replaced, never empty."""
    return text.translate(_UNSAFE) or "_"


def alert_topic(alert: Alert) -> str:
    """The alert's retained topic.

    >>> from sitewatch.collector.alerting.model import Alert, AlertState
    >>> alert_topic(Alert(id="c0ffee", key="plant-a/pi-01/cold-room/too-warm", site="plant-a",
    ...     device="pi-01", sensor="cold-room", rule="too-warm", severity="critical",
    ...     audience="technician", labels={}, state=AlertState.FIRING, message="", value=None,
    ...     limit=None, predicted_breach_s=None, conditions=(), created_ms=0, updated_ms=0))
    'sitewatch/v1/plant-a/alerts/pi-01/cold-room/too-warm'
    """
    levels = (alert.site, "alerts", alert.device, alert.sensor, alert.rule)
    return "/".join((TOPIC_ROOT, *(_level(level) for level in levels)))


def alert_payload(notification: Notification) -> dict[str, Any]:
    """The JSON document: ``Alert.to_dict`` (times in epoch ms, UTC) plus the notification's
    ``kind`` and ``ack_url``."""
    return {
        **notification.alert.to_dict(),
        "kind": notification.kind,
        "ack_url": notification.ack_url,
    }


class MqttChannel:
    """Publishes the alert's state: retained JSON while open, an empty retained payload once
    resolved."""

    mirrors_state = True  # every notification; only the newest state matters (see Channel)

    def __init__(self, publish: Publish, *, name: str = "mqtt") -> None:
        self.name = name
        self._publish = publish

    def send(self, notification: Notification) -> None:
        topic = alert_topic(notification.alert)
        if notification.alert.state == "resolved":
            self._publish(topic, b"", retain=True)
            return
        payload = json.dumps(alert_payload(notification), separators=(",", ":"))
        self._publish(topic, payload.encode(), retain=True)
