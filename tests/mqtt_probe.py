"""A test-side MQTT subscriber that records everything it receives on a real broker."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import wait_until


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Probe:
    """Subscribes to ``topic_filter`` at QoS1 and keeps every message.

    ``persistent=True`` uses a fixed client id and a persistent session, so messages
    published while the probe is reconnecting (broker restart) are queued for it.
    """

    def __init__(
        self, host: str, port: int, topic_filter: str = "sitewatch/#", persistent: bool = False
    ) -> None:
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, "the probe's subscription")

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client, userdata, message):  # type: ignore[no-untyped-def]
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), message.qos)
            )

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on_topic_suffix(self, suffix: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
