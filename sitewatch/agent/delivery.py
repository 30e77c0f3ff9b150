"""Moves outbox rows to the broker and deletes them on PUBACK.

Runs entirely on the MQTT network thread (as the link's ``LinkListener``). At each connect
the rows already in the outbox become the *backlog*: they are replayed oldest-first, marked
``historical``, at no more than ``drain_rate_per_s`` messages per second, while rows added
after the connect (*live* data) go out at once, so a long outage does not delay today's
readings behind yesterday's. At most ``max_inflight`` messages wait for a PUBACK at any time.
When the link drops, nothing is assumed delivered: unacknowledged rows are replayed after the
next connect.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from sitewatch.agent.mqtt import MqttLink
from sitewatch.agent.outbox import Outbox, OutboxRow
from sitewatch.clock import Clock

__all__ = ["Delivery"]

log = logging.getLogger(__name__)


def mark_historical(payload: bytes) -> bytes:
    """The same message with ``"historical": true``."""
    message = json.loads(payload)
    message["historical"] = True
    return json.dumps(message, separators=(",", ":")).encode()


class Delivery:
    """Outbox → broker, with a bounded window and a rate-limited backlog replay.

    ``birth`` returns the retained status (topic, payload) published at each connect.
    """

    def __init__(
        self,
        outbox: Outbox,
        clock: Clock,
        *,
        birth: Callable[[], tuple[str, bytes]],
        max_inflight: int = 20,
        drain_rate_per_s: float = 20.0,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.birth = birth
        self.max_inflight = max_inflight
        self.drain_rate_per_s = drain_rate_per_s
        self._inflight: dict[int, int] = {}  # paho mid → outbox row id
        self._acked: list[int] = []
        self._new_rows = threading.Event()
        self._backlog_cursor = 0
        self._backlog_end = 0
        self._live_cursor = 0
        self._tokens = 0.0
        self._tokens_at = 0.0

    def notify(self) -> None:
        """Tell the delivery loop new rows were committed (any thread)."""
        self._new_rows.set()

    # -- LinkListener --------------------------------------------------------------------
    def on_connected(self, link: MqttLink) -> None:
        self._inflight.clear()
        self._backlog_cursor = 0
        self._backlog_end = self.outbox.last_id()
        self._live_cursor = self._backlog_end
        self._tokens = 1.0
        self._tokens_at = self.clock.monotonic()
        topic, payload = self.birth()
        link.publish(topic, payload, retain=True)
        self._new_rows.set()

    def on_disconnected(self) -> None:
        self._inflight.clear()
        self._flush_acks()

    def on_published(self, mid: int) -> None:
        row_id = self._inflight.pop(mid, None)
        if row_id is not None:
            self._acked.append(row_id)

    def on_tick(self, link: MqttLink) -> None:
        self._flush_acks()
        self._send_live(link)
        self._send_backlog(link)

    # -- internals -----------------------------------------------------------------------
    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.ack(acked)

    def _room(self) -> int:
        return self.max_inflight - len(self._inflight)

    def _publish(self, link: MqttLink, row: OutboxRow, historical: bool) -> bool:
        payload = mark_historical(row.payload) if historical else row.payload
        mid = link.publish(row.topic, payload)
        if mid is None:
            return False
        self._inflight[mid] = row.id
        return True

    def _send_live(self, link: MqttLink) -> None:
        if not self._new_rows.is_set() or self._room() <= 0:
            return
        self._new_rows.clear()
        rows = self.outbox.fetch(self._live_cursor, self._room())
        for row in rows:
            if not self._publish(link, row, historical=False):
                self._new_rows.set()
                return
            self._live_cursor = row.id
        if len(rows) and self._room() <= 0:
            self._new_rows.set()  # more may be waiting: look again when the window opens

    def _send_backlog(self, link: MqttLink) -> None:
        if self._backlog_cursor >= self._backlog_end:
            return
        now = self.clock.monotonic()
        burst = max(1.0, self.drain_rate_per_s)
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.drain_rate_per_s)
        self._tokens_at = now
        budget = min(int(self._tokens), self._room())
        if budget <= 0:
            return
        rows = self.outbox.fetch(self._backlog_cursor, budget, up_to_id=self._backlog_end)
        if not rows:
            self._backlog_cursor = self._backlog_end
            return
        for row in rows:
            if not self._publish(link, row, historical=True):
                return
            self._tokens -= 1
            self._backlog_cursor = row.id
