"""The running collector: broker session → ingest → writer → InfluxDB (or the spool).

Threads: the MQTT thread (``run``'s caller) receives, validates and tracks every message and
releases acknowledgements; the writer thread batches lines to InfluxDB, spools them while it
is away and drains the spool in order when it is back; the metrics thread serves
``/metrics``. Every second the MQTT thread also writes the status file, and every
``delivery_interval_s`` it writes the delivery counters to InfluxDB and checkpoints the
tracker and the sensor catalog to the state dir.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from sitewatch import sdnotify
from sitewatch.atomicfile import write_atomic
from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.runtime import AlertRuntime
from sitewatch.collector.config import CollectorConfig
from sitewatch.collector.confirm import Confirmations, ConfirmStore
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.detection import Detection
from sitewatch.collector.detection_worker import DetectionWorker
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.dropcount import EVENTS, READINGS, points_by_device
from sitewatch.collector.homeassistant_bridge import HomeAssistantBridge
from sitewatch.collector.ingest import Ingest
from sitewatch.collector.lineproto import SensorCatalog, collector_delivery_line, delivery_line
from sitewatch.collector.metrics import MetricsServer, write_snapshot
from sitewatch.collector.mqtt import BrokerSession, Received, SessionOptions
from sitewatch.collector.partition import Partition
from sitewatch.collector.protocols import Sink
from sitewatch.collector.sinks import build_sink
from sitewatch.collector.spool import Spool
from sitewatch.collector.tracking import SeqTracker
from sitewatch.collector.writer import Writer
from sitewatch.wire import Kind, encode, topic, topic_for

__all__ = ["STATUS_FILE", "Collector"]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
_TRACKER_FILE = "tracking.json"
_CATALOG_FILE = "catalog.json"
_DETECTION_FILE = "detection.json"
_CONFIRM_FILE = "confirm.json"  # a readable view; the checkpoint is _CONFIRM_DB
_CONFIRM_DB = "confirm.db"
_SNAPSHOT_INTERVAL_S = 1.0
_ACK_CHECKPOINT_INTERVAL_S = 0.1
"""With confirmations on, PUBACKs go out in rounds at most this often (seconds), each after
one checkpoint of the confirmations (``ConfirmStore.save``)."""


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("ignoring unreadable checkpoint %s", path)
        return None
    return data


def _save_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data).encode())


class Collector:
    """The collector for one config. Build it, then ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self, config: CollectorConfig, *, clock: Clock | None = None, sink: Sink | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # With several collectors, only this one's devices (sitewatch.collector.partition).
        self.partition = Partition(config.mqtt.partition)
        prune = self.partition.prune
        tracker_state = prune(_load_json(self.state_dir / _TRACKER_FILE), _TRACKER_FILE)
        catalog_state = prune(_load_json(self.state_dir / _CATALOG_FILE), _CATALOG_FILE)
        self.tracker = SeqTracker.from_json(tracker_state) if tracker_state else SeqTracker()
        self.catalog = SensorCatalog.from_json(catalog_state) if catalog_state else SensorCatalog()
        self._catalog_saved_revision = -1  # the catalog's revision when last saved
        self.devices = DeviceStates(config.stale_after_s)
        self.dead_letters = DeadLetters(self.state_dir / "deadletter.jsonl")
        self.sink = sink or build_sink(config.influx)
        self.spool = Spool(
            self.state_dir / "spool.db",
            max_bytes=config.spool.max_bytes,
            max_age_s=config.spool.max_age_s,
            count_points=points_by_device,  # per device: produced = stored + dropped
        )
        self.alerts: AlertRuntime | None = None
        if config.alerting is not None and config.alerting.enabled:
            self.alerts = AlertRuntime(
                config.alerting,
                self.state_dir,
                catalog=self.catalog,
                clock=self.clock,
                publish=lambda *args, **kwargs: self.session.publish(*args, **kwargs),
                write_lines=lambda lines: self.writer.submit(lines, None),
                collector_name=config.mqtt.client_id,
                influx=config.influx,
                devices=lambda: self.devices.snapshot(int(self.clock.time() * 1000)),
            )
        self.detection: Detection | None = None
        self.detection_worker: DetectionWorker | None = None
        self.partition.prune_file(self.state_dir / _DETECTION_FILE)  # read by either below
        if config.detection.enabled and config.detection.process:
            self.detection_worker = DetectionWorker(
                config.detection,
                self.state_dir / _DETECTION_FILE,
                self.catalog,
                write_decisions=self.alerts is None,
                on_lines=lambda lines: self.writer.submit(lines, None),
                on_decision=self.alerts.decided if self.alerts is not None else None,
            )
        elif config.detection.enabled:
            self.detection = Detection(
                config.detection,
                self.catalog,
                on_decision=self.alerts.decided if self.alerts is not None else None,
                write_decisions=self.alerts is None,
            )
            detection_state = _load_json(self.state_dir / _DETECTION_FILE)
            if detection_state:
                self.detection.restore(detection_state)
        # End-to-end confirmations to the agents (sitewatch.collector.confirm).
        self.confirmations: Confirmations | None = None
        self.confirm_store: ConfirmStore | None = None
        if config.confirm.enabled:
            self.confirm_store = ConfirmStore(self.state_dir / _CONFIRM_DB)
            self.confirmations = self.confirm_store.load(
                config.confirm.interval_s, keep=self.partition.owns
            )
        self._withdrawn: set[tuple[str, str]] = set()
        self.home_assistant: HomeAssistantBridge | None = None
        if config.home_assistant.enabled:
            self.home_assistant = HomeAssistantBridge(
                config.home_assistant,
                lambda *args, **kwargs: self.session.publish(*args, **kwargs),
                device_states=lambda: self.devices.snapshot(int(self.clock.time() * 1000)),
                open_alerts=self.alerts.store.open_alerts if self.alerts is not None else None,
            )
        self.ingest = Ingest(
            self._submit,
            clock=self.clock,
            catalog=self.catalog,
            tracker=self.tracker,
            devices=self.devices,
            dead_letters=self.dead_letters,
            max_future_ms=int(config.max_future_s * 1000),
            detection=self.detection,
            detection_worker=self.detection_worker,
            confirmations=self.confirmations,
            observer=self.home_assistant.observe if self.home_assistant is not None else None,
            owns_topic=self.partition.owns_topic if self.partition.hashed else None,
        )
        influx = config.influx
        self.writer = Writer(
            self.sink,
            self.spool,
            self.clock,
            batch_size=influx.batch_size,
            flush_interval_s=influx.flush_interval_s,
            retry_min_s=influx.retry_min_s,
            retry_max_s=influx.retry_max_s,
            on_durable=self.ingest.mark_durable,
            on_dead_letter=lambda line, reason: self.dead_letters.record("influx", reason, line),
        )
        mqtt = config.mqtt
        self.session: BrokerSession = BrokerSession(
            mqtt,
            SessionOptions(
                topics=tuple(mqtt.topics),
                client_id=mqtt.client_id,
                qos0_topics=(
                    (config.home_assistant.status_topic,) if self.home_assistant is not None else ()
                ),
                persistent=True,
                manual_ack=True,
                protocol=mqtt.protocol,
                session_expiry_s=mqtt.session_expiry_s,
                max_inflight=mqtt.max_inflight,
                reconnect_min_s=mqtt.reconnect_min_s,
                reconnect_max_s=mqtt.reconnect_max_s,
            ),
            self.ingest.handle if self.home_assistant is None else self._on_message,
        )
        self.metrics: MetricsServer | None = None
        if config.metrics.enabled:
            self.metrics = MetricsServer(config.metrics.host, config.metrics.port, self.snapshot)
        self._snapshot_due = 0.0
        self._delivery_due = 0.0
        self._detection_tick_due = 0.0
        self._detection_checkpoint_due = 0.0
        self._watchdog_s = sdnotify.watchdog_interval_s()
        self._watchdog_due = 0.0
        self._acks_due = 0.0

    def _submit(self, lines: list[str], token: object) -> None:
        self.writer.submit(lines, token)

    def _on_message(self, received: Received) -> None:
        """With Home Assistant on: its status topic goes to the bridge, the rest to ingest."""
        assert self.home_assistant is not None
        if received.topic == self.config.home_assistant.status_topic:
            self.home_assistant.on_status(received.payload)
        else:
            self.ingest.handle(received)

    # -- status --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every counter, the spool depth and each device's state, as of now."""
        now_ms = int(self.clock.time() * 1000)
        writer = self.writer.stats()
        devices = self.devices.snapshot(now_ms)
        spool_dropped = self.spool.dropped_by_device()
        for device in devices:
            device["counters"] = self._device_counters(
                device["site"], device["device"], spool_dropped
            )
        totals = {name: 0 for name in ("received", "duplicates", "gaps", "late")}
        for site, device_name in self.tracker.devices():
            counters = self.tracker.counters(site, device_name).as_dict()
            for name in totals:
                totals[name] += counters[name]
        return {
            **totals,
            "stored": writer.stored_lines,
            "spooled": writer.spooled_lines,
            "dead_lettered": self.dead_letters.count,
            "dropped": writer.dropped_lines,
            "invalid_messages": self.ingest.invalid_messages,
            "passed_over": self.ingest.passed_over,
            "spool_depth": writer.spool_lines,
            "spool_batches": writer.spool_batches,
            "unacknowledged": self.ingest.unacknowledged,
            "influx_error": writer.last_error,
            "broker_connected": self.session.connected,
            "devices": devices,
            "detection": self._detection_stats(),
            "alerts": None if self.alerts is None else self.alerts.stats(),
            "home_assistant": None if self.home_assistant is None else self.home_assistant.stats(),
            "confirmations_published": (
                None if self.confirmations is None else self.confirmations.published
            ),
            "updated_ms": now_ms,
        }

    def _detection_stats(self) -> dict[str, Any] | None:
        worker = self.detection_worker
        if worker is not None:
            return {
                "scored_values": worker.scored_values, "late_values": worker.late_values,
                "decisions": worker.decisions, "process_restarts": worker.restarts,
                "lost_messages": worker.lost_messages,
            }  # fmt: skip
        if self.detection is None:
            return None
        return {
            "scored_values": self.detection.scored_values,
            "late_values": self.detection.late_values,
            "decisions": self.detection.decisions,
        }

    @property
    def _scored_values(self) -> int:
        if self.detection_worker is not None:
            return self.detection_worker.scored_values
        return self.detection.scored_values if self.detection is not None else 0

    def _device_counters(
        self, site: str, device: str, spool_dropped: dict[tuple[str, str, str], int]
    ) -> dict[str, int]:
        """One device's delivery counters: seq tracking, readings stored, and what the
        spool's caps dropped of it (since the spool was created)."""
        counters = self.tracker.counters(site, device).as_dict()
        counters["stored"] = self.ingest.durable_readings.get((site, device), 0)
        counters["dropped"] = spool_dropped.get((site, device, READINGS), 0)
        counters["events_dropped"] = spool_dropped.get((site, device, EVENTS), 0)
        return counters

    def _write_delivery_counters(self) -> None:
        now_ms = int(self.clock.time() * 1000)
        spool_dropped = self.spool.dropped_by_device()
        lines = [
            delivery_line(site, device, self._device_counters(site, device, spool_dropped),
                          now_ms)
            for site, device in self.tracker.devices()
        ]
        writer = self.writer.stats()
        totals = {
            "stored": writer.stored_lines,
            "spooled": writer.spooled_lines,
            "dead_lettered": self.dead_letters.count,
            "dropped": writer.dropped_lines,
            "invalid_messages": self.ingest.invalid_messages,
        }
        lines.append(collector_delivery_line(self.config.mqtt.client_id, totals, now_ms))
        self.writer.submit(lines, None)

    def _withdraw_confirmations(self) -> None:
        """With confirmations off, clear each device's retained one (once per run), so its
        agent stops waiting for them and relies on the broker's PUBACK."""
        for site, device in self.tracker.devices():
            if (site, device) not in self._withdrawn and self.session.connected:
                self.session.publish(topic(site, device, Kind.ACK), b"", qos=1, retain=True)
                self._withdrawn.add((site, device))

    def _checkpoint(self) -> None:
        _save_json(self.state_dir / _TRACKER_FILE, self.tracker.to_json())
        self._checkpoint_confirmations()
        if self.confirmations is not None:
            _save_json(self.state_dir / _CONFIRM_FILE, self.confirmations.to_json())

    def _checkpoint_before_acks(self) -> None:
        self._checkpoint_confirmations()
        self._acks_due = self.clock.monotonic() + _ACK_CHECKPOINT_INTERVAL_S

    def _checkpoint_confirmations(self) -> None:
        """Before PUBACKs go out (``Ingest.release_acks``) and with the other checkpoints."""
        if self.confirm_store is not None and self.confirmations is not None:
            self.confirm_store.save(self.confirmations)
        # Only when it changed: this runs before every round of PUBACKs (ten a second under
        # load), and each save is two fsyncs on the ingest thread.
        if self.catalog.revision != self._catalog_saved_revision:
            _save_json(self.state_dir / _CATALOG_FILE, self.catalog.to_json())
            self._catalog_saved_revision = self.catalog.revision

    def _checkpoint_detection(self) -> None:
        if self.detection_worker is not None:
            self.detection_worker.checkpoint()  # the child writes the same file
        if self.detection is not None:
            write_atomic(self.state_dir / _DETECTION_FILE, self.detection.checkpoint_chunks())

    def _tick_detection(self, now: float) -> None:
        if now < self._detection_tick_due:
            return
        self._detection_tick_due = now + _SNAPSHOT_INTERVAL_S
        if self.detection_worker is not None:
            self.detection_worker.tick(self.clock.time())
        if self.detection is not None:
            lines = self.detection.tick(self.clock.time())
            if lines:
                self.writer.submit(lines, None)
        if self.alerts is not None:
            self.alerts.tick(
                readings_seen=self.ingest.received_readings,
                values_scored=self._scored_values,
                broker_generation=self.session.generation,
                broker_connected=self.session.connected,
            )
        if self.detection is None and self.detection_worker is None:
            return
        if now >= self._detection_checkpoint_due:
            self._detection_checkpoint_due = now + self.config.detection.checkpoint_interval_s
            self._checkpoint_detection()

    # -- running -------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.detection_worker is not None:
            self.detection_worker.flush_due()
        now = self.clock.monotonic()
        if now >= self._acks_due:
            self.ingest.release_acks(self.session.ack, before_ack=self._checkpoint_before_acks)
        topic = self.config.mqtt.dead_letter_topic
        self.dead_letters.publish_pending(lambda payload: self.session.publish(topic, payload))
        if self.confirmations is not None and self.session.connected:
            for ack in self.confirmations.due(now, int(self.clock.time() * 1000)):
                self.session.publish(topic_for(ack), encode(ack), qos=1, retain=True)
        if now >= self._snapshot_due:
            self._snapshot_due = now + _SNAPSHOT_INTERVAL_S
            write_snapshot(self.state_dir / STATUS_FILE, self.snapshot())
        if now >= self._delivery_due:
            self._delivery_due = now + self.config.delivery_interval_s
            self._write_delivery_counters()
            self._checkpoint()
            if self.confirmations is None:
                self._withdraw_confirmations()
        self._tick_detection(now)
        if self.home_assistant is not None:
            self.home_assistant.tick(now, self.session.generation, self.session.connected)
        if self._watchdog_s is not None and now >= self._watchdog_due:
            self._watchdog_due = now + self._watchdog_s
            if self.writer.alive:
                sdnotify.watchdog()

    def _drain(self) -> None:
        """Before disconnecting: store what was received and acknowledge it, so the broker
        does not deliver it again to the next start (counted twice, or dropped twice by a
        full spool)."""
        if self.detection_worker is not None:
            self.detection_worker.stop()  # checkpoints; its last lines go to the writer
        self.writer.stop(timeout_s=self.config.influx.timeout_s + 10.0)
        self.ingest.release_acks(self.session.ack, before_ack=self._checkpoint_confirmations)

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then flush the writer and checkpoint."""
        self.writer.start()
        if self.detection_worker is not None:
            self.detection_worker.start()
        if self.alerts is not None:
            self.alerts.start()
        if self.metrics is not None:
            self.metrics.start()
        sdnotify.ready()
        log.info(
            "collector %s: broker %s:%d, influx %s (%s), state %s",
            self.config.mqtt.client_id,
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.influx.url,
            self.config.influx.api,
            self.state_dir,
        )
        try:
            self.session.run(stop, on_tick=self._tick, on_stop=self._drain)
        finally:
            sdnotify.stopping()
            if self.detection_worker is not None:
                self.detection_worker.stop()  # checkpoints; its last lines go to the writer
            # Longer than one write can take, so a hung InfluxDB request does not cut it short.
            self.writer.stop(timeout_s=self.config.influx.timeout_s + 10.0)
            self._checkpoint()
            self._checkpoint_detection()
            if self.alerts is not None:
                self.alerts.stop()
            write_snapshot(self.state_dir / STATUS_FILE, self.snapshot())
            if self.metrics is not None:
                self.metrics.stop()
            self.sink.close()
            self.spool.close()
            if self.confirm_store is not None:
                self.confirm_store.close()
            log.info("collector stopped")
