"""What the collector knows about each device: online, stale, offline or sensor-fault.

- ``offline``: its retained status says so (clean shutdown, or the broker fired its last will).
- ``sensor-fault``: online, but a sensor reported ``sensor_fault`` (or quality ``fault``) and
  has not recovered: an installer should look.
- ``stale``: online by its status, but nothing heard for ``stale_after_s``: the agent hangs, or
  its network is half-open and the broker has not noticed yet.
- ``online``: otherwise. ``unknown`` until anything is heard.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sitewatch.wire import (
    EventMessage,
    EventType,
    Quality,
    StatusMessage,
    TelemetryMessage,
)

__all__ = ["DeviceStates"]


@dataclass
class _Device:
    status: str | None = None
    boot_id: str | None = None
    agent_version: str | None = None
    last_seen_ms: int | None = None
    known_since_ms: int = 0
    faulted: set[str] = field(default_factory=set)


class DeviceStates:
    """Device states from status messages and data; ``snapshot`` for status and metrics."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_ms = int(stale_after_s * 1000)
        self._devices: dict[tuple[str, str], _Device] = {}
        self._lock = threading.Lock()

    def observe(
        self, message: TelemetryMessage | EventMessage | StatusMessage, now_ms: int
    ) -> None:
        with self._lock:
            device = self._devices.get((message.site, message.device))
            if device is None:
                device = self._devices[(message.site, message.device)] = _Device(
                    known_since_ms=now_ms
                )
            if isinstance(message, StatusMessage):
                device.status = message.state
                device.boot_id = message.boot_id
                device.agent_version = message.agent_version or device.agent_version
                if message.state == "online":
                    device.faulted.clear()  # a new boot re-reports its faults
                return
            if not getattr(message, "historical", False):
                device.last_seen_ms = now_ms
            if isinstance(message, TelemetryMessage):
                faulted = device.faulted
                for reading in message.readings:  # on the ingest hot path: kept minimal
                    quality = reading.quality
                    if quality is Quality.FAULT:
                        faulted.add(reading.sensor)
                    elif faulted and quality is not Quality.BAD:
                        faulted.discard(reading.sensor)
            else:
                for event in message.events:
                    if event.type is EventType.SENSOR_FAULT:
                        device.faulted.add(event.sensor)
                    elif event.type is EventType.SENSOR_RECOVERED:
                        device.faulted.discard(event.sensor)

    def state(self, site: str, device: str, now_ms: int) -> str:
        with self._lock:
            return self._state(self._devices.get((site, device), _Device()), now_ms)

    def _state(self, device: _Device, now_ms: int) -> str:
        if device.status == "offline":
            return "offline"
        if device.status is None and device.last_seen_ms is None:
            return "unknown"
        heard_ms = device.last_seen_ms or device.known_since_ms  # a retained status is not news
        if now_ms - heard_ms > self.stale_after_ms:
            return "stale"
        return "sensor-fault" if device.faulted else "online"

    def snapshot(self, now_ms: int) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "site": site,
                    "device": name,
                    "state": self._state(device, now_ms),
                    "last_seen_ms": device.last_seen_ms,
                    "boot_id": device.boot_id,
                    "agent_version": device.agent_version,
                    "faulted_sensors": sorted(device.faulted),
                }
                for (site, name), device in sorted(self._devices.items())
            ]
