"""What every sensor's configuration has, and the sampling policy's settings.

Each driver module subclasses ``SensorConfig`` next to its driver class, narrowing
``driver`` to its registered name and adding its own keys (``pin``, ``backend``…).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sitewatch.wire import MAX_LABELS, Identifier

__all__ = ["OverlayNeed", "PinClaim", "SamplingConfig", "SensorConfig"]


@dataclass(frozen=True)
class PinClaim:
    """A GPIO pin a sensor uses. Claims with the same non-empty ``share`` group may coexist
    (several DS18B20 on one 1-Wire bus); any other two claims on one pin clash."""

    pin: int
    field: str
    share: str = ""


@dataclass(frozen=True)
class OverlayNeed:
    """A ``config.txt`` line a sensor needs, e.g. ``dtoverlay=dht11,gpiopin=17``.

    ``overlay`` is the overlay or dtparam name, ``pin`` the GPIO it must be bound to (None
    when the pin does not matter), ``line`` the exact line to add.
    """

    overlay: str
    pin: int | None
    line: str


class SamplingConfig(BaseModel):
    """How raw samples become a published reading (see ``agent/sampling.py``).

    Defaults suit a DHT22 polled every 30-60 s; drivers override them where needed.
    """

    model_config = ConfigDict(extra="forbid")

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Reads tried per period before the period counts as failed."""
    median_window: Annotated[int, Field(ge=1, le=15)] = 5
    """The published value is the median of up to this many recent good samples."""
    max_sample_age_s: Annotated[float, Field(gt=0)] | None = None
    """Good samples older than this (seconds) are not used; default 2 × interval_s."""
    fault_after_periods: Annotated[int, Field(ge=1, le=1000)] = 5
    """Consecutive periods without a good sample before a ``sensor_fault`` is raised."""
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Field → (low, high): samples outside are rejected as implausible."""
    spike_limits: dict[str, float] = Field(default_factory=dict)
    """Field → largest plausible jump from the running median; bigger jumps are rejected."""


class SensorConfig(BaseModel):
    """Keys common to every sensor.

    ``id`` names the sensor in topics and InfluxDB tags; ``interval_s`` is the sampling
    period (seconds, default 60); ``labels`` are free tags (``zone``, ``equipment``…; at
    most 16, values up to 128 characters) that travel with the birth message and end up as
    InfluxDB tags.
    """

    model_config = ConfigDict(extra="forbid")

    driver_name: ClassVar[str] = ""
    """The registry name; each subclass sets it and narrows ``driver`` to it."""
    default_sampling: ClassVar[dict[str, object]] = {}
    """Per-driver overrides of ``SamplingConfig``'s defaults."""

    id: Identifier
    driver: str
    """The driver's registered name (``dht22``…), which decides the sensor's other keys."""
    interval_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    labels: Annotated[
        dict[Identifier, Annotated[str, Field(max_length=128)]], Field(max_length=MAX_LABELS)
    ] = Field(default_factory=dict)
    sampling: SamplingConfig | None = None

    def sampling_policy(self) -> SamplingConfig:
        """The sampling settings: the driver's defaults overlaid with what the file sets."""
        merged = dict(self.default_sampling)
        if self.sampling is not None:
            for key, value in self.sampling.model_dump(exclude_unset=True).items():
                default = merged.get(key)
                # Per-field maps (ranges, spike_limits) overlay the driver's, key by key:
                # narrowing the temperature range must not drop the humidity range. An
                # explicitly empty map turns that check off.
                if value and isinstance(value, dict) and isinstance(default, dict):
                    merged[key] = {**default, **value}
                else:
                    merged[key] = value
        return SamplingConfig.model_validate(merged)

    def claimed_pins(self) -> list[PinClaim]:
        """The GPIO pins this sensor uses (none by default)."""
        return []

    def overlays_needed(self) -> list[OverlayNeed]:
        """The firmware overlays this sensor needs in ``config.txt`` (none by default)."""
        return []

    def fields(self) -> list[str]:
        """The measured fields its readings carry."""
        return []
