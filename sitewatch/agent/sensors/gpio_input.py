"""Binary equipment inputs on a GPIO: run contacts, door reeds, vibration and dry contacts.

gpiozero's ``DigitalInputDevice`` watches the pin; its callbacks only queue
``(monotonic, wall, level)``. Everything that decides lives in agent code where it can be
tested (``agent/equipment.py``): a level must hold for ``confirm_active_s`` /
``confirm_inactive_s`` before it is confirmed, and confirmed changes feed the equipment
counters (duty cycle, starts per hour, runtime hours, persisted in ``hardware.state_dir``).
Keep gpiozero's own ``bounce_time_s`` small (≤ 0.02 s) or off: its meaning differs between
backends, and lgpio's kernel debouncer delays every edge by it.

Confirmed changes go out as ``state_change`` events through ``start_events(emit)`` (a worker
thread) or, in tests, through ``subscribe(emit)`` plus ``poll(now_s)`` with a ``FakeClock``.
The state found at start is confirmed at once and published with no ``previous_duration_s``
(gpiozero fires no callback for it).

>>> config = GpioInputConfig(id="compressor-1", driver="gpio_input", pin="GPIO17")
>>> config.fields(), config.confirm_active_s, config.counters
(['running', 'duty_cycle_pct', 'starts_per_h', 'runtime_h'], 2.0, True)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sitewatch.agent.equipment import StateConfirmer, Transition
from sitewatch.agent.equipment_store import CounterStore
from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.pins import parse_pin, pin_name
from sitewatch.agent.protocols import Fields
from sitewatch.agent.sensors import register
from sitewatch.agent.sensors.base import PinClaim, SensorConfig
from sitewatch.agent.worker import Worker
from sitewatch.wire import Event, EventType

__all__ = [
    "COUNTER_FIELDS",
    "ROLE_DEFAULTS",
    "ROLE_FIELDS",
    "GpioInputConfig",
    "GpioInputDriver",
    "build",
]

Role = Literal["running", "door", "vibration", "contact"]

ROLE_FIELDS: dict[str, str] = {
    "running": "running",
    "door": "open",
    "vibration": "vibrating",
    "contact": "active",
}
"""Role → the reading field that carries its state."""

ROLE_DEFAULTS: dict[str, tuple[float, float]] = {
    "running": (2.0, 2.0),
    "door": (1.0, 1.0),
    "vibration": (0.0, 5.0),
    "contact": (0.5, 0.5),
}
"""Role → default (confirm_active_s, confirm_inactive_s). A vibration switch chatters while
the machine runs, so any pulse counts as active and only 5 s of quiet as stopped."""

COUNTER_FIELDS = ("duty_cycle_pct", "starts_per_h", "runtime_h")

_MAX_BUFFERED_EVENTS = 100


class GpioInputConfig(SensorConfig):
    """A binary input on one GPIO.

    ``pin``: BCM GPIO (``27``, ``"27"`` or ``"GPIO27"``). ``role``: ``running`` (default;
    field ``running``), ``door`` (``open``), ``vibration`` (``vibrating``) or ``contact``
    (``active``). ``pull_up``: true (default: contact to GND,
    active when closed), false (active high), or null for a floating input with an external
    pull, which then needs ``active_state`` (true: active when high). ``confirm_active_s`` /
    ``confirm_inactive_s``: how long a level must hold to count (defaults by role: running
    2/2 s, door 1/1 s, vibration 0/5 s, contact 0.5/0.5 s). ``bounce_time_s``: gpiozero's
    edge filter (default off; keep ≤ 0.02). ``counters``: publish duty cycle, starts/h and
    runtime hours (default on for ``running`` only).
    """

    driver_name: ClassVar[str] = "gpio_input"
    default_sampling: ClassVar[dict[str, object]] = {"max_attempts": 1, "median_window": 1}

    driver: Literal["gpio_input"] = "gpio_input"
    pin: int
    role: Role = "running"
    pull_up: bool | None = True
    active_state: bool | None = None
    # The defaults below are the ``running`` role's; ``_role_defaults`` fills in the
    # configured role's before validation whenever a key is absent or null.
    confirm_active_s: Annotated[float, Field(ge=0, le=3600)] = 2.0
    confirm_inactive_s: Annotated[float, Field(ge=0, le=3600)] = 2.0
    bounce_time_s: Annotated[float, Field(gt=0, le=0.1)] | None = None
    counters: bool = True

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: object) -> int:
        return parse_pin(value)

    @model_validator(mode="before")
    @classmethod
    def _role_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        role = data.get("role", "running")
        if not isinstance(role, str):  # a list would be unhashable here; validation names it
            role = "running"
        active_s, inactive_s = ROLE_DEFAULTS.get(role, ROLE_DEFAULTS["running"])
        for key, default in (
            ("confirm_active_s", active_s),
            ("confirm_inactive_s", inactive_s),
            ("counters", role == "running"),
        ):
            if data.get(key) is None:
                data[key] = default
        return data

    @model_validator(mode="after")
    def _pull(self) -> GpioInputConfig:
        if self.pull_up is None and self.active_state is None:
            raise ValueError(
                "pull_up: null (floating input with an external pull resistor) needs "
                "active_state: true if the input is active when high, false if active when low"
            )
        if self.pull_up is not None and self.active_state is not None:
            level = "low" if self.pull_up else "high"
            raise ValueError(
                f"active_state only applies with pull_up: null; with pull_up: "
                f"{str(self.pull_up).lower()} the input is active when {level} "
                f"(remove active_state, or set pull_up: null for an external pull resistor)"
            )
        return self

    @property
    def field(self) -> str:
        return ROLE_FIELDS[self.role]

    def claimed_pins(self) -> list[PinClaim]:
        return [PinClaim(self.pin, "pin")]

    def fields(self) -> list[str]:
        return [self.field, *(COUNTER_FIELDS if self.counters else ())]


class GpioInputDriver:
    """A ``SensorDriver`` and ``EventSource`` for one ``GpioInputConfig``.

    ``read()`` returns the confirmed state (and the counters when enabled). Confirmed
    changes are emitted as ``state_change`` events; until an ``emit`` is attached they are
    buffered (up to 100). ``poll(now_s)`` does all the work (drain queued edges, confirm,
    count, save) and is what both the worker thread and ``read()`` call, so a test with a
    ``FakeClock`` steps it deterministically without starting the thread.
    """

    min_read_spacing_s: float = 0.0

    def __init__(self, config: GpioInputConfig, hardware: Hardware) -> None:
        from gpiozero import DigitalInputDevice
        from gpiozero.exc import GPIOZeroError

        self.config = config
        self.field = config.field
        self.clock = hardware.clock
        self._edges: queue.SimpleQueue[tuple[float, float, bool]] = queue.SimpleQueue()
        self._lock = threading.RLock()
        self.worker = Worker(f"gpio-{config.id}", self._work, self.clock)
        self._emit: Callable[[Event], None] | None = None
        self._buffered: list[Event] = []
        self._closed = False
        factory = hardware.gpio_factory()
        try:
            self.device = DigitalInputDevice(
                config.pin,
                pull_up=config.pull_up,
                active_state=config.active_state,
                bounce_time=config.bounce_time_s,
                pin_factory=factory,
            )
        except (GPIOZeroError, OSError) as error:
            raise SensorFault(
                f"cannot open {pin_name(config.pin)} as an input: {error}",
                fix="check that no other program or overlay uses the pin",
            ) from error
        try:
            # Attach before reading the level: no edge can fall between the read and the
            # callbacks (one that races the read is queued and settled by the confirmer).
            self.device.when_activated = self._on_activated
            self.device.when_deactivated = self._on_deactivated
            self.confirmer = StateConfirmer(config.confirm_active_s, config.confirm_inactive_s)
            path = None
            if config.counters and hardware.state_dir is not None:
                path = hardware.state_dir / f"equipment-{config.id}.json"
            self.store = CounterStore(path, self.clock) if config.counters else None
            now_mono, now_wall = self.clock.monotonic(), self.clock.time()
            initial = self.confirmer.start(bool(self.device.is_active), now_mono, now_wall)
            self._apply([initial])
        except BaseException:
            self.device.close()
            raise

    # -- gpiozero callbacks (any thread): record only ---------------------------------------
    def _on_activated(self) -> None:
        self._edges.put((self.clock.monotonic(), self.clock.time(), True))
        self.worker.wake()

    def _on_deactivated(self) -> None:
        self._edges.put((self.clock.monotonic(), self.clock.time(), False))
        self.worker.wake()

    # -- the work --------------------------------------------------------------------------
    def poll(self, now_s: float | None = None) -> list[Event]:
        """Process queued edges and confirmations up to ``now_s`` (monotonic; default now).

        Returns the events confirmed by this call (they are also emitted or buffered).
        """
        with self._lock:
            if self._closed:
                return []
            now = self.clock.monotonic() if now_s is None else now_s
            transitions: list[Transition] = []
            while True:
                try:
                    mono, wall, level = self._edges.get_nowait()
                except queue.Empty:
                    break
                transitions += self.confirmer.observe(level, mono, wall)
            transitions += self.confirmer.advance(now)
            events = self._apply(transitions)
            if self.store is not None:
                self.store.maybe_save(now)
            return events

    def _apply(self, transitions: list[Transition]) -> list[Event]:
        events = []
        for change in transitions:
            if self.store is not None:
                self.store.record(change.state, change.monotonic_s)
            duration = change.previous_duration_s
            events.append(
                Event(
                    sensor=self.config.id,
                    ts=round(change.wall_s * 1000),
                    type=EventType.STATE_CHANGE,
                    field=self.field,
                    value=change.state,
                    previous_duration_s=None if duration is None else round(max(0.0, duration), 3),
                )
            )
        if self._emit is not None:
            for event in events:
                self._emit(event)
        else:
            self._buffered = (self._buffered + events)[-_MAX_BUFFERED_EVENTS:]
        return events

    def next_deadline_s(self) -> float | None:
        """When (monotonic s) ``poll`` next has work without a new edge, if ever."""
        with self._lock:
            deadlines = [self.confirmer.deadline()]
            if self.store is not None:
                deadlines.append(self.store.next_save_s())
            pending = [d for d in deadlines if d is not None]
            return min(pending) if pending else None

    def _work(self) -> float | None:
        self.poll()
        return self.next_deadline_s()

    # -- EventSource -----------------------------------------------------------------------
    def subscribe(self, emit: Callable[[Event], None]) -> None:
        """Send confirmed changes to ``emit`` from now on, starting with any buffered ones
        (the state found at start among them). No thread: call ``poll`` to make progress."""
        with self._lock:
            self._emit = emit
            buffered, self._buffered = self._buffered, []
            for event in buffered:
                emit(event)

    def start_events(self, emit: Callable[[Event], None]) -> None:
        """``subscribe(emit)`` and start the worker thread that polls on edges and deadlines."""
        self.subscribe(emit)
        with self._lock:
            if not self._closed:
                self.worker.start()

    # -- SensorDriver ----------------------------------------------------------------------
    @property
    def state(self) -> bool:
        """The confirmed state (as of the last ``poll``)."""
        return bool(self.confirmer.state)

    def read(self) -> Fields:
        """The confirmed state now, plus ``duty_cycle_pct``/``starts_per_h``/``runtime_h``."""
        with self._lock:
            if self._closed:
                raise SensorFault(f"sensor {self.config.id} is closed")
            self.poll()
            fields: Fields = {self.field: self.state}
            if self.store is not None:
                fields.update(self.store.counters.snapshot(self.clock.monotonic()))
            return fields

    def close(self) -> None:
        """Stop the worker, release the pin and save the counters. Safe to call twice."""
        self.worker.stop()
        with self._lock:
            if self._closed:
                return
            self.poll()
            self._closed = True
            self.device.close()
            if self.store is not None:
                self.store.save()


@register(GpioInputConfig)
def build(config: GpioInputConfig, hardware: Hardware) -> GpioInputDriver:
    """Open the input; its events start when the agent calls ``start_events``."""
    return GpioInputDriver(config, hardware)
