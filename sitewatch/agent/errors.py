"""The agent's error tree: sorted by what the caller should do next.

- ``ConfigError``: the configuration is wrong; fail at start with the field's path.
- ``SensorReadError``: one read failed but the next may work (DHT22 checksum, timeout);
  skip the sample and count it under its ``error_class``.
- ``SensorFault``: the sensor cannot work until someone acts (no device, wrong wiring,
  missing overlay); escalate it.

Each leaf also inherits the builtin category a caller might already catch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AgentError",
    "ConfigError",
    "ConfigIssue",
    "SensorFault",
    "SensorReadError",
]


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file: where (``sensors[1].pin``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(AgentError, ValueError):
    """The configuration is invalid; ``issues`` lists every problem found, each with its path."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        header = f"invalid configuration {source}" if source else "invalid configuration"
        super().__init__(header + ":\n" + "\n".join(f"  {issue}" for issue in issues))

    @classmethod
    def single(cls, path: str, message: str, source: str | None = None) -> ConfigError:
        return cls([ConfigIssue(path, message)], source)


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
