"""Moves outbox rows to the broker; removes them once delivery is confirmed.

Runs entirely on the MQTT network thread (as the link's ``LinkListener``). At each connect
the rows already in the outbox become the *backlog*: they are replayed oldest-first, marked
``historical``, at no more than ``drain_rate_per_s`` messages per second, while rows added
after the connect (*live* data) go out at once, so a long outage does not delay today's
readings behind yesterday's. At most ``max_inflight`` messages wait for a PUBACK at any time.
When the link drops, nothing is assumed delivered: unacknowledged rows are replayed after the
next connect.

A PUBACK deletes the row only with ``delivery.confirm: broker`` (or in the fallback).
Otherwise the row stays, unconfirmed, until the collector's confirmation covers it
(``sitewatch.agent.confirm``); unconfirmed rows are part of the next connect's backlog, and
rows the policy wants sent again are added to the backlog too. A row published again after
its PUBACK is counted as ``resent``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from sitewatch.agent.confirm import Confirmations
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
    ``confirmations`` decides whether a PUBACK deletes a row or only marks it unconfirmed
    (default: a policy with end-to-end confirmation off, i.e. delete on PUBACK).
    """

    def __init__(
        self,
        outbox: Outbox,
        clock: Clock,
        *,
        birth: Callable[[], tuple[str, bytes]],
        max_inflight: int = 20,
        drain_rate_per_s: float = 20.0,
        confirmations: Confirmations | None = None,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.birth = birth
        self.max_inflight = max_inflight
        self.drain_rate_per_s = drain_rate_per_s
        self.confirmations = confirmations or Confirmations(
            outbox, clock, site="-", device="-", end_to_end=False
        )
        self._inflight: dict[int, int] = {}  # paho mid → outbox row id
        self._acked: list[int] = []
        self._resent = 0
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
        self.confirmations.on_connected()
        topic, payload = self.birth()
        link.publish(topic, payload, retain=True)
        self._new_rows.set()

    def on_disconnected(self) -> None:
        self._inflight.clear()
        self._flush_acks()
        self.outbox.forget_sent()

    def on_published(self, mid: int) -> None:
        row_id = self._inflight.pop(mid, None)
        if row_id is not None:
            self._acked.append(row_id)

    def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        if topic != self.confirmations.ack_topic:
            return
        self._flush_acks()  # PUBACKs first, so the confirmation finds their rows marked
        skip = self.confirmations.on_ack(payload)
        if skip is not None:
            link.publish(*skip)

    def on_tick(self, link: MqttLink) -> None:
        self._flush_acks()
        for boot in self.confirmations.due():
            self._replay_from(boot.first_id)
        self._send_live(link)
        self._send_backlog(link)

    # -- internals -----------------------------------------------------------------------
    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            if self.confirmations.holding:
                self.outbox.hold(acked, at_ms=int(self.clock.time() * 1000))
            else:
                self.outbox.ack(acked)
        if self._resent:
            resent, self._resent = self._resent, 0
            self.outbox.count_resent(resent)

    def _replay_from(self, first_id: int) -> None:
        """Add the rows from ``first_id`` up to the newest one already sent to the backlog."""
        if self._backlog_cursor >= self._backlog_end:
            self._backlog_cursor = first_id - 1
        else:
            self._backlog_cursor = min(self._backlog_cursor, first_id - 1)
        self._backlog_end = max(self._backlog_end, self._live_cursor)

    def _room(self) -> int:
        return self.max_inflight - len(self._inflight)

    def _publish(self, link: MqttLink, row: OutboxRow, historical: bool) -> bool:
        payload = mark_historical(row.payload) if historical else row.payload
        mid = link.publish(row.topic, payload)
        if mid is None:
            return False
        self._inflight[mid] = row.id
        self.outbox.mark_sent(row.id)
        if row.pubacked:
            self._resent += 1
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
        in_flight = set(self._inflight.values())
        for row in rows:
            # A row still waiting for its PUBACK (a resend asked for while it was in flight)
            # is on its way already: publishing it again would only make a duplicate.
            if row.id not in in_flight:
                if not self._publish(link, row, historical=True):
                    return
                self._tokens -= 1
            self._backlog_cursor = row.id
