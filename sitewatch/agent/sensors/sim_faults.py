"""Faults a simulated sensor can be told to show, and the seeded noise behind them.

A fault is active from ``start_s`` seconds after the agent started for ``duration_s``
seconds (None: until the agent stops). Kind-specific parameters carry their units:

======================  ==================================  =======================================
kind                    parameters (default)                effect
======================  ==================================  =======================================
``drift``               ``rate_c_per_h`` (0.5)              temperature offset growing linearly
``spikes``              ``probability`` (0.05),             a read jumps by ±``magnitude_c``
                        ``magnitude_c`` (5.0)
``stuck``               —                                   value frozen at the fault's start
``dropouts``            ``probability`` (0.3)               a read raises ``SensorReadError``
                                                            ("timeout")
``dead``                —                                   every read raises ``SensorReadError``
                                                            ("no_response")
``door_left_open``      ``ambient_c`` (room's ambient)      door model: stays open; climate model:
                                                            temperature rises toward ambient
``cooling_failure``     ``rate_c_per_h`` (1.5),             temperature rises at that rate, up to
                        ``ambient_c``                       ambient
``short_cycling``       ``on_s``, ``off_s`` (60-150 s /     compressor: starts every few minutes
                        60-120 s, drawn per cycle)
======================  ==================================  =======================================

Randomness is derived from ``(seed, channel, time index)`` so that the same seed and the
same clock times give the same values, however often or in whatever order reads happen.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.agent.errors import SensorReadError

__all__ = [
    "PARAMETERS",
    "FaultConfig",
    "FaultKind",
    "check_read_faults",
    "read_index",
    "unit_gauss",
    "unit_uniform",
]

FaultKind = Literal[
    "drift",
    "spikes",
    "stuck",
    "dropouts",
    "dead",
    "door_left_open",
    "short_cycling",
    "cooling_failure",
]

PARAMETERS: dict[str, dict[str, float | None]] = {
    "drift": {"rate_c_per_h": 0.5},
    "spikes": {"probability": 0.05, "magnitude_c": 5.0},
    "stuck": {},
    "dropouts": {"probability": 0.3},
    "dead": {},
    "door_left_open": {"ambient_c": None},
    "cooling_failure": {"rate_c_per_h": 1.5, "ambient_c": None},
    "short_cycling": {"on_s": None, "off_s": None},
}
"""Fault kind → the parameters it takes and their defaults (None: decided by the model)."""


class FaultConfig(BaseModel):
    """One scheduled fault; see the module docstring for kinds and parameters."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    """What goes wrong: ``stuck``, ``dropouts`` or ``dead`` (any model); ``drift``,
    ``spikes`` or ``cooling_failure`` (rooms); ``door_left_open`` (rooms and ``door``);
    ``short_cycling`` (``compressor``)."""
    start_s: Annotated[float, Field(ge=0)] = 0.0
    """When the fault starts, in seconds after the agent started."""
    duration_s: Annotated[float, Field(gt=0)] | None = None
    """How long it lasts (seconds); null: until the agent stops."""
    rate_c_per_h: Annotated[float, Field(ge=-100, le=100)] | None = None
    """``drift`` (default 0.5) and ``cooling_failure`` (default 1.5): how fast the
    temperature rises."""
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    """``spikes`` (default 0.05) and ``dropouts`` (default 0.3): the chance that a read is hit."""
    magnitude_c: Annotated[float, Field(gt=0, le=100)] | None = None
    """``spikes``: how far a hit read jumps, up or down (default 5.0)."""
    ambient_c: Annotated[float, Field(ge=-60, le=80)] | None = None
    """``door_left_open`` and ``cooling_failure`` in a room: the temperature it warms toward
    (default: the room model's ambient)."""
    on_s: Annotated[float, Field(ge=5, le=3600)] | None = None
    """``short_cycling``: each run's length (default: drawn per cycle, 60-150 s)."""
    off_s: Annotated[float, Field(ge=5, le=3600)] | None = None
    """``short_cycling``: each rest's length (default: drawn per cycle, 60-120 s)."""

    @model_validator(mode="after")
    def _parameters_fit_kind(self) -> FaultConfig:
        allowed = PARAMETERS[self.kind]
        for name in ("rate_c_per_h", "probability", "magnitude_c", "ambient_c", "on_s", "off_s"):
            if getattr(self, name) is not None and name not in allowed:
                takes = ", ".join(allowed) or "no parameters"
                raise ValueError(f"{name} does not apply to a {self.kind} fault (it takes {takes})")
        for name, default in allowed.items():
            if getattr(self, name) is None and default is not None:
                setattr(self, name, default)
        return self

    @property
    def end_s(self) -> float | None:
        """Seconds after start when the fault ends (None: never)."""
        return None if self.duration_s is None else self.start_s + self.duration_s

    def active(self, elapsed_s: float) -> bool:
        """Whether the fault is on ``elapsed_s`` seconds after the agent started."""
        end = self.end_s
        return self.start_s <= elapsed_s and (end is None or elapsed_s < end)

    def number(self, name: str) -> float:
        """A parameter that has a value (given or defaulted); ValueError if it has none."""
        value = getattr(self, name)
        if not isinstance(value, int | float):
            raise ValueError(f"{self.kind} fault has no {name}")
        return float(value)


def _rng(seed: int, channel: str, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and hosts,
    # unlike hash(). Simulation only, never security (S311).
    return random.Random(f"{seed}:{channel}:{index}")  # noqa: S311


def unit_gauss(seed: int, channel: str, index: int) -> float:
    """A standard normal value fixed by ``(seed, channel, index)``."""
    return _rng(seed, channel, index).gauss(0.0, 1.0)


def unit_uniform(seed: int, channel: str, index: int) -> float:
    """A uniform value in [0, 1) fixed by ``(seed, channel, index)``."""
    return _rng(seed, channel, index).random()


def read_index(wall_s: float) -> int:
    """The time index for per-read randomness: 100 ms buckets of wall time."""
    return int(wall_s * 10)


def check_read_faults(
    faults: list[FaultConfig], seed: int, elapsed_s: float, wall_s: float
) -> None:
    """Raise ``SensorReadError`` as an active ``dead`` or ``dropouts`` fault says."""
    for number, fault in enumerate(faults):
        if not fault.active(elapsed_s):
            continue
        if fault.kind == "dead":
            raise SensorReadError("no_response", "simulated sensor does not respond (dead)")
        if fault.kind == "dropouts":
            draw = unit_uniform(seed, f"dropout{number}", read_index(wall_s))
            if draw < fault.number("probability"):
                raise SensorReadError("timeout", "simulated read timed out (dropouts)")
