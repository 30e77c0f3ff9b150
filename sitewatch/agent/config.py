"""The agent's configuration: one YAML file per device, validated in full at start.

``load_config`` reads the file, validates it with pydantic and then checks what a schema
cannot (unique sensor ids, GPIO pins used twice, secrets that cannot be read). Every problem
comes back in one ``ConfigError`` with the path of the field and what was expected, e.g.
``sensors[1].pin: GPIO4 is already used by sensors[0]``. The annotated example
``firmware_config/agent.example.yaml`` documents each key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sitewatch.agent.errors import ConfigError
from sitewatch.agent.pins import pin_name
from sitewatch.agent.sensors import REGISTRY
from sitewatch.agent.sensors.base import SensorConfig
from sitewatch.configfile import (
    BrokerConfig,
    ConfigIssue,
    Section,
    load_yaml,
    shown_value,
    validate,
)
from sitewatch.wire import ACK_LEVEL, MAX_SENSORS_PER_DEVICE, Identifier

__all__ = [
    "AgentConfig",
    "DeliveryConfig",
    "HardwareConfig",
    "MqttConfig",
    "OutboxConfig",
    "TelemetryConfig",
    "config_hash",
    "load_config",
    "parse_config",
]


class MqttConfig(BrokerConfig):
    """The broker connection (host, port, credentials, TLS: see ``BrokerConfig``).

    ``client_id`` defaults to ``sitewatch-<site>-<device>``. Reconnects back off from
    ``reconnect_min_s`` to ``reconnect_max_s`` (seconds) with full jitter, so a fleet does not
    reconnect in lockstep. At most ``max_inflight`` messages wait for their PUBACK.
    """

    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 20

    @model_validator(mode="after")
    def _backoff_range(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class OutboxConfig(Section):
    """The on-disk store-and-forward queue (SQLite, WAL).

    ``path`` is the database file (its directory must be writable: systemd's
    ``StateDirectory``). When the queued payloads exceed ``max_bytes`` (default 64 MiB) or a
    message is older than ``max_age_s`` (default 14 days) the oldest telemetry is dropped
    first and events last; every drop is counted (a message the broker acknowledged but the
    collector has not confirmed keeps a 64-byte stub instead, so a later loss is counted
    too). After an outage the backlog is replayed
    oldest-first at up to ``drain_rate_per_s`` messages per second (default 20) beside live data.
    """

    path: Path
    max_bytes: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    max_age_s: Annotated[float, Field(gt=0)] = 14 * 86400.0
    drain_rate_per_s: Annotated[float, Field(gt=0, le=10000)] = 20.0


class DeliveryConfig(Section):
    """When a message counts as delivered and leaves the outbox.

    ``confirm``: ``end_to_end`` (default) keeps each message after the broker's PUBACK until
    the collector confirms it durably stored (in InfluxDB or its spool), because a broker
    acknowledges before its disk has the message; ``broker`` deletes it on PUBACK (for a
    collector without confirmations, or to save the outbox's writes). Unconfirmed messages are
    sent again after a reconnect, and after ``confirm_timeout_s`` (seconds, default 60) when
    the collector confirms later ones but not these. An agent whose outbox never had a
    confirmation falls back to the broker's PUBACK when none arrives within
    ``confirm_timeout_s`` of a connect (an older collector), and any agent does when the
    collector withdraws its confirmations (``confirm.enabled: false`` there), until the next
    confirmation arrives (``sitewatch.agent.confirm``).
    """

    confirm: Literal["end_to_end", "broker"] = "end_to_end"
    """``end_to_end``: keep each message until the collector confirms it stored; ``broker``:
    delete it on the broker's PUBACK."""
    confirm_timeout_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    """How long an unconfirmed message waits before it is sent again while the collector
    confirms later ones (the wait doubles while nothing moves, up to an hour), and how long a
    never-confirmed agent waits for a first confirmation before it falls back to PUBACK."""


class TelemetryConfig(Section):
    """How readings are grouped into messages.

    Readings are collected for ``batch_interval_s`` (seconds, default 5) or until
    ``max_readings_per_message`` (default 50), then committed to the outbox as one message:
    this is also the longest a reading waits in memory. Health goes out every
    ``health_interval_s`` (default 60).
    """

    batch_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    max_readings_per_message: Annotated[int, Field(ge=1, le=1000)] = 50
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


class HardwareConfig(Section):
    """Where the hardware is. The defaults fit Raspberry Pi OS; tests point them elsewhere.

    ``sysfs_root``, ``dev_root``: where sysfs and the device nodes are. ``pin_factory``:
    ``auto`` (lgpio on a Pi) or ``mock`` (gpiozero's MockFactory, for running without a Pi).
    ``gpio_chip``: the gpiochip of the header pins, found from ``of_node/compatible`` when
    absent. ``config_txt``: the firmware config that ``check`` reads.
    """

    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    pin_factory: Literal["auto", "lgpio", "mock"] = "auto"
    gpio_chip: Annotated[int, Field(ge=0, le=64)] | None = None
    config_txt: Path = Path("/boot/firmware/config.txt")


def _sensor_union() -> Any:
    configs = tuple(entry.config for entry in REGISTRY.values())
    from typing import Union

    return Annotated[Union[configs], Field(discriminator="driver")]  # noqa: UP007


class AgentConfig(Section):
    """One device's configuration; see ``firmware_config/agent.example.yaml``."""

    site: Identifier
    """The site, part of every topic (``sitewatch/v1/<site>/<device>/...``) and InfluxDB tag."""
    device: Identifier
    """This device, unique within its site; also part of every topic and tag."""
    mqtt: MqttConfig
    outbox: OutboxConfig
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    sensors: list[_sensor_union()] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_SENSORS_PER_DEVICE
    )
    """The sensors this device reads, one section each; its ``driver`` decides its keys."""

    @field_validator("device")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == ACK_LEVEL:
            raise ValueError(f"{value!r} is reserved (sitewatch/v1/<site>/{ACK_LEVEL}/... holds"
                             " the collector's confirmations); choose another device id")
        return value

    @field_validator("sensors", mode="before")
    @classmethod
    def _known_drivers(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                driver = item.get("driver")
                if not isinstance(driver, str) or driver not in REGISTRY:  # a list: unhashable
                    known = ", ".join(sorted(REGISTRY))
                    raise ValueError(
                        f"sensors[{index}].driver: unknown driver {shown_value(driver)}; "
                        f"expected one of {known}"
                    )
        return value

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"sitewatch-{self.site}-{self.device}"

    def sensor_configs(self) -> list[SensorConfig]:
        return list(self.sensors)


def _check_sensors(config: AgentConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen_ids: dict[str, int] = {}
    claims: dict[int, tuple[int, str]] = {}
    for index, sensor in enumerate(config.sensor_configs()):
        if sensor.id in seen_ids:
            issues.append(
                ConfigIssue(
                    f"sensors[{index}].id",
                    f"{sensor.id!r} is already used by sensors[{seen_ids[sensor.id]}]",
                )
            )
        seen_ids.setdefault(sensor.id, index)
        for claim in sensor.claimed_pins():
            owner = claims.get(claim.pin)
            if owner is not None and not (claim.share and owner[1] == claim.share):
                issues.append(
                    ConfigIssue(
                        f"sensors[{index}].{claim.field}",
                        f"{pin_name(claim.pin)} is already used by sensors[{owner[0]}]",
                    )
                )
            claims.setdefault(claim.pin, (index, claim.share))
    return issues


def parse_config(data: Any, source: str | None = None) -> AgentConfig:
    """Validate already-parsed YAML; raise ``ConfigError`` listing every problem."""
    return validate(
        AgentConfig,
        data,
        source,
        ConfigError,
        union_tags=REGISTRY,
        checks=lambda config: _check_sensors(config) + config.mqtt.issues(),
    )


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate an agent config file; raise ``ConfigError`` on any problem."""
    data, source = load_yaml(path, ConfigError)
    return parse_config(data, source)


def config_hash(config: AgentConfig) -> str:
    """A short stable hash of the effective configuration, announced in the birth message."""
    canonical = config.model_dump_json(exclude={"mqtt": {"password_file", "password_env"}})
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
