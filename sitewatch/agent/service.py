"""The running agent: sensors → readings → outbox → broker, under one supervisor.

Threads, and what each owns:

- one poller thread per periodic sensor runs the sampling policy every ``interval_s`` and
  queues the reading;
- event sources (binary inputs) queue confirmed state changes from their own threads;
- the main loop (``Agent.run``) is the only writer of the outbox: it batches readings into
  telemetry messages (``telemetry.batch_interval_s`` / ``max_readings_per_message``), commits
  events at once, adds the health report every ``health_interval_s``, and pings the systemd
  watchdog only while all of that is working;
- the MQTT network thread (``mqtt.MqttLink``) publishes from the outbox (``delivery.Delivery``).

Every message gets the next ``seq`` of this boot when it is committed, so its identity
``(boot_id, seq)`` never changes however often it is replayed.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from sitewatch import __version__, sdnotify
from sitewatch.agent.config import AgentConfig, config_hash
from sitewatch.agent.confirm import Confirmations
from sitewatch.agent.delivery import Delivery
from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.mqtt import ClientFactory, LinkSettings, MqttLink, paho_client
from sitewatch.agent.outbox import Outbox
from sitewatch.agent.protocols import EventSource, SensorDriver
from sitewatch.agent.sampling import SensorPoller
from sitewatch.agent.sensors import build_driver
from sitewatch.agent.sensors.base import SensorConfig
from sitewatch.agent.sensors.deferred import DeferredDriver
from sitewatch.clock import Clock, SystemClock
from sitewatch.wire import (
    Event,
    EventMessage,
    Health,
    Kind,
    Reading,
    SensorInfo,
    StatusMessage,
    TelemetryMessage,
    encode,
    topic,
)

__all__ = ["Agent"]

log = logging.getLogger(__name__)

_TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_STOP_DRAIN_S = 5.0
"""On a clean stop, how long (seconds) to keep publishing what is still queued and to wait
for the collector's confirmation of it (what stays unconfirmed is sent at the next start)."""


class _Identity(TypedDict):
    site: str
    device: str
    boot_id: str
    seq: int


@dataclass
class _Sensor:
    config: SensorConfig
    driver: SensorDriver
    poller: SensorPoller
    thread: threading.Thread | None = None
    errors: dict[str, int] = field(default_factory=dict)


class Agent:
    """One device's agent. Build it, then ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        hardware: Hardware | None = None,
        client_factory: ClientFactory = paho_client,
        boot_id: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        # Equipment counters are persisted beside the outbox (systemd's StateDirectory).
        self.hardware = hardware or Hardware.from_config(
            config.hardware, clock=self.clock, state_dir=config.outbox.path.parent
        )
        self.boot_id = boot_id or secrets.token_hex(8)
        self.seq = 0
        self.started_monotonic = self.clock.monotonic()
        self._queue: queue.Queue[Reading | Event] = queue.Queue()
        self._stop_sensors = threading.Event()
        self.outbox = Outbox(
            config.outbox.path,
            max_bytes=config.outbox.max_bytes,
            max_age_s=config.outbox.max_age_s,
        )
        self.sensors = self._build_sensors()
        self.confirmations = Confirmations(
            self.outbox,
            self.clock,
            site=config.site,
            device=config.device,
            end_to_end=config.delivery.confirm == "end_to_end",
            timeout_s=config.delivery.confirm_timeout_s,
        )
        self.delivery = Delivery(
            self.outbox,
            self.clock,
            birth=self._birth,
            max_inflight=config.mqtt.max_inflight,
            drain_rate_per_s=config.outbox.drain_rate_per_s,
            confirmations=self.confirmations,
        )
        self.link = MqttLink(
            self._link_settings(), self.delivery, self.clock, client_factory=client_factory
        )

    # -- construction --------------------------------------------------------------------
    def _build_sensors(self) -> list[_Sensor]:
        sensors = []
        try:
            for sensor_config in self.config.sensor_configs():
                driver = self._build_driver(sensor_config)
                poller = SensorPoller(sensor_config, driver, self.clock, self._queue.put)
                sensors.append(_Sensor(sensor_config, driver, poller))
        except BaseException:
            for sensor in sensors:
                sensor.driver.close()
            self.outbox.close()
            raise
        return sensors

    def _build_driver(self, config: SensorConfig) -> SensorDriver:
        try:
            return build_driver(config, self.hardware)
        except SensorFault as error:
            log.error(
                "sensor %s unavailable: %s%s",
                config.id,
                error,
                f" (fix: {error.fix})" if error.fix else "",
            )
            return DeferredDriver(
                config, self.hardware, build_driver, error, retry_s=max(60.0, config.interval_s)
            )

    def _link_settings(self) -> LinkSettings:
        mqtt = self.config.mqtt
        return LinkSettings(
            host=mqtt.host,
            port=mqtt.port,
            client_id=self.config.client_id,
            will_topic=self._topic(Kind.STATUS),
            will_payload=self._status("offline", reason="connection lost"),
            username=mqtt.username,
            password=mqtt.password,
            tls_enabled=mqtt.tls.enabled,
            ca_file=mqtt.tls.ca_file,
            cert_file=mqtt.tls.cert_file,
            key_file=mqtt.tls.key_file,
            keepalive_s=mqtt.keepalive_s,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
            max_inflight=mqtt.max_inflight,
            subscriptions=(
                (self.confirmations.ack_topic,) if self.confirmations.end_to_end else ()
            ),
        )

    def _topic(self, kind: Kind) -> str:
        return topic(self.config.site, self.config.device, kind)

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _status(self, state: str, reason: str | None = None) -> bytes:
        online = state == "online"
        message = StatusMessage(
            site=self.config.site,
            device=self.config.device,
            boot_id=self.boot_id,
            seq=self.seq,
            state="online" if online else "offline",
            ts=self._now_ms(),
            reason=reason,
            agent_version=__version__,
            config_hash=config_hash(self.config) if online else None,
            sensors=[self._sensor_info(s.config) for s in self.sensors] if online else [],
        )
        return encode(message)

    @staticmethod
    def _sensor_info(config: SensorConfig) -> SensorInfo:
        return SensorInfo(
            id=config.id,
            driver=config.driver,
            fields=config.fields(),
            interval_s=config.interval_s,
            labels=dict(config.labels),
        )

    def _birth(self) -> tuple[str, bytes]:
        return self._topic(Kind.STATUS), self._status("online")

    # -- committing messages (main loop only) --------------------------------------------
    def _envelope(self) -> _Identity:
        """The identity every data message carries, with the next ``seq`` of this boot."""
        self.seq += 1
        return {
            "site": self.config.site,
            "device": self.config.device,
            "boot_id": self.boot_id,
            "seq": self.seq,
        }

    def _commit(self, message: TelemetryMessage | EventMessage) -> None:
        kind = Kind.EVENT if isinstance(message, EventMessage) else Kind.TELEMETRY
        self.outbox.add(
            kind.value,
            self._topic(kind),
            encode(message),
            readings=0 if isinstance(message, EventMessage) else len(message.readings),
            events=len(message.events) if isinstance(message, EventMessage) else 0,
            created_ms=self._now_ms(),
            boot_id=message.boot_id,
            seq=message.seq,
        )
        self.delivery.notify()

    def _commit_readings(self, readings: list[Reading], health: Health | None = None) -> None:
        self._commit(TelemetryMessage(**self._envelope(), readings=readings, health=health))

    def _commit_events(self, events: list[Event]) -> None:
        self._commit(EventMessage(**self._envelope(), events=events))

    def health(self) -> Health:
        """The agent's health report as of now."""
        stats = self.outbox.stats()
        synced = _TIMESYNC_FLAG.exists() if _TIMESYNC_FLAG.parent.parent.exists() else None
        return Health(
            ts=self._now_ms(),
            uptime_s=round(self.clock.monotonic() - self.started_monotonic, 3),
            produced=stats.produced,
            acked=stats.acked,
            outbox_messages=stats.pending_messages,
            outbox_readings=stats.pending,
            outbox_bytes=stats.pending_bytes,
            dropped_readings=stats.dropped,
            dropped_events=stats.events_dropped,
            read_errors={s.config.id: dict(s.poller.read_errors) for s in self.sensors},
            time_synced=synced,
        )

    # -- running -------------------------------------------------------------------------
    def _poll_forever(self, sensor: _Sensor) -> None:
        interval_s = sensor.config.interval_s
        next_due = self.clock.monotonic()
        while not self._stop_sensors.is_set():
            self._queue.put(sensor.poller.run_period(self._stop_sensors))
            next_due += interval_s
            now = self.clock.monotonic()
            while next_due <= now:  # a slow period skips its missed slots, never bursts
                next_due += interval_s
            self.clock.sleep(next_due - now, self._stop_sensors)

    def _start_sensors(self) -> None:
        for sensor in self.sensors:
            if isinstance(sensor.driver, EventSource):
                sensor.driver.start_events(self._queue.put)
            sensor.thread = threading.Thread(
                target=self._poll_forever,
                args=(sensor,),
                name=f"poll-{sensor.config.id}",
                daemon=True,
            )
            sensor.thread.start()

    def _stop_sensors_and_close(self) -> None:
        self._stop_sensors.set()
        for sensor in self.sensors:
            if sensor.thread is not None:
                sensor.thread.join(5.0)
        for sensor in self.sensors:
            sensor.driver.close()

    def _healthy(self) -> bool:
        return all(s.thread is None or s.thread.is_alive() for s in self.sensors)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then stop cleanly: flush, say ``offline``, close."""
        telemetry = self.config.telemetry
        self.link.start()
        self._start_sensors()
        sdnotify.ready()
        watchdog_s = sdnotify.watchdog_interval_s()
        batch: list[Reading] = []
        now = self.clock.monotonic()
        batch_due = now + telemetry.batch_interval_s
        health_due = now + telemetry.health_interval_s
        watchdog_due = now if watchdog_s is not None else float("inf")
        try:
            while not stop.is_set():
                now = self.clock.monotonic()
                wait_s = min(batch_due, health_due, watchdog_due) - now
                self._drain_queue(batch, max(0.0, min(wait_s, 0.5)))  # flushes full batches
                now = self.clock.monotonic()
                if now >= batch_due:
                    self._flush(batch)
                    batch_due = now + telemetry.batch_interval_s
                if now >= health_due:
                    self._commit_readings([], health=self.health())
                    health_due = now + telemetry.health_interval_s
                if watchdog_s is not None and now >= watchdog_due:
                    if self._healthy():
                        sdnotify.watchdog()
                    watchdog_due = now + watchdog_s
        finally:
            sdnotify.stopping()
            self._shutdown(batch)

    def _drain_queue(self, batch: list[Reading], wait_s: float) -> None:
        events: list[Event] = []
        try:
            item = self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
            while True:
                if isinstance(item, Reading):
                    batch.append(item)
                    if len(batch) >= self.config.telemetry.max_readings_per_message:
                        self._flush(batch)
                else:
                    events.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if events:
            self._commit_events(events)

    def _flush(self, batch: list[Reading]) -> None:
        if batch:
            self._commit_readings(list(batch))
            batch.clear()

    def _shutdown(self, batch: list[Reading]) -> None:
        self._stop_sensors_and_close()
        self._drain_queue(batch, 0.0)
        self._flush(batch)
        deadline = self.clock.monotonic() + _STOP_DRAIN_S
        while self.link.connected and self.clock.monotonic() < deadline:
            stats = self.outbox.stats()
            if stats.pending_messages == 0:
                break
            self.clock.sleep(0.05)
        self.link.stop(final=(self._topic(Kind.STATUS), self._status("offline", "shutdown")))
        self.outbox.close()
        log.info("agent stopped")
