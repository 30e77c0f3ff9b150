"""The part of ``check`` that compares the agent config with ``config.txt`` and the kernel.

Two kinds of problem are found here, before any sensor is opened:

- a sensor on a GPIO that ``config.txt`` gives to a kernel driver (``gpio_input`` on GPIO4
  while ``dtoverlay=w1-gpio`` is on, GPIO2 with I2C on). A sensor's own overlay on its own
  pin is what it needs, not a clash;
- a sensor whose overlay line (right overlay *and* pin) is missing. The finding names the
  exact line, the file, and that a reboot is needed. A sensor with ``backend: auto`` can
  fall back to a user-space backend, so for it a missing line is a WARN, not a FAIL.

Runtime evidence (``firmware.runtime_evidence``) separates "in config.txt but not loaded
yet: reboot" from "loaded by hand now but gone after a reboot".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sitewatch.agent.check_report import Finding, Status
from sitewatch.agent.firmware import Directive, FirmwareConfig, RuntimeEvidence, read_config_txt
from sitewatch.agent.pins import pin_name
from sitewatch.agent.sensors.base import OverlayNeed, SensorConfig

__all__ = ["FirmwareView", "config_txt_findings", "driver_label", "sensor_findings"]


@dataclass(frozen=True)
class FirmwareView:
    """A config.txt as check sees it: parsed, or unreadable with the reason."""

    path: Path
    config: FirmwareConfig | None
    error: str = ""

    @classmethod
    def read(cls, path: Path) -> FirmwareView:
        try:
            return cls(path, read_config_txt(path))
        except OSError as error:
            return cls(path, None, error.strerror or str(error))

    def mention(self, directive: Directive) -> str:
        """```dtoverlay=dht11` (line 3, only under [pi4])``, for messages."""
        where = f"line {directive.line_no}" if directive.source == self.path else directive.where
        only = f", only under {directive.section}" if directive.conditional else ""
        return f"`{directive.text}` ({where}{only})"


def driver_label(sensor: SensorConfig) -> str:
    """``dht22/kernel`` for a sensor configured with a backend, else the driver name."""
    backend = getattr(sensor, "backend", None)
    return f"{sensor.driver}/{backend}" if isinstance(backend, str) else sensor.driver


def _bound_pin(directive: Directive) -> int | None:
    try:
        return directive.main_pin()
    except ValueError:
        return None  # an unparseable gpiopin, reported as a config.txt problem


def config_txt_findings(view: FirmwareView, sensors: list[SensorConfig]) -> list[Finding]:
    """Problems in config.txt itself: unparseable values, two drivers given one pin."""
    if view.config is None:
        return []
    findings = [Finding("config.txt", "", Status.WARN, problem,
                        "fix the value; the firmware ignores a parameter it cannot parse")
                for problem in view.config.problems]
    needed = {need.overlay for sensor in sensors for need in sensor.overlays_needed()}
    claims = view.config.claims()
    for position, first in enumerate(claims):
        for second in claims[position + 1:]:
            a, b = first.directive, second.directive
            if first.pin != second.pin or a is b:
                continue
            if a.section != b.section and "all" not in (a.section, b.section):
                continue  # filters for different boards: never loaded together
            used = any(d.provides(overlay) for d in (a, b) for overlay in needed)
            findings.append(Finding(
                "config.txt", "", Status.FAIL if used else Status.WARN,
                f"{pin_name(first.pin)} is given to both {view.mention(a)} and {view.mention(b)}",
                f"give one of them another pin (gpiopin=N) or remove it from {view.path}, "
                "then reboot",
            ))
    return findings


def sensor_findings(
    index: int, sensor: SensorConfig, view: FirmwareView, evidence: RuntimeEvidence
) -> list[Finding]:
    """Pin clashes with config.txt, then missing or misplaced overlay lines, for one sensor."""
    return _pin_clashes(index, sensor, view) + [
        finding for need in sensor.overlays_needed()
        if (finding := _need_finding(sensor, need, view, evidence)) is not None
    ]


def _own_overlay(sensor: SensorConfig, directive: Directive, pin: int) -> bool:
    return any(directive.provides(need.overlay) and need.pin in (None, pin)
               for need in sensor.overlays_needed())


def _pin_clashes(index: int, sensor: SensorConfig, view: FirmwareView) -> list[Finding]:
    if view.config is None:
        return []
    findings = []
    claims = view.config.claims()
    for claim in sensor.claimed_pins():
        for taken in claims:
            if taken.pin != claim.pin or _own_overlay(sensor, taken.directive, claim.pin):
                continue
            key = f"sensors[{index}].{claim.field}"
            findings.append(Finding(
                sensor.id, driver_label(sensor), Status.FAIL,
                f"{key}: {pin_name(claim.pin)} is already given to a kernel driver by "
                f"{view.mention(taken.directive)} in {view.path}",
                f"wire the sensor to a free GPIO and change {key}, or, if nothing needs that "
                f"line, delete it from {view.path} and reboot",
            ))
    return findings


def _need_finding(
    sensor: SensorConfig, need: OverlayNeed, view: FirmwareView, evidence: RuntimeEvidence
) -> Finding | None:
    advisory = getattr(sensor, "backend", None) == "auto"
    missing = Status.WARN if advisory else Status.FAIL
    label = driver_label(sensor)
    if view.config is None:
        return Finding(sensor.id, label, missing,
                       f"cannot read {view.path} ({view.error}), so cannot tell whether it "
                       f"has `{need.line}`",
                       f"pass --config-txt PATH if the firmware config lives elsewhere; it must "
                       f"contain `{need.line}` (a change takes effect after a reboot)")
    loads = view.config.providing(need.overlay)
    exact = sorted((d for d in loads if need.pin is None or _bound_pin(d) == need.pin),
                   key=lambda d: d.conditional)
    loaded_now = evidence.shows(need.overlay, need.pin)
    if exact:
        directive = exact[0]  # an unconditional line wins over one under a board filter
        if directive.conditional:
            return Finding(sensor.id, label, Status.WARN,
                           f"{view.mention(directive)} applies only on that kind of board",
                           f"move `{need.line}` under [all] in {view.path} unless this Pi is "
                           "that board, then reboot")
        if loaded_now is False:
            return Finding(sensor.id, label, missing,
                           f"{view.mention(directive)} is in {view.path} but the kernel has not "
                           "loaded it",
                           "reboot to apply config.txt changes (sudo reboot)")
        return None
    detail = f"{view.path} has no `{need.line}`"
    other = next((d for d in loads if _bound_pin(d) is not None), None)
    if other is not None and need.pin is not None:
        detail += (f"; its {view.mention(other)} is for {pin_name(_bound_pin(other) or 0)}, "
                   f"not {pin_name(need.pin)}")
    if loaded_now:
        detail += "; the kernel has it loaded now, but it will be gone after the next reboot"
    if advisory:
        detail += "; a fallback backend is used meanwhile"
    return Finding(sensor.id, label, missing, detail,
                   f"add the line `{need.line}` to {view.path} (one line per sensor), "
                   "then reboot (sudo reboot)")
