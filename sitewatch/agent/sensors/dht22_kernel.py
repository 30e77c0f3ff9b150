"""DHT22 through the kernel's ``dht11`` IIO driver (``dtoverlay=dht11,gpiopin=N``).

The preferred backend: the kernel timestamps the sensor's edges in its interrupt handler, so
a busy CPU does not corrupt reads, and no helper process or gpiochip number is involved.
Each overlay instance appears as ``/sys/bus/iio/devices/iio:deviceN`` with

- ``name``: ``dht11@<gpio in hex>`` (``dht11@11`` is GPIO17), or plain ``dht11`` on some
  kernels;
- ``in_temp_input`` (milli-°C) and ``in_humidityrelative_input`` (milli-%RH).

``N`` is not stable across boots or overlay reloads, so the device is found by its name and
looked up again when it vanishes. The kernel keeps a good sample for 2 s, so temperature read
just before humidity belongs to the same measurement; a failed read is not cached, which is why
the sampler still spaces reads by ``min_read_spacing_s``.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.pins import pin_name
from sitewatch.agent.protocols import Fields

__all__ = ["IIO_DEVICES", "KernelDHT22", "find_iio_device", "iio_name_pin"]

IIO_DEVICES = Path("bus/iio/devices")
"""Where IIO devices are listed, relative to the sysfs root."""

_TRANSIENT = {errno.EIO: "eio", errno.ETIMEDOUT: "timeout", errno.EAGAIN: "eagain"}
_VANISHED = {errno.ENOENT, errno.ENODEV}
_DENIED = {errno.EACCES, errno.EPERM}


def iio_name_pin(name: str) -> int | None:
    """The GPIO named by an IIO ``name`` such as ``dht11@11`` (hex), None if it names none.

    >>> iio_name_pin("dht11@11"), iio_name_pin("dht11@4"), iio_name_pin("dht11")
    (17, 4, None)
    """
    _, at, unit = name.partition("@")
    if not at:
        return None
    try:
        return int(unit, 16)
    except ValueError:
        return None


def _is_dht11(name: str) -> bool:
    return name == "dht11" or name.startswith("dht11@")


def find_iio_device(sysfs_root: Path, pin: int) -> Path | None:
    """The IIO device directory of the ``dht11`` overlay bound to ``pin``, or None.

    A device named ``dht11@<hex pin>`` wins. A plain ``dht11`` (no pin in its name) is
    accepted only when it is the one and only dht11 device, because then nothing else can
    be meant; with two sensors it would be a guess.
    """
    found: list[tuple[Path, str]] = []
    for device in sorted((sysfs_root / IIO_DEVICES).glob("iio:device*")):
        try:
            name = (device / "name").read_text().strip()
        except OSError:
            continue  # vanished while listing, or not a device we can read
        if _is_dht11(name):
            found.append((device, name))
    for device, name in found:
        if iio_name_pin(name) == pin:
            return device
    if len(found) == 1 and found[0][1] == "dht11":
        return found[0][0]
    return None


def _read_text(path: Path) -> str:
    with path.open() as file:
        return file.read()


class _Vanished(Exception):
    """The device directory went away under us (ENOENT/ENODEV)."""


class KernelDHT22:
    """Reads one DHT22 from the kernel IIO driver; see the module docstring.

    ``read_text`` reads one sysfs file (injectable so tests can make the "kernel" return
    errno codes); nothing is touched before the first ``read``. Errors:
    ``SensorReadError`` ``eio`` (lost sync or checksum), ``timeout`` (too few edges: the
    sensor did not answer), ``eagain``, ``parse``, ``other``; ``SensorFault`` when no device
    for the pin exists (overlay missing) or sysfs cannot be read.
    """

    backend: str = "kernel"
    min_read_spacing_s: float = 2.5

    def __init__(
        self,
        pin: int,
        sysfs_root: Path,
        *,
        read_text: Callable[[Path], str] = _read_text,
    ) -> None:
        self.pin = pin
        self.sysfs_root = sysfs_root
        self._read_text = read_text
        self._device: Path | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def device(self) -> Path | None:
        """The IIO device directory in use (None until found)."""
        return self._device

    def read(self) -> Fields:
        with self._lock:
            if self._closed:
                raise SensorFault(f"DHT22 on {pin_name(self.pin)} is closed")
            if self._device is not None:
                try:
                    return self._read_device(self._device)
                except _Vanished:
                    self._device = None  # renumbered or unloaded: look it up again, once
            self._device = self._resolve()
            try:
                return self._read_device(self._device)
            except _Vanished:
                self._device = None
                raise self._missing("vanished while being read") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._device = None

    def _resolve(self) -> Path:
        device = find_iio_device(self.sysfs_root, self.pin)
        if device is None:
            raise self._missing("not found")
        return device

    def _missing(self, what: str) -> SensorFault:
        line = f"dtoverlay=dht11,gpiopin={self.pin}"
        return SensorFault(
            f"no kernel dht11 device for {pin_name(self.pin)} under "
            f"{self.sysfs_root / IIO_DEVICES} ({what})",
            fix=f"add `{line}` to /boot/firmware/config.txt and reboot; check the sensor's "
            "wiring and its 4.7-10 kΩ pull-up to 3.3 V",
        )

    def _read_device(self, device: Path) -> Fields:
        # Temperature first: it triggers the measurement that humidity then reads from the
        # kernel's 2 s cache, so both values come from one sample.
        temperature = self._read_milli(device / "in_temp_input")
        humidity = self._read_milli(device / "in_humidityrelative_input")
        return {"temperature_c": temperature / 1000.0, "humidity_pct": humidity / 1000.0}

    def _read_milli(self, path: Path) -> int:
        try:
            text = self._read_text(path)
        except OSError as error:
            code = error.errno
            if code in _VANISHED:
                raise _Vanished() from error
            if code in _TRANSIENT:
                raise SensorReadError(_TRANSIENT[code], f"{path}: {error.strerror}") from None
            if code in _DENIED:
                raise SensorFault(
                    f"cannot read {path}: {error.strerror}",
                    fix="run the agent as a user that can read sysfs (the files are 0644)",
                ) from None
            raise SensorReadError("other", f"{path}: {error}") from None
        try:
            return int(text.strip())
        except ValueError:
            raise SensorReadError("parse", f"{path}: not an integer: {text[:40]!r}") from None
