"""The agent's seams, each four methods or fewer.

A ``SensorDriver`` turns hardware into samples; the sampling policy (``sampling.py``) turns
samples into readings. An ``EventSource`` is the optional ability of a driver to report
state changes as they happen (binary inputs). The broker side has its own narrow seam,
``mqtt.LinkListener``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sitewatch.wire import Event

__all__ = ["EventSource", "Fields", "SensorDriver"]

Fields = dict[str, float | bool]
"""One sample: measured field name (with its unit, ``temperature_c``) → value."""


@runtime_checkable
class SensorDriver(Protocol):
    """Reads one sensor.

    ``read`` returns the fields measured now, or raises ``SensorReadError`` (transient: try
    again later) or ``SensorFault`` (persistent). It may block for up to about a second (a
    DHT22 or DS18B20 conversion), never longer. ``close`` frees the hardware and may be
    called twice; ``read`` after ``close`` raises ``SensorFault``.
    """

    @property
    def min_read_spacing_s(self) -> float:
        """Shortest safe time between two reads (seconds); 2.5 for a DHT22."""
        ...

    def read(self) -> Fields: ...

    def close(self) -> None: ...


@runtime_checkable
class EventSource(Protocol):
    """A driver that reports confirmed state changes as they happen."""

    def start_events(self, emit: Callable[[Event], None]) -> None:
        """Begin reporting; ``emit`` is called from the driver's thread for each change."""
        ...
