"""``sitewatch-agent check`` against fake sysfs trees, config.txt files and MockFactory pins."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.agent.check import (
    Finding,
    Status,
    build_hardware,
    check_config,
    render,
    run_check,
)
from sitewatch.agent.config import load_config
from sitewatch.clock import FakeClock
from tests.fakes.sysfs import add_dht11, add_ds18b20, set_ds18b20

PROBE = "28-0316a2795aff"


class Site:
    """One installer's Pi: an agent config, a config.txt and the hardware trees, in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.sysfs = tmp_path / "sys"
        self.dev = tmp_path / "dev"
        self.sysfs.mkdir()
        self.dev.mkdir()
        self.config_txt = tmp_path / "boot" / "config.txt"
        self.clock: FakeClock = FakeClock()

    def dht(self, pin: int) -> Path:
        """A DHT22 bound by ``dtoverlay=dht11,gpiopin=<pin>``, reading 23.4 °C and 41 %RH."""
        index = len(list((self.sysfs / "bus" / "iio" / "devices").glob("iio:device*")))
        return add_dht11(self.sysfs, index, pin, temperature_c=23.4, humidity_pct=41.0)

    def probe(self, *, crc_ok: bool = True) -> Path:
        """A DS18B20 on the 1-Wire bus, reading 23.125 °C (a CRC error if not ``crc_ok``)."""
        return add_ds18b20(self.sysfs, PROBE, temperature_c=23.125, crc_ok=crc_ok)

    def write_config_txt(self, text: str) -> None:
        self.config_txt.parent.mkdir(exist_ok=True)
        self.config_txt.write_text(text)

    def write_agent(self, *sensors: dict[str, Any]) -> Path:
        path = self.root / "agent.yaml"
        path.write_text(yaml.safe_dump({
            "site": "plant-a",
            "device": "pi-01",
            "mqtt": {"host": "broker.local"},
            "outbox": {"path": str(self.root / "outbox.db")},
            "hardware": {"pin_factory": "mock", "config_txt": str(self.config_txt)},
            "sensors": list(sensors),
        }))
        return path

    def run(self, *sensors: dict[str, Any]) -> tuple[int, str]:
        out = io.StringIO()
        code = run_check(self.write_agent(*sensors), out=out, hardware_overrides={
            "sysfs_root": self.sysfs, "dev_root": self.dev, "clock": self.clock})
        return code, out.getvalue()

    def findings(self, *sensors: dict[str, Any]) -> list[Finding]:
        config = load_config(self.write_agent(*sensors))
        hardware = build_hardware(config, {"sysfs_root": self.sysfs, "dev_root": self.dev,
                                           "clock": self.clock})
        return check_config(config, hardware)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


DHT_KERNEL = {"id": "cold-room", "driver": "dht22", "pin": 17, "backend": "kernel",
              "interval_s": 30}
DHT_AUTO = {"id": "cold-room", "driver": "dht22", "pin": 17, "interval_s": 30}
DS18B20 = {"id": "freezer", "driver": "ds18b20", "address": PROBE}
DOOR_GPIO4 = {"id": "door", "driver": "gpio_input", "pin": "GPIO4", "role": "door"}
COMPRESSOR = {"id": "compressor", "driver": "gpio_input", "pin": 27, "role": "running"}


def statuses(findings: list[Finding]) -> list[tuple[str, Status]]:
    return [(f.sensor, f.status) for f in findings]


# -- the config itself ---------------------------------------------------------------------

def test_check_config_error_prints_paths_and_exits_2(site: Site) -> None:
    code, text = site.run(DOOR_GPIO4, {**COMPRESSOR, "id": "door", "pin": 4})
    assert code == 2
    assert text.splitlines()[1:] == [
        "  sensors[1].id: 'door' is already used by sensors[0]",
        "  sensors[1].pin: GPIO4 is already used by sensors[0]",
    ]


# -- overlays ------------------------------------------------------------------------------

def test_check_missing_overlay_fails_with_the_line_and_the_file(site: Site) -> None:
    site.write_config_txt("dtparam=audio=on\n")
    code, text = site.run(DHT_KERNEL)
    assert code == 1
    first = site.findings(DHT_KERNEL)[0]
    assert first.status is Status.FAIL
    assert "`dtoverlay=dht11,gpiopin=17`" in first.fix
    assert str(site.config_txt) in first.fix and "reboot" in first.fix
    assert f"add the line `dtoverlay=dht11,gpiopin=17` to {site.config_txt}" in text


def test_check_overlay_on_the_wrong_pin_is_named(site: Site) -> None:
    site.write_config_txt("dtoverlay=dht11\n")  # no gpiopin: the overlay takes GPIO4
    first = site.findings(DHT_KERNEL)[0]
    assert first.status is Status.FAIL
    assert "`dtoverlay=dht11` (line 1) is for GPIO4, not GPIO17" in first.detail


def test_check_auto_backend_missing_overlay_is_advisory(site: Site) -> None:
    site.write_config_txt("")
    findings = site.findings(DHT_AUTO)
    assert findings[0].status is Status.WARN
    assert "dtoverlay=dht11,gpiopin=17" in findings[0].fix


def test_check_missing_config_txt(site: Site) -> None:
    site.dht(17)
    site.probe()
    findings = site.findings(DHT_AUTO, DS18B20)
    config_rows = [(f.sensor, f.status) for f in findings if "cannot read" in f.detail]
    assert config_rows == [("cold-room", Status.WARN), ("freezer", Status.FAIL)]
    assert str(site.config_txt) in findings[0].detail


def test_check_overlay_in_config_but_not_loaded_needs_a_reboot(site: Site) -> None:
    site.write_config_txt("dtoverlay=dht11,gpiopin=17\n")
    findings = site.findings(DHT_KERNEL)
    assert [f.status for f in findings] == [Status.FAIL, Status.FAIL]
    assert "has not loaded it" in findings[0].detail and "reboot" in findings[0].fix
    assert findings[1].detail.startswith("SensorFault: no kernel dht11 device for GPIO17")


def test_check_overlay_loaded_by_hand_but_not_in_config(site: Site) -> None:
    site.write_config_txt("")
    site.dht(17)
    findings = site.findings(DHT_KERNEL)
    assert findings[0].status is Status.FAIL
    assert "gone after the next reboot" in findings[0].detail
    assert findings[1].status is Status.OK


def test_check_overlay_only_under_a_board_filter_warns(site: Site) -> None:
    site.write_config_txt("[pi4]\ndtoverlay=dht11,gpiopin=17\n[all]\n")
    site.dht(17)
    code, text = site.run(DHT_KERNEL)
    assert code == 0
    assert "only under [pi4]" in text
    assert statuses(site.findings(DHT_KERNEL)) == [("cold-room", Status.WARN),
                                                   ("cold-room", Status.OK)]


# -- pins ----------------------------------------------------------------------------------

def test_check_pin_clash_with_an_overlay(site: Site) -> None:
    site.write_config_txt("dtoverlay=w1-gpio\n")
    code, _ = site.run(DOOR_GPIO4)
    assert code == 1
    clash = site.findings(DOOR_GPIO4)[0]
    assert clash.status is Status.FAIL
    assert clash.detail.startswith("sensors[0].pin: GPIO4 is already given to a kernel driver "
                                   "by `dtoverlay=w1-gpio` (line 1)")
    assert "sensors[0].pin" in clash.fix


def test_check_pin_clash_with_i2c(site: Site) -> None:
    site.write_config_txt("dtparam=i2c_arm=on,spi=on\n")
    sensor = {**DOOR_GPIO4, "pin": 2}
    (clash,) = [f for f in site.findings(sensor) if f.status is Status.FAIL]
    assert "GPIO2 is already given to a kernel driver by `dtparam=i2c_arm=on,spi=on`" in (
        clash.detail)


def test_check_a_sensors_own_overlay_is_not_a_clash(site: Site) -> None:
    site.write_config_txt("dtoverlay=w1-gpio\ndtoverlay=dht11,gpiopin=17\n")
    site.dht(17)
    site.probe()
    findings = site.findings(DS18B20, DHT_KERNEL)
    assert statuses(findings) == [("freezer", Status.OK), ("cold-room", Status.OK)]


def test_check_adafruit_backend_on_a_kernel_owned_pin_clashes(site: Site) -> None:
    site.write_config_txt("dtoverlay=dht11,gpiopin=17\n")
    sensor = {**DHT_KERNEL, "backend": "adafruit"}
    assert site.findings(sensor)[0].detail.startswith(
        "sensors[0].pin: GPIO17 is already given to a kernel driver by "
        "`dtoverlay=dht11,gpiopin=17`")


def test_check_overlays_fighting_over_a_pin(site: Site) -> None:
    site.write_config_txt("dtoverlay=dht11\ndtoverlay=w1-gpio\n")
    site.probe()
    first = site.findings(DS18B20)[0]
    assert (first.sensor, first.status) == ("config.txt", Status.FAIL)
    assert first.detail == ("GPIO4 is given to both `dtoverlay=dht11` (line 1) and "
                            "`dtoverlay=w1-gpio` (line 2)")


# -- probing -------------------------------------------------------------------------------

def test_check_all_well_reports_values_and_exits_0(site: Site) -> None:
    site.write_config_txt("dtoverlay=dht11,gpiopin=17\ndtoverlay=w1-gpio\n")
    site.dht(17)
    site.probe()
    code, text = site.run(DHT_KERNEL, DS18B20, COMPRESSOR)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].split() == ["sensor", "driver", "status", "value", "/", "problem"]
    assert lines[1].split() == ["cold-room", "dht22/kernel", "OK", "temperature_c=23.4",
                                "humidity_pct=41.0"]
    assert lines[2].split() == ["freezer", "ds18b20/w1", "OK", "temperature_c=23.125"]
    assert lines[3].split()[:4] == ["compressor", "gpio_input", "OK", "running=false"]
    assert lines[-1] == "3 OK, 0 WARN, 0 FAIL"


def test_check_two_failed_reads_fail_with_the_error_class(site: Site) -> None:
    site.write_config_txt("dtoverlay=w1-gpio\n")
    site.probe(crc_ok=False)
    (finding,) = site.findings(DS18B20)
    assert finding.status is Status.FAIL
    assert finding.detail == "both reads failed: SensorReadError(crc): 1-Wire CRC check failed"
    assert "pull-up" in finding.fix
    assert site.clock.monotonic() == 1.0  # one wait of the driver's min_read_spacing_s


class HealingBusClock(FakeClock):
    """Time passing fixes the bus: the next conversion after a wait reads cleanly."""

    def __init__(self, probe: Path) -> None:
        super().__init__()
        self.probe = probe

    def sleep(self, seconds: float, stop: Any = None) -> bool:
        set_ds18b20(self.probe, temperature_c=23.125)
        return super().sleep(seconds, stop)


def test_check_second_read_rescues_a_transient_failure(site: Site) -> None:
    site.write_config_txt("dtoverlay=w1-gpio\n")
    site.clock = HealingBusClock(site.probe(crc_ok=False))
    (finding,) = site.findings(DS18B20)
    assert finding.status is Status.OK
    assert finding.detail == ("temperature_c=23.125 (first read failed: SensorReadError(crc): "
                              "1-Wire CRC check failed)")


def test_check_one_broken_sensor_does_not_hide_the_others(site: Site) -> None:
    site.write_config_txt("dtoverlay=w1-gpio\n")
    (site.dht(17) / "in_temp_input").write_text("garbage\n")
    site.probe()
    code, _ = site.run({**DHT_AUTO, "backend": "kernel"}, DS18B20)
    findings = site.findings({**DHT_AUTO, "backend": "kernel"}, DS18B20)
    assert code == 1
    assert statuses(findings)[-2:] == [("cold-room", Status.FAIL), ("freezer", Status.OK)]


# -- rendering -----------------------------------------------------------------------------

def test_check_render_table() -> None:
    out = io.StringIO()
    render([
        Finding("cold-room", "dht22/kernel", Status.OK, "temperature_c=4.2"),
        Finding("door", "gpio_input", Status.FAIL, "GPIO4 is taken", "use GPIO22"),
    ], out)
    assert out.getvalue() == (
        "sensor     driver        status  value / problem\n"
        "cold-room  dht22/kernel  OK      temperature_c=4.2\n"
        "door       gpio_input    FAIL    GPIO4 is taken\n"
        "                                 fix: use GPIO22\n"
        "1 OK, 0 WARN, 1 FAIL\n"
    )
