"""The collector's seams, each four methods or fewer.

A ``Sink`` stores line-protocol lines in a time-series database and says, for each write,
exactly what to do next (``WriteResult``): nothing (``ok``), drop the lines it rejected and
keep the rest (``rejected``), split the batch (``too_large``), or try again later
(``retry``, honouring ``retry_after_s``). The writer decides how; sinks only classify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["Outcome", "Sink", "WriteResult"]


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
