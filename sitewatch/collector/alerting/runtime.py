"""The alerting side of a running collector, assembled from its config.

``AlertRuntime`` builds the alert store, the engine, the notification channels (apprise,
MQTT alert topics, Alertmanager), the dispatcher and the web page (when enabled), and gives
the collector four calls:
``decided`` (detection's decision sink), ``start``, ``tick`` (about once a second, on the
ingest thread) and ``stop``. The engine works on the ingest thread; every send happens on
the dispatcher's thread, so a slow mail server never holds up ingestion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sitewatch.clock import Clock
from sitewatch.collector.alerting.config import AlertingConfig
from sitewatch.collector.alerting.engine import AlertEngine
from sitewatch.collector.alerting.notify import Channel, Dispatcher
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.alerting.web import AlertWebServer
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.config import InfluxConfig
from sitewatch.collector.decisions import Decision
from sitewatch.collector.influxql import InfluxQuery

__all__ = ["AlertRuntime"]

log = logging.getLogger(__name__)

Publish = Callable[..., None]


class AlertRuntime:
    """Alerting for one collector; see the module docstring.

    ``publish(topic, payload, qos=, retain=)`` is the broker session's publish (for the MQTT
    alert topics); ``write_lines`` hands ``alerts`` points to the writer.
    """

    def __init__(
        self,
        config: AlertingConfig,
        state_dir: Path,
        *,
        catalog: SensorCatalog,
        clock: Clock,
        publish: Publish,
        write_lines: Callable[[list[str]], None],
        collector_name: str,
        influx: InfluxConfig | None = None,
        devices: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        from sitewatch.collector.alerting.channels.alertmanager import AlertmanagerChannel
        from sitewatch.collector.alerting.channels.apprise_channel import AppriseChannel
        from sitewatch.collector.alerting.channels.mqtt_channel import MqttChannel

        self.config = config
        self.clock = clock
        self.state_dir = state_dir
        self.store = AlertStore.in_state_dir(state_dir)
        self.engine = AlertEngine(
            config, self.store, write_lines=write_lines, catalog=catalog, clock=clock,
            collector_name=collector_name,
        )  # fmt: skip
        channels: list[Channel] = [AppriseChannel(clock=clock)]
        if config.mqtt.enabled:
            channels.append(
                MqttChannel(lambda topic, payload, retain: publish(topic, payload, qos=1,
                                                                   retain=retain))
            )
        self.alertmanager: AlertmanagerChannel | None = None
        if config.alertmanager is not None:
            self.alertmanager = AlertmanagerChannel(
                str(config.alertmanager.url),
                resend_interval_s=config.alertmanager.resend_interval_s,
                timeout_s=config.alertmanager.timeout_s,
                clock=clock,
            )
            channels.append(self.alertmanager)
        self.dispatcher = Dispatcher(channels, on_result=self.engine.on_notify_result,
                                     clock=clock)
        self.engine.dispatcher = self.dispatcher
        self.web: AlertWebServer | None = None
        self._web_store: AlertStore | None = None
        self._web_query: InfluxQuery | None = None
        self._influx = influx
        self._devices = devices
        self._readings_seen = -1
        self._values_scored = -1
        self._broker_generation: int | None = None

    def decided(self, decision: Decision) -> None:
        """Detection's decision sink."""
        self.engine.decided(decision)

    def start(self) -> None:
        """Start sending, and the web page when configured (``OSError`` if its port is taken)."""
        self.dispatcher.start()
        if self.config.web.enabled:
            from sitewatch.collector.alerting.web import influx_readings

            # The page has its own store connection: it serves from its own threads.
            self._web_store = AlertStore.in_state_dir(self.state_dir)
            readings = None
            if self._influx is not None:
                self._web_query = InfluxQuery(self._influx)
                readings = influx_readings(self._web_query)
            self.web = AlertWebServer(self.config.web, self._web_store, readings=readings,
                                      devices=self._devices)
            self.web.start()

    def tick(self, *, readings_seen: int, values_scored: int, broker_generation: int,
             broker_connected: bool) -> None:
        """Escalations, reminders, silences, self-check inputs and Alertmanager re-sends.

        ``readings_seen`` / ``values_scored``: running totals from ingest and detection (the
        self-check notices when readings arrive but nothing is evaluated). When the broker
        connection is new (``broker_generation`` changed), open alerts are published again:
        the MQTT alert topics were not updated while it was down.
        """
        now_s = self.clock.time()
        if readings_seen != self._readings_seen:
            self._readings_seen = readings_seen
            self.engine.note_reading(now_s)
        if values_scored != self._values_scored:
            self._values_scored = values_scored
            self.engine.note_evaluated(now_s)
        self.engine.tick(now_s)
        if broker_connected and broker_generation != self._broker_generation:
            self._broker_generation = broker_generation
            resent = self.engine.resync()
            if resent:
                log.info("alerts: published %d open alerts again after (re)connecting", resent)
        if self.alertmanager is not None:
            for notification in self.alertmanager.resend_due():
                self.dispatcher.submit(notification, channels=[self.alertmanager.name])

    def stats(self) -> dict[str, Any]:
        return {**self.engine.stats(), "notifications": self.dispatcher.snapshot()}

    def stop(self) -> None:
        try:
            if self.web is not None:
                self.web.stop()
            self.dispatcher.stop()
        finally:
            for closable in (self._web_query, self._web_store, self.store):
                if closable is not None:
                    closable.close()
