"""DHT22 through adafruit-circuitpython-dht 4.x (the fallback backend, ``pi`` extra).

The library has two traps this driver exists to defuse:

- **The 2 s cache.** ``measure()`` talks to the sensor only when more than 2 s have passed
  since its previous call, and it records that time *before* the read. Within 2 s,
  ``.temperature``/``.humidity`` silently return the previous values, which may be stale or
  ``None`` even after a failed read. So the driver keeps its own time of the previous read
  (taken after the read returns, which is never earlier than the library's) and refuses with
  ``SensorReadError("too_soon")`` a read 2.0 s or less after it: it never hands out a value
  the sensor did not just measure.
- **Its helper process.** With ``use_pulseio`` the library starts ``libgpiod_pulsein``, which
  holds the GPIO line until ``exit()`` is called; an orphan makes the next start fail with
  "Unable to set line N to input". So there is one long-lived device object per sensor, and
  ``close()`` calls ``exit()`` exactly once.

Every library failure is a ``RuntimeError``; its message is mapped to a stable error class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.pins import pin_name
from sitewatch.agent.protocols import Fields
from sitewatch.clock import Clock

__all__ = [
    "LIBRARY_GATE_S",
    "PI_EXTRA_FIX",
    "AdafruitDHT22",
    "DHTDevice",
    "error_class",
    "real_device",
]

LIBRARY_GATE_S = 2.0
"""Within this many seconds of its previous measure() the library returns cached values."""

_MESSAGE_CLASSES = (
    ("sensor not found", "no_response"),
    ("full buffer", "short_read"),
    ("checksum", "checksum"),
    ("unplausible", "implausible"),
    ("implausible", "implausible"),
)

PI_EXTRA_FIX = "install the Pi extra: pip install 'sitewatch[pi]'"
"""The fix offered when the library is missing."""


class DHTDevice(Protocol):
    """What the driver uses of ``adafruit_dht.DHT22``."""

    @property
    def temperature(self) -> float | None: ...

    @property
    def humidity(self) -> float | None: ...

    def exit(self) -> None: ...


def error_class(error: RuntimeError) -> str:
    """The error class of one of the library's ``RuntimeError`` messages.

    >>> error_class(RuntimeError("Checksum did not validate. Try again."))
    'checksum'
    >>> error_class(RuntimeError("something new"))
    'other'
    """
    text = str(error).lower()
    for fragment, name in _MESSAGE_CLASSES:
        if fragment in text:
            return name
    return "other"


def real_device(pin: int, use_pulseio: bool) -> DHTDevice:
    """Build ``adafruit_dht.DHT22(board.D<pin>)``, importing the Pi-only libraries now."""
    try:
        import adafruit_dht
        import board
    except ImportError as error:
        raise SensorFault(
            f"the adafruit DHT backend needs adafruit-circuitpython-dht ({error})",
            fix=PI_EXTRA_FIX,
        ) from None
    board_pin = getattr(board, f"D{pin}", None)
    if board_pin is None:
        raise SensorFault(f"this board has no pin D{pin}", fix="check the sensor's pin")
    device: DHTDevice = adafruit_dht.DHT22(board_pin, use_pulseio=use_pulseio)
    return device


class AdafruitDHT22:
    """Reads one DHT22 through one long-lived adafruit_dht device; see the module docstring.

    ``device_factory(pin, use_pulseio)`` builds the library object (default: the real
    library, imported here and not at module import). Errors: ``SensorReadError`` with
    class ``no_response``, ``short_read``, ``checksum``, ``implausible``, ``other``,
    ``too_soon`` (called within 2 s of the previous read) or ``no_value`` (the library gave
    None); ``SensorFault`` when the library is missing, the line cannot be claimed, or after
    ``close()``.
    """

    backend: str = "adafruit"
    min_read_spacing_s: float = 2.5

    def __init__(
        self,
        pin: int,
        *,
        clock: Clock,
        use_pulseio: bool = True,
        device_factory: Callable[[int, bool], DHTDevice] = real_device,
    ) -> None:
        self.pin = pin
        self.use_pulseio = use_pulseio
        self._clock = clock
        self._lock = threading.Lock()
        self._last_read_s: float | None = None
        self._closed = False
        try:
            self._device = device_factory(pin, use_pulseio)
        except (RuntimeError, OSError, ValueError) as error:
            if isinstance(error, SensorFault):
                raise
            raise SensorFault(
                f"cannot open the DHT22 on {pin_name(pin)}: {error}",
                fix="stop any other program using the pin (an orphaned libgpiod_pulsein "
                "holds it until killed), or try use_pulseio: false",
            ) from error

    def read(self) -> Fields:
        with self._lock:
            if self._closed:
                raise SensorFault(f"DHT22 on {pin_name(self.pin)} is closed")
            now = self._clock.monotonic()
            if self._last_read_s is not None and now - self._last_read_s <= LIBRARY_GATE_S:
                raise SensorReadError(
                    "too_soon",
                    f"{now - self._last_read_s:.2f} s since the previous read; the library "
                    f"would return its cached values",
                )
            try:
                temperature = self._device.temperature  # measures (2 s gate open)
                humidity = self._device.humidity  # same measurement, from the library's cache
            except RuntimeError as error:
                raise SensorReadError(error_class(error), str(error)) from None
            finally:
                # After the read: never earlier than the library's own mark, so our gate
                # closes at least as long as the library's does.
                self._last_read_s = self._clock.monotonic()
            if temperature is None or humidity is None:
                raise SensorReadError("no_value", "the library returned no value")
            return {"temperature_c": float(temperature), "humidity_pct": float(humidity)}

    def close(self) -> None:
        """Release the GPIO line (``exit()`` stops the PulseIn helper); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._device.exit()
