"""Simulated rooms: temperature and humidity as a pure function of time, seed and faults.

A reading at wall time ``t`` is the room's setpoint plus a daily cycle (peaking at 15:00
UTC), the cooling cycle of a refrigerated room (a slow rise while the compressor rests, a
faster pull-down while it runs), a slow wander and per-read noise, rounded to 0.1 like a
DHT22. Every random part is drawn from ``(seed, channel, time index)``, so two simulators
with the same seed asked at the same clock times agree exactly.

>>> model = ClimateModel("cold_room", seed=1, faults=[])
>>> sample = model.sample(elapsed_s=0.0, wall_s=1_795_464_000.0)
>>> 2.0 < sample["temperature_c"] < 5.0, sample == model.sample(0.0, 1_795_464_000.0)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sitewatch.agent.errors import SensorFault
from sitewatch.agent.protocols import Fields
from sitewatch.agent.sensors.sim_faults import (
    FaultConfig,
    check_read_faults,
    read_index,
    unit_gauss,
    unit_uniform,
)
from sitewatch.clock import Clock

__all__ = [
    "PROFILES",
    "ClimateModel",
    "ClimateModelName",
    "ClimateProfile",
    "SimulatedClimateDriver",
]

ClimateModelName = Literal["cold_room", "freezer", "server_room", "office"]

_WANDER_PERIOD_S = 900.0
_RECOVERY_TAU_S = 900.0
"""Time constant (s) of the pull-down after a door is closed or the cooling repaired."""
_DOOR_OPEN_TAU_S = 1200.0
"""Time constant (s) of the rise toward ambient while a cold room's door stands open."""


@dataclass(frozen=True)
class ClimateProfile:
    """One kind of room. Temperatures in °C, humidity in %RH, periods in seconds.

    ``cycle_period_s`` 0 means no cooling cycle. ``ambient_c`` / ``ambient_humidity_pct``
    are where the room drifts when its cooling stops or its door stays open.
    """

    setpoint_c: float
    daily_amplitude_c: float
    cycle_period_s: float
    cycle_amplitude_c: float
    humidity_pct: float
    daily_humidity_pct: float
    ambient_c: float
    ambient_humidity_pct: float
    noise_c: float = 0.08
    noise_pct: float = 0.4
    wander_c: float = 0.15
    wander_pct: float = 1.5


PROFILES: dict[str, ClimateProfile] = {
    "cold_room": ClimateProfile(3.5, 0.3, 1500.0, 0.6, 85.0, 3.0, 20.0, 60.0),
    "freezer": ClimateProfile(-19.0, 0.3, 2400.0, 1.0, 70.0, 3.0, 20.0, 60.0),
    "server_room": ClimateProfile(22.0, 0.5, 0.0, 0.0, 45.0, 3.0, 35.0, 35.0),
    "office": ClimateProfile(21.0, 1.5, 0.0, 0.0, 40.0, 5.0, 28.0, 50.0),
}


class ClimateModel:
    """Temperature and humidity of one simulated room, with its faults."""

    def __init__(self, model: str, seed: int, faults: list[FaultConfig]) -> None:
        self.profile = PROFILES[model]
        self.seed = seed
        self.faults = list(faults)
        period = self.profile.cycle_period_s
        self._cycle_offset_s = unit_uniform(seed, "cycle", 0) * period if period else 0.0

    def sample(self, elapsed_s: float, wall_s: float) -> dict[str, float]:
        """The measurement ``elapsed_s`` after start at ``wall_s`` (read faults aside)."""
        return self._sample(elapsed_s, wall_s, self.faults)

    def _sample(
        self, elapsed_s: float, wall_s: float, faults: list[FaultConfig]
    ) -> dict[str, float]:
        for fault in faults:
            if fault.kind == "stuck" and fault.active(elapsed_s):
                others = [other for other in faults if other is not fault]
                at = fault.start_s
                return self._sample(at, wall_s - (elapsed_s - at), others)
        p = self.profile
        cycle_wall_s = wall_s
        warming_c = spike_c = drift_c = 0.0
        for number, fault in enumerate(faults):
            warming_c += self._warming(fault, elapsed_s)
            if not fault.active(elapsed_s):
                continue
            since_s = elapsed_s - fault.start_s
            if fault.kind in ("cooling_failure", "door_left_open"):
                # The compressor no longer cycles: hold the cycle where it was.
                cycle_wall_s = min(cycle_wall_s, wall_s - since_s)
            elif fault.kind == "drift":
                drift_c += fault.number("rate_c_per_h") * since_s / 3600.0
            elif fault.kind == "spikes":
                index = read_index(wall_s)
                if unit_uniform(self.seed, f"spike{number}", index) < fault.number("probability"):
                    sign = 1.0 if unit_uniform(self.seed, f"sign{number}", index) < 0.5 else -1.0
                    spike_c += sign * fault.number("magnitude_c")
        hours = (wall_s % 86400.0) / 3600.0
        daily = math.cos(2 * math.pi * (hours - 15.0) / 24.0)
        cycle = self._cycle(cycle_wall_s)
        index = read_index(wall_s)
        base_c = (
            p.setpoint_c
            + p.daily_amplitude_c * daily
            + p.cycle_amplitude_c * cycle
            + p.wander_c * self._wander("wander_t", wall_s)
            + p.noise_c * unit_gauss(self.seed, "noise_t", index)
        )
        span_c = p.ambient_c - p.setpoint_c
        toward_ambient = min(1.0, warming_c / span_c) if span_c > 0 else 0.0
        humidity = (
            p.humidity_pct
            - p.daily_humidity_pct * daily
            - 2.0 * cycle
            + p.wander_pct * self._wander("wander_h", wall_s)
            + p.noise_pct * unit_gauss(self.seed, "noise_h", index)
        )
        humidity += (p.ambient_humidity_pct - humidity) * toward_ambient
        return {
            "temperature_c": round(base_c + warming_c + drift_c + spike_c, 1),
            "humidity_pct": round(min(100.0, max(0.0, humidity)), 1),
        }

    def _warming(self, fault: FaultConfig, elapsed_s: float) -> float:
        """How far (°C) a cooling failure or an open door has warmed the room."""
        if fault.kind not in ("cooling_failure", "door_left_open") or elapsed_s < fault.start_s:
            return 0.0
        ambient_c = fault.ambient_c if fault.ambient_c is not None else self.profile.ambient_c
        span_c = max(0.0, ambient_c - self.profile.setpoint_c)
        end_s = fault.end_s
        since_s = (elapsed_s if end_s is None else min(elapsed_s, end_s)) - fault.start_s
        if fault.kind == "cooling_failure":
            rise_c = min(span_c, max(0.0, fault.number("rate_c_per_h") * since_s / 3600.0))
        else:
            rise_c = span_c * (1.0 - math.exp(-since_s / _DOOR_OPEN_TAU_S))
        if end_s is not None and elapsed_s > end_s:
            rise_c *= math.exp(-(elapsed_s - end_s) / _RECOVERY_TAU_S)
        return rise_c

    def _cycle(self, wall_s: float) -> float:
        """The cooling cycle in [-1, 1]: rising 70 % of the period, pulled down in 30 %."""
        period = self.profile.cycle_period_s
        if not period:
            return 0.0
        phase = ((wall_s + self._cycle_offset_s) % period) / period
        if phase < 0.7:
            return -1.0 + 2.0 * phase / 0.7
        return 1.0 - 2.0 * (phase - 0.7) / 0.3

    def _wander(self, channel: str, wall_s: float) -> float:
        """Smooth noise: seeded normal values every 15 min, cosine-interpolated."""
        position = wall_s / _WANDER_PERIOD_S
        index = math.floor(position)
        weight = (1.0 - math.cos(math.pi * (position - index))) / 2.0
        before = unit_gauss(self.seed, channel, index)
        after = unit_gauss(self.seed, channel, index + 1)
        return before + (after - before) * weight


class SimulatedClimateDriver:
    """A ``SensorDriver`` for a simulated room; faults count time from its construction."""

    min_read_spacing_s: float = 0.0

    def __init__(self, sensor_id: str, model: ClimateModel, clock: Clock) -> None:
        self.sensor_id = sensor_id
        self.model = model
        self.clock = clock
        self.started_s = clock.monotonic()
        self._closed = False

    def read(self) -> Fields:
        """The room now, or ``SensorReadError`` when a dead/dropouts fault says so."""
        if self._closed:
            raise SensorFault(f"sensor {self.sensor_id} is closed")
        elapsed_s = self.clock.monotonic() - self.started_s
        wall_s = self.clock.time()
        check_read_faults(self.model.faults, self.model.seed, elapsed_s, wall_s)
        return dict(self.model.sample(elapsed_s, wall_s))

    def close(self) -> None:
        self._closed = True
