"""The agent's error tree: sorted by what the caller should do next.

- ``ConfigError``: the configuration is wrong; fail at start with the field's path.
- ``SensorReadError``: one read failed but the next may work (DHT22 checksum, timeout);
  skip the sample and count it under its ``error_class``.
- ``SensorFault``: the sensor cannot work until someone acts (no device, wrong wiring,
  missing overlay); escalate it.

Each leaf also inherits the builtin category a caller might already catch.
"""

from __future__ import annotations

from sitewatch import configfile
from sitewatch.configfile import ConfigIssue

__all__ = [
    "AgentError",
    "ConfigError",
    "ConfigIssue",
    "SensorFault",
    "SensorReadError",
]


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError, configfile.ConfigError):
    """The agent's configuration is invalid; ``issues`` lists every problem with its path."""


class SensorReadError(AgentError, OSError):
    """A transient read failure; ``error_class`` is a short stable name for counting."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class SensorFault(AgentError, RuntimeError):
    """A persistent sensor problem; ``fix`` tells the installer what to do about it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix
