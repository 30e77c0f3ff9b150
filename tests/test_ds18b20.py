"""DS18B20: config, w1_slave parsing and the 1-Wire driver against a fake sysfs tree."""

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
from sitewatch.agent.sensors.ds18b20 import DS18B20Config, DS18B20Driver, parse_w1_slave
from tests.fakes.sysfs import (
    KernelReads,
    add_ds18b20,
    add_w1_bus,
    remove_device,
    set_ds18b20,
    w1_slave_text,
)

ADDRESS = "28-0316a2795aff"
OTHER = "28-0417b1a3c4d5"


def ds(**overrides: Any) -> DS18B20Config:
    return DS18B20Config.model_validate({"id": "freezer", "driver": "ds18b20", **overrides})


def agent_config(tmp_path: Path, sensors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"site": "plant-a", "device": "pi-01", "mqtt": {"host": "127.0.0.1"},
            "outbox": {"path": str(tmp_path / "outbox.db")}, "sensors": sensors}


# --- config ---------------------------------------------------------------------------


def test_ds18b20_config_defaults_and_claims() -> None:
    config = ds()
    assert (config.address, config.bus_pin) == (None, 4)
    assert [(c.pin, c.field, c.share) for c in config.claimed_pins()] == [(4, "bus_pin", "w1")]
    assert [o.line for o in config.overlays_needed()] == ["dtoverlay=w1-gpio"]
    assert ds(bus_pin="GPIO17").overlays_needed()[0].line == "dtoverlay=w1-gpio,gpiopin=17"
    assert config.fields() == ["temperature_c"]
    policy = config.sampling_policy()
    assert (policy.ranges, policy.spike_limits) == ({"temperature_c": (-55.0, 125.0)},
                                                    {"temperature_c": 5.0})


def test_ds18b20_config_address_is_checked_and_normalised() -> None:
    assert ds(address="28-0316A2795AFF").address == ADDRESS
    with pytest.raises(ValidationError, match="28-0316a2795aff"):
        ds(address="10-0316a2795aff")


def test_ds18b20_config_interval_at_least_1_s() -> None:
    with pytest.raises(ValidationError):
        ds(interval_s=0.5)
    assert ds(interval_s=1).interval_s == 1.0


def test_ds18b20_sensors_share_the_bus_but_not_with_a_dht(tmp_path: Path) -> None:
    config = parse_config(agent_config(tmp_path, [
        {"id": "a", "driver": "ds18b20", "address": ADDRESS},
        {"id": "b", "driver": "ds18b20", "address": OTHER, "bus_pin": "GPIO4"},
    ]))
    assert len(config.sensor_configs()) == 2
    with pytest.raises(ConfigError) as caught:
        parse_config(agent_config(tmp_path, [
            {"id": "a", "driver": "ds18b20", "address": ADDRESS},
            {"id": "b", "driver": "dht22", "pin": 4},
        ]))
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("sensors[1].pin", "GPIO4 is already used by sensors[0]")
    ]


def test_ds18b20_is_registered() -> None:
    assert REGISTRY["ds18b20"].config is DS18B20Config


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize("milli_c", [23125, -10125, 0, 125000, -55000])
def test_ds18b20_parses_w1_slave(milli_c: int) -> None:
    assert parse_w1_slave(w1_slave_text(milli_c)) == milli_c / 1000


@pytest.mark.parametrize(
    ("text", "error_class"),
    [
        (w1_slave_text(21000, crc_ok=False), "crc"),
        (w1_slave_text(85000), "power_on_reset"),
        ("", "parse"),
        ("50 01 4b 46 7f ff 0c 10 1c : crc=1c YES\n", "parse"),
        ("50 01 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 01 4b 46 7f ff 0c 10 1c t=\n", "parse"),
        ("garbage\nt=21000\n", "parse"),
    ],
)
def test_ds18b20_rejects_bad_reads(text: str, error_class: str) -> None:
    with pytest.raises(SensorReadError) as caught:
        parse_w1_slave(text)
    assert caught.value.error_class == error_class


def test_fake_w1_slave_text_has_a_valid_crc() -> None:
    # The fake computes the Dallas CRC-8, so a good line checks out: CRC over all 9 bytes = 0.
    first = w1_slave_text(23125).splitlines()[0]
    data = bytes(int(part, 16) for part in first.split(":")[0].split())
    crc = 0
    for byte in data:
        for _ in range(8):
            crc = (crc >> 1) ^ (0x8C if (crc ^ byte) & 1 else 0)
            byte >>= 1
    assert crc == 0
    assert data[:2] == bytes([0x72, 0x01])  # 23.125 °C = 0x0172 sixteenths


# --- driver -----------------------------------------------------------------------------


def test_ds18b20_reads_addressed_sensor(tmp_path: Path) -> None:
    add_ds18b20(tmp_path, ADDRESS, temperature_c=-18.5)
    add_ds18b20(tmp_path, OTHER, temperature_c=4.0)
    driver = build_driver(ds(address=ADDRESS), Hardware(sysfs_root=tmp_path))
    assert driver.read() == {"temperature_c": -18.5}
    assert getattr(driver, "backend", None) == "w1"
    assert driver.min_read_spacing_s == 1.0


def test_ds18b20_without_address_uses_the_only_sensor(tmp_path: Path) -> None:
    device = add_ds18b20(tmp_path, ADDRESS, temperature_c=3.5)
    driver = DS18B20Driver(None, tmp_path)
    assert driver.read() == {"temperature_c": 3.5}
    remove_device(device)  # the sensor is replaced by a new one
    add_ds18b20(tmp_path, OTHER, temperature_c=3.7)
    with pytest.raises(SensorFault):
        driver.read()
    assert driver.read() == {"temperature_c": 3.7}


def test_ds18b20_without_address_and_two_sensors_is_a_fault(tmp_path: Path) -> None:
    add_ds18b20(tmp_path, ADDRESS)
    add_ds18b20(tmp_path, OTHER)
    with pytest.raises(SensorFault) as caught:
        DS18B20Driver(None, tmp_path).read()
    assert ADDRESS in str(caught.value) and OTHER in str(caught.value)
    assert "address" in caught.value.fix


def test_ds18b20_empty_bus_points_at_wiring(tmp_path: Path) -> None:
    add_w1_bus(tmp_path)
    with pytest.raises(SensorFault) as caught:
        DS18B20Driver(ADDRESS, tmp_path, bus_pin=17).read()
    assert "4.7 kΩ pull-up" in caught.value.fix
    assert "GPIO17" in caught.value.fix


def test_ds18b20_missing_bus_points_at_overlay(tmp_path: Path) -> None:
    with pytest.raises(SensorFault) as caught:
        DS18B20Driver(None, tmp_path, bus_pin=17).read()
    assert "dtoverlay=w1-gpio,gpiopin=17" in caught.value.fix


def test_ds18b20_crc_and_reset_reach_the_driver(tmp_path: Path) -> None:
    device = add_ds18b20(tmp_path, ADDRESS, crc_ok=False)
    driver = DS18B20Driver(ADDRESS, tmp_path)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "crc"
    set_ds18b20(device, temperature_c=85.0)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "power_on_reset"
    set_ds18b20(device, temperature_c=84.9)
    assert driver.read() == {"temperature_c": 84.9}


def test_ds18b20_io_error_is_transient(tmp_path: Path) -> None:
    device = add_ds18b20(tmp_path, ADDRESS, temperature_c=7.0)
    reads = KernelReads()
    reads.fail(device / "w1_slave", errno.EIO)
    driver = DS18B20Driver(ADDRESS, tmp_path, read_text=reads)
    with pytest.raises(SensorReadError) as caught:
        driver.read()
    assert caught.value.error_class == "io"
    assert driver.read() == {"temperature_c": 7.0}


def test_ds18b20_read_after_close_raises(tmp_path: Path) -> None:
    add_ds18b20(tmp_path, ADDRESS)
    driver = DS18B20Driver(ADDRESS, tmp_path)
    driver.close()
    driver.close()
    with pytest.raises(SensorFault):
        driver.read()
