"""The one sampling policy every periodic sensor goes through: raw reads → one Reading.

A cheap sensor fails often (a DHT22 loses 5-25 % of reads) and sometimes returns garbage that
passes its checksum. ``SensorPoller.run_period`` turns one sampling period into one
``wire.Reading`` and never publishes a value it did not measure recently:

1. **Attempts.** Up to ``max_attempts`` reads, stopping at the first accepted sample. Two
   reads of one driver are never closer than ``driver.min_read_spacing_s``, counted from
   the end of one read to the start of the next, across periods too; the wait is
   ``clock.sleep(x, stop)``, so setting ``stop`` ends the period at once.
2. **Gates.** Range, sentinel and spike gates, and the acceptance of real step changes,
   live in ``sampling_window.py``; each rejection is counted under its class.
3. **Value.** Per numeric field, the median of up to ``median_window`` good samples no
   older than the sample age limit; bool fields take the newest value (binary inputs use
   ``median_window`` 1). ``ts`` is the wall time of the newest sample used, ``sample_age_s``
   its age in seconds.
   A sensor's timestamps only go forward: a reading is never stamped at or before the
   previous one. ``(device, sensor, ts)`` is a reading's identity in InfluxDB, so after the
   wall clock steps backwards (NTP correcting a clock that ran ahead, a Pi without RTC) the
   new readings would otherwise overwrite the ones stamped in the same milliseconds before
   the step, and be lost silently. Until the wall clock catches up with the last stamp, the
   stamps advance at half the real pace (the monotonic clock's; at least 1 ms): time-based
   detectors see intervals shortened by half rather than readings a millisecond apart, and a
   step back of ``x`` seconds is absorbed within ``2x`` seconds.
4. **Quality.** ``ok`` when this period had an accepted sample and at least
   ``min(3, median_window)`` samples were used; ``degraded`` with fewer. Without an accepted
   sample: ``bad``, no measured fields, ``error`` = the last error class, never the old
   value. After ``fault_after_periods`` bad periods in a row: ``fault`` and one
   ``sensor_fault`` event (not one per period); the first good period after it emits
   ``sensor_recovered``.

A ``SensorFault`` from the driver counts as a failed attempt of class ``fault`` and ends the
period's attempts. A period cut short by ``stop`` without a good sample is ``bad`` (error
``stopped`` if nothing was tried) but does not count towards a fault: shutting down is not a
sensor failure.

The sample age limit is ``max_sample_age_s`` when the config sets it. The default is
2 × ``interval_s`` plus the time retries can shift a sample (``(max_attempts - 1) ×
min_read_spacing_s``) plus 1 s: at exactly 2 × ``interval_s`` the sample from two periods
back sits on the limit, and scheduling jitter alone would flip readings between ``ok`` and
``degraded``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sitewatch.agent.errors import SensorFault, SensorReadError
from sitewatch.agent.protocols import SensorDriver
from sitewatch.agent.sampling_window import Sample, SampleWindow
from sitewatch.agent.sensors.base import SensorConfig
from sitewatch.clock import Clock
from sitewatch.wire import Event, EventType, Quality, Reading

__all__ = ["FAULT", "SensorPoller"]

FAULT = "fault"
"""The error class counted for a ``SensorFault``."""


class SensorPoller:
    """Applies the sampling policy of ``config`` to ``driver``; see the module docstring.

    ``emit_event`` receives ``sensor_fault``/``sensor_recovered`` events, from the thread
    that calls ``run_period``. ``read_errors`` counts failed attempts by error class since
    start (driver errors, rejections, ``fault``). Call ``run_period`` once per
    ``interval_s``, from one thread; it waits only between attempts, not for the interval.
    """

    def __init__(
        self,
        config: SensorConfig,
        driver: SensorDriver,
        clock: Clock,
        emit_event: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.driver = driver
        self.clock = clock
        self.emit_event = emit_event
        self.policy = config.sampling_policy()
        retry_span_s = (self.policy.max_attempts - 1) * driver.min_read_spacing_s
        self.max_sample_age_s = self.policy.max_sample_age_s or (
            2 * config.interval_s + retry_span_s + 1.0
        )
        self.window = SampleWindow(self.policy, self.max_sample_age_s)
        self.read_errors: dict[str, int] = {}
        self._last_read_end_s: float | None = None
        self._bad_periods = 0
        self._in_fault = False
        self._last_ts_ms: int | None = None
        self._last_stamp_s = 0.0  # monotonic time of the last stamp

    def _stamp(self, wall_ms: int) -> int:
        """``wall_ms``, or, when the wall clock has gone back to or before the previous
        reading's ``ts``, that ``ts`` plus half the monotonic time since (at least 1 ms; see
        the module docstring)."""
        now_s = self.clock.monotonic()
        last = self._last_ts_ms
        if last is None or wall_ms > last:
            ts = wall_ms
        else:
            ts = last + max(1, int((now_s - self._last_stamp_s) * 500))
        self._last_ts_ms, self._last_stamp_s = ts, now_s
        return ts

    @property
    def in_fault(self) -> bool:
        """Whether a ``sensor_fault`` was raised and no good period has followed yet."""
        return self._in_fault

    def run_period(self, stop: threading.Event) -> Reading:
        """Read until a sample is accepted or attempts run out; return the period's Reading."""
        n_tried = 0
        last_error: str | None = None
        fault: SensorFault | None = None
        for _ in range(self.policy.max_attempts):
            if not self._wait_for_spacing(stop):
                break
            n_tried += 1
            outcome = self._attempt()
            if outcome is None:
                return self._good_reading(n_tried)
            if isinstance(outcome, SensorFault):
                fault, last_error = outcome, FAULT
            else:
                last_error = outcome
            self.read_errors[last_error] = self.read_errors.get(last_error, 0) + 1
            if fault is not None:
                break
        return self._failed_reading(n_tried, last_error, fault, interrupted=stop.is_set())

    def _wait_for_spacing(self, stop: threading.Event) -> bool:
        """Wait until the driver may be read again; False when ``stop`` was set."""
        if stop.is_set():
            return False
        if self._last_read_end_s is None:
            return True
        elapsed_s = self.clock.monotonic() - self._last_read_end_s
        wait_s = self.driver.min_read_spacing_s - elapsed_s
        return wait_s <= 0 or not self.clock.sleep(wait_s, stop)

    def _attempt(self) -> str | SensorFault | None:
        """One read: None when accepted, else the error class, or the fault itself."""
        try:
            fields = self.driver.read()
        except SensorReadError as error:
            return error.error_class
        except SensorFault as error:
            return error
        finally:
            self._last_read_end_s = self.clock.monotonic()
        if not fields:
            return "no_value"
        now_s = self.clock.monotonic()
        sample = Sample(now_s, int(self.clock.time() * 1000), dict(fields))
        return self.window.judge(sample, now_s)

    def _good_reading(self, n_tried: int) -> Reading:
        now_s = self.clock.monotonic()
        used = self.window.used(now_s)
        newest = used[-1]
        enough = len(used) >= min(3, self.policy.median_window)
        if self._in_fault:
            detail = f"good sample again after {self._bad_periods} failed periods"
            self._emit(EventType.SENSOR_RECOVERED, detail)
        self._in_fault = False
        self._bad_periods = 0
        return Reading.model_validate(
            {
                "sensor": self.config.id,
                "ts": self._stamp(newest.wall_ms),
                "quality": Quality.OK if enough else Quality.DEGRADED,
                "n_ok": 1,
                "n_tried": n_tried,
                "sample_age_s": max(0.0, now_s - newest.mono_s),
                **self.window.values(now_s),
            }
        )

    def _failed_reading(
        self,
        n_tried: int,
        last_error: str | None,
        fault: SensorFault | None,
        *,
        interrupted: bool,
    ) -> Reading:
        error = last_error or "stopped"
        if not interrupted:
            self._bad_periods += 1
            if not self._in_fault and self._bad_periods >= self.policy.fault_after_periods:
                self._in_fault = True
                detail = f"no good sample in {self._bad_periods} periods; last error: {error}"
                if fault is not None:
                    detail += f": {fault}" + (f"; fix: {fault.fix}" if fault.fix else "")
                self._emit(EventType.SENSOR_FAULT, detail)
        return Reading(
            sensor=self.config.id,
            ts=self._stamp(int(self.clock.time() * 1000)),
            quality=Quality.FAULT if self._in_fault else Quality.BAD,
            n_ok=0,
            n_tried=n_tried,
            error=error[:200],
        )

    def _emit(self, kind: EventType, detail: str) -> None:
        event = Event(
            sensor=self.config.id,
            ts=int(self.clock.time() * 1000),
            type=kind,
            detail=detail[:500],
        )
        self.emit_event(event)
