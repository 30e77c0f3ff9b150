"""Garbage-collector settings for the collector's busy processes (ingest and detection).

Python's cyclic collector runs its young generation every 700 net allocations of container
objects. Validating one telemetry message of 50 readings allocates about 150 (a model and a
field dict per reading), so under load the young generation was collected several times a
message, walking the readings still in use each time; and older collections walked every
object made at start-up (modules, pydantic's schemas, the configuration), which never
become garbage. ``tune_for_throughput`` moves those start-up objects out of the collector's
sight (``gc.freeze``) and collects the young generation every ``YOUNG_THRESHOLD``
allocations instead. On ``bench/ingest.py`` the ingest process spent about a tenth less CPU
per reading.

Reference counting still frees at once everything that is not in a cycle; what is waits for
the next collection. paho-mqtt's topic matcher (``MQTTMatcher.iter_match``) makes one small
cycle for every message received, a recursive closure that refers to itself, so the
threshold is also a bound on memory: at 50,000 the ingest process held about 6 MiB more at
5,000 readings/s (``bench/soak.py``), at 10,000 under 1 MiB, for much the same CPU.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_for_throughput"]

YOUNG_THRESHOLD = 10_000
"""Container allocations (net) between two collections of the young generation."""


def tune_for_throughput() -> None:
    """Freeze what exists now and raise the young generation's threshold; call it once,
    after start-up, in a process that is about to serve."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
