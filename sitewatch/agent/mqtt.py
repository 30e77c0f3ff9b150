"""The agent's only door to paho-mqtt: one connection, owned by one network thread.

Why not paho's ``loop_start``/``loop_forever`` reconnects: paho's back-off has no jitter (a
fleet of Pis reconnects in lockstep after a broker restart), and paho keeps unacknowledged
QoS1 messages in memory and resends them on its own after a reconnect, which would race with
the outbox replay and double messages. So each connection gets a fresh paho client (callback
API v2, MQTT 3.1.1, clean session), the outbox is the only queue, and reconnects back off with
full jitter between ``reconnect_min_s`` and ``reconnect_max_s``.

All paho calls happen on the network thread. The ``LinkListener`` callbacks run there too,
so the delivery logic can publish without locks around paho. The link subscribes (QoS1) to
``subscriptions`` at every connect: with a clean session nothing else would, and a retained
message on them (the collector's last confirmation) arrives right after.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sitewatch.clock import Clock

__all__ = ["ClientFactory", "LinkListener", "LinkSettings", "MqttLink"]

log = logging.getLogger(__name__)

_CONNACK_TIMEOUT_S = 10.0
_LOOP_TIMEOUT_S = 0.1
_STABLE_CONNECTION_S = 10.0


@dataclass(frozen=True)
class LinkSettings:
    """What the link needs to connect. ``password`` is read at each connect, never logged."""

    host: str
    port: int
    client_id: str
    will_topic: str
    will_payload: bytes
    username: str | None = None
    password: Callable[[], str | None] = lambda: None
    tls_enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_inflight: int = 20
    subscriptions: tuple[str, ...] = ()


class LinkListener(Protocol):
    """What the link tells its owner, always on the network thread."""

    def on_connected(self, link: MqttLink) -> None: ...

    def on_disconnected(self) -> None: ...

    def on_published(self, mid: int) -> None: ...

    def on_tick(self, link: MqttLink) -> None: ...

    def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None: ...


ClientFactory = Callable[[str], Any]
"""Builds a paho client for a client id; tests may pass their own."""


def paho_client(client_id: str) -> paho.Client:
    return paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=paho.MQTTv311,
    )


class MqttLink:
    """Keeps one MQTT connection up and hands its events to a ``LinkListener``."""

    def __init__(
        self,
        settings: LinkSettings,
        listener: LinkListener,
        clock: Clock,
        *,
        client_factory: ClientFactory = paho_client,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.clock = clock
        self.client_factory = client_factory
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.connected = False
        self.last_error: str | None = None
        self._client: Any = None
        self._stop = threading.Event()
        self._final: tuple[str, bytes] | None = None
        self._final_timeout_s = 2.0
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)

    # -- called from other threads -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 5.0) -> None:
        """Publish ``final`` (retained, e.g. status ``offline``) if connected, then disconnect.

        Returns within about ``timeout_s`` seconds; safe to call twice.
        """
        self._final = final
        self._final_timeout_s = max(0.5, timeout_s - 1.0)
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("MQTT network thread did not stop within %.1f s", timeout_s)

    # -- called on the network thread (from listener callbacks) --------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """Queue a QoS1 publish; its message id, or None when the link is down."""
        client = self._client
        if client is None or not self.connected:
            return None
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    # -- the network thread --------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            connected_s = self._connect_and_serve()
            # Only a connection that held resets the back-off: a broker that accepts and then
            # drops the device at once (a duplicate client id, an ACL kick) must not be
            # hammered every reconnect_min_s forever.
            failures = 0 if connected_s >= _STABLE_CONNECTION_S else failures + 1
            if self._stop.is_set():
                break
            ceiling = min(
                self.settings.reconnect_max_s,
                self.settings.reconnect_min_s * 2 ** min(failures, 16),
            )
            delay = self.rng.uniform(self.settings.reconnect_min_s / 2, ceiling)
            log.debug("reconnecting in %.1f s", delay)
            self.clock.sleep(delay, self._stop)

    def _configure(self, client: Any) -> None:
        s = self.settings
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(s.max_inflight)
        client.will_set(s.will_topic, s.will_payload, qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password())
        if s.tls_enabled:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def _connect_and_serve(self) -> float:
        """Connect and serve until the link drops; how long it was up (seconds, 0: never)."""
        client = self.client_factory(self.settings.client_id)
        self._client = client
        established = False
        established_at = 0.0
        try:
            self._configure(client)
            client.connect(self.settings.host, self.settings.port, self.settings.keepalive_s)
            deadline = self.clock.monotonic() + _CONNACK_TIMEOUT_S
            while True:
                if self._stop.is_set():
                    self._say_goodbye(client)
                    break
                rc = client.loop(timeout=_LOOP_TIMEOUT_S)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # CONN_REFUSED follows a refused CONNACK, which _on_connect already
                    # reported with its reason; logging it again would defeat _note_error's
                    # once-per-condition logging (two warnings per retry, forever).
                    if rc != MQTTErrorCode.MQTT_ERR_CONN_REFUSED:
                        self._note_error(f"connection lost ({paho.error_string(rc)})")
                    break
                if self.connected:
                    if not established:
                        established_at = self.clock.monotonic()
                    established = True
                    self.listener.on_tick(self)
                elif established or self.clock.monotonic() > deadline:
                    break
        except (OSError, ssl.SSLError, ValueError) as error:
            self._note_error(
                f"cannot connect to {self.settings.host}:{self.settings.port}: {error}"
            )
        finally:
            if self.connected or established:
                self.connected = False
                self.listener.on_disconnected()
            self._client = None
            _close_socket(client)
        return self.clock.monotonic() - established_at if established else 0.0

    def _say_goodbye(self, client: Any) -> None:
        if not self.connected:
            return
        if self._final is not None:
            topic, payload = self._final
            info = client.publish(topic, payload, qos=1, retain=True)
            deadline = self.clock.monotonic() + self._final_timeout_s
            while not info.is_published() and self.clock.monotonic() < deadline:
                if client.loop(timeout=_LOOP_TIMEOUT_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        client.disconnect()
        client.loop(timeout=_LOOP_TIMEOUT_S)

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    # paho callbacks (network thread)
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._note_error(f"broker refused the connection: {reason_code}")
            return
        self.connected = True
        self.last_error = None
        log.info("connected to %s:%d", self.settings.host, self.settings.port)
        if self.settings.subscriptions:
            client.subscribe([(name, 1) for name in self.settings.subscriptions])
        self.listener.on_connected(self)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self.connected:
            self._note_error(f"disconnected from broker ({reason_code})")
        self.connected = False

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        self.listener.on_published(mid)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.listener.on_message(self, message.topic, bytes(message.payload))


def _close_socket(client: Any) -> None:
    """Close what is left of a connection paho did not close itself (CONNACK timeout)."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
