"""Fake sysfs trees for the kernel-backed drivers, built under a test's tmp_path.

The builders write the files the kernel exposes: IIO devices of the ``dht11`` overlay
(``bus/iio/devices/iio:deviceN/{name,in_temp_input,in_humidityrelative_input}``, values in
milli-units) and 1-Wire slaves (``bus/w1/devices/28-*/w1_slave``). ``KernelReads`` is the
reader the drivers accept: it reads the real file unless a read was scripted to fail with an
errno, as the kernel answers a DHT22 that lost sync (EIO) or did not respond (ETIMEDOUT).
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from pathlib import Path

IIO = Path("bus/iio/devices")
W1 = Path("bus/w1/devices")


def add_iio_device(root: Path, index: int, name: str) -> Path:
    """An ``iio:device<index>`` with only a ``name`` (any IIO device, e.g. an ADC)."""
    device = root / IIO / f"iio:device{index}"
    device.mkdir(parents=True)
    (device / "name").write_text(name + "\n")
    return device


def add_dht11(
    root: Path,
    index: int,
    pin: int | None,
    *,
    temperature_c: float = 21.5,
    humidity_pct: float = 45.0,
) -> Path:
    """A ``dht11`` overlay instance at ``iio:device<index>``.

    Named ``dht11@<pin in hex>`` as the overlay's node is, or plain ``dht11`` when ``pin``
    is None (some kernels).
    """
    device = add_iio_device(root, index, "dht11" if pin is None else f"dht11@{pin:x}")
    set_dht11(device, temperature_c, humidity_pct)
    return device


def set_dht11(device: Path, temperature_c: float, humidity_pct: float) -> None:
    """Store a new measurement, in the kernel's milli-units."""
    (device / "in_temp_input").write_text(f"{round(temperature_c * 1000)}\n")
    (device / "in_humidityrelative_input").write_text(f"{round(humidity_pct * 1000)}\n")


def remove_device(device: Path) -> None:
    """The device goes away (overlay unloaded, driver unbound)."""
    shutil.rmtree(device)


def add_w1_bus(root: Path) -> Path:
    """The 1-Wire bus master that ``dtoverlay=w1-gpio`` creates, with no slaves yet."""
    master = root / W1 / "w1_bus_master1"
    master.mkdir(parents=True)
    return master


def _crc8(data: bytes) -> int:
    """Dallas/Maxim CRC-8 (polynomial x^8 + x^5 + x^4 + 1, reflected)."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def w1_slave_text(milli_c: int, *, crc_ok: bool = True) -> str:
    """The two lines w1-therm returns: scratchpad bytes with the CRC verdict, then t=."""
    raw = round(milli_c / 62.5) & 0xFFFF  # 1/16 °C per bit at 12-bit resolution
    scratchpad = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    crc = _crc8(scratchpad) if crc_ok else _crc8(scratchpad) ^ 0x5A
    hex_bytes = " ".join(f"{b:02x}" for b in [*scratchpad, crc])
    verdict = "YES" if crc_ok else "NO"
    return f"{hex_bytes} : crc={crc:02x} {verdict}\n{hex_bytes} t={milli_c}\n"


def add_ds18b20(
    root: Path,
    address: str,
    *,
    temperature_c: float = 21.0,
    crc_ok: bool = True,
    text: str | None = None,
) -> Path:
    """A DS18B20 slave on the bus; ``text`` overrides the ``w1_slave`` contents."""
    if not (root / W1 / "w1_bus_master1").exists():
        add_w1_bus(root)
    device = root / W1 / address
    device.mkdir(parents=True)
    set_ds18b20(device, temperature_c=temperature_c, crc_ok=crc_ok, text=text)
    return device


def set_ds18b20(
    device: Path, *, temperature_c: float = 21.0, crc_ok: bool = True, text: str | None = None
) -> None:
    """What the next read of ``w1_slave`` returns."""
    body = text if text is not None else w1_slave_text(round(temperature_c * 1000), crc_ok=crc_ok)
    (device / "w1_slave").write_text(body)


class KernelReads:
    """Reads sysfs files like the kernel answers them, errors included.

    ``fail(path, errno.EIO, errno.ETIMEDOUT)`` makes the next two reads of ``path`` raise
    those errnos; other reads return the file's contents (ENOENT if it is gone). ``reads``
    lists every path read, in order.
    """

    def __init__(self) -> None:
        self._failures: dict[Path, deque[int]] = {}
        self.reads: list[Path] = []

    def fail(self, path: Path, *codes: int) -> None:
        self._failures.setdefault(path, deque()).extend(codes)

    def __call__(self, path: Path) -> str:
        self.reads.append(path)
        queued = self._failures.get(path)
        if queued:
            code = queued.popleft()
            raise OSError(code, os.strerror(code), str(path))
        with path.open() as file:
            return file.read()
