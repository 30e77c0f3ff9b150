"""End-to-end confirmations: per device and boot, the highest seq up to which everything is
durable, published back to the agent.

A broker's PUBACK to the agent does not mean the message is on disk (mosquitto acknowledges
before it saves), so agents keep each message until the collector says it is stored. The
collector says so here: for each ``(device, boot_id)`` it keeps the highest seq below which
every data message is durable (``durable_seq``: written to InfluxDB or the spool, or
dead-lettered, which no resend changes) and the few durable seqs above it, and publishes
``wire.AckMessage`` on ``sitewatch/v1/<site>/ack/<device>`` (QoS1, retained, so an agent that
restarts learns it at once).

- Every boot starts at seq 1, so nothing is assumed: a collector that never saw seqs 1–5
  confirms nothing beyond 0 until the agent resends them or says it no longer holds them
  (``skip``, from a ``wire.SkipMessage``: dropped for its outbox's caps, or already confirmed
  to a collector that has since lost its state).
- A confirmation also names the durable seqs past a hole (``AckMessage.above``, the lowest
  ``MAX_ACK_RANGES`` runs), so the agent neither resends them nor mistakes a lost message
  for a late one.
- Publishing is coalesced: ``due`` returns at most one confirmation per (device, boot) that
  received a durable message since the last round, one round per ``interval_s``. A round
  repeats an unchanged ``durable_seq`` too: the agent reads that as "waiting for the next
  seq". A device's newest boot goes last, so it is the one left retained.
- Memory is O(1) per device: the last ``MAX_BOOTS_PER_DEVICE`` boots, and at most
  ``MAX_ABOVE`` seqs above each boot's ``durable_seq`` (beyond that, seqs are not
  remembered, so the agent sends them again: confirmations are never wrong, only late).

- The state is checkpointed in ``ConfirmStore`` (SQLite, only the boots that changed) before
  the PUBACKs of the messages it covers go out (``Ingest.release_acks``): a collector that
  crashes has never acknowledged to the broker a message its checkpoint forgot (the broker
  would not send it again and the agent would wait for it until its resend timeout).

Everything runs on the MQTT thread (``Ingest.release_acks`` and ``Collector._tick``).

>>> confirms = Confirmations(interval_s=1.0)
>>> for seq in (1, 2, 4):
...     confirms.durable("plant-a", "pi-01", "3f2a9c1d", seq)
>>> [(a.boot_id, a.durable_seq, a.above) for a in confirms.due(now_s=10.0, now_ms=10_000)]
[('3f2a9c1d', 2, [(4, 4)])]
>>> confirms.durable("plant-a", "pi-01", "3f2a9c1d", 3)
>>> confirms.due(now_s=10.5, now_ms=10_500)  # within interval_s of the last round
[]
>>> [a.durable_seq for a in confirms.due(now_s=11.0, now_ms=11_000)]
[4]
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitewatch.sqlitefile import open_wal
from sitewatch.wire import (
    MAX_ACK_RANGES,
    MAX_PAYLOAD_BYTES,
    AckMessage,
    Kind,
    WireError,
    parse_topic,
)

__all__ = [
    "MAX_ABOVE",
    "MAX_BOOTS_PER_DEVICE",
    "ConfirmStore",
    "Confirmations",
    "StreamRow",
    "data_identity",
    "is_ack_topic",
]

StreamRow = tuple[str, str, str, int, list[int]]
"""One boot's state: site, device, boot_id, durable_seq and the durable seqs above it."""

_Key = tuple[str, str, str]

MAX_BOOTS_PER_DEVICE = 8
"""Boots remembered per device (an agent may replay several earlier boots after restarts)."""

MAX_ABOVE = 10_000
"""Durable seqs remembered above a boot's ``durable_seq`` (the holes' other side)."""

_BOOT_ID = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass
class _Stream:
    durable_seq: int = 0
    above: set[int] = field(default_factory=set)

    def extend(self) -> None:
        above = self.above
        while self.durable_seq + 1 in above:
            self.durable_seq += 1
            above.discard(self.durable_seq)


def _ranges(seqs: set[int]) -> list[tuple[int, int]] | None:
    """The lowest ``MAX_ACK_RANGES`` runs of consecutive seqs, as [first, last] (None: no
    seqs)."""
    if not seqs:
        return None
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        elif len(ranges) == MAX_ACK_RANGES:
            break
        else:
            ranges.append((seq, seq))
    return ranges


class Confirmations:
    """Durable seqs per (site, device, boot) and the confirmations to publish."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.published = 0
        self._streams: dict[tuple[str, str], OrderedDict[str, _Stream]] = {}
        self._dirty: dict[tuple[str, str, str], None] = {}  # insertion order: oldest first
        self._changed: set[_Key] = set()  # since the last checkpoint
        self._removed: set[_Key] = set()
        self._next_round_s = 0.0

    def _stream(self, site: str, device: str, boot_id: str) -> _Stream:
        boots = self._streams.get((site, device))
        if boots is None:
            boots = self._streams[(site, device)] = OrderedDict()
        stream = boots.get(boot_id)
        if stream is None:
            stream = boots[boot_id] = _Stream()
            self._removed.discard((site, device, boot_id))
            while len(boots) > MAX_BOOTS_PER_DEVICE:
                gone = boots.popitem(last=False)[0]
                self._removed.add((site, device, gone))
                self._changed.discard((site, device, gone))
        return stream

    def _touch(self, site: str, device: str, boot_id: str) -> None:
        key = (site, device, boot_id)
        dirty = self._dirty
        if key in dirty:
            del dirty[key]
        dirty[key] = None
        self._changed.add(key)

    def durable(self, site: str, device: str, boot_id: str, seq: int) -> None:
        """A data message is durable (stored, spooled or dead-lettered)."""
        stream = self._stream(site, device, boot_id)
        if seq == stream.durable_seq + 1:
            stream.durable_seq = seq
            if stream.above:
                stream.extend()
        elif seq > stream.durable_seq + 1 and len(stream.above) < MAX_ABOVE:
            stream.above.add(seq)
        self._touch(site, device, boot_id)

    def skip(self, site: str, device: str, boot_id: str, held_from: int) -> None:
        """The agent holds nothing of this boot below ``held_from``: stop waiting for it."""
        stream = self._stream(site, device, boot_id)
        if held_from - 1 > stream.durable_seq:
            stream.durable_seq = held_from - 1
            stream.above = {seq for seq in stream.above if seq > stream.durable_seq}
            stream.extend()
        self._touch(site, device, boot_id)

    def durable_seq(self, site: str, device: str, boot_id: str) -> int | None:
        boots = self._streams.get((site, device))
        stream = boots.get(boot_id) if boots is not None else None
        return None if stream is None else stream.durable_seq

    def due(self, now_s: float, now_ms: int) -> list[AckMessage]:
        """The confirmations to publish now (``now_s``: a monotonic clock; ``now_ms``: the
        wall clock, for their ``ts``). Cheap when nothing is due: call it on every tick."""
        if now_s < self._next_round_s or not self._dirty:
            return []
        self._next_round_s = now_s + self.interval_s
        dirty, self._dirty = self._dirty, {}
        out = []
        for site, device, boot_id in dirty:
            boots = self._streams.get((site, device))
            stream = boots.get(boot_id) if boots is not None else None
            if stream is not None:
                out.append(AckMessage(site=site, device=device, boot_id=boot_id,
                                      durable_seq=stream.durable_seq,
                                      above=_ranges(stream.above), ts=now_ms))
        self.published += len(out)
        return out

    def rows(self) -> Iterable[StreamRow]:
        """Every boot's state, oldest boot of each device first."""
        for (site, device), boots in self._streams.items():
            for boot_id, stream in boots.items():
                yield site, device, boot_id, stream.durable_seq, sorted(stream.above)

    def take_changes(self) -> tuple[list[StreamRow], list[_Key]]:
        """What changed since the last call: boots to write, and boots forgotten."""
        changed = []
        for site, device, boot_id in self._changed:
            stream = self._streams[(site, device)][boot_id]
            changed.append((site, device, boot_id, stream.durable_seq, sorted(stream.above)))
        removed = list(self._removed)
        self._changed, self._removed = set(), set()
        return changed, removed

    @classmethod
    def from_rows(cls, rows: Iterable[StreamRow], interval_s: float = 1.0) -> Confirmations:
        confirms = cls(interval_s)
        for site, device, boot_id, durable_seq, above in rows:
            boots = confirms._streams.setdefault((site, device), OrderedDict())
            boots[boot_id] = _Stream(durable_seq, set(above))
        return confirms

    def to_json(self) -> dict[str, Any]:
        """A readable view of the state (``confirm.json``); ``ConfirmStore`` is the checkpoint."""
        return {
            "devices": [
                {
                    "site": site,
                    "device": device,
                    "boots": [
                        {"boot_id": boot_id, "durable_seq": s.durable_seq,
                         "above": sorted(s.above)}
                        for boot_id, s in boots.items()
                    ],
                }
                for (site, device), boots in sorted(self._streams.items())
            ]
        }


class ConfirmStore:
    """The confirmations' checkpoint: one SQLite row per (site, device, boot).

    Saving writes only the boots that changed, in one WAL transaction (about 50 µs; replacing
    a JSON file instead costs about a millisecond on ext4, which flushes a file renamed over
    another). Not fsynced (``synchronous=NORMAL``): a crash of the process keeps it; a power
    cut may lose the last saves, and the agents then resend those messages after their
    ``confirm_timeout_s``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_wal(path, journal_size_limit_bytes=1 << 20)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS streams (site TEXT NOT NULL, device TEXT NOT NULL,"
            " boot_id TEXT NOT NULL, durable_seq INTEGER NOT NULL, above TEXT NOT NULL,"
            " PRIMARY KEY (site, device, boot_id))"
        )

    def load(
        self, interval_s: float, keep: Callable[[str, str], bool] = lambda site, device: True
    ) -> Confirmations:
        """The saved state (devices for which ``keep`` is false are left out)."""
        rows = self._db.execute(
            "SELECT site, device, boot_id, durable_seq, above FROM streams ORDER BY rowid"
        ).fetchall()
        return Confirmations.from_rows(
            ((r[0], r[1], r[2], int(r[3]), json.loads(r[4])) for r in rows if keep(r[0], r[1])),
            interval_s,
        )

    def save(self, confirmations: Confirmations) -> None:
        """Write what changed since the last save, in one transaction."""
        changed, removed = confirmations.take_changes()
        if not changed and not removed:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO streams VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, device, boot_id)"
                " DO UPDATE SET durable_seq = excluded.durable_seq, above = excluded.above",
                [(site, device, boot, seq, json.dumps(above))
                 for site, device, boot, seq, above in changed],
            )
            db.executemany(
                "DELETE FROM streams WHERE site = ? AND device = ? AND boot_id = ?", removed
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


def is_ack_topic(topic: str) -> bool:
    """Whether ``topic`` is a confirmation topic (``sitewatch/v1/<site>/ack/<device>``)."""
    try:
        return parse_topic(topic).kind is Kind.ACK
    except WireError:
        return False


def data_identity(topic: str, payload: bytes) -> tuple[str, str, str, int] | None:
    """``(site, device, boot_id, seq)`` of a data message that failed validation, when its
    topic and payload still say so unambiguously; None otherwise. Dead-lettered messages are
    confirmed too: sending them again cannot make them valid. An oversized payload is not
    parsed at all, and one nested too deeply for the parser gives None too."""
    try:
        parts = parse_topic(topic)
    except WireError:
        return None
    if parts.kind not in (Kind.TELEMETRY, Kind.EVENT) or len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: ``[[[[…`` 1000 levels deep
        return None
    if not isinstance(data, dict):
        return None
    boot_id, seq = data.get("boot_id"), data.get("seq")
    if (
        data.get("site") != parts.site
        or data.get("device") != parts.device
        or not isinstance(boot_id, str)
        or not _BOOT_ID.match(boot_id)
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 1
    ):
        return None
    return parts.site, parts.device, boot_id, seq
