"""A test-side MQTT subscriber that records everything it receives on a real broker."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sitewatch.localrun import wait_until


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
    ``username``/``password`` log in to a broker without anonymous access; ``ca_file``
    (with ``cert_file``/``key_file`` for a client certificate) connects over TLS, checking the
    broker's host name unless ``check_hostname=False``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str = "sitewatch/#",
        persistent: bool = False,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        check_hostname: bool = True,
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
        # Seconds; paho takes floats (its hints say int), and a test should not wait 1 s.
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(
                ca_certs=str(ca_file),
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
            )
            self.client.tls_insecure_set(not check_hostname)
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
