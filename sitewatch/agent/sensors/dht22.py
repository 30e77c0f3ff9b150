"""DHT22 / AM2302 temperature and humidity sensor: its config and backend choice.

Two backends read it, each in its own module:

- ``kernel`` (preferred): the kernel's ``dht11`` IIO driver, enabled with
  ``dtoverlay=dht11,gpiopin=N`` in ``/boot/firmware/config.txt`` (``dht22_kernel.py``);
- ``adafruit``: adafruit-circuitpython-dht 4.x from the ``pi`` extra (``dht22_adafruit.py``).

``backend: auto`` (the default) uses the kernel driver when a ``dht11`` device for the pin
exists, else the adafruit library when it is installed. Whatever the backend, a DHT22 fails
5-25 % of reads; the sampling policy (``agent/sampling.py``) retries, filters and escalates.

>>> config = DHT22Config(id="cold-room", driver="dht22", pin="GPIO17", interval_s=30)
>>> config.pin, config.overlays_needed()[0].line
(17, 'dtoverlay=dht11,gpiopin=17')
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import field_validator

from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.pins import parse_pin, pin_name
from sitewatch.agent.protocols import SensorDriver
from sitewatch.agent.sensors import register
from sitewatch.agent.sensors.base import OverlayNeed, PinClaim, SensorConfig
from sitewatch.agent.sensors.dht22_adafruit import PI_EXTRA_FIX, AdafruitDHT22
from sitewatch.agent.sensors.dht22_kernel import KernelDHT22, find_iio_device

__all__ = ["MIN_INTERVAL_S", "DHT22Config", "adafruit_importable", "build", "select_backend"]

MIN_INTERVAL_S = 2.5
"""Shortest sampling period (seconds): a DHT22 polled more often than every ~2 s hangs."""


class DHT22Config(SensorConfig):
    """A DHT22 on one GPIO.

    ``pin``: BCM GPIO (``4``, ``"4"`` or ``"GPIO4"``). ``backend``: ``auto`` (default),
    ``kernel`` or ``adafruit``. ``use_pulseio`` (default true) is passed to the adafruit
    library and ignored by the kernel backend. ``interval_s`` must be at least 2.5.
    Sampling defaults: -40..80 °C and 0..100 %RH, spikes above 3 °C or 15 %RH from the
    running median are rejected, 3 attempts per period.
    """

    driver_name: ClassVar[str] = "dht22"
    default_sampling: ClassVar[dict[str, object]] = {
        "ranges": {"temperature_c": (-40.0, 80.0), "humidity_pct": (0.0, 100.0)},
        "spike_limits": {"temperature_c": 3.0, "humidity_pct": 15.0},
        "max_attempts": 3,
    }

    driver: Literal["dht22"] = "dht22"
    pin: int
    backend: Literal["auto", "kernel", "adafruit"] = "auto"
    use_pulseio: bool = True

    @field_validator("pin", mode="before")
    @classmethod
    def _parse_pin(cls, value: object) -> int:
        return parse_pin(value)

    @field_validator("interval_s")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if value < MIN_INTERVAL_S:
            raise ValueError(
                f"must be at least {MIN_INTERVAL_S} s: a DHT22 read more often than every "
                f"2 s stops answering (got {value})"
            )
        return value

    def claimed_pins(self) -> list[PinClaim]:
        return [PinClaim(self.pin, "pin")]

    def overlays_needed(self) -> list[OverlayNeed]:
        """The ``dht11`` overlay for the kernel backend (advisory under ``auto``)."""
        if self.backend == "adafruit":
            return []
        return [OverlayNeed("dht11", self.pin, f"dtoverlay=dht11,gpiopin={self.pin}")]

    def fields(self) -> list[str]:
        return ["temperature_c", "humidity_pct"]


def adafruit_importable() -> bool:
    """Whether ``adafruit_dht`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("adafruit_dht") is not None
    except (ImportError, ValueError):
        return False


def select_backend(config: DHT22Config, sysfs_root: Path) -> Literal["kernel", "adafruit"]:
    """The backend ``config`` asks for; under ``auto``, the best one available now.

    Raises ``SensorFault`` under ``auto`` when neither the kernel device nor the library is
    there, with a fix naming both ways out.
    """
    if config.backend != "auto":
        return config.backend
    if find_iio_device(sysfs_root, config.pin) is not None:
        return "kernel"
    if adafruit_importable():
        return "adafruit"
    line = f"dtoverlay=dht11,gpiopin={config.pin}"
    raise SensorFault(
        f"no way to read the DHT22 on {pin_name(config.pin)}: no kernel dht11 device for it "
        "and adafruit_dht is not installed",
        fix=f"add `{line}` to /boot/firmware/config.txt and reboot (preferred), or "
        + PI_EXTRA_FIX,
    )


@register(DHT22Config)
def build(config: DHT22Config, hardware: Hardware) -> SensorDriver:
    """The driver for one configured DHT22, on the backend ``select_backend`` picks."""
    if select_backend(config, hardware.sysfs_root) == "kernel":
        return KernelDHT22(config.pin, hardware.sysfs_root)
    return AdafruitDHT22(config.pin, clock=hardware.clock, use_pulseio=config.use_pulseio)
