"""A sensor missing at start runs as a stand-in that reports the fault and retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.sensors import build_driver
from sitewatch.agent.sensors.deferred import DeferredDriver
from sitewatch.agent.sensors.dht22 import DHT22Config
from sitewatch.clock import FakeClock
from tests.fakes.sysfs import add_dht11


def test_deferred_driver_reports_fault_then_recovers_when_hardware_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sitewatch.agent.sensors.dht22 as dht22

    monkeypatch.setattr(dht22, "adafruit_importable", lambda: False)
    clock = FakeClock()
    hardware = Hardware(sysfs_root=tmp_path, clock=clock)
    config = DHT22Config(id="cold-room", pin=17, interval_s=30)
    with pytest.raises(SensorFault) as caught:
        build_driver(config, hardware)  # no overlay, no library: cannot be built
    driver = DeferredDriver(config, hardware, build_driver, caught.value, retry_s=60)

    with pytest.raises(SensorFault, match=str(caught.value)):
        driver.read()
    add_dht11(tmp_path, index=3, pin=17, temperature_c=4.2, humidity_pct=81.0)
    with pytest.raises(SensorFault):
        driver.read()  # not yet: retries wait retry_s
    clock.advance(60)
    assert driver.read() == {"temperature_c": 4.2, "humidity_pct": 81.0}
    assert driver.min_read_spacing_s == 2.5
    driver.close()
    with pytest.raises(SensorFault):
        driver.read()
