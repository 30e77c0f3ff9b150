"""The collector's only door to paho-mqtt: a broker session that acknowledges on command.

For ingest the session is persistent (MQTT 5 session expiry, or 3.1.1 clean_session=false,
under a fixed client id), subscriptions are made in ``on_connect`` so every reconnect
subscribes again, and acknowledgement is manual: paho does not PUBACK a message until
``ack`` is called, which ingest does only once the message's readings are in InfluxDB or in
the spool. The broker bounds what is in flight (MQTT 5 Receive Maximum, or its
``max_inflight_messages``), so a slow InfluxDB slows delivery instead of filling memory.

Everything runs on the thread that calls ``run``: paho's loop, the ``on_message`` callback
and the ``on_tick`` hook (where ingest releases acknowledgements). That is paho's fastest
mode at QoS1 (research/limits.md 4b) and keeps paho single-threaded.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sitewatch.configfile import BrokerConfig

__all__ = ["BrokerSession", "Received", "SessionOptions"]

log = logging.getLogger(__name__)

_LOOP_TIMEOUT_S = 0.05


@dataclass(frozen=True)
class Received:
    """One message as delivered. ``generation`` counts connections: an acknowledgement for a
    message of an earlier connection is void (the broker redelivers it)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int


@dataclass(frozen=True)
class SessionOptions:
    """How the session behaves; see ``CollectorMqttConfig`` for the meaning of each."""

    topics: tuple[str, ...]
    client_id: str = ""
    qos0_topics: tuple[str, ...] = ()
    """Also subscribed, at QoS 0: messages that need no acknowledgement and are worth nothing
    once missed (Home Assistant's birth)."""
    persistent: bool = True
    manual_ack: bool = True
    protocol: str = "5"
    session_expiry_s: int = 7 * 86400
    max_inflight: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


class BrokerSession:
    """Subscribes and hands every message to ``on_message`` on the ``run`` thread."""

    def __init__(
        self,
        broker: BrokerConfig,
        options: SessionOptions,
        on_message: Callable[[Received], None],
    ) -> None:
        self.broker = broker
        self.options = options
        self.on_message = on_message
        self.connected = False
        self.generation = 0
        self.last_error: str | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        v5 = options.protocol == "5"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            clean_session=None if v5 else not options.persistent,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            manual_ack=options.manual_ack,
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password())
        if broker.tls.enabled:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca_file) if broker.tls.ca_file else None,
                certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
                keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- network thread ------------------------------------------------------------------
    def ack(self, message: Received) -> None:
        """Acknowledge a message (PUBACK); void if it came on an earlier connection."""
        if message.qos > 0 and message.generation == self.generation and self.connected:
            self.client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish if connected; a message published while disconnected is dropped."""
        if self.connected:
            self.client.publish(topic, payload, qos=qos, retain=retain)

    def run(
        self,
        stop: threading.Event,
        on_tick: Callable[[], None] = lambda: None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """Connect, serve and reconnect until ``stop`` is set; ``on_tick`` runs every loop.
        ``on_stop`` runs once ``stop`` is set, while still connected (to store and
        acknowledge what was received, so the broker does not deliver it again)."""
        failures = 0
        while not stop.is_set():
            generation = self.generation
            try:
                self._connect()
            except (OSError, ssl.SSLError, ValueError) as error:
                self._note(f"cannot connect to {self.broker.host}:{self.broker.port}: {error}")
                failures += 1
                stop.wait(self._backoff_s(failures))
                on_tick()
                continue
            while not stop.is_set():
                rc = self.client.loop(timeout=_LOOP_TIMEOUT_S)
                on_tick()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    if rc != MQTTErrorCode.MQTT_ERR_CONN_REFUSED:
                        self._note(f"connection lost ({paho.error_string(rc)})")
                    break
            failures = 0 if self.generation > generation else failures + 1
            self.connected = False
            if not stop.is_set():
                stop.wait(self._backoff_s(failures))
        if self.connected:
            if on_stop is not None:
                on_stop()
                self.client.loop(timeout=_LOOP_TIMEOUT_S)  # send what it acknowledged
            self.client.disconnect()
            self.client.loop(timeout=_LOOP_TIMEOUT_S)
        self.connected = False

    def _backoff_s(self, failures: int) -> float:
        o = self.options
        ceiling = min(o.reconnect_max_s, o.reconnect_min_s * 2 ** min(failures, 16))
        return self._rng.uniform(o.reconnect_min_s / 2, ceiling)

    def _connect(self) -> None:
        o = self.options
        if o.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = o.session_expiry_s if o.persistent else 0
            properties.ReceiveMaximum = o.max_inflight
            self.client.connect(
                self.broker.host,
                self.broker.port,
                self.broker.keepalive_s,
                clean_start=not o.persistent,
                properties=properties,
            )
        else:
            self.client.connect(self.broker.host, self.broker.port, self.broker.keepalive_s)

    def _note(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._note(f"broker refused the connection: {reason_code}")
            return
        self.connected = True
        self.generation += 1
        self.last_error = None
        log.info(
            "connected to %s:%d (session present: %s)",
            self.broker.host,
            self.broker.port,
            flags.session_present,
        )
        client.subscribe(
            [(topic, 1) for topic in self.options.topics]
            + [(topic, 0) for topic in self.options.qos0_topics]
        )

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self.connected:
            self._note(f"disconnected from broker ({reason_code})")
        self.connected = False

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.on_message(
            Received(
                message.topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                bool(message.retain),
                self.generation,
            )
        )
