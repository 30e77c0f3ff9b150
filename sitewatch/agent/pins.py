"""GPIO pin names and the pins that firmware overlays claim by default.

Pins are BCM GPIO numbers. Config may write ``4``, ``"4"``, ``"GPIO4"`` or ``"gpio4"``.
The kernel overlays below take their pins by default when ``config.txt`` does not say
otherwise (``raspberrypi/firmware:boot/overlays/README``): ``dht11`` and ``w1-gpio`` both
default to GPIO4, the I2C bus uses GPIO2/3, SPI0 GPIO7-11, UART0 GPIO14/15.

>>> parse_pin("GPIO17"), pin_name(17)
(17, 'GPIO17')
"""

from __future__ import annotations

__all__ = ["BCM_PINS", "OVERLAY_DEFAULT_PINS", "parse_pin", "pin_name"]

BCM_PINS = range(0, 28)
"""GPIO numbers on the 40-pin header of every Pi since the B+."""

OVERLAY_DEFAULT_PINS: dict[str, tuple[int, ...]] = {
    "dht11": (4,),
    "w1-gpio": (4,),
    "i2c_arm": (2, 3),
    "spi": (7, 8, 9, 10, 11),
    "uart0": (14, 15),
}
"""Overlay or dtparam name → GPIO pins it claims when no ``gpiopin=`` is given."""


def parse_pin(value: object) -> int:
    """A BCM GPIO number from ``4``, ``"4"`` or ``"GPIO4"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a GPIO pin such as GPIO4, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper().removeprefix("GPIO").removeprefix("BCM")
        if not text.isdigit():
            raise ValueError(f"expected a GPIO pin such as GPIO4, got {value!r}")
        number = int(text)
    else:
        raise ValueError(f"expected a GPIO pin such as GPIO4, got {value!r}")
    if number not in BCM_PINS:
        raise ValueError(f"GPIO{number} is not on the 40-pin header (GPIO0-GPIO27)")
    return number


def pin_name(pin: int) -> str:
    """The display name of a BCM pin."""
    return f"GPIO{pin}"
