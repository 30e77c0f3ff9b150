"""Print every sitewatch message on a broker, validated against the wire contract.

A live view for installers and for the demo: one line per reading or event, status changes,
and each invalid message with the reason it would be dead-lettered.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from sitewatch.wire import (
    AckMessage,
    EventMessage,
    SkipMessage,
    StatusMessage,
    TelemetryMessage,
    WireError,
    parse_message,
)

__all__ = ["format_message"]


def _clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts_ms / 1000))


def format_message(topic: str, payload: bytes, now_ms: int) -> list[str]:
    """Human-readable lines for one message (or its rejection reason)."""
    try:
        message = parse_message(topic, payload, now_ms=now_ms)
    except WireError as error:
        return [f"REJECTED {topic}: {error.reason}"]
    where = f"{message.site}/{message.device}"
    if isinstance(message, StatusMessage):
        sensors = f" sensors={','.join(s.id for s in message.sensors)}" if message.sensors else ""
        reason = f" ({message.reason})" if message.reason else ""
        return [f"{_clock(message.ts)} {where} is {message.state}{reason}{sensors}"]
    if isinstance(message, AckMessage):
        return []  # the collector's confirmations: once a second per device, not news
    if isinstance(message, SkipMessage):
        return [f"{where} will not send seqs below {message.held_from} of boot {message.boot_id}"]
    mark = " [historical]" if message.historical else ""
    if isinstance(message, EventMessage):
        return [
            f"{_clock(e.ts)} {where}/{e.sensor} {e.type.value}"
            + (f" {e.field}={e.value}" if e.field else "")
            + (f" {e.detail}" if e.detail else "")
            + mark
            for e in message.events
        ]
    assert isinstance(message, TelemetryMessage)
    lines = []
    for reading in message.readings:
        values = " ".join(f"{k}={v}" for k, v in reading.values().items())
        if reading.error:
            values += f"error={reading.error}"
        lines.append(
            f"{_clock(reading.ts)} {where}/{reading.sensor} {reading.quality.value} {values}{mark}"
        )
    if message.health is not None:
        h = message.health
        lines.append(
            f"{where} health: outbox {h.outbox_messages} msgs, dropped {h.dropped_readings},"
            f" uptime {h.uptime_s:.0f} s"
        )
    return lines


def print_message(topic: str, payload: bytes, out: TextIO = sys.stdout) -> None:
    for line in format_message(topic, payload, int(time.time() * 1000)):
        print(line, file=out, flush=True)
