"""The recent good samples of one sensor, and the gates a new sample must pass.

Pure logic (no clock, no I/O): ``SensorPoller`` in ``sampling.py`` feeds it samples and the
current monotonic time. The gates, in order:

- ``out_of_range``: a numeric field outside ``ranges``, or not finite;
- ``sentinel``: a garbage pair DHT sensors emit (``is_dht_sentinel``);
- ``spike``: a field more than ``spike_limits`` away from the median of the good samples
  younger than ``max_age_s``. With no such sample there is nothing to compare with, and
  the sample passes.

**Step changes.** A real step (a door left open, a heater switched on) looks like a spike
at first. Rejected spikes are kept as candidates while they agree with each other (every
pair within the spike limits) and are younger than ``max_age_s``; the third agreeing
candidate in a row (``STEP_CONFIRM_SAMPLES``) is accepted and the window restarts from the
candidates, so the new level is published at once rather than averaged with the old one. A
candidate that disagrees starts a new run; an ordinary accepted sample ends it. If the old
level's samples age out while a run is building (one read per period), the next sample has
nothing to be compared with and passes; the run's candidates that agree with it join the
window with it. Out-of-range and sentinel samples neither extend nor break a run: they carry
no evidence either way.

>>> from sitewatch.agent.sensors.base import SamplingConfig
>>> window = SampleWindow(SamplingConfig(spike_limits={"temperature_c": 3.0}), max_age_s=600)
>>> [window.judge(Sample(t, 0, {"temperature_c": v}), now_s=t)
...  for t, v in [(0, 4.0), (30, 4.2), (60, 12.0), (90, 12.3), (120, 12.1)]]
[None, None, 'spike', 'spike', None]
>>> window.values(now_s=120)
{'temperature_c': 12.1}
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from sitewatch.agent.protocols import Fields
from sitewatch.agent.sensors.base import SamplingConfig

__all__ = ["STEP_CONFIRM_SAMPLES", "Sample", "SampleWindow", "is_dht_sentinel"]

STEP_CONFIRM_SAMPLES = 3
"""Consecutive agreeing spike candidates that make a step change accepted."""


@dataclass(frozen=True)
class Sample:
    """One read: monotonic time (s), wall time (ms since the epoch, UTC) and its fields."""

    mono_s: float
    wall_ms: int
    fields: Fields


def _numeric(fields: Fields) -> dict[str, float]:
    """The numeric fields (bools are not numbers here, though Python says they are)."""
    return {
        name: float(value)
        for name, value in fields.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def is_dht_sentinel(fields: Fields) -> bool:
    """Whether a temperature/humidity pair is a value DHT sensors emit instead of a reading.

    ESPHome rejects 0.1 °C with 1 %RH (raw tenths 1 and 10; its log message calls it "1 °C
    and 1 %") and 0 °C with 1 or 2 %RH. Checked here: 1 °C or 0.1 °C with 1 %RH, and 0 °C
    with 1-2 %RH, within half the sensor's 0.1 resolution.

    >>> is_dht_sentinel({"temperature_c": 1.0, "humidity_pct": 1.0})
    True
    >>> is_dht_sentinel({"temperature_c": 0.0, "humidity_pct": 2.0})
    True
    >>> is_dht_sentinel({"temperature_c": 0.0, "humidity_pct": 45.0})
    False
    """
    numeric = _numeric(fields)
    temperature, humidity = numeric.get("temperature_c"), numeric.get("humidity_pct")
    if temperature is None or humidity is None:
        return False
    if abs(humidity - 1.0) < 0.05 and min(abs(temperature - 1.0), abs(temperature - 0.1)) < 0.05:
        return True
    return abs(temperature) < 0.05 and 0.95 < humidity < 2.05


def _medians(samples: Iterable[Sample]) -> dict[str, float]:
    columns: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in _numeric(sample.fields).items():
            columns.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in columns.items()}


class SampleWindow:
    """Up to ``policy.median_window`` good samples; see the module docstring.

    ``max_age_s``: samples older than this (seconds, monotonic) are neither published nor
    used as the spike reference.
    """

    def __init__(self, policy: SamplingConfig, max_age_s: float) -> None:
        self.policy = policy
        self.max_age_s = max_age_s
        self._good: deque[Sample] = deque(maxlen=policy.median_window)
        self._candidates: list[Sample] = []

    def used(self, now_s: float) -> list[Sample]:
        """The good samples young enough to publish, oldest first."""
        return self._fresh(self._good, now_s)

    def values(self, now_s: float) -> Fields:
        """Per numeric field the median of ``used``; per bool field the newest value."""
        used = self.used(now_s)
        # The median of an even count is a mean: round away float noise (3.1500000000000004)
        # at 1/1000 of a unit, well below any sensor's resolution.
        values: Fields = {name: round(value, 3) for name, value in _medians(used).items()}
        for sample in used:  # oldest first, so the newest bool wins
            values.update({k: v for k, v in sample.fields.items() if isinstance(v, bool)})
        return values

    def judge(self, sample: Sample, now_s: float) -> str | None:
        """Accept ``sample`` (return None) or return the class it is rejected under."""
        numeric = _numeric(sample.fields)
        for name, value in numeric.items():
            low, high = self.policy.ranges.get(name, (-math.inf, math.inf))
            if not (math.isfinite(value) and low <= value <= high):
                return "out_of_range"
        if is_dht_sentinel(sample.fields):
            return "sentinel"
        reference = _medians(self.used(now_s))
        candidates = self._fresh(self._candidates, now_s)
        agrees = all(self._agree(other, sample) for other in candidates)
        if not self._is_spike(numeric, reference):
            if not reference and agrees:
                # The old level aged out while a new one built up: the run joins the window.
                self._good.clear()
                self._good.extend(candidates)
            self._candidates = []
            self._good.append(sample)
            return None
        candidates = [*candidates, sample] if agrees else [sample]
        if len(candidates) < STEP_CONFIRM_SAMPLES:
            self._candidates = candidates
            return "spike"
        self._good.clear()  # a confirmed new level: do not average it with the old one
        self._good.extend(candidates)
        self._candidates = []
        return None

    def _fresh(self, samples: Iterable[Sample], now_s: float) -> list[Sample]:
        return [s for s in samples if now_s - s.mono_s <= self.max_age_s]

    def _is_spike(self, numeric: dict[str, float], reference: dict[str, float]) -> bool:
        return any(
            abs(numeric[name] - reference[name]) > limit
            for name, limit in self.policy.spike_limits.items()
            if name in numeric and name in reference
        )

    def _agree(self, a: Sample, b: Sample) -> bool:
        first, second = _numeric(a.fields), _numeric(b.fields)
        return all(
            abs(first[name] - second[name]) <= limit
            for name, limit in self.policy.spike_limits.items()
            if name in first and name in second
        )
