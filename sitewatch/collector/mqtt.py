"""The collector's only door to paho-mqtt: a subscriber that hands messages to a callback.

Subscriptions are made in ``on_connect``, so every reconnect subscribes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Subscriber"]

log = logging.getLogger(__name__)


class Subscriber:
    """Subscribe to ``topic_filters`` at QoS1 and call ``on_message(topic, payload, retained)``.

    ``run_forever`` runs paho's loop in the calling thread (faster than a background thread
    at QoS1) and reconnects on its own until ``stop`` is called.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filters: list[str],
        on_message: Callable[[str, bytes, bool], None],
        *,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.topic_filters = topic_filters
        self.on_message = on_message
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_paho_message

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        for topic_filter in self.topic_filters:
            client.subscribe(topic_filter, qos=1)

    def _on_paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.on_message(message.topic, bytes(message.payload), bool(message.retain))

    def run_forever(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_forever(retry_first_connection=True)

    def stop(self) -> None:
        self.client.disconnect()
