"""Several collectors on one fleet: which devices each one owns (``mqtt.partition``).

Every message of a device must reach one and the same collector: detection keeps state per
stream (a for-duration in progress, a flatline's repeat count, the anomaly score's running
statistics), seq tracking counts gaps and duplicates per ``(device, boot_id)`` across
telemetry and events, and the end-to-end confirmation says "everything up to seq N is
stored", which only the collector that stored all of it can say. MQTT shared subscriptions
(``$share/<group>/<filter>``) cannot give that: the broker picks a member of the group for
each message (round robin, random, or by a hash of the publisher that changes whenever a
member leaves or joins), so one device's messages end up on several collectors. sitewatch
partitions instead, in two ways that can be combined:

- ``sites``: the collector subscribes to ``sitewatch/v1/<site>/+/+`` for each of its sites
  only; the broker sends it nothing else. Free: no message is received twice. Natural when
  one collector (and one alert page, one team) serves a group of sites.
- ``index`` of ``count``: the devices (of its sites, or of all) are spread over ``count``
  collectors by rendezvous hashing of ``<site>/<device>`` (``owner``). An MQTT filter cannot
  select by hash, so each of these collectors receives every message of its subscriptions
  and passes over, acknowledged at once and stored nowhere, those of devices it does not
  own: the broker sends each message ``count`` times, and a passed-over message costs a
  collector its MQTT receive and acknowledgement but no validation, tracking or writing
  (``bench/partition.py``: about 50 µs of CPU, against about 330 µs to store a message of 50
  readings and 70 µs one of 1 reading). For one site too large for one collector, when its
  agents batch their readings. Rendezvous hashing keeps most devices
  where they were when ``count`` grows: going from n to n+1 collectors moves about
  1/(n+1) of the devices, all of them to the new collector.

A device that moves to another collector (a partition changed) starts there with fresh
detection state and seq tracking; the collector it left forgets it at its next start
(``Partition.prune`` drops other collectors' devices from its checkpoints, so it neither
writes their delivery counters nor watches their silence).

``fleet_issues`` checks a whole fleet's configs together (``python -m
sitewatch.collector.partition check A.yaml B.yaml ...``): partitions that overlap (a device
owned twice: detection run twice, confirmations from two collectors), hash indices nobody
runs (those devices' messages passed over by every collector: stored nowhere, and their
agents, never confirmed, send them again until their outbox overflows), and client ids used
twice (the broker keeps one session per id: the second collector would take over the
first's).

>>> [owner("plant-b", device, 2) for device in ("pi-01", "pi-02", "pi-03", "pi-04")]
[0, 1, 0, 1]
>>> partition = Partition(PartitionConfig(sites=["plant-b"], index=1, count=2))
>>> partition.owns_topic("sitewatch/v1/plant-b/pi-02/telemetry")
True
>>> partition.owns_topic("sitewatch/v1/plant-b/ack/pi-01")  # pi-01's confirmations: index 0's
False
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from sitewatch.atomicfile import write_atomic
from sitewatch.configfile import ConfigError, ConfigIssue, Section
from sitewatch.wire import ACK_LEVEL, TOPIC_ROOT, Identifier

if TYPE_CHECKING:
    from sitewatch.collector.config import CollectorMqttConfig

__all__ = ["MAX_COUNT", "Partition", "PartitionConfig", "fleet_issues", "main", "owner"]

log = logging.getLogger(__name__)

MAX_COUNT = 256
"""Most collectors one hash partition can spread devices over."""

_TOPIC_CACHE_MAX = 100_000
"""Topics whose owner is remembered (about 5 per device); beyond that the cache restarts."""


class PartitionConfig(Section):
    """Which devices this collector owns when several share one fleet
    (``sitewatch.collector.partition``).

    ``sites``: only these sites' devices; the collector then subscribes to
    ``sitewatch/v1/<site>/+/+`` for each of them (leave ``mqtt.topics`` out). ``index`` of
    ``count``: only the devices that ``owner`` hashes to ``index``; the collector still
    receives every message of its subscriptions and passes over the rest (acknowledged, not
    stored). Give ``sites``, or ``index`` and ``count``, or all three (hash within the
    sites). Every collector of the fleet needs its own ``mqtt.client_id`` and ``state_dir``;
    check the fleet's configs together with ``python -m sitewatch.collector.partition check``.
    """

    sites: list[Identifier] | None = None
    """The sites this collector owns (default: all)."""
    index: Annotated[int, Field(ge=0, lt=MAX_COUNT)] | None = None
    """This collector's share of the hashed devices, from 0 to ``count`` - 1."""
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = None
    """How many collectors share the (sites') devices by hash."""

    @model_validator(mode="after")
    def _not_empty(self) -> PartitionConfig:
        if self.sites is not None:
            if not self.sites:
                raise ValueError("mqtt.partition.sites: an empty list owns no device; list "
                                 "at least one site, or leave sites out (all sites)")
            seen: set[str] = set()
            for number, site in enumerate(self.sites):
                if site in seen:
                    raise ValueError(f"mqtt.partition.sites[{number}]: {site!r} is listed twice")
                seen.add(site)
        if (self.index is None) != (self.count is None):
            missing = "count" if self.count is None else "index"
            raise ValueError(f"mqtt.partition.{missing}: give index and count together")
        if self.index is not None and self.count is not None and self.index >= self.count:
            raise ValueError(f"mqtt.partition.index: {self.index} is not below count "
                             f"({self.count}); indices run from 0 to {self.count - 1}")
        if self.sites is None and self.count is None:
            raise ValueError("mqtt.partition: give sites, or index and count, or all three")
        return self


def owner(site: str, device: str, count: int) -> int:
    """The index (0 to ``count`` - 1) of the collector owning ``site``/``device``.

    Rendezvous hashing: each index draws a 64-bit BLAKE2b weight for the device and the
    highest weight owns it, so raising ``count`` moves a device only to the new index.
    Stable across processes, machines and Python versions (no ``hash()``).
    """
    if count <= 1:
        return 0
    key = f"{site}/{device}".encode()
    best, best_weight = 0, -1
    for index in range(count):
        digest = hashlib.blake2b(key, digest_size=8, salt=index.to_bytes(16, "big")).digest()
        weight = int.from_bytes(digest, "big")
        if weight > best_weight:
            best, best_weight = index, weight
    return best


class Partition:
    """One collector's partition at run time; ``None`` config: it owns every device."""

    def __init__(self, config: PartitionConfig | None) -> None:
        self.sites = frozenset(config.sites) if config is not None and config.sites else None
        self.index = config.index if config is not None and config.index is not None else 0
        self.count = config.count if config is not None and config.count is not None else 1
        self._topics: dict[str, bool] = {}

    @property
    def hashed(self) -> bool:
        """Whether messages of devices it does not own reach it (and must be passed over)."""
        return self.count > 1

    @property
    def everything(self) -> bool:
        return self.sites is None and self.count == 1

    def owns(self, site: str, device: str) -> bool:
        if self.sites is not None and site not in self.sites:
            return False
        return self.count == 1 or owner(site, device, self.count) == self.index

    def owns_topic(self, topic: str) -> bool:
        """Whether a message on ``topic`` is this collector's to handle. Device topics go by
        their device (``ack`` topics too); any other topic to index 0 only, so exactly one
        collector dead-letters it. On the MQTT thread, for every message: cached per topic."""
        known = self._topics.get(topic)
        if known is not None:
            return known
        parts = topic.split("/")
        if len(parts) == 5 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT:
            device = parts[4] if parts[3] == ACK_LEVEL else parts[3]
            mine = self.owns(parts[2], device)
        else:
            mine = self.index == 0
        if len(self._topics) >= _TOPIC_CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = mine
        return mine

    def prune(self, data: dict[str, Any] | None, name: str = "checkpoint") -> dict[str, Any] | None:
        """A checkpoint (tracking, catalog, confirmations, detection) without the devices this
        collector does not own: after a partition changed, the devices it gave away must not
        keep their delivery counters, silence watches and confirmations alive here."""
        if data is None or self.everything:
            return data
        out = dict(data)
        dropped: set[tuple[str, str]] = set()
        for key in ("devices", "sensors"):  # tracking and confirm; catalog
            entries = data.get(key)
            if isinstance(entries, list):
                kept = []
                for entry in entries:
                    site, device = _site_device(entry)
                    if site is None or device is None or self.owns(site, device):
                        kept.append(entry)
                    else:
                        dropped.add((site, device))
                out[key] = kept
        streams = data.get("streams")  # detection: "<site>/<device>/<sensor>/<field>..."
        if isinstance(streams, dict):
            out["streams"] = {}
            for stream_key, value in streams.items():
                site, _, rest = str(stream_key).partition("/")
                device = rest.partition("/")[0]
                if self.owns(site, device):
                    out["streams"][stream_key] = value
                else:
                    dropped.add((site, device))
        if dropped:
            log.info("%s: %d device(s) outside this collector's partition dropped (e.g. %s)",
                     name, len(dropped), "/".join(min(dropped)))
        return out


    def prune_file(self, path: Path) -> None:
        """``prune`` a JSON checkpoint file in place (for a reader in another process: the
        detection worker reads its checkpoint itself)."""
        if self.everything:
            return
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # missing or unreadable: its reader says so
        if not isinstance(data, dict):
            return
        pruned = self.prune(data, path.name)
        if pruned != data:
            write_atomic(path, json.dumps(pruned).encode())


def _site_device(entry: object) -> tuple[str | None, str | None]:
    if not isinstance(entry, dict):
        return None, None
    site, device = entry.get("site"), entry.get("device")
    return (site if isinstance(site, str) else None, device if isinstance(device, str) else None)


# -- the fleet as a whole ---------------------------------------------------------------------


def _subscribed_sites(mqtt: CollectorMqttConfig) -> frozenset[str] | None:
    """The sites a collector's subscriptions reach (None: any site)."""
    sites: set[str] = set()
    for topic in mqtt.topics:
        parts = topic.split("/")
        if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[2] in ("+", "#"):
            return None
        sites.add(parts[2])
    return frozenset(sites)


def _describe(sites: frozenset[str] | None, index: int | None, count: int | None) -> str:
    where = "all sites" if sites is None else "sites " + ", ".join(sorted(sites))
    return where if count is None else f"{where}, hash index {index} of {count}"


def fleet_issues(collectors: Sequence[tuple[str, CollectorMqttConfig]]) -> list[ConfigIssue]:
    """Problems only the whole fleet shows: ``collectors`` are (name, its ``mqtt`` section).

    Each issue's path is ``<name>: mqtt.<key>`` of the later of the collectors involved.
    """
    issues: list[ConfigIssue] = []
    members = []
    for name, mqtt in collectors:
        partition = mqtt.partition
        sites = _subscribed_sites(mqtt)
        if partition is not None and partition.sites is not None:
            sites = frozenset(partition.sites) if sites is None else sites & set(partition.sites)
        hashed = partition is not None and partition.count is not None
        index = partition.index if hashed and partition is not None else None
        count = partition.count if hashed and partition is not None else None
        members.append((name, mqtt, sites, index, count))
    for later, (name, mqtt, sites, index, count) in enumerate(members):
        for other, other_mqtt, other_sites, other_index, other_count in members[:later]:
            if mqtt.client_id == other_mqtt.client_id:
                issues.append(ConfigIssue(
                    f"{name}: mqtt.client_id",
                    f"{mqtt.client_id!r} is also {other}'s: the broker keeps one session per "
                    "client id, so each would take over the other's session"))
            shared = (sites & other_sites if sites is not None and other_sites is not None
                      else sites if other_sites is None else other_sites)
            if shared is not None and not shared:
                continue  # disjoint sites
            if count is not None and other_count is not None:
                if count == other_count and index != other_index:
                    continue  # disjoint hash shares of the same sites
                if count != other_count:
                    issues.append(ConfigIssue(
                        f"{name}: mqtt.partition.count",
                        f"{count}, but {other} hashes the same site(s) over {other_count}: "
                        "one count per site, or devices are owned twice or not at all"))
                    continue
            issues.append(ConfigIssue(
                f"{name}: mqtt.partition",
                f"owns ({_describe(sites, index, count)}) devices that {other} owns too "
                f"({_describe(other_sites, other_index, other_count)}): their streams would be "
                "detected and confirmed twice"))
    # Hash shares nobody runs, per site (and for "any other site" when a collector hashes
    # all sites): every index below the count must be someone's.
    shares = [(sites, index, count) for _, _, sites, index, count in members
              if index is not None and count is not None]
    keys: set[str | None] = {site for sites, _, _ in shares for site in sites or ()}
    if any(sites is None for sites, _, _ in shares):
        keys.add(None)
    for key in sorted(keys, key=lambda site: (site is None, site or "")):
        by_count: dict[int, set[int]] = {}
        for sites, index, count in shares:
            if sites is None or (key is not None and key in sites):
                by_count.setdefault(count, set()).add(index)
        for count, indices in sorted(by_count.items()):
            missing = sorted(set(range(count)) - indices)
            if missing:
                where = "any site not named" if key is None else f"site {key}"
                issues.append(ConfigIssue(
                    "mqtt.partition.index",
                    f"no collector runs index {', '.join(map(str, missing))} of {count} for "
                    f"{where}: those devices' messages would be passed over by every "
                    "collector"))
    return issues


def main(argv: Sequence[str] | None = None) -> int:
    """``check CONFIG...``: the fleet's partitions; ``owner --count N SITE/DEVICE...``: which
    index owns each device. Exit status 0, 1 (fleet problems) or 2 (an invalid config)."""
    from sitewatch.collector.config import load_config

    parser = argparse.ArgumentParser(prog="python -m sitewatch.collector.partition",
                                     description="partitions of a fleet of collectors")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check the fleet's collector configs together")
    check.add_argument("configs", nargs="+", type=Path, help="every collector's YAML file")
    where = commands.add_parser("owner", help="the hash index that owns each device")
    where.add_argument("--count", type=int, required=True, help="collectors sharing by hash")
    where.add_argument("devices", nargs="+", help="SITE/DEVICE")
    args = parser.parse_args(argv)
    if args.command == "owner":
        for name in args.devices:
            site, _, device = name.partition("/")
            print(f"{name}: index {owner(site, device, args.count)} of {args.count}")
        return 0
    collectors = []
    for path in args.configs:
        try:
            collectors.append((str(path), load_config(path).mqtt))
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 2
    issues = fleet_issues(collectors)
    for issue in issues:
        print(issue)
    if not issues:
        for name, mqtt in collectors:
            p = mqtt.partition
            sites = _subscribed_sites(mqtt) if p is None or p.sites is None else frozenset(p.sites)
            print(f"{name}: {mqtt.client_id}: "
                  f"{_describe(sites, p.index if p else None, p.count if p else None)}")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
