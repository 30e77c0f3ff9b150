"""Where drivers find the hardware: sysfs and /dev roots, the gpiozero pin factory, the clock.

Everything a driver touches outside Python goes through a ``Hardware`` passed to it, so tests
point drivers at a fake sysfs tree and at gpiozero's ``MockFactory`` without patching.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sitewatch.clock import Clock, SystemClock

__all__ = ["Hardware", "HardwareSettings"]


class HardwareSettings(Protocol):
    """The ``hardware:`` section of an agent config (``config.HardwareConfig``)."""

    @property
    def sysfs_root(self) -> Path: ...
    @property
    def dev_root(self) -> Path: ...
    @property
    def pin_factory(self) -> str: ...
    @property
    def gpio_chip(self) -> int | None: ...


@dataclass
class Hardware:
    """Hardware access for drivers.

    ``sysfs_root`` (default ``/sys``) holds ``bus/iio`` (kernel DHT driver) and ``bus/w1``
    (1-Wire). ``pin_factory`` is a gpiozero pin factory, or None to build one on first use:
    ``mock`` gives gpiozero's ``MockFactory``, ``lgpio`` an ``LGPIOFactory`` on ``gpio_chip``
    (None: found by the chip's ``of_node/compatible``, never a hard-coded number).
    ``state_dir`` is where drivers persist small state across restarts (equipment counters);
    None keeps it in memory only.
    """

    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    pin_factory_name: str = "auto"
    gpio_chip: int | None = None
    pin_factory: Any = None
    state_dir: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(
        cls,
        settings: HardwareSettings,
        *,
        clock: Clock | None = None,
        state_dir: Path | None = None,
    ) -> Hardware:
        """The hardware a config's ``hardware:`` section describes."""
        return cls(
            sysfs_root=settings.sysfs_root,
            dev_root=settings.dev_root,
            pin_factory_name=settings.pin_factory,
            gpio_chip=settings.gpio_chip,
            state_dir=state_dir,
            clock=clock or SystemClock(),
        )

    def gpio_factory(self) -> Any:
        """The gpiozero pin factory, built once (lazily: gpiozero backends are Pi-only)."""
        with self._lock:
            if self.pin_factory is None:
                self.pin_factory = self._build_factory()
            return self.pin_factory

    def _build_factory(self) -> Any:
        try:
            return self._import_factory()
        except ImportError as error:
            from sitewatch.agent.errors import SensorFault

            raise SensorFault(
                f"GPIO pin factory {self.pin_factory_name!r} is not available: {error}",
                fix="install the Pi extra (pip install 'sitewatch[pi]'), or python3-lgpio "
                "from apt with a venv made with --system-site-packages",
            ) from None

    def _import_factory(self) -> Any:
        name = self.pin_factory_name
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name in ("auto", "lgpio"):
            from gpiozero.pins.lgpio import LGPIOFactory

            chip = self.gpio_chip if self.gpio_chip is not None else self.find_gpio_chip()
            return LGPIOFactory(chip=chip)
        raise ValueError(f"unknown pin factory {name!r}; expected auto, lgpio or mock")

    def find_gpio_chip(self) -> int:
        """The gpiochip number of the header GPIOs, from ``of_node/compatible``.

        The RP1 chip on a Pi 5 has been gpiochip4, gpiochip0 and gpiochip1x depending on the
        kernel, so the number is looked up rather than assumed.
        """
        wanted = (b"raspberrypi,rp1-gpio", b"brcm,bcm2711-gpio", b"brcm,bcm2835-gpio")
        base = self.sysfs_root / "bus" / "gpio" / "devices"
        for chip in sorted(base.glob("gpiochip*")):
            compatible = chip / "of_node" / "compatible"
            try:
                data = compatible.read_bytes()
            except OSError:
                continue
            if any(name in data for name in wanted):
                return int(chip.name.removeprefix("gpiochip"))
        from sitewatch.agent.errors import SensorFault

        raise SensorFault(
            f"no Raspberry Pi GPIO chip found under {base}",
            fix="set hardware.gpio_chip in the agent config (see `gpioinfo`)",
        )
