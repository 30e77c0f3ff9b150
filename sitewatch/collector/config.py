"""The collector's configuration: one YAML file, validated in full at start.

Every problem comes back in one ``ConfigError`` with the field's path
(``influx.token_file: cannot read /etc/sitewatch/influx-token``). The annotated example
``firmware_config/collector.example.yaml`` documents each key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sitewatch.collector.alerting.config import AlertingConfig
from sitewatch.collector.homeassistant import topic_clashes
from sitewatch.collector.partition import PartitionConfig
from sitewatch.collector.rules import DetectionConfig
from sitewatch.configfile import (
    BrokerConfig,
    ConfigError,
    ConfigIssue,
    EnvName,
    Section,
    load_yaml,
    read_secret,
    secret_file_issues,
    validate,
)
from sitewatch.wire import subscription

__all__ = [
    "CollectorConfig",
    "CollectorConfigError",
    "CollectorMqttConfig",
    "ConfirmConfig",
    "HomeAssistantConfig",
    "InfluxConfig",
    "MetricsConfig",
    "SpoolConfig",
    "load_config",
    "parse_config",
]


class CollectorConfigError(ConfigError):
    """The collector's configuration is invalid; ``issues`` lists every problem with its path."""


class CollectorMqttConfig(BrokerConfig):
    """The broker connection and the collector's session on it.

    ``client_id`` is required and must stay the same across restarts: the broker keeps the
    collector's persistent session (subscriptions and the QoS1 messages queued while it is
    down) under that id. ``protocol`` ``3.1.1`` (default) uses a clean_session=false session,
    kept by the broker for its ``persistent_client_expiration``, and the broker's own in-flight
    limit (``broker/mosquitto.conf`` sets 1000); ``protocol: 5`` uses a session expiry of
    ``session_expiry_s`` (default 7 days) and asks the broker to keep at most ``max_inflight``
    unacknowledged messages in flight (Receive Maximum), at a cost: paho spends about 17 %
    more CPU per message on MQTT 5 properties (bench/ingest.py). ``topics`` are the
    subscriptions (default all sites). Invalid messages are republished, with the reason, on
    ``dead_letter_topic``. Reconnects back off from ``reconnect_min_s`` (default 0.5) to
    ``reconnect_max_s`` (default 30) seconds, with jitter.
    """

    client_id: Annotated[str, Field(min_length=1, max_length=128)]
    protocol: Literal["5", "3.1.1"] = "3.1.1"
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    session_expiry_s: Annotated[int, Field(ge=60, le=4294967295)] = 7 * 86400
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000
    topics: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["sitewatch/v1/+/+/+"], min_length=1
    )
    dead_letter_topic: Annotated[str, Field(min_length=1)] = "sitewatch/v1/_collector/deadletter"
    partition: PartitionConfig | None = None
    """Which devices this collector owns when several share the fleet (default: all)."""

    @model_validator(mode="after")
    def _backoff_range(self) -> CollectorMqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self

    @model_validator(mode="after")
    def _partition_topics(self) -> CollectorMqttConfig:
        # Shared subscriptions split one device's messages across collectors
        # (sitewatch.collector.partition says why that breaks detection and confirmations).
        for number, topic_filter in enumerate(self.topics):
            if topic_filter.startswith("$share/"):
                raise ValueError(
                    f"mqtt.topics[{number}]: a shared subscription hands each message to one "
                    "collector of the group, splitting a device's readings (and its detection "
                    "state) across them; use mqtt.partition instead")
        if self.partition is not None and self.partition.sites is not None:
            if "topics" in self.model_fields_set:
                raise ValueError("mqtt.topics: leave it out with mqtt.partition.sites (the "
                                 "collector subscribes to its sites' topics)")
            self.topics = [subscription(site) for site in self.partition.sites]
        return self


class InfluxConfig(Section):
    """Where readings are stored.

    ``api: v1`` writes line protocol to ``/write`` (InfluxDB 1.x, as Debian and Raspberry Pi OS
    ship it): ``database`` (required), ``retention_policy`` (default: the database's default),
    ``username`` with ``password_file``/``password_env`` when auth is on.
    ``api: v2`` writes through influxdb-client (InfluxDB 2.x, 3.x, Cloud, 1.8+): ``org``,
    ``bucket`` and the token from ``token_file`` or ``token_env`` (all required); ``gzip``
    compresses request bodies (default on).
    Lines are sent in batches of up to ``batch_size`` (default 5000) or every
    ``flush_interval_s`` (default 1 s), whichever comes first; a request gives up after
    ``timeout_s`` (default 10 s). Retries back off from ``retry_min_s`` to ``retry_max_s``
    (or longer when the server sends Retry-After).
    """

    api: Literal["v1", "v2"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    """The server, ``http(s)://host:port`` (InfluxDB listens on 8086 by default)."""
    database: Annotated[str, Field(min_length=1)] | None = None
    retention_policy: Annotated[str, Field(min_length=1)] | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: EnvName | None = None
    org: Annotated[str, Field(min_length=1)] | None = None
    bucket: Annotated[str, Field(min_length=1)] | None = None
    token_file: Path | None = None
    token_env: EnvName | None = None
    gzip: bool = True
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    retry_min_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _keys_for_api(self) -> InfluxConfig:
        if self.api == "v1":
            if self.database is None:
                raise ValueError("influx.database: required with api v1")
            for key in ("org", "bucket", "token_file", "token_env"):
                if getattr(self, key) is not None:
                    raise ValueError(f"influx.{key}: only for api v2")
        else:
            missing = [key for key in ("org", "bucket") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"influx.{missing[0]}: required with api v2")
            if (self.token_file is None) == (self.token_env is None):
                raise ValueError("influx.token_file: give token_file or token_env (one of them)")
            for key in ("database", "retention_policy", "username", "password_file"):
                if getattr(self, key) is not None:
                    raise ValueError(f"influx.{key}: only for api v1")
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("influx.password_file: give password_file or password_env, not both")
        return self

    def password(self) -> str | None:
        """The v1 password, read now (never stored in the config object)."""
        return read_secret(self.password_file, self.password_env)

    def token(self) -> str | None:
        """The v2 token, read now (never stored in the config object)."""
        return read_secret(self.token_file, self.token_env)

    def issues(self) -> list[ConfigIssue]:
        return secret_file_issues(
            {"influx.password_file": self.password_file, "influx.token_file": self.token_file},
            {"influx.password_env": self.password_env, "influx.token_env": self.token_env},
        )


class SpoolConfig(Section):
    """The on-disk spool that holds batches while InfluxDB cannot take them.

    Capped at ``max_bytes`` (default 1 GiB) and ``max_age_s`` (default 7 days); beyond that the
    oldest batches are dropped and every dropped reading is counted.
    """

    max_bytes: Annotated[int, Field(ge=65536)] = 1 << 30
    max_age_s: Annotated[float, Field(gt=0)] = 7 * 86400.0


class MetricsConfig(Section):
    """The Prometheus ``/metrics`` endpoint (``enabled``, ``host``, ``port``; default
    127.0.0.1:9108: expose it beyond loopback only behind your reverse proxy)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108


class ConfirmConfig(Section):
    """End-to-end confirmations to the agents (``sitewatch.collector.confirm``).

    When ``enabled`` (default), the collector publishes, retained on
    ``sitewatch/v1/<site>/ack/<device>``, the highest seq of each agent boot up to which
    everything is durably stored (InfluxDB or the spool), at most every ``interval_s``
    (seconds, default 1) per device; agents keep each message until then (a broker's PUBACK
    comes before its disk has the message). The broker must let the collector write
    ``sitewatch/v1/+/ack/+`` and each device read its own ack topic. Turned off, the collector
    clears each device's retained confirmation (an empty retained message) once it hears from
    the device, and agents then rely on the broker's PUBACK (their fallback).
    """

    enabled: bool = True
    """Publish confirmations (off: clear the retained ones; agents then rely on PUBACK)."""
    interval_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0
    """At most one confirmation per device and agent boot this often (seconds)."""


TopicName = Annotated[str, Field(pattern=r"^[^/+#\x00]+(/[^/+#\x00]+)*$", max_length=200)]
"""An MQTT topic (or topic prefix) without wildcards, empty levels or a leading/trailing ``/``."""


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery (``sitewatch.collector.homeassistant``; off by default).

    Each device that announced itself (its birth) appears in Home Assistant as one device,
    with an entity per sensor field (temperature, humidity, door, running, ...) and a
    ``problem`` entity. Its config is retained on ``<discovery_prefix>/device/<id>/config`` and
    sent again whenever Home Assistant comes online; values are retained on
    ``<state_prefix>/<site>/<device>/<sensor>/<field>``, the problem state on
    ``<state_prefix>/<site>/<device>``. A value expires in Home Assistant after 3 × the
    sensor's reporting interval.
    """

    enabled: bool = False
    """Announce devices to Home Assistant and publish their values (default off)."""
    discovery_prefix: TopicName = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration's setting; default
    ``homeassistant``)."""
    status_topic: TopicName = "homeassistant/status"
    """Where Home Assistant publishes its birth (``online``) and last will: on ``online`` every
    device is announced again."""
    state_prefix: TopicName = "sitewatch/state"
    """Where latest values and each device's problem state are published (retained)."""
    area_label: Annotated[str, Field(min_length=1)] | None = "zone"
    """The sensor label whose most common value on a device becomes its suggested area in Home
    Assistant (null: none)."""
    agent_batch_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """The agents' ``telemetry.batch_interval_s`` (seconds): readings arrive in batches, so a
    value expires after 3 × the longer of this and the sensor's ``interval_s``."""

    def issues(self, subscriptions: list[str]) -> list[ConfigIssue]:
        """The collector must not subscribe to what it publishes here: it would read its own
        messages back as invalid agent traffic."""
        if not self.enabled:
            return []
        return [
            ConfigIssue(
                f"home_assistant.{key}",
                f"mqtt.topics entry {topic_filter!r} also receives {pattern!r}, which the "
                "collector publishes: choose another prefix or narrower topics",
            )
            for key, topic_filter, pattern in topic_clashes(self, subscriptions)
        ]


class CollectorConfig(Section):
    """The collector's configuration; see ``firmware_config/collector.example.yaml``.

    ``state_dir`` holds the spool, the delivery counters, device state, detector checkpoints
    and the alert store. A device is ``stale`` when nothing was heard from
    it for ``stale_after_s`` (default 300 s) while its status says online. Delivery counters
    go to InfluxDB every ``delivery_interval_s`` (default 10 s). Timestamps more than
    ``max_future_s`` (default 300 s) ahead of the collector's clock are rejected.
    ``detection`` holds the rules (``sitewatch.collector.rules``); ``alerting`` (optional:
    without it decisions are only logged and stored) holds the teams, routes and notification
    channels (``sitewatch.collector.alerting.config``). ``home_assistant``: MQTT discovery
    for Home Assistant (off by default). ``confirm``: end-to-end confirmations to the agents
    (on by default).
    """

    mqtt: CollectorMqttConfig
    influx: InfluxConfig
    state_dir: Path
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    stale_after_s: Annotated[float, Field(gt=0)] = 300.0
    delivery_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_future_s: Annotated[float, Field(gt=0)] = 300.0
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    alerting: AlertingConfig | None = None
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    confirm: ConfirmConfig = Field(default_factory=ConfirmConfig)


def parse_config(data: Any, source: str | None = None) -> CollectorConfig:
    """Validate already-parsed YAML; raise ``CollectorConfigError`` listing every problem."""
    return validate(
        CollectorConfig,
        data,
        source,
        CollectorConfigError,
        checks=lambda config: (
            config.mqtt.issues()
            + config.influx.issues()
            + config.detection.issues()
            + (config.alerting.issues() if config.alerting is not None else [])
            + config.home_assistant.issues(config.mqtt.topics)
        ),
    )


def load_config(path: Path | str) -> CollectorConfig:
    """Read and validate a collector config file; raise ``CollectorConfigError`` on any problem."""
    data, source = load_yaml(path, CollectorConfigError)
    return parse_config(data, source)
