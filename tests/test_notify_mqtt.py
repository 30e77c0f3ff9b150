"""Alert state on MQTT against a real mosquitto (the ``mosquitto`` fixture): retained while
the alert is open, cleared on resolve. Published through the collector's own
``BrokerSession.publish``, as the collector does."""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections.abc import Iterator

import pytest

from sitewatch.collector.alerting.channels.mqtt_channel import MqttChannel, alert_topic
from sitewatch.collector.alerting.model import Alert, AlertState, Notification
from sitewatch.collector.alerting.notify import Dispatcher
from sitewatch.collector.mqtt import BrokerSession, SessionOptions
from sitewatch.configfile import BrokerConfig
from sitewatch.localrun import Mosquitto, wait_until
from tests.mqtt_probe import Probe

T0_MS = 1_795_464_000_000
TOPIC = "sitewatch/v1/plant-a/alerts/pi-01/cold-room/too-warm"
ALL_ALERTS = "sitewatch/v1/+/alerts/#"


def _notification(kind: str, state: AlertState, **changes: object) -> Notification:
    alert = Alert(
        id="c0ffee", key="plant-a/pi-01/cold-room/too-warm", site="plant-a", device="pi-01",
        sensor="cold-room", rule="too-warm", severity="critical", audience="technician",
        labels={"zone": "kitchen"}, state=state, message="above 8.0 for 10 min", value=8.4,
        limit=8.0, predicted_breach_s=None, conditions=frozenset({"temperature_c/threshold"}),
        created_ms=T0_MS, updated_ms=T0_MS,
    )  # fmt: skip
    alert = dataclasses.replace(alert, **changes)  # type: ignore[arg-type]
    return Notification(kind, alert, [], "http://collector.local:8080/alerts/c0ffee")  # type: ignore[arg-type]


@pytest.fixture
def session(mosquitto: Mosquitto) -> Iterator[BrokerSession]:
    """The collector's broker session, connected and running on its own thread."""
    broker = BrokerConfig(host="127.0.0.1", port=mosquitto.port)
    options = SessionOptions(
        topics=("sitewatch/v1/+/+/+",), client_id="collector-test", persistent=False,
        manual_ack=False,
    )  # fmt: skip
    broker_session = BrokerSession(broker, options, on_message=lambda message: None)
    stop = threading.Event()
    thread = threading.Thread(target=broker_session.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: broker_session.connected, 10, "the collector session to connect")
        yield broker_session
    finally:
        stop.set()
        thread.join(10)


def _close(probe: Probe) -> None:
    """Disconnect first: paho's network thread then ends at once instead of at its next
    one-second select timeout."""
    probe.client.disconnect()
    probe.close()


def _retained_now(mosquitto: Mosquitto, session: BrokerSession) -> list[tuple[str, bytes]]:
    """What a fresh subscriber to every alert topic is handed: the retained messages.

    A marker published (not retained) after the subscription is acknowledged reaches the
    subscriber after every retained message the broker queued for it at subscribe time, so
    once the marker is in, the retained ones are all in too; no waiting for absence."""
    probe = Probe("127.0.0.1", mosquitto.port, ALL_ALERTS)
    try:
        marker = "sitewatch/v1/plant-a/alerts/marker/marker/marker"
        session.publish(marker, b"end", qos=1)
        wait_until(lambda: probe.on_topic_suffix("marker/marker/marker"), 10, "the marker")
        return [(m.topic, m.payload) for m in probe.snapshot() if m.retain]
    finally:
        _close(probe)


def test_notify_mqtt_alert_retained_while_open_and_cleared_on_resolve(
    mosquitto: Mosquitto, session: BrokerSession
) -> None:
    channel = MqttChannel(functools.partial(session.publish, qos=1))
    firing = _notification("firing", AlertState.FIRING)
    assert alert_topic(firing.alert) == TOPIC
    # Subscribed throughout: once it has a publish, the broker has processed it, so a fresh
    # subscriber made afterwards sees the retained state it left.
    watcher = Probe("127.0.0.1", mosquitto.port, ALL_ALERTS)

    def broker_has(count: int) -> bool:
        return len(watcher.on_topic_suffix("pi-01/cold-room/too-warm")) >= count

    with Dispatcher([channel]) as dispatcher:
        dispatcher.submit(firing)
        wait_until(lambda: broker_has(1), 10, "the publish")
        [(topic, payload)] = _retained_now(mosquitto, session)
        assert topic == TOPIC
        document = json.loads(payload)
        assert document["id"] == "c0ffee"
        assert document["state"] == "firing"
        assert document["labels"] == {"zone": "kitchen"}
        assert document["conditions"] == ["temperature_c/threshold"]
        assert document["kind"] == "firing"
        assert document["ack_url"] == "http://collector.local:8080/alerts/c0ffee"

        acked = _notification(
            "update", AlertState.ACKNOWLEDGED, acked_by="Ana", acked_ms=T0_MS + 60_000
        )
        dispatcher.submit(acked)
        wait_until(lambda: broker_has(2), 10, "the second publish")
        [(topic, payload)] = _retained_now(mosquitto, session)
        assert (json.loads(payload)["state"], json.loads(payload)["acked_by"]) == (
            "acknowledged",
            "Ana",
        )

        resolved = _notification("resolved", AlertState.RESOLVED, resolved_ms=T0_MS + 120_000)
        dispatcher.submit(resolved)
        wait_until(lambda: broker_has(3), 10, "the clearing publish")
        assert _retained_now(mosquitto, session) == []
    _close(watcher)
    assert dispatcher.stats()["mqtt"].sent == 3
