"""Ingest: every message off the broker is validated, tracked, turned into line protocol and
handed to the writer; it is acknowledged to the broker only once durable.

Runs on the MQTT thread (``handle`` is the session's ``on_message``). For each message:

1. ``wire.parse_message`` validates it against its topic. A bad one is dead-lettered with
   the reason and acknowledged at once: it will never become valid, and it must never block
   the good ones behind it.
2. Status messages update device state and the sensor catalog (labels → tags). An agent's
   ``skip`` moves its confirmations past seqs it will never send; the collector's own
   confirmations (``ack``, which its subscription also matches) are passed over.
3. Data messages are classified by ``(device, boot_id, seq)`` (gaps, duplicates, late) and
   become lines for the writer; duplicates are written again (idempotently) rather than
   trusted to be stored already. Telemetry also goes through detection, whose ``anomaly``
   and ``alerts`` points join the message's lines.
4. The writer reports, from its own thread, which messages are now in InfluxDB or in the
   spool (``mark_durable``); ``release_acks`` (on the MQTT thread) then acknowledges them in
   the order they were received, as MQTT requires for QoS1, and records each data message's
   ``(boot_id, seq)`` as durable for the end-to-end confirmations (``confirm``), dead-lettered
   ones included.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sitewatch.clock import Clock
from sitewatch.collector.confirm import Confirmations, data_identity, is_ack_topic
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.detection import Detection
from sitewatch.collector.detection_worker import DetectionWorker
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.lineproto import SensorCatalog, event_lines, telemetry_lines
from sitewatch.collector.mqtt import Received
from sitewatch.collector.tracking import SeqTracker
from sitewatch.wire import (
    AckMessage,
    EventMessage,
    Message,
    SkipMessage,
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
    boot_id: str = ""
    seq: int = 0  # 0: not a data message (nothing to confirm)


class Ingest:
    """Validates, tracks and forwards messages; acknowledges them in order once durable.

    ``submit(lines, token)`` is the writer's; it may block when the writer is behind, which
    is how backpressure reaches the broker. ``observer`` (optional) sees every valid message
    (Home Assistant's state topics); it runs on the hot path and must stay cheap.
    ``owns_topic`` (optional, with hash partitioning) says whether a message's device is this
    collector's; the others are only acknowledged and counted in ``passed_over``.
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
        detection_worker: DetectionWorker | None = None,
        confirmations: Confirmations | None = None,
        observer: Callable[[Message], None] | None = None,
        owns_topic: Callable[[str], bool] | None = None,
    ) -> None:
        self.submit = submit
        self.clock = clock
        self.catalog = catalog
        self.tracker = tracker
        self.devices = devices
        self.dead_letters = dead_letters
        self.max_future_ms = max_future_ms
        self.detection = detection
        # Detection in its own process: handed each telemetry message's readings, validated
        # here, and status payloads as received.
        self.detection_worker = detection_worker
        self.confirmations = confirmations
        self.observer = observer
        self.owns_topic = owns_topic
        self.passed_over = 0
        self.received_messages = 0
        self.received_readings = 0
        self.invalid_messages = 0
        self.durable_readings: dict[tuple[str, str], int] = {}
        self._pending: deque[Pending] = deque()
        self._lock = threading.Lock()

    # -- MQTT thread ---------------------------------------------------------------------
    def handle(self, received: Received) -> None:
        """Process one message from the broker."""
        if self.owns_topic is not None and not self.owns_topic(received.topic):
            # Another collector's device (hash partitioning, sitewatch.collector.partition):
            # acknowledged in turn with the others, nothing stored, tracked or confirmed.
            self.passed_over += 1
            pending = Pending(received)
            with self._lock:
                self._pending.append(pending)
            self._settled(pending)  # held for its turn to be acknowledged, without its payload
            return
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
            if not received.payload and is_ack_topic(received.topic):
                pending.durable = True  # a cleared confirmation (confirm.enabled: false)
                return
            self.invalid_messages += 1
            self.dead_letters.record(received.topic, error.reason, received.payload)
            identity = data_identity(received.topic, received.payload)
            if identity is not None:
                pending.site, pending.device, pending.boot_id, pending.seq = identity
            self._settled(pending)
            return
        if isinstance(message, AckMessage | SkipMessage):
            if isinstance(message, SkipMessage) and self.confirmations is not None:
                self.confirmations.skip(
                    message.site, message.device, message.boot_id, message.held_from
                )
            self._settled(pending)
            return
        self.devices.observe(message, now_ms)
        if self.observer is not None:
            self.observer(message)
        if isinstance(message, StatusMessage):
            self.catalog.update(message)
            if self.detection_worker is not None:
                self.detection_worker.status(received.payload)
            self._settled(pending)
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
        if self.detection_worker is not None and isinstance(message, TelemetryMessage):
            self.detection_worker.telemetry(message)
        pending.site, pending.device, pending.readings = message.site, message.device, readings
        pending.boot_id, pending.seq = message.boot_id, message.seq
        if lines:
            self.submit(lines, pending)
        else:
            self.mark_durable([pending])

    def _settled(self, pending: Pending) -> None:
        """A message that needs no write (dead-lettered, status, skip, ack) is durable at once.

        Its payload is let go: it may wait behind others for its acknowledgement, up to the
        broker's in-flight window, and a bad payload can be large (up to the broker's
        ``message_size_limit``; beyond ``wire.MAX_PAYLOAD_BYTES`` only its size was looked
        at). A QoS 0 one with no seq to confirm is not held at all: there is nothing to
        acknowledge, and QoS 0 traffic is not bounded by the broker's in-flight window.
        """
        pending.durable = True
        received = pending.message
        if received.qos == 0 and not pending.seq:
            with self._lock:  # it was the last one appended (this thread is the only appender)
                if self._pending and self._pending[-1] is pending:
                    self._pending.pop()
            return
        if received.payload:
            pending.message = replace(received, payload=b"")

    def _lines(self, message: TelemetryMessage | EventMessage) -> list[str]:
        if isinstance(message, TelemetryMessage):
            lines = telemetry_lines(message, self.catalog)
            if self.detection is not None:
                # Scores and decisions ride with the readings: stored, spooled and
                # acknowledged together.
                lines += self.detection.observe(message)
            return lines
        return event_lines(message, self.catalog)

    def release_acks(
        self, ack: Callable[[Received], None], before_ack: Callable[[], None] | None = None
    ) -> int:
        """Acknowledge, in receipt order, every message that is durable; returns how many.

        Their seqs are recorded for the confirmations first, and ``before_ack`` (the
        confirmations' checkpoint) runs before the first PUBACK goes out: a collector that
        crashes then never has acknowledged to the broker a message its checkpoint forgot
        (the broker would not send it again, and the agent would wait for it in vain).
        """
        with self._lock:
            released: list[Pending] = []
            while self._pending and self._pending[0].durable:
                released.append(self._pending.popleft())
        if not released:
            return 0
        confirmations = self.confirmations
        if confirmations is not None:
            recorded = False
            for pending in released:
                if pending.seq:
                    confirmations.durable(
                        pending.site, pending.device, pending.boot_id, pending.seq
                    )
                    recorded = True
            if recorded and before_ack is not None:
                before_ack()
        for pending in released:
            ack(pending.message)
        return len(released)

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
