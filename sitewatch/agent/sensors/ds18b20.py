"""DS18B20 1-Wire temperature sensor, read through the kernel's w1-therm driver.

The bus needs ``dtoverlay=w1-gpio`` (GPIO4 by default, ``,gpiopin=N`` otherwise) and a
4.7 kΩ pull-up from the data line to 3.3 V. Each sensor appears as
``/sys/bus/w1/devices/28-<12 hex digits>/w1_slave``; reading that file starts a conversion
(up to 750 ms) and returns two lines::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

``crc=.. NO`` means the bytes were corrupted on the wire, and ``t=85000`` is the value the
scratchpad holds after power-on before any conversion: both are rejected, never published.
Several sensors may share one bus pin.

>>> raw = "72 01 4b 46 7f ff 0e 10 57"
>>> parse_w1_slave(f"{raw} : crc=57 YES\\n{raw} t=23125\\n")
23.125
"""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.pins import parse_pin, pin_name
from sitewatch.agent.protocols import Fields
from sitewatch.agent.sensors import register
from sitewatch.agent.sensors.base import OverlayNeed, PinClaim, SensorConfig

__all__ = [
    "POWER_ON_RESET_MILLI_C",
    "W1_DEVICES",
    "DS18B20Config",
    "DS18B20Driver",
    "build",
    "overlay_line",
    "parse_w1_slave",
]

W1_DEVICES = Path("bus/w1/devices")
"""Where 1-Wire slaves are listed, relative to the sysfs root."""

POWER_ON_RESET_MILLI_C = 85000
"""The scratchpad's power-on value (85 °C): the sensor reset or never converted."""

_ADDRESS = re.compile(r"^28-[0-9a-f]{12}$")


def overlay_line(bus_pin: int) -> str:
    """The ``config.txt`` line for a 1-Wire bus on ``bus_pin`` (GPIO4 is the default)."""
    return "dtoverlay=w1-gpio" + (f",gpiopin={bus_pin}" if bus_pin != 4 else "")


class DS18B20Config(SensorConfig):
    """A DS18B20 on a 1-Wire bus.

    ``address``: the sensor's id (``28-0316a2795aff``); may be left out when it is the only
    DS18B20 on the bus. ``bus_pin``: the bus GPIO (default 4), shared with other DS18B20s.
    ``interval_s`` must be at least 1 (a 12-bit conversion takes 750 ms). Sampling defaults:
    -55..125 °C, spikes above 5 °C from the running median are rejected.
    """

    driver_name: ClassVar[str] = "ds18b20"
    default_sampling: ClassVar[dict[str, object]] = {
        "ranges": {"temperature_c": (-55.0, 125.0)},
        "spike_limits": {"temperature_c": 5.0},
    }

    driver: Literal["ds18b20"] = "ds18b20"
    address: str | None = None
    bus_pin: int = 4
    interval_s: Annotated[float, Field(ge=1.0, le=86400)] = 60.0

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _ADDRESS.match(value):
            raise ValueError(f"expected a DS18B20 address like 28-0316a2795aff, got {value!r}")
        return value

    @field_validator("bus_pin", mode="before")
    @classmethod
    def _parse_pin(cls, value: object) -> int:
        return parse_pin(value)

    def claimed_pins(self) -> list[PinClaim]:
        return [PinClaim(self.bus_pin, "bus_pin", share="w1")]

    def overlays_needed(self) -> list[OverlayNeed]:
        return [OverlayNeed("w1-gpio", self.bus_pin, overlay_line(self.bus_pin))]

    def fields(self) -> list[str]:
        return ["temperature_c"]


def parse_w1_slave(text: str) -> float:
    """Temperature (°C) from a ``w1_slave`` file; ``SensorReadError`` for a bad read.

    Error classes: ``crc`` (line 1 ends in ``NO``), ``power_on_reset`` (``t=85000``),
    ``parse`` (anything else unexpected).
    """
    lines = text.strip().splitlines()
    if len(lines) < 2:
        raise SensorReadError("parse", f"w1_slave has {len(lines)} line(s), expected 2")
    status = lines[0].split()[-1] if lines[0].split() else ""
    if status == "NO":
        raise SensorReadError("crc", "1-Wire CRC check failed")
    if status != "YES":
        raise SensorReadError("parse", f"unexpected w1_slave status {lines[0]!r}")
    _, found, value = lines[1].rpartition("t=")
    try:
        milli_c = int(value)
    except ValueError:
        milli_c = None
    if not found or milli_c is None:
        raise SensorReadError("parse", f"no t=<milli °C> in {lines[1]!r}")
    if milli_c == POWER_ON_RESET_MILLI_C:
        raise SensorReadError("power_on_reset", "85 °C power-on value: no conversion done")
    return milli_c / 1000.0


def _read_text(path: Path) -> str:
    with path.open() as file:
        return file.read()


class DS18B20Driver:
    """Reads one DS18B20 from ``<sysfs_root>/bus/w1/devices``.

    With ``address`` None the one ``28-*`` device on the bus is used, looked up again
    whenever it disappears (a replaced sensor is picked up). ``read_text`` reads a sysfs
    file (injectable for tests). Missing bus or sensor → ``SensorFault`` with a fix; other
    I/O errors → ``SensorReadError("io")``.
    """

    backend: str = "w1"
    min_read_spacing_s: float = 1.0

    def __init__(
        self,
        address: str | None,
        sysfs_root: Path,
        *,
        bus_pin: int = 4,
        read_text: Callable[[Path], str] = _read_text,
    ) -> None:
        self.address = address
        self.sysfs_root = sysfs_root
        self.bus_pin = bus_pin
        self._read_text = read_text
        self._resolved: str | None = address
        self._closed = False
        self._lock = threading.Lock()

    def read(self) -> Fields:
        with self._lock:
            if self._closed:
                raise SensorFault(f"DS18B20 {self.address or '(only one on the bus)'} is closed")
            address = self._resolved or self._find_only()
            path = self.sysfs_root / W1_DEVICES / address / "w1_slave"
            try:
                text = self._read_text(path)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ENODEV):
                    if self.address is None:
                        self._resolved = None
                    raise self._fault(f"DS18B20 {address} is not on the bus") from None
                raise SensorReadError("io", f"{path}: {error.strerror or error}") from None
            self._resolved = address
            return {"temperature_c": parse_w1_slave(text)}

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _find_only(self) -> str:
        devices = sorted(p.name for p in (self.sysfs_root / W1_DEVICES).glob("28-*"))
        if len(devices) == 1:
            return devices[0]
        if not devices:
            raise self._fault("no DS18B20 found on the 1-Wire bus")
        raise SensorFault(
            f"{len(devices)} DS18B20 on the bus ({', '.join(devices)}); which one is meant?",
            fix="set `address:` to one of them",
        )

    def _fault(self, message: str) -> SensorFault:
        if not (self.sysfs_root / W1_DEVICES).is_dir():
            return SensorFault(
                f"no 1-Wire bus under {self.sysfs_root / W1_DEVICES}",
                fix=f"add `{overlay_line(self.bus_pin)}` to /boot/firmware/config.txt and reboot",
            )
        return SensorFault(
            message,
            fix=f"check the wiring on {pin_name(self.bus_pin)} and the 4.7 kΩ pull-up from "
            f"data to 3.3 V; the bus needs `{overlay_line(self.bus_pin)}` in config.txt",
        )


@register(DS18B20Config)
def build(config: DS18B20Config, hardware: Hardware) -> DS18B20Driver:
    """The driver for one configured DS18B20."""
    return DS18B20Driver(config.address, hardware.sysfs_root, bus_pin=config.bus_pin)
