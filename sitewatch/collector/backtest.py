"""Backtests: replay stored readings through a set of rules and see what would have fired,
so a threshold change can be tried before it wakes anyone at 3 am.

``run_backtest`` reads every sensor's stored readings (measurements ``environment`` and
``equipment``) from InfluxDB for a period, one window at a time (``window_s``, default 6 h,
so weeks of data never sit in memory at once), puts them in time order and feeds them to a
fresh ``Detection`` as the live collector would. Its ``tick`` runs between readings at about
the readings' own cadence (``tick_s``), so detectors that watch time pass (silence, a door
left open) see it. Every fire/resolve decision is kept, and each one goes on to an
``AlertEngine`` on a throw-away SQLite store, with a clock that follows the replayed time and
a dispatcher that only counts: the result says which alerts would have opened and how many
messages would have reached people. Nothing is sent anywhere.

What is replayed is what live detection saw: telemetry readings. The points a state-change
event adds to ``equipment`` (they carry no ``quality``) are left out. Labels come from the
stored tags (``label_<name>``, written for a label that shadowed a schema key, reads back as
``<name>``), so rules and routes that match labels work; a sensor whose labels changed is
replayed with the labels of its latest series in each window. Detectors start fresh, as at a
collector's first start: learning detectors (``anomaly``) warm up at the start of the period.

The rules file (``load_rules``) is YAML: either ``detection:`` (the shape of the collector's
config; optionally with ``alerting:`` beside it) or that section's keys at top level
(``rules:`` …, optionally with ``alerting:``). In the second form the built-in default rules
are left out unless the file says ``defaults: true``: the file names the rules to try.
``enabled`` is ignored. Without an ``alerting`` section the collector config's one is used
when it has one; without any, alerts are still grouped, but nobody is counted as told.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting.commands import parse_duration
from sitewatch.collector.alerting.config import AlertingConfig, SelfCheckConfig
from sitewatch.collector.alerting.engine import AlertEngine
from sitewatch.collector.alerting.message import utc_text
from sitewatch.collector.alerting.model import Alert, Notification
from sitewatch.collector.alerting.store import ALERTS_FILE, AlertStore
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision
from sitewatch.collector.detection import Detection
from sitewatch.collector.influxql import InfluxQuery
from sitewatch.collector.rules import DetectionConfig
from sitewatch.collector.stored_readings import (
    SensorKey,
    StoredReadings,
    cadence_s,
    reading_from_point,
)
from sitewatch.configfile import ConfigError, ConfigIssue, Section, load_yaml, validate
from sitewatch.wire import TelemetryMessage

__all__ = [
    "BacktestResult",
    "Page",
    "RulesFile",
    "backtest_command",
    "load_rules",
    "render_text",
    "run_backtest",
]

DEFAULT_WINDOW_S = 6 * 3600.0
"""How much stored data is read (and held) at a time: 6 h."""
MIN_TICK_S, MAX_TICK_S = 1.0, 60.0
"""Bounds of the automatic tick step (s): the live collector ticks every 1 s; 60 s is fine
enough for silence and door detectors, whose limits are minutes."""
ENGINE_TICK_S = 30.0
"""The alert engine's time steps (pending, escalation, reminders) are checked at most this
often (s of replayed time): each check is a SQLite transaction that reads every open alert
(most of a replay's cost at 10 s), and its timings are minutes."""

_QUIET_LOGGERS = ("sitewatch.collector.detection", "sitewatch.collector.alerting.engine")


# -- the rules file ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RulesFile:
    """A validated rules file: the detection section to replay and, if it has one, the
    alerting section to count notifications with."""

    detection: DetectionConfig
    alerting: AlertingConfig | None
    source: str


class _WrappedRules(Section):
    detection: DetectionConfig
    alerting: AlertingConfig | None = None


class _BareRules(DetectionConfig):
    defaults: bool = False
    alerting: AlertingConfig | None = None


def _no_rules(config: DetectionConfig, path: str) -> list[ConfigIssue]:
    if config.all_rules():
        return []
    return [ConfigIssue(path, "no rules to replay; list at least one")]


def _alerting_issues(alerting: AlertingConfig | None) -> list[ConfigIssue]:
    return [] if alerting is None else alerting.issues("alerting")


def load_rules(path: Path | str) -> RulesFile:
    """Read and validate a rules file (see the module docstring); ``ConfigError`` listing
    every problem by its path in the file (``detection.rules[0].detectors.threshold.above``)."""
    data, source = load_yaml(path)
    if "detection" in data:
        wrapped = validate(
            _WrappedRules, data, source, ConfigError,
            checks=lambda f: f.detection.issues("detection")
            + _no_rules(f.detection, "detection.rules") + _alerting_issues(f.alerting),
        )  # fmt: skip
        detection, alerting = wrapped.detection, wrapped.alerting
    else:
        bare = validate(
            _BareRules, data, source, ConfigError,
            checks=lambda f: [
                ConfigIssue(issue.path.removeprefix("."), issue.message)
                for issue in f.issues("")
            ] + _no_rules(f, "rules") + _alerting_issues(f.alerting),
        )  # fmt: skip
        detection = DetectionConfig.model_validate(bare.model_dump(exclude={"alerting"}))
        alerting = bare.alerting
    if alerting is not None and not alerting.enabled:
        alerting = None
    return RulesFile(detection, alerting, source)


# -- the result -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """A notification that would have reached people: when, what kind, which alert, whom."""

    ts_ms: int
    kind: str
    alert_id: str
    key: str
    recipients: tuple[str, ...]


@dataclass
class BacktestResult:
    """What replaying ``[since_ms, until_ms)`` gave.

    ``readings``: readings replayed, of ``sensors`` sensors; ``skipped``: stored points that
    could not be read back as a reading. ``tick_s``: the last tick step used.
    ``decisions``: every fire and resolve, in order. ``alerts``: every alert the engine
    opened (one per problem; ``state`` as at ``until_ms``). ``notifications``: messages to
    people (None when no alerting config was given: nobody to count); ``pages`` lists them.
    """

    since_ms: int
    until_ms: int
    site: str | None
    readings: int = 0
    sensors: int = 0
    skipped: int = 0
    tick_s: float = MAX_TICK_S
    decisions: list[Decision] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    notifications: int | None = None
    pages: list[Page] = field(default_factory=list)

    @property
    def fires(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "fire"]

    @property
    def resolves(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "resolve"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for ``--json``."""
        return {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "site": self.site,
            "readings": self.readings,
            "sensors": self.sensors,
            "skipped": self.skipped,
            "tick_s": self.tick_s,
            "fired": len(self.fires),
            "resolved": len(self.resolves),
            "decisions": [
                {**dataclasses.asdict(d), "key": d.dedupe_key} for d in self.decisions
            ],
            "alerts": [alert.to_dict() for alert in self.alerts],
            "notifications": self.notifications,
            "notifications_by_kind": dict(Counter(page.kind for page in self.pages)),
            "pages": [
                {**dataclasses.asdict(page), "recipients": list(page.recipients)}
                for page in self.pages
            ],
        }


class _CountingDispatcher:
    """Takes the engine's notifications and keeps those meant for people; sends nothing."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pages: list[Page] = []

    def submit(self, notification: Notification) -> bool:
        if notification.recipients:
            self.pages.append(Page(
                int(self.clock.time() * 1000), notification.kind, notification.alert.id,
                notification.alert.key, tuple(c.name for c in notification.recipients),
            ))  # fmt: skip
        return True


@contextmanager
def _quiet() -> Iterator[None]:
    """Detection and the engine log every fire as a warning, which is right live and noise
    in a replay of weeks (the result lists them all)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _Replay:
    """Detection and the engine driven by replayed time."""

    def __init__(
        self, detection: Detection, engine: AlertEngine, clock: FakeClock, start_s: float
    ) -> None:
        self.detection = detection
        self.engine = engine
        self.clock = clock
        self.next_tick_s = start_s
        self.next_engine_s = start_s

    def at(self, now_s: float) -> None:
        if now_s > self.clock.time():
            self.clock.advance(now_s - self.clock.time())

    def until(self, now_s: float, tick_s: float) -> None:
        """Every tick due up to ``now_s`` (inclusive)."""
        while self.next_tick_s <= now_s:
            tick = self.next_tick_s
            self.at(tick)
            self.detection.tick(tick)
            if tick >= self.next_engine_s:
                self.engine.tick(tick)
                self.next_engine_s = tick + max(ENGINE_TICK_S, tick_s)
            self.next_tick_s = tick + tick_s


def run_backtest(
    query: InfluxQuery,
    detection_config: DetectionConfig,
    alerting_config: AlertingConfig | None,
    since_ms: int,
    until_ms: int,
    site: str | None = None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    tick_s: float | None = None,
    page_rows: int = 10_000,
) -> BacktestResult:
    """Replay the readings stored in ``[since_ms, until_ms)`` (of ``site``, or all) through
    ``detection_config``'s rules and ``alerting_config``'s routes; see the module docstring.

    ``window_s``: how much is read at a time (s, default 6 h). ``tick_s``: the step of
    detection's ticks (s; default: the median interval between readings, within 1-60 s).
    ``page_rows``: rows per series per query (keep at or under the server's
    ``max-row-limit``). ``QueryError`` when InfluxDB cannot be read.
    """
    if until_ms <= since_ms:
        raise ValueError(f"nothing to replay: until ({until_ms}) is not after since ({since_ms})")
    if window_s <= 0 or page_rows < 1:
        raise ValueError("window_s must be above 0 and page_rows at least 1")
    result = BacktestResult(since_ms, until_ms, site)
    catalog = SensorCatalog()
    clock = FakeClock(wall_s=since_ms / 1000)
    dispatcher = _CountingDispatcher(clock)
    engine_config = (alerting_config or AlertingConfig()).model_copy(
        update={"self_check": SelfCheckConfig(enabled=False)}
    )
    reader = StoredReadings(query, site, page_rows)
    sensors: set[SensorKey] = set()
    step_s = tick_s if tick_s is not None else MAX_TICK_S
    with tempfile.TemporaryDirectory(prefix="sitewatch-backtest-") as tmp, _quiet():
        store = AlertStore(Path(tmp) / ALERTS_FILE)
        try:
            engine = AlertEngine(engine_config, store, dispatcher=dispatcher, catalog=catalog,
                                 clock=clock)  # fmt: skip

            def decided(decision: Decision) -> None:
                result.decisions.append(decision)
                engine.decided(decision)

            detection = Detection(
                detection_config.model_copy(update={"write_scores": False}), catalog,
                on_decision=decided,
            )  # fmt: skip
            replay = _Replay(detection, engine, clock, since_ms / 1000)
            window_ms = max(1, int(window_s * 1000))
            for start_ms in range(since_ms, until_ms, window_ms):
                window = reader.window(start_ms, min(start_ms + window_ms, until_ms))
                if tick_s is None:
                    cadence = cadence_s(window.points)
                    if cadence is not None:
                        step_s = min(MAX_TICK_S, max(MIN_TICK_S, cadence))
                for (s, d, n), (_, labels) in window.labels.items():
                    catalog.set_sensor(s, d, n, labels=labels)
                items = sorted(
                    (ts_ms, key, point)
                    for key, by_ts in window.points.items()
                    for ts_ms, point in by_ts.items()
                )  # fmt: skip
                del window
                for ts_ms, (s, d, n), point in items:
                    reading = reading_from_point(n, ts_ms, point)
                    if reading is None:
                        if "quality" in point:  # not an event's state: a real loss
                            result.skipped += 1
                        continue
                    replay.until(ts_ms / 1000, step_s)
                    replay.at(ts_ms / 1000)
                    detection.observe(TelemetryMessage.model_construct(
                        site=s, device=d, boot_id="0" * 8, seq=0, historical=True,
                        readings=[reading], health=None,
                    ))  # fmt: skip
                    result.readings += 1
                    sensors.add((s, d, n))
            replay.until(until_ms / 1000, step_s)
            result.alerts = store.history(0)
        finally:
            store.close()
    result.sensors = len(sensors)
    result.tick_s = step_s
    if alerting_config is not None:
        result.pages = dispatcher.pages
        result.notifications = len(dispatcher.pages)
    return result


# -- rendering ---------------------------------------------------------------------------------
def render_text(result: BacktestResult, limit: int = 50) -> str:
    """The result for a terminal: decisions (the first ``limit``), alerts, notifications."""
    where = f"site {result.site}" if result.site else "all sites"
    lines = [
        f"Backtest {utc_text(result.since_ms)} – {utc_text(result.until_ms)}, {where}",
        f"Replayed {result.readings} readings of {result.sensors} sensors "
        f"(ticks every {result.tick_s:g} s)"
        + (f"; {result.skipped} stored points unreadable" if result.skipped else ""),
        "",
        f"Decisions: {len(result.fires)} fired, {len(result.resolves)} resolved",
    ]
    for d in result.decisions[:limit]:
        verdict = "FIRE   " if d.verdict == "fire" else "RESOLVE"
        lines.append(f"  {utc_text(d.ts_ms)}  {verdict}  {d.severity:8s}  {d.dedupe_key}  "
                     f"{d.message}")  # fmt: skip
    if len(result.decisions) > limit:
        lines.append(f"  ({len(result.decisions) - limit} more; --json lists them all)")
    fired = [a for a in result.alerts if a.fired_ms is not None]
    still_open = [a for a in result.alerts if a.is_open]
    lines += ["", f"Alerts: {len(result.alerts)} would have opened ({len(fired)} fired), "
                  f"{len(still_open)} still open at the end"]  # fmt: skip
    for alert in result.alerts[:limit]:
        span = f"from {utc_text(alert.created_ms)}"
        if alert.resolved_ms is not None:
            span += f" to {utc_text(alert.resolved_ms)}"
        told = f"{alert.notify_count} message" + ("" if alert.notify_count == 1 else "s")
        lines.append(f"  {alert.severity:8s}  {alert.key}  {span}  {told}  {alert.message}")
    if len(result.alerts) > limit:
        lines.append(f"  ({len(result.alerts) - limit} more)")
    lines.append("")
    if result.notifications is None:
        lines.append("Notifications: not counted (no alerting config: nobody to tell)")
        return "\n".join(lines)
    kinds = Counter(page.kind for page in result.pages)
    detail = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    lines.append(f"Notifications to people: {result.notifications}"
                 + (f" ({detail})" if detail else ""))  # fmt: skip
    for page in result.pages[:limit]:
        lines.append(f"  {utc_text(page.ts_ms)}  {page.kind:10s}  {page.key}  to "
                     f"{', '.join(page.recipients)}")  # fmt: skip
    if len(result.pages) > limit:
        lines.append(f"  ({len(result.pages) - limit} more)")
    return "\n".join(lines)


# -- the CLI's command ----------------------------------------------------------------------------
def backtest_command(
    config_path: Path | str,
    rules_path: Path | str,
    since: str,
    site: str | None = None,
    *,
    now_s: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """``sitewatch-collector backtest --config F --since 7d --rules FILE [--site S]``: the
    last ``since`` (``7d``, ``12h``, ``1h30m``) up to ``now_s`` (default: now) replayed from the
    collector's InfluxDB through the rules file; ``(text, data)`` for the terminal and
    ``--json``.

    Raises ``ConfigError`` for a bad rules file or collector config (exit 2),
    ``CommandError`` for a ``since`` that does not parse, ``QueryError`` when InfluxDB
    cannot be read.
    """
    from sitewatch.collector.config import load_config

    rules = load_rules(rules_path)
    config = load_config(config_path)
    seconds = parse_duration(since)
    alerting = rules.alerting
    if alerting is None:
        configured = getattr(config, "alerting", None)  # once the collector config has one
        if isinstance(configured, AlertingConfig) and configured.enabled:
            alerting = configured
    until_ms = int((time.time() if now_s is None else now_s) * 1000)
    query = InfluxQuery(config.influx)
    try:
        result = run_backtest(query, rules.detection, alerting, until_ms - int(seconds * 1000),
                              until_ms, site)  # fmt: skip
    finally:
        query.close()
    return render_text(result), result.to_dict()
