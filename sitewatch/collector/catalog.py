"""What the collector knows about each sensor: its labels (which become InfluxDB tags) and
the fields it declared, both taken from the agents' birth messages.

Readings do not carry labels (that would repeat them in every message); the retained birth
does. The catalog keeps them per ``(site, device, sensor)`` and hands line protocol a ready,
escaped tag string. A birth replaces the entries of the sensors it lists and leaves other
sensors of the device alone, so a late redelivery for a sensor that was since removed is
still tagged as before. It is checkpointed as JSON in the state directory (``to_json``,
``from_json``), so a restarted collector tags the same way before it has seen the births
again (a series' identity includes its tags: tagged differently, a redelivered reading
would become a second point instead of overwriting itself). A sensor whose labels change
starts new series, by design. Used from one thread (ingest); not thread-safe.

>>> catalog = SensorCatalog()
>>> catalog.set_sensor("plant-a", "pi-01", "door", labels={"site": "x", "zone": "b 2"},
...                    fields=["open"])
True
>>> catalog.tags("plant-a", "pi-01", "door")
'device=pi-01,label_site=x,sensor=door,site=plant-a,zone=b\\\\ 2'
>>> catalog.measurement("plant-a", "pi-01", "door")
'equipment'
>>> SensorCatalog.from_json(catalog.to_json()).tags("plant-a", "pi-01", "door")[-9:]
'zone=b\\\\ 2'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sitewatch.collector.escaping import tag_set
from sitewatch.wire import StatusMessage

__all__ = ["SensorCatalog", "SensorEntry", "tag_string"]

CLIMATE_FIELDS = frozenset({"temperature_c", "humidity_pct", "dew_point_c"})
EQUIPMENT_FIELDS = frozenset(
    {"running", "open", "vibrating", "active", "duty_cycle_pct", "starts_per_h", "runtime_h"}
)
RESERVED_TAGS = frozenset(
    {"site", "device", "sensor", "type", "field", "rule", "severity", "time", "quality"}
    | CLIMATE_FIELDS
    | EQUIPMENT_FIELDS
)
"""The schema's own tag and field keys (and InfluxQL's ``time``): a label with one of these
names is written as ``label_<name>``, so it can never shadow a tag or a field in a query."""

_MAX_CACHED_TAGS = 100_000
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SensorEntry:
    """One sensor's labels and declared fields, as its device's birth announced them."""

    labels: Mapping[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()

    @property
    def measurement(self) -> str:
        """``equipment`` when it declares only equipment fields, else ``environment``."""
        declared = set(self.fields)
        if declared & EQUIPMENT_FIELDS and not declared & CLIMATE_FIELDS:
            return "equipment"
        return "environment"


def tag_string(
    site: str, device: str, sensor: str, labels: Mapping[str, str], *, field: str | None = None
) -> str:
    """The escaped tag set: ``site``, ``device``, ``sensor``, the labels and (for detection's
    ``anomaly`` points) ``field``, in order of their keys (``escaping.tag_set``).

    Empty keys and values are left out; reserved or ``_``-prefixed keys get ``label_``; of
    label keys that escape alike, the first in sorted order wins (``tag_set``).
    """
    tags = [("site", site), ("device", device), ("sensor", sensor)]
    if field is not None:
        tags.append(("field", field))
    for key in sorted(labels):
        if key:
            name = f"label_{key}" if key in RESERVED_TAGS or key[0] == "_" else key
            tags.append((name, labels[key]))
    return tag_set(tags)


class SensorCatalog:
    """Labels and declared fields per ``(site, device, sensor)``; see the module docstring."""

    def __init__(self) -> None:
        self._sensors: dict[tuple[str, str, str], SensorEntry] = {}
        self._tags: dict[tuple[str, str, str], str] = {}
        # Counts the changes: what another component worked out from the catalog (detection's
        # streams) is still current while this has not moved, with no lookup per reading.
        self.revision = 0

    def __len__(self) -> int:
        return len(self._sensors)

    def update(self, message: StatusMessage) -> bool:
        """Take the sensor list of a birth (``online``); True when anything changed, which
        is when the catalog should be saved. A last will (``offline``) changes nothing."""
        changed = False
        if message.state == "online":
            for info in message.sensors:
                changed |= self.set_sensor(
                    message.site, message.device, info.id, labels=info.labels, fields=info.fields
                )
        return changed

    def set_sensor(
        self,
        site: str,
        device: str,
        sensor: str,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Sequence[str] = (),
    ) -> bool:
        """Record one sensor; True when its labels or fields differ from what was known."""
        entry = SensorEntry(dict(labels or {}), tuple(fields))
        key = (site, device, sensor)
        if self._sensors.get(key) == entry:
            return False
        self._sensors[key] = entry
        self._tags.pop(key, None)
        self.revision += 1
        return True

    def get(self, site: str, device: str, sensor: str) -> SensorEntry | None:
        return self._sensors.get((site, device, sensor))

    def tags(self, site: str, device: str, sensor: str) -> str:
        """The escaped tag string for a sensor's ``environment``/``equipment`` points
        (without labels when no birth announced the sensor)."""
        key = (site, device, sensor)
        tags = self._tags.get(key)
        if tags is None:
            entry = self._sensors.get(key)
            tags = tag_string(site, device, sensor, entry.labels if entry else {})
            if len(self._tags) >= _MAX_CACHED_TAGS:
                self._tags.clear()
            self._tags[key] = tags
        return tags

    def measurement(self, site: str, device: str, sensor: str) -> str:
        """Where a reading without values goes: what the sensor's declared fields imply."""
        entry = self._sensors.get((site, device, sensor))
        return entry.measurement if entry else "environment"

    def to_json(self) -> dict[str, Any]:
        """A checkpoint (JSON-able), so a restarted collector tags the same way."""
        sensors = [
            {
                "site": site,
                "device": device,
                "sensor": sensor,
                "labels": dict(entry.labels),
                "fields": list(entry.fields),
            }
            for (site, device, sensor), entry in sorted(self._sensors.items())
        ]
        return {"version": _FORMAT_VERSION, "sensors": sensors}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SensorCatalog:
        """The catalog ``to_json`` described; ``ValueError`` if ``data`` is not one."""
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unknown sensor catalog version {data.get('version')!r}")
        catalog = cls()
        try:
            for item in data["sensors"]:
                catalog.set_sensor(
                    str(item["site"]),
                    str(item["device"]),
                    str(item["sensor"]),
                    labels={str(k): str(v) for k, v in item["labels"].items()},
                    fields=[str(f) for f in item["fields"]],
                )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a sensor catalog: {error!r}") from None
        return catalog
