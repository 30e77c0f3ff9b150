"""A sensor whose hardware was not usable when the agent started.

One missing DHT22 overlay must not keep the compressor contact and the other sensors from
being watched. So when building a driver raises ``SensorFault`` the agent runs this stand-in:
every read raises the fault (the sampling policy turns that into ``bad`` readings and, after a
few periods, a ``sensor_fault`` event for the installer) and, at most once per ``retry_s``,
tries to build the real driver again, so the sensor comes back by itself once fixed.
"""

from __future__ import annotations

from collections.abc import Callable

from sitewatch.agent.errors import SensorFault
from sitewatch.agent.hardware import Hardware
from sitewatch.agent.protocols import EventSource, Fields, SensorDriver
from sitewatch.agent.sensors.base import SensorConfig
from sitewatch.wire import Event

__all__ = ["DeferredDriver"]


class DeferredDriver:
    """Stands in for a driver that could not be built; retries every ``retry_s`` seconds."""

    def __init__(
        self,
        config: SensorConfig,
        hardware: Hardware,
        build: Callable[[SensorConfig, Hardware], SensorDriver],
        error: SensorFault,
        retry_s: float = 60.0,
    ) -> None:
        self.config = config
        self.hardware = hardware
        self.build = build
        self.error = error
        self.retry_s = retry_s
        self.driver: SensorDriver | None = None
        self._emit: Callable[[Event], None] | None = None
        self._next_try_s = hardware.clock.monotonic() + retry_s
        self._closed = False

    @property
    def min_read_spacing_s(self) -> float:
        return self.driver.min_read_spacing_s if self.driver is not None else 0.0

    def start_events(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        if isinstance(self.driver, EventSource):
            self.driver.start_events(emit)

    def read(self) -> Fields:
        if self._closed:
            raise SensorFault(f"sensor {self.config.id} is closed")
        if self.driver is None:
            now = self.hardware.clock.monotonic()
            if now < self._next_try_s:
                raise self.error
            self._next_try_s = now + self.retry_s
            try:
                self.driver = self.build(self.config, self.hardware)
            except SensorFault as error:
                self.error = error
                raise
            if self._emit is not None and isinstance(self.driver, EventSource):
                self.driver.start_events(self._emit)
        return self.driver.read()

    def close(self) -> None:
        self._closed = True
        if self.driver is not None:
            self.driver.close()
