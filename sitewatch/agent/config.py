"""The agent's configuration: one YAML file per device, validated in full at start.

``load_config`` reads the file, validates it with pydantic and then checks what a schema
cannot (unique sensor ids, GPIO pins used twice, secrets that cannot be read). Every problem
comes back in one ``ConfigError`` with the path of the field and what was expected, e.g.
``sensors[1].pin: GPIO4 is already used by sensors[0]``. The annotated example
``firmware_config/agent.example.yaml`` documents each key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sitewatch.agent.errors import ConfigError, ConfigIssue
from sitewatch.agent.pins import pin_name
from sitewatch.agent.sensors import REGISTRY
from sitewatch.agent.sensors.base import SensorConfig
from sitewatch.wire import Identifier

__all__ = [
    "AgentConfig",
    "HardwareConfig",
    "MqttConfig",
    "OutboxConfig",
    "TelemetryConfig",
    "TlsConfig",
    "config_hash",
    "load_config",
    "parse_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Section):
    """TLS to the broker. ``ca_file`` verifies the broker (system CAs when absent);
    ``cert_file``/``key_file`` give the device a client certificate."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(_Section):
    """The broker connection.

    The password comes from ``password_file`` (first line) or the environment variable named
    by ``password_env``; it is never written in this file. ``client_id`` defaults to
    ``sitewatch-<site>-<device>``. Reconnects back off from ``reconnect_min_s`` to
    ``reconnect_max_s`` (seconds) with full jitter, so a fleet does not reconnect in lockstep.
    """

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 20

    @model_validator(mode="after")
    def _secret_sources(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self

    def password(self) -> str | None:
        """Read the secret now (at connect time), from the file or the environment."""
        if self.password_file is not None:
            lines = self.password_file.read_text().splitlines()
            return lines[0] if lines else ""
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None


class OutboxConfig(_Section):
    """The on-disk store-and-forward queue (SQLite, WAL).

    ``path`` is the database file (its directory must be writable: systemd's
    ``StateDirectory``). When the queued payloads exceed ``max_bytes`` (default 64 MiB) or a
    message is older than ``max_age_s`` (default 14 days) the oldest telemetry is dropped
    first and events last; every drop is counted. After an outage the backlog is replayed
    oldest-first at up to ``drain_rate_per_s`` messages per second (default 20) beside live data.
    """

    path: Path
    max_bytes: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    max_age_s: Annotated[float, Field(gt=0)] = 14 * 86400.0
    drain_rate_per_s: Annotated[float, Field(gt=0, le=10000)] = 20.0


class TelemetryConfig(_Section):
    """How readings are grouped into messages.

    Readings are collected for ``batch_interval_s`` (seconds, default 5) or until
    ``max_readings_per_message`` (default 50), then committed to the outbox as one message:
    this is also the longest a reading waits in memory. Health goes out every
    ``health_interval_s`` (default 60).
    """

    batch_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    max_readings_per_message: Annotated[int, Field(ge=1, le=1000)] = 50
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


class HardwareConfig(_Section):
    """Where the hardware is. The defaults fit Raspberry Pi OS; tests point them elsewhere.

    ``pin_factory``: ``auto`` (lgpio on a Pi) or ``mock`` (gpiozero's MockFactory, for
    running without a Pi). ``gpio_chip``: the gpiochip of the header pins, found from
    ``of_node/compatible`` when absent. ``config_txt``: the firmware config that ``check`` reads.
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


class AgentConfig(_Section):
    """One device's configuration; see ``firmware_config/agent.example.yaml``."""

    site: Identifier
    device: Identifier
    mqtt: MqttConfig
    outbox: OutboxConfig
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    sensors: list[_sensor_union()] = Field(min_length=1)  # type: ignore[valid-type]

    @field_validator("sensors", mode="before")
    @classmethod
    def _known_drivers(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict) and item.get("driver") not in REGISTRY:
                    known = ", ".join(sorted(REGISTRY))
                    raise ValueError(
                        f"sensors[{index}].driver: unknown driver {item.get('driver')!r}; "
                        f"expected one of {known}"
                    )
        return value

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"sitewatch-{self.site}-{self.device}"

    def sensor_configs(self) -> list[SensorConfig]:
        return list(self.sensors)


def _format_location(location: tuple[int | str, ...]) -> str:
    text = ""
    previous: int | str | None = None
    for index, part in enumerate(location):
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(previous, int) and location[0] == "sensors" and part in REGISTRY:
            pass  # the discriminated union's tag: not a key the user wrote
        elif part.startswith("function-") or (index > 0 and part in ("bool", "str")):
            pass  # pydantic's internal step names
        else:
            text += f".{part}" if text else part
        previous = part
    return text


def _issues_from(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for entry in error.errors():
        message = entry["msg"].removeprefix("Value error, ")
        path = _format_location(tuple(entry["loc"]))
        if message.startswith("sensors[") and ": " in message:
            path, message = message.split(": ", 1)
        if entry["type"] not in ("missing", "value_error", "extra_forbidden") and "input" in entry:
            message += f" (got {entry['input']!r})"
        if entry["type"] == "extra_forbidden":
            message = "unknown key"
        issues.append(ConfigIssue(path, message))
    return issues


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


def _readable(path: Path) -> bool:
    """Whether the file can really be read now (``os.access`` says yes to root for mode 000
    and to directories)."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def _check_secrets(config: AgentConfig) -> list[ConfigIssue]:
    issues = []
    mqtt = config.mqtt
    files = {
        "mqtt.password_file": mqtt.password_file,
        "mqtt.tls.ca_file": mqtt.tls.ca_file,
        "mqtt.tls.cert_file": mqtt.tls.cert_file,
        "mqtt.tls.key_file": mqtt.tls.key_file,
    }
    for path, file in files.items():
        if file is not None and not _readable(file):
            issues.append(ConfigIssue(path, f"cannot read {file}"))
    if mqtt.password_env is not None and mqtt.password_env not in os.environ:
        issues.append(ConfigIssue("mqtt.password_env", f"${mqtt.password_env} is not set"))
    if (mqtt.password_file or mqtt.password_env) and not mqtt.username:
        issues.append(ConfigIssue("mqtt.username", "a password is configured but no username"))
    return issues


def parse_config(data: Any, source: str | None = None) -> AgentConfig:
    """Validate already-parsed YAML; raise ``ConfigError`` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError.single("", "the file must be a YAML mapping of keys", source)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_issues_from(error), source) from None
    issues = _check_sensors(config) + _check_secrets(config)
    if issues:
        raise ConfigError(issues, source)
    return config


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate an agent config file; raise ``ConfigError`` on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError.single("", f"cannot read {path}: {error.strerror}", str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError.single("", f"not valid YAML: {error}", str(path)) from None
    return parse_config(data, str(path))


def config_hash(config: AgentConfig) -> str:
    """A short stable hash of the effective configuration, announced in the birth message."""
    canonical = config.model_dump_json(exclude={"mqtt": {"password_file", "password_env"}})
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
