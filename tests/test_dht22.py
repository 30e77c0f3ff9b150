"""DHT22: config, the kernel IIO backend, the adafruit backend and the backend choice."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sitewatch.agent.config import parse_config
from sitewatch.agent.errors import ConfigError, SensorFault, SensorReadError
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.sensors import REGISTRY, build_driver
from sitewatch.agent.sensors.dht22 import DHT22Config, select_backend
from sitewatch.agent.sensors.dht22_adafruit import AdafruitDHT22, real_device
from sitewatch.agent.sensors.dht22_kernel import KernelDHT22, find_iio_device
from sitewatch.clock import FakeClock
from tests.fakes.adafruit import MESSAGES, FakeDHT22, FakePin, hide_library, install_fake_library
from tests.fakes.sysfs import KernelReads, add_dht11, add_iio_device, remove_device, set_dht11


def dht(**overrides: Any) -> DHT22Config:
    return DHT22Config.model_validate({"id": "cold-room", "driver": "dht22", "pin": 4,
                                       "interval_s": 30, **overrides})


def agent_config(tmp_path: Path, sensors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"site": "plant-a", "device": "pi-01", "mqtt": {"host": "127.0.0.1"},
            "outbox": {"path": str(tmp_path / "outbox.db")}, "sensors": sensors}


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize("pin", [17, "17", "GPIO17", "gpio17"])
def test_dht22_config_accepts_pin_forms(pin: object) -> None:
    assert dht(pin=pin).pin == 17


def test_dht22_config_rejects_interval_below_2_5_s() -> None:
    with pytest.raises(ValidationError, match=r"at least 2\.5 s"):
        dht(interval_s=2.0)
    assert dht(interval_s=2.5).interval_s == 2.5


def test_dht22_config_rejects_pin_off_the_header() -> None:
    with pytest.raises(ValidationError, match="GPIO40"):
        dht(pin="GPIO40")


def test_dht22_config_claims_pin_overlay_and_fields() -> None:
    config = dht(pin="GPIO17")
    assert [(c.pin, c.field, c.share) for c in config.claimed_pins()] == [(17, "pin", "")]
    assert [(o.overlay, o.pin, o.line) for o in config.overlays_needed()] == [
        ("dht11", 17, "dtoverlay=dht11,gpiopin=17")
    ]
    assert dht(backend="kernel").overlays_needed()[0].line == "dtoverlay=dht11,gpiopin=4"
    assert dht(backend="adafruit").overlays_needed() == []
    assert config.fields() == ["temperature_c", "humidity_pct"]


def test_dht22_config_default_sampling_policy() -> None:
    policy = dht().sampling_policy()
    assert policy.ranges == {"temperature_c": (-40.0, 80.0), "humidity_pct": (0.0, 100.0)}
    assert policy.spike_limits == {"temperature_c": 3.0, "humidity_pct": 15.0}
    assert policy.max_attempts == 3
    assert dht(sampling={"max_attempts": 2}).sampling_policy().max_attempts == 2


def test_dht22_config_loads_through_agent_config(tmp_path: Path) -> None:
    config = parse_config(agent_config(tmp_path, [
        {"id": "cold-room", "driver": "dht22", "pin": "GPIO17", "backend": "kernel"},
    ]))
    sensor = config.sensor_configs()[0]
    assert isinstance(sensor, DHT22Config)
    assert (sensor.pin, sensor.backend) == (17, "kernel")


def test_dht22_config_pin_clash_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(agent_config(tmp_path, [
            {"id": "a", "driver": "dht22", "pin": 4},
            {"id": "b", "driver": "dht22", "pin": "GPIO4"},
        ]))
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("sensors[1].pin", "GPIO4 is already used by sensors[0]")
    ]


def test_dht22_is_registered() -> None:
    assert REGISTRY["dht22"].config is DHT22Config


# --- kernel backend ---------------------------------------------------------------------


def test_dht22_kernel_finds_device_by_name_not_index(tmp_path: Path) -> None:
    add_dht11(tmp_path, 0, 17, temperature_c=4.2, humidity_pct=81.0)
    add_iio_device(tmp_path, 1, "mcp3008")
    add_dht11(tmp_path, 2, 4, temperature_c=23.4, humidity_pct=41.0)
    assert KernelDHT22(4, tmp_path).read() == {"temperature_c": 23.4, "humidity_pct": 41.0}
    assert KernelDHT22(17, tmp_path).read() == {"temperature_c": 4.2, "humidity_pct": 81.0}
    assert find_iio_device(tmp_path, 22) is None


def test_dht22_kernel_converts_milli_units(tmp_path: Path) -> None:
    device = add_dht11(tmp_path, 0, 4)
    (device / "in_temp_input").write_text("-10500\n")
    (device / "in_humidityrelative_input").write_text("99900\n")
    assert KernelDHT22(4, tmp_path).read() == {"temperature_c": -10.5, "humidity_pct": 99.9}


def test_dht22_kernel_accepts_plain_name_only_when_alone(tmp_path: Path) -> None:
    add_dht11(tmp_path, 3, None, temperature_c=19.0)
    assert KernelDHT22(17, tmp_path).read()["temperature_c"] == 19.0
    add_dht11(tmp_path, 5, None)
    with pytest.raises(SensorFault) as caught:
        KernelDHT22(17, tmp_path).read()
    assert "dtoverlay=dht11,gpiopin=17" in caught.value.fix


def test_dht22_kernel_reads_temperature_then_humidity(tmp_path: Path) -> None:
    device = add_dht11(tmp_path, 0, 4)
    reads = KernelReads()
    KernelDHT22(4, tmp_path, read_text=reads).read()
    assert reads.reads == [device / "in_temp_input", device / "in_humidityrelative_input"]


@pytest.mark.parametrize(
    ("code", "error_class"),
    [(errno.EIO, "eio"), (errno.ETIMEDOUT, "timeout"), (errno.EAGAIN, "eagain")],
)
def test_dht22_kernel_transient_errors(tmp_path: Path, code: int, error_class: str) -> None:
    device = add_dht11(tmp_path, 0, 4, temperature_c=20.0, humidity_pct=50.0)
    reads = KernelReads()
    reads.fail(device / "in_temp_input", code)
    driver = KernelDHT22(4, tmp_path, read_text=reads)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == error_class
    assert driver.read() == {"temperature_c": 20.0, "humidity_pct": 50.0}


def test_dht22_kernel_garbage_is_a_parse_error(tmp_path: Path) -> None:
    device = add_dht11(tmp_path, 0, 4)
    (device / "in_humidityrelative_input").write_text("\n")
    with pytest.raises(SensorReadError) as caught:
        KernelDHT22(4, tmp_path).read()
    assert caught.value.error_class == "parse"


def test_dht22_kernel_follows_device_to_another_index(tmp_path: Path) -> None:
    old = add_dht11(tmp_path, 0, 4, temperature_c=20.0)
    add_dht11(tmp_path, 1, 17)
    driver = KernelDHT22(4, tmp_path)
    assert driver.read()["temperature_c"] == 20.0
    assert driver.device == old
    remove_device(old)
    new = add_dht11(tmp_path, 7, 4, temperature_c=20.5)
    assert driver.read()["temperature_c"] == 20.5
    assert driver.device == new


def test_dht22_kernel_vanished_device_faults_then_recovers(tmp_path: Path) -> None:
    device = add_dht11(tmp_path, 0, 4)
    driver = KernelDHT22(4, tmp_path)
    driver.read()
    remove_device(device)
    with pytest.raises(SensorFault) as caught:
        driver.read()
    assert "dtoverlay=dht11,gpiopin=4" in caught.value.fix
    assert "pull-up" in caught.value.fix
    add_dht11(tmp_path, 2, 4, temperature_c=18.0)
    assert driver.read()["temperature_c"] == 18.0


def test_dht22_kernel_enodev_is_retried_once_after_lookup(tmp_path: Path) -> None:
    device = add_dht11(tmp_path, 0, 4, temperature_c=22.0)
    reads = KernelReads()
    driver = KernelDHT22(4, tmp_path, read_text=reads)
    driver.read()
    reads.fail(device / "in_temp_input", errno.ENODEV)
    assert driver.read()["temperature_c"] == 22.0  # looked up again, read again
    reads.fail(device / "in_temp_input", errno.ENODEV, errno.ENODEV)
    with pytest.raises(SensorFault):
        driver.read()  # still gone after one lookup: persistent


def test_dht22_kernel_read_after_close_raises(tmp_path: Path) -> None:
    add_dht11(tmp_path, 0, 4)
    driver = KernelDHT22(4, tmp_path)
    driver.close()
    driver.close()
    with pytest.raises(SensorFault):
        driver.read()


# --- adafruit backend -------------------------------------------------------------------


def adafruit(clock: FakeClock, outcomes: list[Any], **kwargs: Any) -> tuple[AdafruitDHT22,
                                                                           FakeDHT22]:
    devices: list[FakeDHT22] = []

    def factory(pin: int, use_pulseio: bool) -> FakeDHT22:
        devices.append(FakeDHT22(FakePin(pin), use_pulseio, clock=clock, outcomes=outcomes))
        return devices[-1]

    driver = AdafruitDHT22(4, clock=clock, device_factory=factory, **kwargs)
    return driver, devices[0]


@pytest.mark.parametrize(
    ("message", "error_class"),
    [(MESSAGES["no_response"], "no_response"), (MESSAGES["short_read"], "short_read"),
     (MESSAGES["checksum"], "checksum"), (MESSAGES["implausible"], "implausible"),
     ("Timed out waiting for PulseIn message", "other")],
)
def test_dht22_adafruit_maps_library_errors(message: str, error_class: str) -> None:
    driver, _ = adafruit(FakeClock(), [message])
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == error_class
    assert str(caught.value) == message


def test_dht22_adafruit_out_of_range_humidity_is_implausible() -> None:
    driver, _ = adafruit(FakeClock(), [(20.0, 130.0)])
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "implausible"


def test_dht22_adafruit_reads_one_measurement_per_read() -> None:
    clock = FakeClock()
    driver, device = adafruit(clock, [(23.4, 41.0)])
    assert driver.read() == {"temperature_c": 23.4, "humidity_pct": 41.0}
    assert device.measurements == 1


def test_fake_dht22_models_the_library_cache_trap() -> None:
    clock = FakeClock()
    device = FakeDHT22(FakePin(4), clock=clock, outcomes=["checksum", (25.0, 50.0)])
    with pytest.raises(RuntimeError):
        _ = device.temperature
    clock.advance(1.0)
    assert device.temperature is None  # no error, no value: the trap
    clock.advance(1.5)
    assert device.temperature == 25.0
    device.level = (30.0, 50.0)
    clock.advance(2.0)
    assert device.temperature == 25.0  # stale, silently


def test_dht22_adafruit_never_returns_a_cached_value() -> None:
    clock = FakeClock()
    driver, device = adafruit(clock, [(21.0, 45.0)])
    driver.read()
    device.level = (25.0, 45.0)
    for step in (1.0, 1.0):  # 1 s and exactly 2 s after: the library would answer from cache
        clock.advance(step)
        with pytest.raises(SensorReadError) as caught:
            driver.read()
        assert caught.value.error_class == "too_soon"
    clock.advance(0.1)
    assert driver.read()["temperature_c"] == 25.0
    assert device.measurements == 2


def test_dht22_adafruit_failed_read_then_too_soon_not_none() -> None:
    clock = FakeClock()
    driver, _ = adafruit(clock, ["checksum", (22.0, 40.0)])
    with pytest.raises(SensorReadError):
        driver.read()
    clock.advance(1.0)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "too_soon"
    clock.advance(1.5)
    assert driver.read() == {"temperature_c": 22.0, "humidity_pct": 40.0}


def test_dht22_adafruit_none_from_library_is_no_value() -> None:
    # The library runs on its own clock; if it disagrees with ours it may serve its cache.
    ours, libraries = FakeClock(), FakeClock()
    device = FakeDHT22(FakePin(4), clock=libraries, outcomes=["short_read"])
    driver = AdafruitDHT22(4, clock=ours, device_factory=lambda pin, pulseio: device)
    with pytest.raises(SensorReadError):
        driver.read()
    ours.advance(3.0)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "no_value"


def test_dht22_adafruit_close_exits_once_and_read_after_raises() -> None:
    driver, device = adafruit(FakeClock(), [])
    driver.close()
    driver.close()
    assert device.exit_calls == 1
    with pytest.raises(SensorFault):
        driver.read()


def test_dht22_adafruit_builds_device_through_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    library = install_fake_library(monkeypatch, FakeClock(), [(19.5, 60.0)])
    driver = AdafruitDHT22(17, clock=FakeClock(), use_pulseio=False)
    assert [(d.pin.id, d.use_pulseio) for d in library.devices] == [(17, False)]
    assert driver.read() == {"temperature_c": 19.5, "humidity_pct": 60.0}


def test_dht22_adafruit_missing_library_is_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_library(monkeypatch)
    with pytest.raises(SensorFault) as caught:
        real_device(4, True)
    assert "sitewatch[pi]" in caught.value.fix


def test_dht22_adafruit_busy_line_is_a_fault() -> None:
    def busy(pin: int, use_pulseio: bool) -> FakeDHT22:
        raise RuntimeError(f"Unable to set line {pin} to input")

    with pytest.raises(SensorFault) as caught:
        AdafruitDHT22(4, clock=FakeClock(), device_factory=busy)
    assert "libgpiod_pulsein" in caught.value.fix


# --- backend choice ---------------------------------------------------------------------


def test_dht22_auto_prefers_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_library(monkeypatch, FakeClock())
    device = add_dht11(tmp_path, 4, 4, temperature_c=5.0)
    set_dht11(device, 5.5, 70.0)
    driver = build_driver(dht(), Hardware(sysfs_root=tmp_path, clock=FakeClock()))
    assert getattr(driver, "backend", None) == "kernel"
    assert driver.read() == {"temperature_c": 5.5, "humidity_pct": 70.0}


def test_dht22_auto_falls_back_to_adafruit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_dht11(tmp_path, 0, 17)  # another sensor's overlay, not ours
    library = install_fake_library(monkeypatch, FakeClock(), [(21.5, 44.0)])
    driver = build_driver(dht(), Hardware(sysfs_root=tmp_path, clock=FakeClock()))
    assert getattr(driver, "backend", None) == "adafruit"
    assert driver.read() == {"temperature_c": 21.5, "humidity_pct": 44.0}
    driver.close()
    assert library.devices[0].exit_calls == 1


def test_dht22_auto_without_either_is_a_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_library(monkeypatch)
    with pytest.raises(SensorFault) as caught:
        build_driver(dht(pin=17), Hardware(sysfs_root=tmp_path, clock=FakeClock()))
    assert "dtoverlay=dht11,gpiopin=17" in caught.value.fix
    assert "sitewatch[pi]" in caught.value.fix


def test_dht22_explicit_backend_is_not_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_library(monkeypatch)
    assert select_backend(dht(backend="kernel"), tmp_path) == "kernel"
    driver = build_driver(dht(backend="kernel"), Hardware(sysfs_root=tmp_path))
    with pytest.raises(SensorFault):
        driver.read()  # the overlay is missing: reported at read time
    with pytest.raises(SensorFault):
        build_driver(dht(backend="adafruit"), Hardware(sysfs_root=tmp_path))
