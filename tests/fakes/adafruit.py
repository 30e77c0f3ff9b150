"""A fake of adafruit-circuitpython-dht 4.x that behaves like the library, traps included.

``FakeDHT22`` models what matters to a caller of ``adafruit_dht.DHT22``:

- ``measure()`` talks to the "sensor" only when its previous call is more than 2 s ago (or
  it never ran), and records the time *before* the read, on the clock it was given;
- within those 2 s, ``temperature``/``humidity`` silently return the last stored values,
  which are ``None`` before any good read and stale after a failed one;
- failures are ``RuntimeError`` with the library's messages; humidity outside 0-100 is
  "Received unplausible data"; a failed read leaves the stored values alone;
- ``exit()`` frees the PulseIn helper; using the object afterwards raises ``ValueError``
  as CircuitPython's deinitialised objects do.

``install_fake_library`` puts module objects named ``adafruit_dht`` and ``board`` into
``sys.modules`` so the driver's real lazy import path builds fakes.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections import deque
from dataclasses import dataclass, field

import pytest

from sitewatch.clock import Clock

GATE_S = 2.0

MESSAGES = {
    "no_response": "DHT sensor not found, check wiring",
    "short_read": "A full buffer was not returned. Try again.",
    "checksum": "Checksum did not validate. Try again.",
    "implausible": "Received unplausible data",
}
"""Error class → the library's exact RuntimeError message."""

Outcome = tuple[float, float] | str
"""A scripted measurement: ``(temperature_c, humidity_pct)``, a key of ``MESSAGES``, or any
other RuntimeError message."""


@dataclass(frozen=True)
class FakePin:
    """A ``board.D<n>`` pin object."""

    id: int


class FakeDHT22:
    """Stands in for ``adafruit_dht.DHT22(pin, use_pulseio=...)``; see the module docstring.

    Scripted ``outcomes`` are used one per real measurement; when they run out, ``level``
    (a good reading) is measured. ``measurements`` counts real sensor transactions and
    ``exit_calls`` the calls to ``exit()``.
    """

    def __init__(
        self,
        pin: FakePin,
        use_pulseio: bool = True,
        *,
        clock: Clock,
        outcomes: list[Outcome] | None = None,
        level: tuple[float, float] = (21.0, 45.0),
    ) -> None:
        self.pin = pin
        self.use_pulseio = use_pulseio
        self.clock = clock
        self.outcomes: deque[Outcome] = deque(outcomes or [])
        self.level = level
        self.measurements = 0
        self.exit_calls = 0
        # The library starts from 0 ("never"); a FakeClock may really be at 0, so None.
        self._last_called: float | None = None
        self._temperature: float | None = None
        self._humidity: float | None = None

    def measure(self) -> None:
        if self.exit_calls:
            raise ValueError("Object has been deinitialized and can no longer be used.")
        now = self.clock.monotonic()
        if self._last_called is not None and now - self._last_called <= GATE_S:
            return  # the library's silent cache: nothing happens, old values stay
        self._last_called = now
        self.measurements += 1
        outcome = self.outcomes.popleft() if self.outcomes else self.level
        if isinstance(outcome, str):
            raise RuntimeError(MESSAGES.get(outcome, outcome))
        temperature, humidity = outcome
        if not 0 <= humidity <= 100:
            raise RuntimeError(MESSAGES["implausible"])
        self._temperature, self._humidity = temperature, humidity

    @property
    def temperature(self) -> float | None:
        self.measure()
        return self._temperature

    @property
    def humidity(self) -> float | None:
        self.measure()
        return self._humidity

    def exit(self) -> None:
        self.exit_calls += 1


@dataclass
class FakeLibrary:
    """The installed fake: every device the "library" built, in order."""

    clock: Clock
    outcomes: list[Outcome] = field(default_factory=list)
    devices: list[FakeDHT22] = field(default_factory=list)

    def build(self, pin: FakePin, use_pulseio: bool = True) -> FakeDHT22:
        device = FakeDHT22(pin, use_pulseio, clock=self.clock, outcomes=list(self.outcomes))
        self.devices.append(device)
        return device


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() sees it
    return module


def install_fake_library(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, outcomes: list[Outcome] | None = None
) -> FakeLibrary:
    """Make ``import adafruit_dht, board`` give fakes for the rest of the test."""
    library = FakeLibrary(clock, list(outcomes or []))
    dht_module = _module("adafruit_dht")
    dht_module.DHT22 = library.build  # type: ignore[attr-defined]
    board = _module("board")
    for number in range(28):
        setattr(board, f"D{number}", FakePin(number))
    monkeypatch.setitem(sys.modules, "adafruit_dht", dht_module)
    monkeypatch.setitem(sys.modules, "board", board)
    return library


def hide_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``adafruit_dht`` unimportable (as on a machine without the ``pi`` extra)."""
    monkeypatch.setitem(sys.modules, "adafruit_dht", None)
