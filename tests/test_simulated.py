"""The simulated driver: seeded rooms, equipment through the gpio_input path, and faults."""

from __future__ import annotations

import itertools
import queue
import statistics
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import EventSource, Fields, SensorDriver
from sitewatch.agent.sensors import build_driver
from sitewatch.agent.sensors.sim_climate import SimulatedClimateDriver
from sitewatch.agent.sensors.sim_equipment import SimulatedEquipmentDriver
from sitewatch.agent.sensors.simulated import SimulatedConfig
from sitewatch.clock import FakeClock
from sitewatch.wire import Event

WALL0 = 1_795_464_000.0


def _room(
    model: str = "cold_room",
    seed: int = 0,
    faults: list[dict[str, Any]] | None = None,
    clock: FakeClock | None = None,
) -> tuple[SimulatedClimateDriver, FakeClock]:
    clock = clock or FakeClock(wall_s=WALL0, monotonic_s=0.0)
    config = SimulatedConfig(
        id="room", driver="simulated", model=model, seed=seed, faults=faults or []
    )
    driver = build_driver(config, Hardware(clock=clock))
    assert isinstance(driver, SimulatedClimateDriver)
    return driver, clock


def _equipment(
    factory: MockFactory,
    model: str = "compressor",
    seed: int = 0,
    faults: list[dict[str, Any]] | None = None,
    clock: FakeClock | None = None,
    state_dir: Path | None = None,
    **settings: Any,
) -> tuple[SimulatedEquipmentDriver, FakeClock]:
    clock = clock or FakeClock(wall_s=WALL0, monotonic_s=0.0)
    config = SimulatedConfig(
        id="equipment", driver="simulated", model=model, seed=seed, faults=faults or [], **settings
    )
    hardware = Hardware(
        pin_factory_name="mock", pin_factory=factory, clock=clock, state_dir=state_dir
    )
    driver = build_driver(config, hardware)
    assert isinstance(driver, SimulatedEquipmentDriver)
    return driver, clock


def _series(driver: SensorDriver, clock: FakeClock, every_s: float, count: int) -> list[Fields]:
    out = []
    for _ in range(count):
        clock.advance(every_s)
        out.append(driver.read())
    return out


def _run(
    driver: SimulatedEquipmentDriver, clock: FakeClock, until_s: float, step_s: float = 5.0
) -> None:
    while clock.monotonic() < until_s:
        clock.advance(step_s)
        driver.step()


def test_simulated_same_seed_same_values_different_seed_different() -> None:
    first, first_clock = _room(seed=7)
    second, second_clock = _room(seed=7)
    other, other_clock = _room(seed=8)
    a = _series(first, first_clock, 37.0, 100)
    assert a == _series(second, second_clock, 37.0, 100)
    assert a != _series(other, other_clock, 37.0, 100)
    # Values depend on the clock's time, not on how many reads came before.
    late, late_clock = _room(seed=7)
    late_clock.advance(37.0 * 99)
    assert _series(late, late_clock, 37.0, 1) == a[-1:]


@pytest.mark.parametrize(
    ("model", "low_c", "high_c", "humidity_pct"),
    [
        ("cold_room", 3.0, 4.0, 85.0),
        ("freezer", -19.5, -18.5, 70.0),
        ("server_room", 21.5, 22.5, 45.0),
        ("office", 20.5, 21.5, 40.0),
    ],
)
def test_simulated_rooms_sit_near_their_setpoints(
    model: str, low_c: float, high_c: float, humidity_pct: float
) -> None:
    driver, clock = _room(model, seed=3)
    day = _series(driver, clock, 300.0, 288)
    temperatures = [float(f["temperature_c"]) for f in day]
    assert low_c <= statistics.mean(temperatures) <= high_c
    assert statistics.mean(float(f["humidity_pct"]) for f in day) == pytest.approx(
        humidity_pct, abs=3.0
    )
    assert len(set(temperatures)) > 10  # noise and cycles, not a constant


def test_simulated_cold_room_shows_its_cooling_cycle() -> None:
    driver, clock = _room("cold_room", seed=1)
    hour = [float(f["temperature_c"]) for f in _series(driver, clock, 30.0, 120)]
    assert max(hour) - min(hour) > 0.8  # the fridge's 25-minute sawtooth of ±0.6 °C


def test_simulated_stuck_fault_freezes_the_value() -> None:
    faulty, clock = _room(seed=2, faults=[{"kind": "stuck", "start_s": 600, "duration_s": 1800}])
    healthy, healthy_clock = _room(seed=2)
    before = _series(faulty, clock, 60.0, 9)  # up to 540 s
    clock.advance(60.0)  # 600 s: the fault starts with the value of this instant
    healthy_clock.advance(600.0)
    frozen = faulty.read()
    assert frozen == healthy.read()
    during = _series(faulty, clock, 60.0, 29)  # up to 2340 s
    assert all(fields == frozen for fields in during)
    assert len({f["temperature_c"] for f in before}) > 1
    after = _series(faulty, clock, 60.0, 20)
    assert len({f["temperature_c"] for f in after}) > 1


def test_simulated_dead_fault_raises_on_every_read() -> None:
    driver, clock = _room(seed=1, faults=[{"kind": "dead", "start_s": 60, "duration_s": 120}])
    driver.read()
    clock.advance(60.0)
    for _ in range(10):
        with pytest.raises(SensorReadError) as caught:
            driver.read()
        assert caught.value.error_class == "no_response"
        clock.advance(10.0)
    clock.advance(30.0)
    assert "temperature_c" in driver.read()


def test_simulated_dropouts_fail_about_their_probability() -> None:
    driver, clock = _room(seed=4, faults=[{"kind": "dropouts", "probability": 0.3}])
    failures = 0
    for _ in range(400):
        clock.advance(7.3)
        try:
            driver.read()
        except SensorReadError as error:
            assert error.error_class == "timeout"
            failures += 1
    assert 80 <= failures <= 160


def test_simulated_spikes_jump_by_their_magnitude() -> None:
    faulty, clock = _room(
        seed=5, faults=[{"kind": "spikes", "probability": 0.1, "magnitude_c": 6.0}]
    )
    healthy, healthy_clock = _room(seed=5)
    jumps = [
        round(float(a["temperature_c"]) - float(b["temperature_c"]), 1)
        for a, b in zip(
            _series(faulty, clock, 11.0, 500),
            _series(healthy, healthy_clock, 11.0, 500),
            strict=True,
        )
    ]
    assert set(jumps) == {-6.0, 0.0, 6.0}
    assert 25 <= sum(1 for jump in jumps if jump) <= 80


def test_simulated_drift_grows_at_its_rate() -> None:
    faulty, clock = _room(seed=6, faults=[{"kind": "drift", "rate_c_per_h": 0.8, "start_s": 3600}])
    healthy, healthy_clock = _room(seed=6)
    offsets = [
        float(a["temperature_c"]) - float(b["temperature_c"])
        for a, b in zip(
            _series(faulty, clock, 1800.0, 8),
            _series(healthy, healthy_clock, 1800.0, 8),
            strict=True,
        )
    ]
    # At 0.5 h … 4 h: no offset before the fault, then 0.8 °C per hour since 1 h.
    expected = [0.0, 0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4]
    assert offsets == pytest.approx(expected, abs=0.11)


def test_simulated_cooling_failure_warms_at_about_its_rate() -> None:
    driver, clock = _room("freezer", seed=1, faults=[{"kind": "cooling_failure", "start_s": 1800}])
    clock.advance(1800.0)
    warming = _series(driver, clock, 60.0, 180)  # three hours of failure
    hours = [index / 60.0 for index in range(1, 181)]
    slope = statistics.linear_regression(hours, [float(f["temperature_c"]) for f in warming])
    assert slope.slope == pytest.approx(1.5, abs=0.25)


def test_simulated_door_left_open_warms_the_room_then_it_recovers() -> None:
    faults = [{"kind": "door_left_open", "start_s": 600, "duration_s": 1800}]
    faulty, clock = _room(seed=3, faults=faults)
    healthy, healthy_clock = _room(seed=3)
    clock.advance(2400.0)
    healthy_clock.advance(2400.0)
    # Half an hour open: 16.5 °C toward ambient × (1 - e^-1.5) ≈ 12.8 °C warmer.
    rise = float(faulty.read()["temperature_c"]) - float(healthy.read()["temperature_c"])
    assert 10.0 < rise < 15.0
    clock.advance(3.0 * 3600)
    healthy_clock.advance(3.0 * 3600)
    assert faulty.read()["temperature_c"] == pytest.approx(healthy.read()["temperature_c"], abs=0.5)


def test_simulated_equipment_is_an_event_source_and_rooms_are_not(
    mock_factory: MockFactory,
) -> None:
    room, _ = _room()
    compressor, _ = _equipment(mock_factory)
    assert isinstance(room, SensorDriver) and not isinstance(room, EventSource)
    assert isinstance(compressor, SensorDriver) and isinstance(compressor, EventSource)
    # The contact is a real pin of the factory the test passed in.
    assert mock_factory.pin(compressor.pin) is compressor.gpio.device.pin
    compressor.close()


def test_simulated_compressor_cycles_like_a_thermostat(mock_factory: MockFactory) -> None:
    driver, clock = _equipment(mock_factory, seed=1)
    states_at_start = len(mock_factory.pin(driver.pin).states)
    events: list[Event] = []
    driver.subscribe(events.append)
    _run(driver, clock, 3 * 3600.0)
    fields = driver.read()
    assert 40.0 <= float(fields["duty_cycle_pct"]) <= 60.0
    assert 1.0 <= float(fields["starts_per_h"]) <= 5.0
    assert float(fields["runtime_h"]) == pytest.approx(3 * fields["duty_cycle_pct"] / 100, abs=0.3)
    # Every change bounced on the pin, yet each gave exactly one alternating event.
    values = [e.value for e in events]
    assert values[0] is False and all(a != b for a, b in itertools.pairwise(values))
    edges = len(mock_factory.pin(driver.pin).states) - states_at_start
    assert edges == 3 * (len(events) - 1)
    durations = [e.previous_duration_s for e in events[2:]]
    assert all(d is not None and 540.0 <= d <= 900.01 for d in durations)
    driver.close()


def test_simulated_short_cycling_counts_over_12_starts_per_hour(
    mock_factory: MockFactory,
) -> None:
    driver, clock = _equipment(
        mock_factory, seed=2, faults=[{"kind": "short_cycling", "start_s": 3600}]
    )
    _run(driver, clock, 3600.0)
    assert float(driver.read()["starts_per_h"]) <= 5.0
    events: list[Event] = []
    driver.subscribe(events.append)
    _run(driver, clock, 3 * 3600.0)
    assert float(driver.read()["starts_per_h"]) > 12.0
    recent = [e for e in events if e.ts >= (WALL0 + 2 * 3600) * 1000]
    durations = [e.previous_duration_s for e in recent]
    assert all(d is not None and 60.0 <= d <= 180.0 for d in durations)
    driver.close()


def test_simulated_door_left_open_keeps_the_door_open(mock_factory: MockFactory) -> None:
    driver, clock = _equipment(
        mock_factory,
        "door",
        seed=4,
        faults=[{"kind": "door_left_open", "start_s": 300, "duration_s": 3600}],
    )
    events: list[Event] = []
    driver.subscribe(events.append)
    _run(driver, clock, 300.0 + 2.0, step_s=1.0)
    assert driver.read() == {"open": True}
    _run(driver, clock, 3900.0, step_s=10.0)
    # One opening, stamped at its last bounce (5 ms after the scheduled change).
    assert [e.ts for e in events if e.value] == [round((WALL0 + 300.005) * 1000)]
    _run(driver, clock, 3900.0 + 5.0, step_s=1.0)
    assert driver.read() == {"open": False}
    assert events[-1].value is False and events[-1].previous_duration_s == pytest.approx(3600.0)
    driver.close()


def test_simulated_equipment_same_seed_same_events(mock_factory: MockFactory) -> None:
    runs = []
    for seed in (9, 9, 10):
        factory = MockFactory()
        driver, clock = _equipment(factory, seed=seed)
        events: list[Event] = []
        driver.subscribe(events.append)
        _run(driver, clock, 2 * 3600.0, step_s=7.0)
        driver.close()
        runs.append([(e.ts, e.value) for e in events])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_simulated_equipment_counters_persist_in_state_dir(
    mock_factory: MockFactory, tmp_path: Path
) -> None:
    driver, clock = _equipment(mock_factory, seed=1, state_dir=tmp_path)
    _run(driver, clock, 3600.0)
    runtime_h = driver.read()["runtime_h"]
    driver.close()
    again, _ = _equipment(
        mock_factory,
        seed=1,
        state_dir=tmp_path,
        clock=FakeClock(wall_s=clock.time() + 60.0, monotonic_s=0.0),
    )
    assert float(again.read()["runtime_h"]) == pytest.approx(float(runtime_h), abs=1e-3)
    again.close()


def test_simulated_equipment_read_faults_and_close(mock_factory: MockFactory) -> None:
    driver, clock = _equipment(
        mock_factory,
        seed=1,
        faults=[{"kind": "dead", "start_s": 10, "duration_s": 10}],
        pin="GPIO22",
    )
    assert driver.pin == 22
    assert driver.read()["running"] is False
    clock.advance(10.0)
    with pytest.raises(SensorReadError, match="dead"):
        driver.read()
    driver.close()
    driver.close()
    with pytest.raises(SensorFault):
        driver.read()


def test_simulated_equipment_thread_plays_the_schedule(mock_factory: MockFactory) -> None:
    driver, clock = _equipment(mock_factory, seed=3)
    received: queue.Queue[Event] = queue.Queue()
    driver.start_events(received.put)
    assert received.get(timeout=5).value is False  # the state found at start
    clock.advance(3600.0)  # the schedule thread notices within a second of real time
    assert received.get(timeout=5).value is True
    assert received.get(timeout=5).value is False
    driver.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"model": "cold_room", "faults": [{"kind": "short_cycling"}]},
            "short_cycling does not apply to the cold_room model",
        ),
        (
            {"model": "compressor", "faults": [{"kind": "drift"}]},
            "drift does not apply to the compressor model",
        ),
        (
            {"model": "office", "faults": [{"kind": "drift", "magnitude_c": 3}]},
            "magnitude_c does not apply to a drift fault",
        ),
        ({"model": "office", "pin": 5}, "pin only applies to the compressor and door models"),
        (
            {"model": "door", "faults": [{"kind": "door_left_open", "ambient_c": 20}]},
            "ambient_c only applies to rooms",
        ),
        ({"model": "door", "faults": [{"kind": "dead", "duration_s": 0}]}, "greater than 0"),
    ],
)
def test_simulated_config_rejects_what_cannot_happen(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SimulatedConfig.model_validate({"id": "sim", "driver": "simulated", **settings})


def test_simulated_config_fields_and_claims() -> None:
    compressor = SimulatedConfig(id="c", driver="simulated", model="compressor", pin="GPIO20")
    assert compressor.fields() == ["running", "duty_cycle_pct", "starts_per_h", "runtime_h"]
    assert [(c.pin, c.field) for c in compressor.claimed_pins()] == [(20, "pin")]
    assert compressor.sampling_policy().median_window == 1
    room = SimulatedConfig(id="r", driver="simulated", model="freezer")
    assert room.claimed_pins() == [] and room.fields() == ["temperature_c", "humidity_pct"]
    assert room.sampling_policy().ranges["temperature_c"] == (-40.0, 80.0)
