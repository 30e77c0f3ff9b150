"""Per-device delivery tracking: gaps, duplicates and late messages by ``(boot_id, seq)``.

Every agent numbers its data messages 1, 2, 3… within a boot. For each ``(device, boot_id)``
the tracker keeps the highest seq below which everything has arrived (``contiguous``) and the
few seqs seen above it, so it can tell, in O(1) memory per device:

- a **duplicate**: a seq seen before (a QoS1 redelivery, an agent replay after a crash);
- a **gap**: seqs jumped over (counted when the jump is seen);
- a **late** message: one that fills an earlier gap (a replayed backlog, reordering).

The last few boots of each device are remembered, because an agent that restarts replays the
previous boot's backlog after it has started a new boot. A device seen for the first time
starts at its first seq without counting a gap (the collector may have started after the
agent); a new boot of a known device counts from seq 1.

>>> tracker = SeqTracker()
>>> [tracker.observe("plant-a", "pi-01", "b1", seq).name for seq in (7, 8, 10, 9, 9)]
['NEW', 'NEW', 'NEW', 'LATE', 'DUPLICATE']
>>> counts = tracker.counters("plant-a", "pi-01")
>>> counts.gaps, counts.late, counts.duplicates
(1, 1, 1)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["DeviceCounters", "SeqTracker", "Verdict"]

MAX_BOOTS_PER_DEVICE = 4
"""Boots remembered per device (an agent replays its previous boot after a restart)."""

MAX_OUT_OF_ORDER = 10_000
"""Seqs remembered above ``contiguous`` before the oldest hole is given up as lost."""


class Verdict(Enum):
    """What one message is, for delivery accounting."""

    NEW = "new"
    LATE = "late"
    DUPLICATE = "duplicate"


@dataclass
class DeviceCounters:
    """Cumulative delivery counts for one device (readings for ``received``, messages for
    the rest)."""

    received: int = 0
    duplicates: int = 0
    gaps: int = 0
    late: int = 0
    historical: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Boot:
    contiguous: int
    above: set[int] = field(default_factory=set)

    @property
    def highest(self) -> int:
        return max(self.above, default=self.contiguous)


class SeqTracker:
    """Classifies messages and keeps per-device counters (checkpointed via ``to_json``)."""

    def __init__(self) -> None:
        self._boots: dict[tuple[str, str], OrderedDict[str, _Boot]] = {}
        self._counters: dict[tuple[str, str], DeviceCounters] = {}

    def counters(self, site: str, device: str) -> DeviceCounters:
        """The counters of one device (created on first use)."""
        return self._counters.setdefault((site, device), DeviceCounters())

    def devices(self) -> list[tuple[str, str]]:
        return sorted(self._counters)

    def observe(self, site: str, device: str, boot_id: str, seq: int) -> Verdict:
        """Classify one data message and update the device's counters."""
        key = (site, device)
        known_device = key in self._boots
        boots = self._boots.setdefault(key, OrderedDict())
        counters = self.counters(site, device)
        boot = boots.get(boot_id)
        if boot is None:
            start = 0 if known_device else seq - 1
            boot = boots[boot_id] = _Boot(contiguous=start)
            while len(boots) > MAX_BOOTS_PER_DEVICE:
                boots.popitem(last=False)
        if seq <= boot.contiguous or seq in boot.above:
            counters.duplicates += 1
            return Verdict.DUPLICATE
        highest = boot.highest
        verdict = Verdict.NEW
        if seq > highest + 1:
            counters.gaps += seq - highest - 1
        elif seq < highest:
            counters.late += 1
            verdict = Verdict.LATE
        if seq == boot.contiguous + 1:
            boot.contiguous = seq
            while boot.contiguous + 1 in boot.above:
                boot.contiguous += 1
                boot.above.discard(boot.contiguous)
        else:
            boot.above.add(seq)
            if len(boot.above) > MAX_OUT_OF_ORDER:
                # Give up on the oldest hole: what is below it is treated as seen.
                boot.contiguous = min(boot.above)
                boot.above.discard(boot.contiguous)
                while boot.contiguous + 1 in boot.above:
                    boot.contiguous += 1
                    boot.above.discard(boot.contiguous)
        return verdict

    def to_json(self) -> dict[str, Any]:
        """A checkpoint, so a restarted collector neither recounts nor forgets."""
        return {
            "devices": [
                {
                    "site": site,
                    "device": device,
                    "counters": self.counters(site, device).as_dict(),
                    "boots": [
                        {"boot_id": boot_id, "contiguous": b.contiguous, "above": sorted(b.above)}
                        for boot_id, b in self._boots.get((site, device), {}).items()
                    ],
                }
                for site, device in self.devices()
            ]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SeqTracker:
        tracker = cls()
        for entry in data.get("devices", []):
            key = (entry["site"], entry["device"])
            tracker._counters[key] = DeviceCounters(**entry["counters"])
            boots: OrderedDict[str, _Boot] = OrderedDict()
            for boot in entry["boots"]:
                boots[boot["boot_id"]] = _Boot(boot["contiguous"], set(boot["above"]))
            tracker._boots[key] = boots
        return tracker
