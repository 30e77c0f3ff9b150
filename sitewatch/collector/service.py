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
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.detection import Detection
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.ingest import Ingest
from sitewatch.collector.lineproto import SensorCatalog, collector_delivery_line, delivery_line
from sitewatch.collector.metrics import MetricsServer, write_snapshot
from sitewatch.collector.mqtt import BrokerSession, SessionOptions
from sitewatch.collector.protocols import Sink
from sitewatch.collector.sinks import build_sink
from sitewatch.collector.spool import Spool
from sitewatch.collector.tracking import SeqTracker
from sitewatch.collector.writer import Writer

__all__ = ["STATUS_FILE", "Collector"]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
_TRACKER_FILE = "tracking.json"
_CATALOG_FILE = "catalog.json"
_DETECTION_FILE = "detection.json"
_SNAPSHOT_INTERVAL_S = 1.0


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
        tracker_state = _load_json(self.state_dir / _TRACKER_FILE)
        catalog_state = _load_json(self.state_dir / _CATALOG_FILE)
        self.tracker = SeqTracker.from_json(tracker_state) if tracker_state else SeqTracker()
        self.catalog = SensorCatalog.from_json(catalog_state) if catalog_state else SensorCatalog()
        self.devices = DeviceStates(config.stale_after_s)
        self.dead_letters = DeadLetters(self.state_dir / "deadletter.jsonl")
        self.sink = sink or build_sink(config.influx)
        self.spool = Spool(
            self.state_dir / "spool.db",
            max_bytes=config.spool.max_bytes,
            max_age_s=config.spool.max_age_s,
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
        if config.detection.enabled:
            self.detection = Detection(
                config.detection,
                self.catalog,
                on_decision=self.alerts.decided if self.alerts is not None else None,
                write_decisions=self.alerts is None,
            )
            detection_state = _load_json(self.state_dir / _DETECTION_FILE)
            if detection_state:
                self.detection.restore(detection_state)
        self.ingest = Ingest(
            self._submit,
            clock=self.clock,
            catalog=self.catalog,
            tracker=self.tracker,
            devices=self.devices,
            dead_letters=self.dead_letters,
            max_future_ms=int(config.max_future_s * 1000),
            detection=self.detection,
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
        self.session = BrokerSession(
            mqtt,
            SessionOptions(
                topics=tuple(mqtt.topics),
                client_id=mqtt.client_id,
                persistent=True,
                manual_ack=True,
                protocol=mqtt.protocol,
                session_expiry_s=mqtt.session_expiry_s,
                max_inflight=mqtt.max_inflight,
            ),
            self.ingest.handle,
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

    def _submit(self, lines: list[str], token: object) -> None:
        self.writer.submit(lines, token)

    # -- status --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every counter, the spool depth and each device's state, as of now."""
        now_ms = int(self.clock.time() * 1000)
        writer = self.writer.stats()
        devices = self.devices.snapshot(now_ms)
        for device in devices:
            counters = self.tracker.counters(device["site"], device["device"]).as_dict()
            counters["stored"] = self.ingest.durable_readings.get(
                (device["site"], device["device"]), 0
            )
            device["counters"] = counters
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
            "spool_depth": writer.spool_lines,
            "spool_batches": writer.spool_batches,
            "unacknowledged": self.ingest.unacknowledged,
            "influx_error": writer.last_error,
            "broker_connected": self.session.connected,
            "devices": devices,
            "detection": None if self.detection is None else {
                "scored_values": self.detection.scored_values,
                "late_values": self.detection.late_values,
                "decisions": self.detection.decisions,
            },
            "alerts": None if self.alerts is None else self.alerts.stats(),
            "updated_ms": now_ms,
        }

    def _write_delivery_counters(self) -> None:
        now_ms = int(self.clock.time() * 1000)
        lines = []
        for site, device in self.tracker.devices():
            counters = self.tracker.counters(site, device).as_dict()
            counters["stored"] = self.ingest.durable_readings.get((site, device), 0)
            lines.append(delivery_line(site, device, counters, now_ms))
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

    def _checkpoint(self) -> None:
        _save_json(self.state_dir / _TRACKER_FILE, self.tracker.to_json())
        _save_json(self.state_dir / _CATALOG_FILE, self.catalog.to_json())

    def _checkpoint_detection(self) -> None:
        if self.detection is not None:
            _save_json(self.state_dir / _DETECTION_FILE, self.detection.to_json())

    def _tick_detection(self, now: float) -> None:
        if now < self._detection_tick_due:
            return
        self._detection_tick_due = now + _SNAPSHOT_INTERVAL_S
        if self.detection is not None:
            lines = self.detection.tick(self.clock.time())
            if lines:
                self.writer.submit(lines, None)
        if self.alerts is not None:
            self.alerts.tick(
                readings_seen=self.ingest.received_readings,
                values_scored=self.detection.scored_values if self.detection else 0,
                broker_generation=self.session.generation,
                broker_connected=self.session.connected,
            )
        if self.detection is None:
            return
        if now >= self._detection_checkpoint_due:
            self._detection_checkpoint_due = now + self.config.detection.checkpoint_interval_s
            self._checkpoint_detection()

    # -- running -------------------------------------------------------------------------
    def _tick(self) -> None:
        self.ingest.release_acks(self.session.ack)
        topic = self.config.mqtt.dead_letter_topic
        self.dead_letters.publish_pending(lambda payload: self.session.publish(topic, payload))
        now = self.clock.monotonic()
        if now >= self._snapshot_due:
            self._snapshot_due = now + _SNAPSHOT_INTERVAL_S
            write_snapshot(self.state_dir / STATUS_FILE, self.snapshot())
        if now >= self._delivery_due:
            self._delivery_due = now + self.config.delivery_interval_s
            self._write_delivery_counters()
            self._checkpoint()
        self._tick_detection(now)
        if self._watchdog_s is not None and now >= self._watchdog_due:
            self._watchdog_due = now + self._watchdog_s
            if self.writer.alive:
                sdnotify.watchdog()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then flush the writer and checkpoint."""
        self.writer.start()
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
            self.session.run(stop, on_tick=self._tick)
        finally:
            sdnotify.stopping()
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
            log.info("collector stopped")
