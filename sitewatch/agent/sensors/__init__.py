"""Sensor drivers, registered by name; the config's ``driver:`` picks one.

Each driver lives in its own module with its config class beside it and registers itself
with ``@register``. Importing this package imports every driver module, but no driver imports
a Pi-only library until one of its sensors is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import SensorDriver
from sitewatch.agent.sensors.base import SensorConfig

__all__ = ["REGISTRY", "SensorType", "build_driver", "register"]


@dataclass(frozen=True)
class SensorType:
    """A registered driver: its config class and how to build it."""

    name: str
    config: type[SensorConfig]
    build: Callable[[Any, Hardware], SensorDriver]


REGISTRY: dict[str, SensorType] = {}


def register(
    config: type[SensorConfig],
) -> Callable[[Callable[[Any, Hardware], SensorDriver]], Callable[[Any, Hardware], SensorDriver]]:
    """Register a driver factory under ``config.driver_name``."""

    def decorate(
        build: Callable[[Any, Hardware], SensorDriver],
    ) -> Callable[[Any, Hardware], SensorDriver]:
        name = config.driver_name
        if name in REGISTRY:
            raise ValueError(f"sensor driver {name!r} registered twice")
        REGISTRY[name] = SensorType(name, config, build)
        return build

    return decorate


def build_driver(config: SensorConfig, hardware: Hardware) -> SensorDriver:
    """Build the driver for one configured sensor."""
    return REGISTRY[config.driver].build(config, hardware)


# Driver modules register themselves on import (after REGISTRY and register exist).
from sitewatch.agent.sensors import dht22 as dht22  # noqa: E402
from sitewatch.agent.sensors import ds18b20 as ds18b20  # noqa: E402
from sitewatch.agent.sensors import gpio_input as gpio_input  # noqa: E402
from sitewatch.agent.sensors import simulated as simulated  # noqa: E402
