"""Binary inputs on gpiozero's MockFactory, stepped with a FakeClock."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from sitewatch.agent.config import parse_config
from sitewatch.agent.errors import ConfigError, SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import EventSource, SensorDriver
from sitewatch.agent.sensors import build_driver
from sitewatch.agent.sensors.gpio_input import GpioInputConfig, GpioInputDriver
from sitewatch.clock import FakeClock
from sitewatch.wire import Event, EventType

PIN = 17


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_s=1_795_464_000.0, monotonic_s=0.0)


def _driver(
    factory: MockFactory, clock: FakeClock, state_dir: Path | None = None, **settings: Any
) -> GpioInputDriver:
    config = GpioInputConfig.model_validate(
        {"id": "compressor-1", "driver": "gpio_input", "pin": PIN, **settings}
    )
    hardware = Hardware(pin_factory=factory, clock=clock, state_dir=state_dir)
    driver = build_driver(config, hardware)
    assert isinstance(driver, GpioInputDriver)
    return driver


def _press(factory: MockFactory, clock: FakeClock, active: bool) -> None:
    """Close (active) or open the contact with 5 ms of bounce; pull-up: closed is low."""
    pin = factory.pin(PIN)
    settle, bounce = (pin.drive_low, pin.drive_high) if active else (pin.drive_high, pin.drive_low)
    for drive in (settle, bounce, settle, bounce, settle):
        drive()
        clock.advance(0.001)


def _at(clock: FakeClock, driver: GpioInputDriver, monotonic_s: float) -> list[Event]:
    clock.advance(monotonic_s - clock.monotonic())
    return driver.poll()


def test_gpio_input_is_a_driver_and_an_event_source(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    driver = _driver(mock_factory, clock)
    assert isinstance(driver, SensorDriver)
    assert isinstance(driver, EventSource)
    assert driver.min_read_spacing_s == 0.0


def test_gpio_input_bouncing_contact_gives_one_state_change(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    driver = _driver(mock_factory, clock)
    events: list[Event] = []
    driver.subscribe(events.append)
    assert [e.value for e in events] == [False]  # the state found at start
    clock.advance(10.0)
    _press(mock_factory, clock, active=True)  # edges at 10.000 .. 10.004
    assert driver.poll() == []
    assert _at(clock, driver, 12.0035) == []  # 1.9995 s after the last bounce
    confirmed = _at(clock, driver, 12.0045)
    assert [(e.type, e.field, e.value) for e in confirmed] == [
        (EventType.STATE_CHANGE, "running", True)
    ]
    assert confirmed[0].ts == 1_795_464_010_004  # the last bounce's edge, not the confirmation
    assert confirmed[0].previous_duration_s is None  # when the first state began is unknown
    assert _at(clock, driver, 100.0) == []
    assert events[1:] == confirmed
    assert driver.read()["running"] is True


@pytest.mark.parametrize(
    ("role", "field", "active_s", "inactive_s"),
    [
        ("running", "running", 2.0, 2.0),
        ("door", "open", 1.0, 1.0),
        ("vibration", "vibrating", 0.0, 5.0),
        ("contact", "active", 0.5, 0.5),
    ],
)
def test_gpio_input_confirm_times_per_role(
    mock_factory: MockFactory,
    clock: FakeClock,
    role: str,
    field: str,
    active_s: float,
    inactive_s: float,
) -> None:
    driver = _driver(mock_factory, clock, role=role)
    pin = mock_factory.pin(PIN)
    clock.advance(5.0)
    pin.drive_low()
    if active_s > 0:
        assert _at(clock, driver, 5.0 + active_s - 0.01) == []
    on = _at(clock, driver, 5.0 + active_s + (0.001 if active_s else 0.0))
    assert [(e.value, e.ts) for e in on] == [(True, 1_795_464_005_000)]
    assert driver.read()[field] is True
    pin.drive_high()
    edge_s = clock.monotonic()
    assert _at(clock, driver, edge_s + inactive_s - 0.01) == []
    off = _at(clock, driver, edge_s + inactive_s + 0.001)
    assert [(e.field, e.value) for e in off] == [(field, False)]
    assert off[0].previous_duration_s == pytest.approx(edge_s - 5.0, abs=1e-3)


def test_gpio_input_initial_state_is_published(mock_factory: MockFactory, clock: FakeClock) -> None:
    # A floating input with an external pull-up, already closed (low) when the agent starts.
    mock_factory.pin(PIN).drive_low()
    driver = _driver(mock_factory, clock, pull_up=None, active_state=False, role="door")
    events: list[Event] = []
    driver.start_events(events.append)
    driver.close()
    assert len(events) == 1
    assert (events[0].field, events[0].value) == ("open", True)
    assert events[0].previous_duration_s is None
    assert events[0].ts == round(clock.time() * 1000)


def test_gpio_input_counters_for_a_scripted_pattern(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    driver = _driver(mock_factory, clock)
    events: list[Event] = []
    driver.subscribe(events.append)
    # Off from 0; on at 100, off at 700, on at 1300, off at 1600, on at 2500 (edge times).
    for edge_s, active in [
        (100.0, True),
        (700.0, False),
        (1300.0, True),
        (1600.0, False),
        (2500.0, True),
    ]:
        _at(clock, driver, edge_s)
        _press(mock_factory, clock, active)
        _at(clock, driver, edge_s + 30.0)
    _at(clock, driver, 3600.0)
    # The last bounce ends 4 ms after each scripted edge; that edge starts the stable run.
    on_s = (700 - 100) + (1600 - 1300) + (3600 - 2500.004)
    fields = driver.read()
    assert fields["running"] is True
    assert fields["duty_cycle_pct"] == pytest.approx(100 * on_s / 3600, abs=0.01)
    assert fields["starts_per_h"] == 3.0
    assert fields["runtime_h"] == pytest.approx(on_s / 3600, abs=1e-4)
    durations = [e.previous_duration_s for e in events]
    assert durations == [None, None, 600.0, 600.0, 300.0, 900.0]


def test_gpio_input_runtime_survives_a_restart(
    mock_factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    first = _driver(mock_factory, clock, state_dir=tmp_path)
    _at(clock, first, 10.0)
    _press(mock_factory, clock, active=True)
    _at(clock, first, 1810.004)  # on for 1800 s (from the edge at 10.004)
    assert first.read()["runtime_h"] == pytest.approx(0.5, abs=1e-4)
    first.close()
    assert (tmp_path / "equipment-compressor-1.json").exists()

    # A reboot: monotonic time starts again, wall time moved on by the 600 s of downtime.
    rebooted = FakeClock(wall_s=clock.time() + 600.0, monotonic_s=3.0)
    second = _driver(mock_factory, rebooted, state_dir=tmp_path)
    assert second.read() == {
        "running": False,  # closing released the pin; its pull-up reads open
        "duty_cycle_pct": pytest.approx(100 * 1800 / 1810.004, abs=0.01),
        "starts_per_h": 1.0,
        "runtime_h": pytest.approx(0.5, abs=1e-4),
    }
    _at(rebooted, second, 93.0)
    _press(mock_factory, rebooted, active=True)
    _at(rebooted, second, 993.004)  # on again for 900 s
    fields = second.read()
    assert fields["runtime_h"] == pytest.approx(0.75, abs=1e-4)
    assert fields["starts_per_h"] == 2.0
    # Known time: off 10 s + on 1800 s before, off 90 s + on 900 s after; 600 s unknown.
    assert fields["duty_cycle_pct"] == pytest.approx(100 * 2700 / 2800, abs=0.01)
    second.close()


def test_gpio_input_without_state_dir_keeps_counters_in_memory(
    mock_factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    driver = _driver(mock_factory, clock, state_dir=None)
    _press(mock_factory, clock, active=True)
    _at(clock, driver, 3600.0)
    assert driver.read()["runtime_h"] == pytest.approx(1.0, abs=1e-3)
    driver.close()
    assert list(tmp_path.iterdir()) == []


def test_gpio_input_pull_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="needs active_state"):
        GpioInputConfig(id="door", driver="gpio_input", pin=5, pull_up=None)
    with pytest.raises(ValidationError, match="active_state only applies with pull_up: null"):
        GpioInputConfig(id="door", driver="gpio_input", pin=5, pull_up=True, active_state=True)
    config = GpioInputConfig(
        id="door", driver="gpio_input", pin="GPIO5", pull_up=None, active_state=True, role="door"
    )
    assert (config.pin, config.confirm_active_s, config.counters) == (5, 1.0, False)
    assert config.fields() == ["open"]
    assert [(c.pin, c.field) for c in config.claimed_pins()] == [(5, "pin")]


def test_gpio_input_config_error_names_the_sensor(tmp_path: Path) -> None:
    data = {
        "site": "plant-a",
        "device": "pi-01",
        "mqtt": {"host": "127.0.0.1"},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "sensors": [
            {
                "id": "door",
                "driver": "gpio_input",
                "pin": 5,
                "role": "door",
                "pull_up": False,
                "active_state": True,
            }
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert [issue.path for issue in caught.value.issues] == ["sensors[0]"]
    assert "active when high" in caught.value.issues[0].message


def test_gpio_input_explicit_settings_override_role_defaults() -> None:
    config = GpioInputConfig(
        id="fan",
        driver="gpio_input",
        pin=6,
        role="vibration",
        confirm_inactive_s=30.0,
        counters=True,
    )
    assert (config.confirm_active_s, config.confirm_inactive_s) == (0.0, 30.0)
    assert config.fields() == ["vibrating", "duty_cycle_pct", "starts_per_h", "runtime_h"]


def test_gpio_input_close_twice_then_read_raises(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    driver = _driver(mock_factory, clock)
    driver.close()
    driver.close()
    with pytest.raises(SensorFault, match="closed"):
        driver.read()
    assert driver.poll() == []
    _driver(mock_factory, clock).close()  # the pin was released


def test_gpio_input_pin_in_use_is_a_sensor_fault(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    first = _driver(mock_factory, clock)
    with pytest.raises(SensorFault, match="GPIO17"):
        _driver(mock_factory, clock)
    first.close()


def test_gpio_input_worker_thread_emits_confirmed_changes(
    mock_factory: MockFactory, clock: FakeClock
) -> None:
    driver = _driver(mock_factory, clock, role="vibration")  # active is confirmed at the edge
    received: queue.Queue[Event] = queue.Queue()
    driver.start_events(received.put)
    assert received.get(timeout=5).value is False
    mock_factory.pin(PIN).drive_low()  # the callback runs here; the worker confirms it
    event = received.get(timeout=5)
    assert (event.field, event.value) == ("vibrating", True)
    assert driver.worker.running
    driver.close()
    assert not driver.worker.running
