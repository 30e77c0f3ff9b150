"""The sampling policy: spacing, gates, step changes, median, quality and fault escalation."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Any

import pytest

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.protocols import Fields, SensorDriver
from sitewatch.agent.sampling import SensorPoller
from sitewatch.agent.sensors.base import SamplingConfig, SensorConfig
from sitewatch.agent.sensors.dht22 import DHT22Config
from sitewatch.agent.sensors.dht22_adafruit import AdafruitDHT22
from sitewatch.clock import FakeClock
from sitewatch.wire import Event, EventType, Quality, Reading, TelemetryMessage, encode
from tests.fakes.adafruit import FakeDHT22, FakePin

Step = Fields | Exception


class ScriptedDriver:
    """A sensor whose reads follow a script; it notes when (monotonic) each read started.

    Reading past the end of the script fails the test: the poller read more than it should.
    """

    def __init__(self, clock: FakeClock, script: list[Step], spacing_s: float = 2.5) -> None:
        self.clock = clock
        self.script: deque[Step] = deque(script)
        self.min_read_spacing_s = spacing_s
        self.read_times: list[float] = []
        self.closed = False

    def add(self, *steps: Step) -> None:
        self.script.extend(steps)

    def read(self) -> Fields:
        self.read_times.append(self.clock.monotonic())
        assert self.script, "read beyond the script"
        step = self.script.popleft()
        if isinstance(step, Exception):
            raise step
        return dict(step)

    def close(self) -> None:
        self.closed = True


def t(value: float, humidity: float = 45.0) -> Fields:
    return {"temperature_c": value, "humidity_pct": humidity}


def eio() -> SensorReadError:
    return SensorReadError("eio", "Input/output error")


class Rig:
    """A poller on a DHT22 config with a scripted driver, a FakeClock and an event list."""

    def __init__(self, script: list[Step] | None = None, **sampling: Any) -> None:
        self.clock = FakeClock()
        self.driver = ScriptedDriver(self.clock, script or [])
        self.events: list[Event] = []
        self.config = DHT22Config.model_validate(
            {"id": "cold-room", "driver": "dht22", "pin": 4, "interval_s": 30,
             "sampling": sampling or None}
        )
        self.poller = self.use(self.driver)
        self.stop = threading.Event()

    def use(self, driver: SensorDriver) -> SensorPoller:
        """Poll ``driver`` instead, with a fresh poller."""
        self.poller = SensorPoller(self.config, driver, self.clock, self.events.append)
        return self.poller

    def period(self, *steps: Step) -> Reading:
        """Run one period 30 s after the previous one started, reading ``steps``."""
        self.driver.add(*steps)
        start = self.clock.monotonic()
        reading = self.poller.run_period(self.stop)
        assert not self.driver.script, "the poller left scripted reads unread"
        self.clock.advance(30.0 - (self.clock.monotonic() - start))
        return reading


def test_sampling_spaces_retries_by_min_read_spacing() -> None:
    rig = Rig()
    reading = rig.period(eio(), SensorReadError("timeout", "no answer"), t(21.0))
    times = rig.driver.read_times
    assert [b - a for a, b in itertools.pairwise(times)] == [2.5, 2.5]
    assert (reading.n_ok, reading.n_tried, reading.temperature_c) == (1, 3, 21.0)
    assert rig.poller.read_errors == {"eio": 1, "timeout": 1}


def test_sampling_spacing_holds_across_periods() -> None:
    rig = Rig([t(21.0)])
    rig.poller.run_period(rig.stop)
    rig.clock.advance(1.0)
    rig.driver.add(t(21.1))
    rig.poller.run_period(rig.stop)  # called early: it waits for the spacing first
    assert rig.driver.read_times == [0.0, 2.5]


def test_sampling_stops_after_first_accepted_sample() -> None:
    rig = Rig()
    reading = rig.period(t(21.0))
    assert (reading.n_ok, reading.n_tried) == (1, 1)


def test_sampling_rejects_out_of_range_and_sentinels() -> None:
    rig = Rig()
    reading = rig.period(t(120.0), {"temperature_c": 1.0, "humidity_pct": 1.0}, t(21.0))
    assert reading.temperature_c == 21.0
    assert rig.poller.read_errors == {"out_of_range": 1, "sentinel": 1}
    bad = rig.period(t(20.0, humidity=-3.0), {"temperature_c": 0.0, "humidity_pct": 2.0},
                     t(float("nan")))
    assert (bad.quality, bad.error, bad.values()) == (Quality.BAD, "out_of_range", {})
    assert rig.poller.read_errors == {"out_of_range": 3, "sentinel": 2}


def test_sampling_rejects_a_spike_against_the_running_median() -> None:
    rig = Rig()
    for value in (21.0, 21.2, 20.9):
        rig.period(t(value))
    reading = rig.period(t(29.0), t(21.1))
    # 21.0 (92.5 s old) is past the 66 s age limit: median of 21.2, 20.9, 21.1.
    assert reading.temperature_c == 21.1
    assert rig.poller.read_errors == {"spike": 1}
    humid = rig.period(t(21.0, humidity=80.0), t(21.0, humidity=46.0))
    assert humid.n_tried == 2 and rig.poller.read_errors == {"spike": 2}


def test_sampling_accepts_a_step_change_within_one_period() -> None:
    rig = Rig()
    for value in (4.0, 4.1, 4.0):
        rig.period(t(value))
    reading = rig.period(t(12.0), t(12.4), t(12.2))  # the door was left open
    assert reading.quality == Quality.OK
    assert reading.temperature_c == 12.2  # the new level alone, not mixed with 4 °C
    assert rig.poller.read_errors == {"spike": 2}
    assert rig.period(t(12.3)).temperature_c == pytest.approx(12.25)


@pytest.mark.parametrize("max_age_s", [300.0, None])
def test_sampling_accepts_a_step_change_across_periods(max_age_s: float | None) -> None:
    # With 300 s the old level stays as reference and the third candidate confirms the
    # step; with the default (61 s) the old level ages out first. Same result either way.
    rig = Rig(max_attempts=1, max_sample_age_s=max_age_s)
    for value in (4.0, 4.1, 4.0):
        rig.period(t(value))
    first, second, third = rig.period(t(12.0)), rig.period(t(12.1)), rig.period(t(12.2))
    assert (first.quality, second.quality) == (Quality.BAD, Quality.BAD)
    assert (first.error, second.error) == ("spike", "spike")
    assert third.quality == Quality.OK and third.temperature_c == 12.1


def test_sampling_disagreeing_spikes_never_confirm_a_step() -> None:
    rig = Rig()
    for value in (21.0, 21.0, 21.0):
        rig.period(t(value))
    reading = rig.period(t(30.0), t(40.0), t(30.5))
    assert (reading.quality, reading.error) == (Quality.BAD, "spike")
    assert rig.period(t(21.1)).temperature_c == pytest.approx(21.05)  # 21.0 from t=60, 21.1


def test_sampling_publishes_the_median_of_recent_good_samples() -> None:
    rig = Rig(spike_limits={}, median_window=3)
    published = [rig.period(t(v)).temperature_c for v in (20.0, 22.0, 21.0, 26.0, 27.0)]
    assert published == [20.0, 21.0, 21.0, 22.0, 26.0]


def test_sampling_quality_needs_three_samples() -> None:
    rig = Rig()
    qualities = [rig.period(t(21.0)).quality for _ in range(4)]
    assert qualities == [Quality.DEGRADED, Quality.DEGRADED, Quality.OK, Quality.OK]


def test_sampling_reading_carries_ts_age_and_counts() -> None:
    rig = Rig()
    rig.clock.advance(0.25)
    wall_ms = int(rig.clock.time() * 1000)
    reading = rig.period(eio(), t(21.0))
    assert reading.ts == wall_ms + 2500
    assert (reading.n_ok, reading.n_tried, reading.sample_age_s) == (1, 2, 0.0)
    assert reading.sensor == "cold-room"


def test_sampling_never_republishes_a_stale_value() -> None:
    rig = Rig()
    rig.period(t(21.0))
    failed = rig.period(eio(), eio(), eio())
    assert failed.quality == Quality.BAD
    assert failed.values() == {} and failed.temperature_c is None
    assert (failed.n_ok, failed.n_tried, failed.error) == (0, 3, "eio")
    message = TelemetryMessage(site="s", device="d", boot_id="3f2a9c1d", seq=1,
                               readings=[failed])
    assert b"temperature_c" not in encode(message)


def test_sampling_old_samples_leave_the_median() -> None:
    rig = Rig(fault_after_periods=100)
    rig.period(t(21.0))
    rig.period(t(21.2))
    for _ in range(4):  # two minutes of failures: 21.x are now too old to use
        rig.period(eio(), eio(), eio())
    reading = rig.period(t(26.0))  # no fresh reference, so no spike either
    assert (reading.temperature_c, reading.quality) == (26.0, Quality.DEGRADED)


def test_sampling_steady_state_with_retries_stays_ok() -> None:
    # A sample two periods back that was read on a first attempt, against a third-attempt
    # sample now, is 2 × interval + 5 s old: the default age limit must still take it.
    rig = Rig()
    rig.period(t(21.0))
    rig.period(t(21.0))
    qualities = [rig.period(eio(), eio(), t(21.0)).quality for _ in range(3)]
    assert qualities == [Quality.OK] * 3


def test_sampling_fault_after_k_periods_exactly_once_then_recovery() -> None:
    rig = Rig(fault_after_periods=3)
    rig.period(t(21.0))
    qualities = [rig.period(eio(), eio(), eio()).quality for _ in range(5)]
    assert qualities == [Quality.BAD, Quality.BAD, Quality.FAULT, Quality.FAULT, Quality.FAULT]
    assert [e.type for e in rig.events] == [EventType.SENSOR_FAULT]
    assert rig.events[0].sensor == "cold-room" and "eio" in (rig.events[0].detail or "")
    assert rig.poller.in_fault
    recovered = rig.period(t(21.0))
    assert recovered.quality == Quality.DEGRADED  # the old samples are too old to count
    assert [e.type for e in rig.events] == [EventType.SENSOR_FAULT, EventType.SENSOR_RECOVERED]
    again = [rig.period(eio(), eio(), eio()).quality for _ in range(2)]
    assert again == [Quality.BAD, Quality.BAD]  # the count starts over after recovery
    assert len(rig.events) == 2


def test_sampling_sensor_fault_ends_the_period_and_names_the_fix() -> None:
    fault = SensorFault("no kernel dht11 device", fix="add dtoverlay=dht11,gpiopin=4")
    rig = Rig(fault_after_periods=2)
    first = rig.period(fault)
    assert (first.n_tried, first.error, first.quality) == (1, "fault", Quality.BAD)
    rig.period(fault)
    assert rig.poller.read_errors == {"fault": 2}
    assert [e.type for e in rig.events] == [EventType.SENSOR_FAULT]
    assert "dtoverlay=dht11,gpiopin=4" in (rig.events[0].detail or "")


def test_sampling_stop_ends_the_period_without_counting_a_fault() -> None:
    rig = Rig(fault_after_periods=1)

    class StopDuringRead(ScriptedDriver):
        def read(self) -> Fields:
            rig.stop.set()  # shutdown arrives while the sensor is being read
            return super().read()

    rig.use(StopDuringRead(rig.clock, [eio()]))
    reading = rig.poller.run_period(rig.stop)
    assert (reading.quality, reading.n_tried, reading.error) == (Quality.BAD, 1, "eio")
    assert rig.events == []
    stopped = rig.poller.run_period(rig.stop)
    assert (stopped.n_tried, stopped.error) == (0, "stopped")


def test_sampling_binary_input_takes_the_latest_value() -> None:
    clock = FakeClock()
    config = SensorConfig(id="compressor", driver="gpio_input", interval_s=1,
                          sampling=SamplingConfig(median_window=1, max_attempts=1))
    driver = ScriptedDriver(clock, [{"running": True}, {"running": False}], spacing_s=0.0)
    poller = SensorPoller(config, driver, clock, lambda event: None)
    first = poller.run_period(threading.Event())
    clock.advance(1.0)
    second = poller.run_period(threading.Event())
    assert (first.running, first.quality) == (True, Quality.OK)
    assert (second.running, second.quality) == (False, Quality.OK)


@pytest.mark.parametrize("failures", [["checksum"], ["short_read", "no_response"]])
def test_sampling_with_adafruit_driver_never_hits_the_library_cache(failures: list[str]) -> None:
    rig = Rig()
    device = FakeDHT22(FakePin(4), clock=rig.clock, outcomes=[*failures, (22.5, 48.0)])
    rig.use(AdafruitDHT22(4, clock=rig.clock, device_factory=lambda pin, pulseio: device))
    reading = rig.poller.run_period(rig.stop)
    assert (reading.temperature_c, reading.n_tried) == (22.5, len(failures) + 1)
    assert device.measurements == len(failures) + 1  # every attempt reached the sensor
    assert "too_soon" not in rig.poller.read_errors


def test_sampling_timestamps_only_go_forward_when_the_wall_clock_steps_back() -> None:
    # (device, sensor, ts) identifies a reading in InfluxDB: a repeated ts would overwrite.
    rig = Rig()
    before = [rig.period(t(21.0)).ts for _ in range(3)]
    rig.clock.wall_s -= 100.0  # NTP steps the clock back by more than three periods
    during = [rig.period(t(21.0)).ts for _ in range(2)] + [rig.period(eio(), eio(), eio()).ts]
    during += [rig.period(t(21.0)).ts for _ in range(2)]
    # Half the real pace after the last stamp (30 s periods; the failed period's reading is
    # formed 5 s later, after its retries), so the wall clock catches up within 200 s.
    assert [ts - before[-1] for ts in during] == [15_000, 30_000, 47_500, 60_000, 75_000]
    after = [rig.period(t(21.0)).ts for _ in range(2)]  # the clock passed the last stamp
    assert after == [before[-1] + 80_000, before[-1] + 110_000]
    stamps = before + during + after
    assert stamps == sorted(set(stamps))
