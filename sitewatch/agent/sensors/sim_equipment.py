"""Simulated equipment (a compressor's run contact, a door reed) through the real GPIO path.

The simulation does not fake readings: it drives a pin of gpiozero's ``MockFactory`` from a
seeded schedule, with a few milliseconds of contact bounce on every change, and reads it back
through ``GpioInputDriver``. Debounce, state-change events, duty cycle, starts per hour and
runtime hours therefore come out of exactly the code that serves real equipment.

``PinSchedule`` is the schedule as a pure generator of edges; ``SimulatedEquipmentDriver``
applies it to the pin, from its own thread with a real clock or, in tests with a
``FakeClock``, through ``advance_to(now_s)`` / ``step(now_s)``.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import Fields
from sitewatch.agent.sensors.gpio_input import GpioInputConfig, GpioInputDriver
from sitewatch.agent.sensors.sim_faults import FaultConfig, check_read_faults
from sitewatch.agent.worker import Worker
from sitewatch.clock import Clock
from sitewatch.wire import Event

__all__ = ["BOUNCE_OFFSETS_S", "EquipmentModelName", "PinSchedule", "SimulatedEquipmentDriver"]

EquipmentModelName = Literal["compressor", "door"]

BOUNCE_OFFSETS_S = (0.0, 0.002, 0.005)
"""Each change is three edges: to the new level, back, and to the new level again."""


@dataclass(frozen=True)
class _Timing:
    on_s: tuple[float, float]
    off_s: tuple[float, float]


_NORMAL = {
    # A thermostat cycle: ~50 % duty, about 2.5 starts per hour.
    "compressor": _Timing(on_s=(540.0, 900.0), off_s=(540.0, 900.0)),
    # A door opened now and then for under a minute and a half.
    "door": _Timing(on_s=(10.0, 90.0), off_s=(600.0, 2400.0)),
}
_SHORT_CYCLING = _Timing(on_s=(60.0, 150.0), off_s=(60.0, 120.0))
_SCHEDULE_FAULTS = ("stuck", "door_left_open", "short_cycling")


class PinSchedule:
    """Seeded edges of one simulated contact, as ``(monotonic_s, active)``.

    The contact starts inactive (compressor resting, door closed), part-way through its
    first rest. Faults change the pattern while active: ``stuck`` freezes the contact,
    ``door_left_open`` holds it active (and it is released when the fault ends),
    ``short_cycling`` runs short on/off cycles.
    """

    def __init__(self, model: str, seed: int, faults: list[FaultConfig], start_s: float) -> None:
        self.model = model
        self.faults = [f for f in faults if f.kind in _SCHEDULE_FAULTS]
        self.start_s = start_s
        self.active = False
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self._t = start_s
        self._first = True
        self._held_open = False
        self._last_edge_s = -math.inf
        self._edges: deque[tuple[float, bool]] = deque()
        self._boundaries = sorted(
            {b for f in self.faults for b in (f.start_s, f.end_s) if b is not None}
        )

    def next_edge_s(self) -> float:
        """When the next edge happens (monotonic s); infinity if the contact never moves."""
        while not self._edges and self._t < math.inf:
            self._step()
        return self._edges[0][0] if self._edges else math.inf

    def edges_until(self, now_s: float) -> list[tuple[float, bool]]:
        """Remove and return the edges due at or before ``now_s``, in order."""
        due = []
        while self.next_edge_s() <= now_s:
            due.append(self._edges.popleft())
        return due

    def _mode(self, elapsed_s: float) -> tuple[str, FaultConfig | None]:
        for kind in _SCHEDULE_FAULTS:
            for fault in self.faults:
                if fault.kind == kind and fault.active(elapsed_s):
                    return kind, fault
        return "normal", None

    def _step(self) -> None:
        elapsed_s = self._t - self.start_s
        later = [b for b in self._boundaries if b > elapsed_s]
        boundary_s = self.start_s + later[0] if later else math.inf
        mode, fault = self._mode(elapsed_s)
        if mode == "stuck":
            self._t = boundary_s
            return
        if mode == "door_left_open":
            self._held_open = True
            if self.active:
                self._t = boundary_s
            else:
                self._change(self._t, True)
            return
        if self._held_open:  # the fault is over: someone closes the door
            self._held_open = False
            if self.active:
                self._change(self._t, False)
                return
        timing = _SHORT_CYCLING if mode == "short_cycling" else _NORMAL[self.model]
        low, high = timing.on_s if self.active else timing.off_s
        fixed = None if fault is None else (fault.on_s if self.active else fault.off_s)
        if fixed is not None:
            hold_s = fixed
        elif self._first:
            hold_s = self._rng.uniform(0.0, high)
        else:
            hold_s = self._rng.uniform(low, high)
        self._first = False
        if self._t + hold_s > boundary_s:
            self._t = boundary_s  # re-decide at the fault boundary
        else:
            self._change(self._t + hold_s, not self.active)

    def _change(self, at_s: float, active: bool) -> None:
        at_s = max(at_s, self._last_edge_s + 0.01)
        level = active
        for offset in BOUNCE_OFFSETS_S:
            self._edges.append((at_s + offset, level))
            level = not level
        self._last_edge_s = at_s + BOUNCE_OFFSETS_S[-1]
        self.active = active
        self._t = at_s


class _EdgeClock:
    """The input driver's clock inside a simulation.

    While the simulation drives a scheduled edge, the calling thread sees that edge's time,
    so the callback stamps the edge when the schedule says it happened even if the pin is
    driven later (a test stepping a ``FakeClock`` by minutes). MockFactory runs callbacks in
    the driving thread, and the override is thread-local, so other threads see the base clock.
    """

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._local = threading.local()

    @contextmanager
    def at(self, monotonic_s: float) -> Iterator[None]:
        self._local.at = monotonic_s
        try:
            yield
        finally:
            self._local.at = None

    def monotonic(self) -> float:
        at: float | None = getattr(self._local, "at", None)
        return self.base.monotonic() if at is None else at

    def time(self) -> float:
        at: float | None = getattr(self._local, "at", None)
        wall = self.base.time()
        return wall if at is None else wall - (self.base.monotonic() - at)

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        return self.base.sleep(seconds, stop)


class SimulatedEquipmentDriver:
    """A compressor (``running`` + counters) or a door (``open``) on a mock GPIO pin.

    The pin is on ``hardware``'s factory when that is the mock factory (so a test sees it),
    else on a private ``MockFactory``. ``pin`` None takes the highest free GPIO.
    ``read()`` applies the schedule up to now first, then reads through ``self.gpio``.
    """

    min_read_spacing_s: float = 0.0

    def __init__(
        self,
        sensor_id: str,
        model: str,
        seed: int,
        faults: list[FaultConfig],
        hardware: Hardware,
        *,
        pin: int | None = None,
        interval_s: float = 60.0,
    ) -> None:
        from gpiozero.pins.mock import MockFactory

        self.sensor_id = sensor_id
        self.seed = seed
        self.faults = list(faults)
        self.clock = hardware.clock
        self._edge_clock = _EdgeClock(hardware.clock)
        shared = hardware.pin_factory_name == "mock" or _is_mock(hardware.pin_factory)
        factory = hardware.gpio_factory() if shared else MockFactory()
        inner = Hardware(
            pin_factory_name="mock",
            pin_factory=factory,
            state_dir=hardware.state_dir,
            clock=self._edge_clock,
        )
        self.started_s = self.clock.monotonic()
        self.gpio = self._open(sensor_id, model, inner, pin, interval_s)
        self.schedule = PinSchedule(model, seed, self.faults, self.started_s)
        self._lock = threading.Lock()
        self.worker = Worker(f"sim-{sensor_id}", self._play, self.clock)
        self._closed = False

    @staticmethod
    def _open(
        sensor_id: str, model: str, hardware: Hardware, pin: int | None, interval_s: float
    ) -> GpioInputDriver:
        from gpiozero.exc import GPIOPinInUse

        role = "running" if model == "compressor" else "door"
        for candidate in [pin] if pin is not None else range(27, 3, -1):
            config = GpioInputConfig(
                id=sensor_id, driver="gpio_input", pin=candidate, role=role, interval_s=interval_s
            )
            try:
                return GpioInputDriver(config, hardware)
            except SensorFault as error:
                if pin is not None or not isinstance(error.__cause__, GPIOPinInUse):
                    raise
        raise SensorFault("no free GPIO left on the mock pin factory for a simulated input")

    @property
    def pin(self) -> int:
        return self.gpio.config.pin

    def advance_to(self, now_s: float) -> int:
        """Drive every scheduled edge up to ``now_s`` (monotonic); returns how many."""
        with self._lock:
            if self._closed:
                return 0
            edges = self.schedule.edges_until(now_s)
            mock_pin = self.gpio.device.pin
            for at_s, active in edges:
                with self._edge_clock.at(at_s):
                    # The input has a pull-up: a closed contact (active) pulls it low.
                    if active:
                        mock_pin.drive_low()
                    else:
                        mock_pin.drive_high()
            return len(edges)

    def step(self, now_s: float | None = None) -> list[Event]:
        """``advance_to`` then ``gpio.poll``: what a FakeClock test calls after advancing."""
        now = self.clock.monotonic() if now_s is None else now_s
        self.advance_to(now)
        return self.gpio.poll(now)

    def subscribe(self, emit: Callable[[Event], None]) -> None:
        self.gpio.subscribe(emit)

    def start_events(self, emit: Callable[[Event], None]) -> None:
        """Start the input's worker and the thread that plays the schedule in real time."""
        self.gpio.start_events(emit)
        with self._lock:
            if not self._closed:
                self.worker.start()

    def _play(self) -> float:
        self.advance_to(self.clock.monotonic())
        with self._lock:  # read() may advance the schedule from the poller's thread
            return self.schedule.next_edge_s()

    def read(self) -> Fields:
        """The contact's confirmed state (and counters), or a simulated read failure."""
        if self._closed:
            raise SensorFault(f"sensor {self.sensor_id} is closed")
        now = self.clock.monotonic()
        self.advance_to(now)
        check_read_faults(self.faults, self.seed, now - self.started_s, self.clock.time())
        return self.gpio.read()

    def close(self) -> None:
        """Stop the schedule thread and close the input. Safe to call twice."""
        self.worker.stop()
        with self._lock:
            self._closed = True
        self.gpio.close()


def _is_mock(factory: object) -> bool:
    if factory is None:
        return False
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)
