"""The collector's seams, each four methods or fewer.

A ``Detector`` scores one numeric stream, keyed by (device, sensor, field): ``score_one``
says how anomalous a new value is (0 normal … 1 certainly anomalous) *before* the detector
learns it, ``learn_one`` then updates its state. Booleans (``running``, ``open``) arrive as
1.0 / 0.0. Optional abilities are separate small protocols: ``Checkpointable`` (state as
JSON-compatible data, so a restart neither relearns nor forgets a for-duration in progress),
``Ticking`` (detectors that fire on the *absence* of data, checked on a timer),
``Explaining`` (what the latest score means, for the ``anomaly`` measurement and the alert
message) and ``Updating`` (score and learn in one call, for detectors where that saves work:
the live path calls it for every reading).

A ``Sink`` stores line-protocol lines in a time-series database and says, for each write,
exactly what to do next (``WriteResult``): nothing (``ok``), drop the lines it rejected and
keep the rest (``rejected``), split the batch (``too_large``), or try again later
(``retry``, honouring ``retry_after_s``). The writer decides how; sinks only classify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "Checkpointable",
    "Detector",
    "Explaining",
    "JsonValue",
    "Outcome",
    "Sink",
    "Ticking",
    "Updating",
    "WriteResult",
]

JsonValue = float | int | str | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


class Outcome(StrEnum):
    """What a write's result means for the caller."""

    OK = "ok"
    REJECTED = "rejected"
    TOO_LARGE = "too_large"
    RETRY = "retry"


@dataclass(frozen=True)
class WriteResult:
    """The classified result of one write.

    ``rejected``: for ``REJECTED``, the indices of the lines the server refused, when it says
    which (InfluxDB 1.x does not for every error; an empty tuple then means "find out by
    splitting"); the server may have stored the others (a partial write) or none of them.
    ``reason``: the server's own words, for the dead-letter log.
    ``retry_after_s``: for ``RETRY``, the server's Retry-After (seconds) when it sent one.
    """

    outcome: Outcome
    reason: str = ""
    rejected: tuple[int, ...] = ()
    retry_after_s: float | None = None

    @classmethod
    def ok(cls) -> WriteResult:
        return cls(Outcome.OK)


class Sink(Protocol):
    """A time-series database that accepts line protocol with millisecond timestamps."""

    def write(self, lines: Sequence[str]) -> WriteResult:
        """Write the lines in one request; never raises for server or network errors."""
        ...

    def close(self) -> None: ...


class Detector(Protocol):
    """Scores one stream; ``ts_s`` is the reading's UTC time in seconds (float)."""

    def score_one(self, ts_s: float, value: float) -> float:
        """How anomalous ``value`` is, in [0, 1], given what was learned so far."""
        ...

    def learn_one(self, ts_s: float, value: float) -> None:
        """Update the state with ``value`` (called after ``score_one`` for the same value)."""
        ...


@runtime_checkable
class Updating(Protocol):
    """A detector that scores and learns a reading in one call, cheaper than the two (the
    work they share is done once); ``score_one`` and ``learn_one`` still work on their own."""

    def update_one(self, ts_s: float, value: float) -> float:
        """Exactly ``score_one(ts_s, value)`` then ``learn_one(ts_s, value)``: the score the
        first returns, and the state the second leaves."""
        ...


@runtime_checkable
class Checkpointable(Protocol):
    """A detector whose state survives a restart of the collector."""

    def get_state(self) -> dict[str, JsonValue]: ...

    def set_state(self, state: dict[str, JsonValue]) -> None: ...


@runtime_checkable
class Ticking(Protocol):
    """A detector that also scores the passing of time without data (silence, door open)."""

    def check(self, now_s: float) -> float:
        """The score at ``now_s`` (UTC seconds), given no reading since the last one."""
        ...


@runtime_checkable
class Explaining(Protocol):
    """A detector that can say what its latest score means."""

    def details(self) -> dict[str, float | str]:
        """Outputs behind the latest score (e.g. ``predicted_breach_s``), and a ``message``."""
        ...
