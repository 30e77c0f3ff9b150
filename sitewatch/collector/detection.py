"""The live detection path: readings → detectors → policies → decisions and InfluxDB lines.

``Detection.observe(message)`` runs for every telemetry message (on the ingest thread, or in
the detection process, which takes the readings as rows: ``reading_rows``). Each reading's
fields are looked up in the rules (once per sensor, again when its labels change);
every bound detector scores the value and then learns it, and its policy turns the score
into a decision. It returns the lines to store with the message itself: ``anomaly`` points
(per scored field, while any detector scores ``SCORE_FLOOR`` or more: when the top score
moves by ``SCORE_STEP`` or ``SCORE_REFRESH_S`` after the last point, and one more when they
fall back) and an ``alerts`` point per decision. ``tick(now_s)`` lets detectors that watch
for the absence of data (silence, a door left open) score the passing time.

Readings older than the newest one already scored for a stream (a redelivery, or a backlog
replayed after a live reading) are stored but not scored: learning them out of order would
corrupt the detectors' time scales, and an alert on hour-old data would come too late.

State (every detector's and policy's) is checkpointed as JSON (``to_json``/``from_json``), so
a restarted collector neither relearns from scratch nor forgets a for-duration in progress;
the streams in a checkpoint are rebuilt at start, so a sensor that went silent while the
collector was down is still noticed. Single-threaded: used from the ingest thread only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from sitewatch.collector.catalog import SensorCatalog, tag_string
from sitewatch.collector.decisions import Decision, alerts_line
from sitewatch.collector.detectors import REGISTRY, build_detector, updating
from sitewatch.collector.lineproto import dew_point_c
from sitewatch.collector.policy import AlertPolicy, Verdict
from sitewatch.collector.protocols import JsonValue, Updating
from sitewatch.collector.rules import Binding, DetectionConfig, RuleSet
from sitewatch.wire import MEASUREMENT_FIELDS, TelemetryMessage

__all__ = ["Detection", "Row", "reading_rows"]

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_NO_LABELS: Mapping[str, str] = MappingProxyType({})
_NO_SENSORS: Mapping[str, _Sensor] = MappingProxyType({})

Row = tuple[Any, ...]
"""One reading as detection takes it: ``(sensor, ts, *values)``, ``ts`` in milliseconds since
the epoch and the values of ``wire.MEASUREMENT_FIELDS`` in that order (None where absent).
Primitives only: rows cross to the detection process by ``marshal``, about 10× cheaper than
parsing the message's JSON again there."""

_ROW = operator.itemgetter("sensor", "ts", *MEASUREMENT_FIELDS)
_FIRST_VALUE = 2
_NO_VALUES = (None,) * len(MEASUREMENT_FIELDS)
# Where a stream's value comes from: a row's index, or (negative) one derived from the row.
_READING, _DEW_POINT, _DEW_MARGIN = -1, -2, -3
_SLOTS = {
    **{field: _FIRST_VALUE + k for k, field in enumerate(MEASUREMENT_FIELDS)},
    "reading": _READING, "dew_point_c": _DEW_POINT, "dew_point_margin_c": _DEW_MARGIN,
}  # fmt: skip
_TEMPERATURE = _SLOTS["temperature_c"]
_HUMIDITY = _SLOTS["humidity_pct"]


def reading_rows(message: TelemetryMessage) -> list[Row]:
    """The readings of a validated ``message`` as rows (``Row``), taken from the readings'
    fields in one step each."""
    return [_ROW(reading.__dict__) for reading in message.readings]


SCORE_FLOOR = 0.1
"""Scores below this are normal noise: not written to ``anomaly`` (a point at 0 closes a run
of higher scores), so quiet streams cost no extra points in InfluxDB."""
SCORE_STEP = 0.05
SCORE_REFRESH_S = 60.0
"""While a stream scores above the floor, a point is written when its top score has moved by
``SCORE_STEP`` since the last point, or ``SCORE_REFRESH_S`` seconds (of reading time) after
it: a sensor stuck for days at one reading a second writes a point a minute, not 86,400 a
day, and a chart drawn as steps stays within 0.05 of every score."""


_ABILITIES: dict[type, tuple[bool, bool, bool]] = {}


def _abilities(cls: type) -> tuple[bool, bool, bool]:
    """Whether a detector class is ``Ticking``, ``Explaining`` and ``Checkpointable``
    (checked once per class: a runtime protocol check is slow, and there is a watch per
    stream and detector)."""
    known = _ABILITIES.get(cls)
    if known is None:
        known = _ABILITIES[cls] = (
            callable(getattr(cls, "check", None)),
            callable(getattr(cls, "details", None)),
            callable(getattr(cls, "get_state", None)) and callable(getattr(cls, "set_state", None)),
        )
    return known


class _Watch:
    """One detector bound to one stream, with its policy and the alert it has open."""

    __slots__ = (
        "alert_id", "attentive", "binding", "checkpointable", "detector", "explaining", "policy",
        "score", "ticking", "update", "updater", "windowed",
    )  # fmt: skip

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        detector = self.detector = build_detector(binding.detector, binding.params)
        self.policy = AlertPolicy(binding.policy)
        self.windowed = binding.policy.window > 1  # N-of-M needs every score, zeros too
        # Whether the policy needs zero scores too: it counts N-of-M, or an alert is open
        # (zeros resolve it). Kept in step with the policy by judge() and set_state().
        self.attentive = self.windowed
        self.ticking, self.explaining, self.checkpointable = _abilities(type(detector))
        # Scores a reading, then learns it: in one call where the detector can (``Updating``).
        # Called as ``update(updater, ts_s, value)``, the class's own function: a method
        # lookup on detectors of many classes, or a bound method per watch, costs more.
        self.updater = updating(detector)
        self.update: Callable[[Updating, float, float], float] = type(self.updater).update_one
        self.score = 0.0
        self.alert_id = ""

    def judge(self, ts_s: float, score: float) -> Verdict | None:
        """Hand ``score`` to the policy (needed when it is above 0 or ``attentive``)."""
        policy = self.policy
        verdict = policy.update(ts_s, score)
        self.attentive = self.windowed or policy.firing
        return verdict

    def get_state(self) -> dict[str, JsonValue]:
        detector = self.detector
        return {
            "detector": detector.get_state() if self.checkpointable else None,  # type: ignore[attr-defined]
            "policy": self.policy.get_state(),
            "alert_id": self.alert_id,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        detector = self.detector
        if self.checkpointable and state.get("detector") is not None:
            detector.set_state(state["detector"])  # type: ignore[attr-defined]
        self.policy.set_state(state["policy"])
        self.attentive = self.windowed or self.policy.firing
        self.alert_id = str(state.get("alert_id") or "")


class _Stream:
    """One field of one sensor and the detectors watching it."""

    __slots__ = (
        "field", "last_ts_s", "last_value", "reported", "reported_ts_s", "tags", "watches",
    )  # fmt: skip

    def __init__(self, field: str, tags: str, watches: list[_Watch]) -> None:
        self.field = field
        self.tags = tags  # of its anomaly points: the sensor's, and field=
        self.watches = tuple(watches)  # for observe: one compact object to walk per value
        self.last_ts_s = float("-inf")
        self.last_value: float | None = None
        # The top score of the last anomaly point written for it, and when; -1.0: none since
        # the stream last scored below SCORE_FLOOR.
        self.reported = -1.0
        self.reported_ts_s = 0.0


class _Sensor:
    __slots__ = ("device", "labels", "name", "plan", "revision", "site", "streams")

    def __init__(
        self, site: str, device: str, name: str, labels: Mapping[str, str], revision: int
    ) -> None:
        self.site, self.device, self.name = site, device, name
        self.labels = labels
        self.revision = revision  # the catalog's when the labels were last checked
        self.streams: dict[str, _Stream] = {}
        # For observe, once the streams are in: where each stream's value comes from in a
        # row (see _SLOTS), and the stream (a field a reading lacks is skipped without
        # touching its stream).
        self.plan: tuple[tuple[int, _Stream], ...] = ()


def _dew_value(row: Row, slot: int) -> float | None:
    """A row's dew point (``_DEW_POINT``) or dew point margin (``_DEW_MARGIN``), °C."""
    t, h = row[_TEMPERATURE], row[_HUMIDITY]
    if t is None or h is None:
        return None
    try:
        dew = dew_point_c(t, h)
    except ValueError:
        return None
    return float(t - dew if slot == _DEW_MARGIN else dew)


class Detection:
    """Detection for one collector; see the module docstring.

    ``on_decision`` receives every decision (the alert engine's ``DecisionSink.decided``);
    each is also logged and, with ``write_decisions`` (when no alert engine writes the
    ``alerts`` measurement itself), stored as an ``alerts`` point.
    """

    def __init__(
        self,
        config: DetectionConfig,
        catalog: SensorCatalog,
        *,
        on_decision: Callable[[Decision], None] | None = None,
        write_decisions: bool = True,
    ) -> None:
        self.config = config
        self.write_decisions = write_decisions
        self.catalog = catalog
        self.rules = RuleSet(config)
        self.on_decision = on_decision
        self._sensors: dict[tuple[str, str, str], _Sensor] = {}
        # The same sensors by (site, device), then by name: a message comes from one device.
        self._by_device: dict[tuple[str, str], dict[str, _Sensor]] = {}
        self._ticking: dict[tuple[str, str, str], list[tuple[_Sensor, _Stream, _Watch]]] = {}
        self._saved: dict[str, Any] = {}
        self.scored_values = 0
        self.late_values = 0
        self.decisions = 0

    # -- streams -----------------------------------------------------------------------
    def _sensor(self, site: str, device: str, name: str) -> _Sensor:
        """The sensor's streams, built, or rebuilt when the catalog changed its labels."""
        key = (site, device, name)
        sensor = self._sensors.get(key)
        revision = self.catalog.revision
        entry = self.catalog.get(site, device, name)
        labels = entry.labels if entry is not None else _NO_LABELS
        if sensor is not None and sensor.labels is labels:
            sensor.revision = revision
            return sensor
        rebuilt = _Sensor(site, device, name, labels, revision)
        previous = sensor.streams if sensor is not None else {}
        for field, bindings in self.rules.bindings(site, device, name, labels).items():
            old = previous.get(field)
            kept = {w.binding.key: w for w in old.watches} if old is not None else {}
            watches = []
            for binding in bindings:
                watch = kept.get(binding.key)
                if watch is None or watch.binding != binding:
                    watch = _Watch(binding)
                    saved = self._saved.pop(f"{site}/{device}/{name}/{field}/{binding.key}", None)
                    if saved is not None:
                        watch = self._restored(watch, saved)
                watches.append(watch)
            stream = _Stream(field, tag_string(site, device, name, labels, field=field), watches)
            if old is not None:
                stream.last_ts_s, stream.last_value = old.last_ts_s, old.last_value
            else:
                last = self._saved.pop(f"{site}/{device}/{name}/{field}", None)
                if isinstance(last, (int, float)):
                    stream.last_ts_s = float(last)
            rebuilt.streams[field] = stream
        rebuilt.plan = tuple((_SLOTS[field], stream) for field, stream in rebuilt.streams.items())
        self._sensors[key] = rebuilt
        # Interned: sensors on many devices share names, and so one string to compare with.
        self._by_device.setdefault((site, device), {})[sys.intern(name)] = rebuilt
        ticking = [
            (rebuilt, stream, watch)
            for stream in rebuilt.streams.values()
            for watch in stream.watches
            if watch.ticking
        ]
        if ticking:
            self._ticking[key] = ticking
        else:
            self._ticking.pop(key, None)
        return rebuilt

    @staticmethod
    def _restored(watch: _Watch, saved: Any) -> _Watch:
        try:
            watch.set_state(saved)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("detector state for %s not restored (%r); it starts afresh",
                        watch.binding.key, error)
            return _Watch(watch.binding)
        return watch

    # -- scoring -----------------------------------------------------------------------
    def observe(self, message: TelemetryMessage) -> list[str]:
        """Score every reading of ``message``; the lines to store with it."""
        return self.observe_rows(message.site, message.device, reading_rows(message))

    def observe_rows(self, site: str, device: str, rows: Iterable[Row]) -> list[str]:
        """Score the readings of one message of ``site``/``device``, as rows (``Row``); the
        lines to store with it."""
        # The hot path of detection: locals, no helper calls per value but the detectors'.
        out: list[str] = []
        revision = self.catalog.revision
        by_name = self._by_device.get((site, device), _NO_SENSORS)
        write_scores = self.config.write_scores
        scored = late = 0
        for row in rows:
            sensor = by_name.get(row[0])
            if sensor is None or sensor.revision != revision:  # new, or the catalog changed
                sensor = self._sensor(site, device, row[0])
                by_name = self._by_device[(site, device)]
            ts_ms = row[1]
            ts_s = ts_ms / 1000.0
            for slot, stream in sensor.plan:
                if slot >= _FIRST_VALUE:
                    value = row[slot]
                    if value is None:  # a field this reading does not carry
                        continue
                    value = float(value)
                elif slot == _READING:
                    # A reading without a measurement (a dead sensor's bad/fault reports) is
                    # no data. (The wire contract has a value exactly when the quality is
                    # ok or degraded.) Most carry a temperature: that is enough to know.
                    if row[_TEMPERATURE] is None and row[_FIRST_VALUE:] == _NO_VALUES:
                        continue
                    value = 1.0
                else:
                    value = _dew_value(row, slot)
                    if value is None:
                        continue
                if ts_s <= stream.last_ts_s:
                    late += 1
                    continue
                stream.last_ts_s = ts_s
                stream.last_value = value
                scored += 1
                top = 0.0
                for watch in stream.watches:
                    score = watch.update(watch.updater, ts_s, value)  # score_one, learn_one
                    watch.score = score
                    if score or watch.attentive:  # most scores are 0, and most policies idle
                        if score > top:
                            top = score
                        verdict = watch.judge(ts_s, score)
                        if verdict is not None:
                            line = self._decide(sensor, stream, watch, verdict, ts_ms, value,
                                                score)
                            if line is not None:
                                out.append(line)
                if (top >= SCORE_FLOOR or stream.reported >= 0.0) and write_scores:
                    if top < SCORE_FLOOR:  # the run of scores ends: say so
                        out.append(self._anomaly_line(stream, top, ts_ms))
                        stream.reported = -1.0
                    elif (
                        abs(top - stream.reported) >= SCORE_STEP
                        or ts_s - stream.reported_ts_s >= SCORE_REFRESH_S
                    ):
                        out.append(self._anomaly_line(stream, top, ts_ms))
                        stream.reported = top
                        stream.reported_ts_s = ts_s
        self.scored_values += scored
        self.late_values += late
        return out

    def tick(self, now_s: float) -> list[str]:
        """Let time-watching detectors score ``now_s`` (UTC seconds); lines to store."""
        out: list[str] = []
        ts_ms = int(now_s * 1000)
        for sensor, stream, watch in [w for ws in self._ticking.values() for w in ws]:
            score = watch.detector.check(now_s)  # type: ignore[attr-defined]
            watch.score = score
            if score or watch.attentive:
                verdict = watch.judge(now_s, score)
                if verdict is not None:
                    line = self._decide(sensor, stream, watch, verdict, ts_ms,
                                        stream.last_value, score)
                    if line is not None:
                        out.append(line)
        return out

    def _anomaly_line(self, stream: _Stream, top: float, ts_ms: int) -> str:
        scores = ",".join(f"{w.binding.detector}={w.score!r}" for w in stream.watches)
        return f"anomaly,{stream.tags} score={top!r},{scores} {ts_ms}"

    def _decide(
        self,
        sensor: _Sensor,
        stream: _Stream,
        watch: _Watch,
        verdict: str,
        ts_ms: int,
        value: float | None,
        score: float,
    ) -> str | None:
        binding = watch.binding
        details = watch.detector.details() if watch.explaining else {}  # type: ignore[attr-defined]
        message = str(details.get("message") or f"{binding.detector} on {stream.field}: "
                      f"score {score:.2f}")
        breach = details.get("predicted_breach_s")
        if verdict == "fire":
            key = f"{sensor.site}/{sensor.device}/{sensor.name}/{stream.field}/{binding.key}"
            watch.alert_id = hashlib.sha1(f"{key}@{ts_ms}".encode(), usedforsecurity=False
                                          ).hexdigest()[:16]
        decision = Decision(
            verdict="fire" if verdict == "fire" else "resolve",
            site=sensor.site, device=sensor.device, sensor=sensor.name, field=stream.field,
            rule=binding.rule, detector=binding.detector, severity=binding.severity,
            audience=binding.audience, ts_ms=ts_ms, value=value, score=score,
            message=message if verdict == "fire" else f"resolved: {message}",
            alert_id=watch.alert_id,
            predicted_breach_s=float(breach) if isinstance(breach, (int, float)) else None,
        )  # fmt: skip
        self.decisions += 1
        if decision.verdict == "fire":
            log.warning("alert %s %s [%s] %s", decision.severity, decision.dedupe_key,
                        decision.alert_id, decision.message)
        else:
            log.info("resolved %s [%s]", decision.dedupe_key, decision.alert_id)
        if self.on_decision is not None:
            self.on_decision(decision)
        return alerts_line(decision) if self.write_decisions else None

    # -- checkpoints ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Every stream's last scored time and every watch's state, JSON-able."""
        return {"version": _FORMAT_VERSION, "streams": dict(self._state_items())}

    def checkpoint_chunks(self) -> Iterator[bytes]:
        """``to_json`` as UTF-8 JSON text, one stream at a time: with thousands of streams a
        checkpoint is megabytes, and built whole it would swell the collector's memory by
        several times that at every checkpoint."""
        yield b'{"version": %d, "streams": {' % _FORMAT_VERSION
        separator = b""
        for key, value in self._state_items():
            yield separator + json.dumps(key).encode() + b": " + json.dumps(value).encode()
            separator = b", "
        yield b"}}"

    def _state_items(self) -> Iterator[tuple[str, Any]]:
        yield from list(self._saved.items())  # not yet rebuilt: keep for later
        for sensor in list(self._sensors.values()):
            prefix = f"{sensor.site}/{sensor.device}/{sensor.name}"
            for field, stream in sensor.streams.items():
                if stream.last_ts_s != float("-inf"):
                    yield f"{prefix}/{field}", stream.last_ts_s
                for watch in stream.watches:
                    yield f"{prefix}/{field}/{watch.binding.key}", watch.get_state()

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a ``to_json`` checkpoint and rebuild the streams it names."""
        if data.get("version") != _FORMAT_VERSION or not isinstance(data.get("streams"), dict):
            log.warning("ignoring detection checkpoint of unknown format")
            return
        self._saved = dict(data["streams"])
        sensors = {tuple(key.split("/")[:3]) for key in self._saved if key.count("/") >= 3}
        for site, device, name in sorted(sensors):
            self._sensor(site, device, name)

    @property
    def detector_names(self) -> list[str]:
        return sorted(REGISTRY)
