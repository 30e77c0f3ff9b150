"""``sitewatch-agent check``: tell an installer exactly what is wrong, sensor by sensor.

The check loads the agent config (a ``ConfigError`` is printed with its field paths, exit 2),
compares each sensor with ``config.txt`` and the running kernel (``check_firmware.py``:
pins given to kernel drivers, overlay lines a sensor needs), then builds each driver and
reads it once, and a second time after the driver's ``min_read_spacing_s`` if the first
read failed. The findings are printed as a table (``check_report.py``).

Exit status: 0 when nothing FAILed, 1 when something did, 2 for an invalid config.
Run it while the agent service is stopped: the service holds the GPIO lines it uses.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from sitewatch.agent.check_firmware import (
    FirmwareView,
    config_txt_findings,
    driver_label,
    sensor_findings,
)
from sitewatch.agent.check_report import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    Finding,
    Status,
    exit_code,
    render,
)
from sitewatch.agent.config import AgentConfig, load_config
from sitewatch.agent.errors import ConfigError, SensorFault, SensorReadError
from sitewatch.agent.firmware import locate_config_txt, runtime_evidence
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import Fields, SensorDriver
from sitewatch.agent.sensors import build_driver
from sitewatch.agent.sensors.base import SensorConfig

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAIL",
    "EXIT_OK",
    "Finding",
    "Status",
    "build_hardware",
    "check_config",
    "exit_code",
    "probe",
    "render",
    "run_check",
]

_READ_FIX = {
    "dht22": "check the wiring (DATA to the GPIO, 3.3 V, GND) and the 4.7-10 kΩ pull-up from "
    "DATA to 3.3 V; an occasional failed read is normal, two in a row are not",
    "ds18b20": "check the wiring and the 4.7 kΩ pull-up from DATA to 3.3 V",
}
_GENERIC_FIX = "check the sensor's wiring and power, then run check again"
_IMPORT_FIX = (
    "install the Pi packages: pip install 'sitewatch[pi]' (or apt's python3-lgpio in a venv "
    "made with --system-site-packages); on a machine without GPIO set hardware.pin_factory: mock"
)
_BUSY_FIX = (
    "if the sitewatch-agent service is running it holds its pins: stop it first "
    "(sudo systemctl stop sitewatch-agent)"
)


def run_check(
    config_path: Path | str,
    config_txt: Path | str | None = None,
    out: TextIO = sys.stdout,
    hardware_overrides: Mapping[str, Any] | None = None,
) -> int:
    """Check ``config_path`` against ``config_txt`` and the hardware; print; return the exit code.

    ``config_txt`` defaults to the config's ``hardware.config_txt``. ``hardware_overrides``
    replaces fields of the ``Hardware`` built from the config (``sysfs_root``, ``dev_root``,
    ``pin_factory``, ``clock``…): that is how tests point the check at fake trees.
    """
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(error, file=out)
        return EXIT_CONFIG
    hardware = build_hardware(config, hardware_overrides)
    own_factory = hardware.pin_factory is None
    try:
        findings = check_config(config, hardware, config_txt)
    finally:
        if own_factory and hardware.pin_factory is not None:
            hardware.pin_factory.close()
    render(findings, out)
    return exit_code(findings)


def build_hardware(config: AgentConfig, overrides: Mapping[str, Any] | None = None) -> Hardware:
    """The ``Hardware`` a config describes, with ``overrides`` applied.

    Unlike the running agent's, it has no ``state_dir``: a check never touches the
    equipment counters the service persists.
    """
    return dataclasses.replace(Hardware.from_config(config.hardware), **(overrides or {}))


def check_config(
    config: AgentConfig, hardware: Hardware, config_txt: Path | str | None = None
) -> list[Finding]:
    """Every finding for a loaded config: config.txt, then per sensor its pins, its
    overlays and a probe. ``config_txt`` overrides ``hardware.config_txt``."""
    view = FirmwareView.read(locate_config_txt(config_txt or config.hardware.config_txt))
    evidence = runtime_evidence(hardware.sysfs_root, hardware.dev_root)
    sensors = config.sensor_configs()
    findings = config_txt_findings(view, sensors)
    for index, sensor in enumerate(sensors):
        findings += sensor_findings(index, sensor, view, evidence)
        findings += probe(sensor, hardware)
    return findings


def _describe(error: BaseException) -> str:
    kind = type(error).__name__
    if isinstance(error, SensorReadError):
        kind += f"({error.error_class})"
    return f"{kind}: {error}"


def _fix_for(error: BaseException, fix: str) -> str:
    if isinstance(error, ImportError):
        return _IMPORT_FIX
    text = str(error).lower()
    if "busy" in text or "in use" in text:
        return f"{fix}; {_BUSY_FIX}" if fix else _BUSY_FIX
    return fix


def _format(fields: Fields) -> str:
    def value(v: float | bool) -> str:
        return str(v).lower() if isinstance(v, bool) else repr(round(v, 3))

    return " ".join(f"{name}={value(v)}" for name, v in fields.items()) or "(no fields)"


def probe(sensor: SensorConfig, hardware: Hardware) -> list[Finding]:
    """Build the sensor's driver, read it (at most twice), close it.

    One finding; a second (WARN) if closing fails. Any exception is caught here and reported
    with its type: this is the top of ``check``, and one broken sensor must not hide the rest.
    """
    try:
        driver = build_driver(sensor, hardware)
    except SensorFault as fault:
        return [
            Finding(
                sensor.id,
                driver_label(sensor),
                Status.FAIL,
                _describe(fault),
                _fix_for(fault, fault.fix),
            )
        ]
    except Exception as error:
        return [
            Finding(
                sensor.id,
                driver_label(sensor),
                Status.FAIL,
                f"cannot start: {_describe(error)}",
                _fix_for(error, _GENERIC_FIX),
            )
        ]
    backend = getattr(driver, "backend", None)
    label = f"{sensor.driver}/{backend}" if isinstance(backend, str) else sensor.driver
    findings = [_read_twice(sensor, driver, hardware, label)]
    try:
        driver.close()
    except Exception as error:  # reported, not raised: the read result is still worth showing
        findings.append(Finding(sensor.id, label, Status.WARN, f"close failed: {_describe(error)}"))
    return findings


def _read_twice(
    sensor: SensorConfig, driver: SensorDriver, hardware: Hardware, label: str
) -> Finding:
    failed: list[SensorReadError] = []
    for attempt in range(2):
        if attempt:
            hardware.clock.sleep(driver.min_read_spacing_s)
        try:
            fields = driver.read()
        except SensorReadError as error:
            failed.append(error)
            continue
        except SensorFault as fault:
            return Finding(
                sensor.id, label, Status.FAIL, _describe(fault), _fix_for(fault, fault.fix)
            )
        except Exception as error:
            return Finding(
                sensor.id,
                label,
                Status.FAIL,
                f"read crashed: {_describe(error)}",
                _fix_for(error, _GENERIC_FIX),
            )
        detail = _format(fields)
        if failed:
            detail += f" (first read failed: {_describe(failed[0])})"
        return Finding(sensor.id, label, Status.OK, detail)
    reasons = [_describe(error) for error in failed]
    detail = (
        f"both reads failed: {reasons[0]}"
        if len(set(reasons)) == 1
        else "both reads failed: " + "; ".join(reasons)
    )
    return Finding(
        sensor.id, label, Status.FAIL, detail, _READ_FIX.get(sensor.driver, _GENERIC_FIX)
    )
