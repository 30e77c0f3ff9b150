"""The ``simulated`` driver: rooms and equipment for demos and tests, with scheduled faults.

Rooms (``cold_room`` ~3.5 °C, ``freezer`` ~-19 °C, ``server_room`` ~22 °C, ``office``
~21 °C) give ``temperature_c`` and ``humidity_pct`` from a seeded model
(``sim_climate.py``). Equipment (``compressor``, ``door``) is a contact on a gpiozero mock
pin driven by a seeded schedule and read through the real ``gpio_input`` path
(``sim_equipment.py``), so it yields state-change events, duty cycle, starts per hour and
runtime hours exactly as a wired contact would. Faults are listed in ``sim_faults.py``.

>>> config = SimulatedConfig(id="walk-in", driver="simulated", model="cold_room", seed=3,
...     faults=[{"kind": "cooling_failure", "start_s": 600}])
>>> config.fields(), config.faults[0].rate_c_per_h
(['temperature_c', 'humidity_pct'], 1.5)
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sitewatch.agent.hardware import Hardware
from sitewatch.agent.pins import parse_pin
from sitewatch.agent.protocols import SensorDriver
from sitewatch.agent.sensors import register
from sitewatch.agent.sensors.base import PinClaim, SamplingConfig, SensorConfig
from sitewatch.agent.sensors.gpio_input import COUNTER_FIELDS
from sitewatch.agent.sensors.sim_climate import ClimateModel, SimulatedClimateDriver
from sitewatch.agent.sensors.sim_equipment import SimulatedEquipmentDriver
from sitewatch.agent.sensors.sim_faults import FaultConfig

__all__ = ["CLIMATE_MODELS", "EQUIPMENT_MODELS", "FAULTS_BY_MODEL", "SimulatedConfig", "build"]

CLIMATE_MODELS = ("cold_room", "freezer", "server_room", "office")
EQUIPMENT_MODELS = ("compressor", "door")

_READ_FAULTS = ("stuck", "dropouts", "dead")
FAULTS_BY_MODEL: dict[str, tuple[str, ...]] = {
    **{
        model: (*_READ_FAULTS, "drift", "spikes", "door_left_open", "cooling_failure")
        for model in CLIMATE_MODELS
    },
    "compressor": (*_READ_FAULTS, "short_cycling"),
    "door": (*_READ_FAULTS, "door_left_open"),
}
"""Model → the fault kinds it can show."""

_CLIMATE_SAMPLING: dict[str, object] = {
    # A simulated room stands in for a DHT22: the same plausibility gates apply.
    "ranges": {"temperature_c": (-40.0, 80.0), "humidity_pct": (0.0, 100.0)},
    "spike_limits": {"temperature_c": 3.0, "humidity_pct": 15.0},
}
_EQUIPMENT_SAMPLING: dict[str, object] = {"max_attempts": 1, "median_window": 1}


class SimulatedConfig(SensorConfig):
    """A simulated sensor.

    ``model``: ``cold_room``, ``freezer``, ``server_room``, ``office``, ``compressor`` or
    ``door``. ``seed`` (default 0): the same seed gives the same values at the same times.
    ``faults``: scheduled faults (``kind``, ``start_s`` after the agent starts,
    ``duration_s`` or forever, and the kind's parameters). ``pin``: for ``compressor`` and
    ``door``, the mock GPIO to drive (default: the highest free one); it is claimed like a
    real pin, so set it when simulated and mock ``gpio_input`` sensors share the mock factory.
    """

    driver_name: ClassVar[str] = "simulated"

    driver: Literal["simulated"] = "simulated"
    model: Literal["cold_room", "freezer", "server_room", "office", "compressor", "door"]
    seed: int = 0
    faults: list[FaultConfig] = Field(default_factory=list)
    pin: Annotated[int, Field(ge=0)] | None = None

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: object) -> int | None:
        return None if value is None else parse_pin(value)

    @model_validator(mode="after")
    def _fits_model(self) -> SimulatedConfig:
        allowed = FAULTS_BY_MODEL[self.model]
        for index, fault in enumerate(self.faults):
            if fault.kind not in allowed:
                raise ValueError(
                    f"faults[{index}]: {fault.kind} does not apply to the {self.model} model "
                    f"(it can show {', '.join(allowed)})"
                )
            if fault.ambient_c is not None and self.model == "door":
                raise ValueError(f"faults[{index}]: ambient_c only applies to rooms, not a door")
        if self.pin is not None and self.model not in EQUIPMENT_MODELS:
            raise ValueError(
                f"pin only applies to the compressor and door models, not {self.model}"
            )
        return self

    @property
    def is_equipment(self) -> bool:
        return self.model in EQUIPMENT_MODELS

    def claimed_pins(self) -> list[PinClaim]:
        return [] if self.pin is None else [PinClaim(self.pin, "pin")]

    def fields(self) -> list[str]:
        if self.model == "compressor":
            return ["running", *COUNTER_FIELDS]
        if self.model == "door":
            return ["open"]
        return ["temperature_c", "humidity_pct"]

    def sampling_policy(self) -> SamplingConfig:
        merged = dict(_EQUIPMENT_SAMPLING if self.is_equipment else _CLIMATE_SAMPLING)
        if self.sampling is not None:
            merged.update(self.sampling.model_dump(exclude_unset=True))
        return SamplingConfig.model_validate(merged)


@register(SimulatedConfig)
def build(config: SimulatedConfig, hardware: Hardware) -> SensorDriver:
    """A ``SimulatedClimateDriver`` for rooms, a ``SimulatedEquipmentDriver`` (also an
    ``EventSource``) for equipment. Fault times count from this call."""
    if config.is_equipment:
        return SimulatedEquipmentDriver(
            config.id,
            config.model,
            config.seed,
            config.faults,
            hardware,
            pin=config.pin,
            interval_s=config.interval_s,
        )
    return SimulatedClimateDriver(
        config.id, ClimateModel(config.model, config.seed, config.faults), hardware.clock
    )
