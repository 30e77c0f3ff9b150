"""Ingest: every message off the broker is validated, tracked, turned into line protocol and
handed to the writer; it is acknowledged to the broker only once durable.

Runs on the MQTT thread (``handle`` is the session's ``on_message``). For each message:

1. ``wire.parse_message`` validates it against its topic. A bad one is dead-lettered with
   the reason and acknowledged at once: it will never become valid, and it must never block
   the good ones behind it.
2. Status messages update device state and the sensor catalog (labels → tags).
3. Data messages are classified by ``(device, boot_id, seq)`` (gaps, duplicates, late) and
   become lines for the writer; duplicates are written again (idempotently) rather than
   trusted to be stored already. Telemetry also goes through detection, whose ``anomaly``
   and ``alerts`` points join the message's lines.
4. The writer reports, from its own thread, which messages are now in InfluxDB or in the
   spool (``mark_durable``); ``release_acks`` (on the MQTT thread) then acknowledges them in
   the order they were received, as MQTT requires for QoS1.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sitewatch.clock import Clock
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.detection import Detection
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.lineproto import SensorCatalog, event_lines, telemetry_lines
from sitewatch.collector.mqtt import Received
from sitewatch.collector.tracking import SeqTracker
from sitewatch.wire import (
    EventMessage,
    StatusMessage,
    TelemetryMessage,
    WireError,
    parse_message,
)

__all__ = ["Ingest", "Pending"]


@dataclass(eq=False)
class Pending:
    """A received message waiting for its acknowledgement; the writer's token for it."""

    message: Received
    site: str = ""
    device: str = ""
    readings: int = 0
    durable: bool = False


class Ingest:
    """Validates, tracks and forwards messages; acknowledges them in order once durable.

    ``submit(lines, token)`` is the writer's; it may block when the writer is behind, which
    is how backpressure reaches the broker.
    """

    def __init__(
        self,
        submit: Callable[[list[str], object], None],
        *,
        clock: Clock,
        catalog: SensorCatalog,
        tracker: SeqTracker,
        devices: DeviceStates,
        dead_letters: DeadLetters,
        max_future_ms: int,
        detection: Detection | None = None,
    ) -> None:
        self.submit = submit
        self.clock = clock
        self.catalog = catalog
        self.tracker = tracker
        self.devices = devices
        self.dead_letters = dead_letters
        self.max_future_ms = max_future_ms
        self.detection = detection
        self.received_messages = 0
        self.received_readings = 0
        self.invalid_messages = 0
        self.durable_readings: dict[tuple[str, str], int] = {}
        self._pending: deque[Pending] = deque()
        self._lock = threading.Lock()

    # -- MQTT thread ---------------------------------------------------------------------
    def handle(self, received: Received) -> None:
        """Process one message from the broker."""
        self.received_messages += 1
        pending = Pending(received)
        with self._lock:
            self._pending.append(pending)
        now_ms = int(self.clock.time() * 1000)
        try:
            message = parse_message(
                received.topic, received.payload, now_ms=now_ms, max_future_ms=self.max_future_ms
            )
        except WireError as error:
            self.invalid_messages += 1
            self.dead_letters.record(received.topic, error.reason, received.payload)
            pending.durable = True
            return
        self.devices.observe(message, now_ms)
        if isinstance(message, StatusMessage):
            self.catalog.update(message)
            pending.durable = True
            return
        counters = self.tracker.counters(message.site, message.device)
        readings = len(message.readings) if isinstance(message, TelemetryMessage) else 0
        counters.received += readings
        self.received_readings += readings
        if message.historical:
            counters.historical += 1
        # A duplicate is counted but written again all the same: the tracker's checkpoint may
        # be ahead of what reached InfluxDB (a crash between tracking and writing), and
        # writes are idempotent, so rewriting is the safe way to never lose it.
        self.tracker.observe(message.site, message.device, message.boot_id, message.seq)
        lines = self._lines(message)
        pending.site, pending.device, pending.readings = message.site, message.device, readings
        if lines:
            self.submit(lines, pending)
        else:
            self.mark_durable([pending])

    def _lines(self, message: TelemetryMessage | EventMessage) -> list[str]:
        if isinstance(message, TelemetryMessage):
            lines = telemetry_lines(message, self.catalog)
            if self.detection is not None:
                # Scores and decisions ride with the readings: stored, spooled and
                # acknowledged together.
                lines += self.detection.observe(message)
            return lines
        return event_lines(message, self.catalog)

    def release_acks(self, ack: Callable[[Received], None]) -> int:
        """Acknowledge, in receipt order, every message that is durable; returns how many."""
        released = 0
        while True:
            with self._lock:
                if not self._pending or not self._pending[0].durable:
                    return released
                pending = self._pending.popleft()
            ack(pending.message)
            released += 1

    @property
    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- writer thread -------------------------------------------------------------------
    def mark_durable(self, tokens: Sequence[object]) -> None:
        """The writer's report: these messages are in InfluxDB or in the spool."""
        with self._lock:
            for token in tokens:
                if isinstance(token, Pending) and not token.durable:
                    token.durable = True
                    key = (token.site, token.device)
                    self.durable_readings[key] = self.durable_readings.get(key, 0) + token.readings
