"""Detection rules: which detectors watch which streams, with which parameters and policy.

A stream is one field of one sensor, keyed by (site, device, sensor, field). A rule selects
streams with glob patterns on site, device and sensor and exact values of the sensor's
labels (from its birth message), names the fields it applies to, and binds detectors (by
registered name, with parameters) and a policy. Several rules may select the same stream;
their detectors add up, and when two rules bind the same detector to the same stream under
the same rule name the later one wins.

A ``profile`` fills in the fields, detectors and severity for a kind of equipment
(``PROFILES``: cold room, freezer, server room, HVAC compressor, door); the rule's own
``detectors`` are merged over the profile's, parameter by parameter, so ``profile: cold_room``
with ``detectors: {threshold: {above: 9.0}}`` keeps the profile's clear level and duration.

Unless ``defaults: false``, ``DEFAULT_RULES`` come first: sensor health (implausible values,
a stuck value, silence) on every climate field, and the general anomaly score on climate
and duty-cycle fields.

Besides the fields agents send, two are derived for every climate reading:
``dew_point_margin_c`` (air temperature minus dew point, °C: how far a surface at air
temperature is from condensation) and the pseudo-field ``reading`` (1.0 for every reading
of the sensor that holds a measurement: quality ``ok`` or ``degraded``), which is what
``silence`` watches, so a dead sensor that still reports ``fault`` falls silent too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from sitewatch.collector.detectors import REGISTRY, DetectorParams
from sitewatch.configfile import ConfigIssue, Section, issues_from

__all__ = [
    "DEFAULT_RULES",
    "PROFILES",
    "Binding",
    "DetectionConfig",
    "PolicyConfig",
    "RuleConfig",
    "RuleSet",
    "Severity",
]

Severity = Literal["info", "warning", "critical"]

STREAM_FIELDS = frozenset(
    {
        "temperature_c", "humidity_pct", "dew_point_c", "dew_point_margin_c", "reading",
        "running", "open", "vibrating", "active", "duty_cycle_pct", "starts_per_h",
        "runtime_h",
    }
)  # fmt: skip
"""Every field a rule may watch."""

# Detectors about the sensor rather than what it measures: their alerts go to installers.
SENSOR_FAULT_DETECTORS = frozenset({"plausibility", "flatline", "silence"})


class PolicyConfig(Section):
    """How scores become decisions, per (stream, rule, detector).

    A score at or above ``fire_at`` (default 0.5) is a hit. The alert fires when ``hits`` of
    the last ``window`` scores (default 1 of 1) are hits, and resolves after ``clear_after``
    consecutive scores below ``clear_at`` (default 0.5 and 3). After resolving, the same
    alert does not fire again for ``cooldown_s`` (default 900 s), so a flapping stream
    raises one alert, not one per flap.
    """

    fire_at: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    clear_at: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    hits: Annotated[int, Field(ge=1, le=60)] = 1
    window: Annotated[int, Field(ge=1, le=60)] = 1
    clear_after: Annotated[int, Field(ge=1, le=1000)] = 3
    cooldown_s: Annotated[float, Field(ge=0.0)] = 900.0

    def issues(self, path: str) -> list[ConfigIssue]:
        problems = []
        if self.hits > self.window:
            problems.append(ConfigIssue(f"{path}.hits", "must not exceed window"))
        if self.clear_at > self.fire_at:
            problems.append(ConfigIssue(f"{path}.clear_at", "must not exceed fire_at"))
        return problems


class MatchConfig(Section):
    """Which sensors a rule applies to: shell-style globs (``cold-*``) and exact labels.

    ``site``, ``device``, ``sensor``: globs (default ``*``, all). ``labels``: label → the
    value the sensor's label must have (``{zone: kitchen}``).
    """

    site: str = "*"
    device: str = "*"
    sensor: str = "*"
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, site: str, device: str, sensor: str, labels: Mapping[str, str]) -> bool:
        return (
            fnmatch.fnmatchcase(site, self.site)
            and fnmatch.fnmatchcase(device, self.device)
            and fnmatch.fnmatchcase(sensor, self.sensor)
            and all(labels.get(key) == value for key, value in self.labels.items())
        )


@dataclass(frozen=True)
class Profile:
    """Preset fields, detectors (per field) and severity for a kind of equipment."""

    detectors: Mapping[str, Mapping[str, Mapping[str, Any]]]  # field → detector → params
    severity: Severity
    description: str


PROFILES: dict[str, Profile] = {
    "cold_room": Profile(
        {
            "temperature_c": {
                "threshold": {"above": 8.0, "clear_above": 7.0, "for_s": 600.0},
                "forecast": {"limit": 8.0, "direction": "above"},
            },
        },
        "critical",
        "chilled food store: 0-5 °C, alert above 8 °C for 10 min, forecast the crossing",
    ),
    "freezer": Profile(
        {
            "temperature_c": {
                "threshold": {"above": -15.0, "clear_above": -16.0, "for_s": 900.0},
                "forecast": {"limit": -15.0, "direction": "above"},
            },
        },
        "critical",
        "frozen store near -18 °C, alert above -15 °C for 15 min, forecast the crossing",
    ),
    "server_room": Profile(
        {
            # ASHRAE's recommended envelope for IT equipment: 18-27 °C.
            "temperature_c": {
                "threshold": {"above": 27.0, "clear_above": 26.0, "for_s": 300.0},
                "forecast": {"limit": 27.0, "direction": "above"},
            },
            "humidity_pct": {
                "threshold": {
                    "above": 80.0, "clear_above": 75.0, "below": 20.0, "clear_below": 25.0,
                    "for_s": 900.0,
                },
            },
            "dew_point_margin_c": {"condensation": {}},
        },
        "warning",
        "IT room: 18-27 °C, 20-80 % RH, condensation risk",
    ),
    "hvac_compressor": Profile(
        {
            "running": {"short_cycling": {}},
            "duty_cycle_pct": {"duty_drift": {}},
            "runtime_h": {"service_interval": {}},
        },
        "warning",
        "compressor run contact: short-cycling, duty-cycle drift, service interval",
    ),
    "door": Profile(
        {"open": {"door_open": {}}},
        "warning",
        "door or hatch contact: open longer than allowed",
    ),
}


class RuleConfig(Section):
    """One rule: which sensors and fields, watched by which detectors, under which policy.

    ``name`` becomes the ``rule`` tag of alerts.
    """

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    match: MatchConfig = Field(default_factory=MatchConfig)
    profile: str | None = None
    """A preset for a kind of equipment (``cold_room``…): fields, detectors and severity."""
    fields: list[str] = Field(default_factory=list)
    """The fields it watches (``temperature_c``…; default: the profile's)."""
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Detector name → its parameters (``threshold: {above: 8.0}``), merged over the
    profile's parameter by parameter."""
    severity: Severity | None = None
    """``info``, ``warning`` or ``critical`` (default: the profile's, else ``warning``)."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value is not None and value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; expected one of {sorted(PROFILES)}")
        return value

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in STREAM_FIELDS]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; expected one of "
                             f"{sorted(STREAM_FIELDS)}")
        return value

    def field_detectors(self) -> dict[str, dict[str, dict[str, Any]]]:
        """field → detector → raw parameters: the profile's, with the rule's merged over."""
        result: dict[str, dict[str, dict[str, Any]]] = {}
        if self.profile is not None:
            for name, detectors in PROFILES[self.profile].detectors.items():
                if self.fields and name not in self.fields:
                    continue
                result[name] = {det: dict(params) for det, params in detectors.items()}
        for name in self.fields or list(result):
            per_field = result.setdefault(name, {})
            for det, params in self.detectors.items():
                per_field[det] = {**per_field.get(det, {}), **params}
        return result

    @property
    def effective_severity(self) -> Severity:
        if self.severity is not None:
            return self.severity
        return PROFILES[self.profile].severity if self.profile else "warning"


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "sensor-health",
        "fields": ["temperature_c", "humidity_pct"],
        "detectors": {"plausibility": {}, "flatline": {}},
        "severity": "warning",
    },
    {
        "name": "sensor-silent",
        "fields": ["reading"],
        "detectors": {"silence": {}},
        "severity": "warning",
    },
    {
        "name": "unusual",
        "fields": ["temperature_c", "humidity_pct", "duty_cycle_pct"],
        "detectors": {"anomaly": {}},
        "severity": "info",
    },
)
"""Applied before the configured rules unless ``detection.defaults`` is false."""


class DetectionConfig(Section):
    """The ``detection`` section of the collector config.

    ``enabled`` (default true) runs detection on every reading. ``defaults`` (default true)
    puts ``DEFAULT_RULES`` before ``rules``. Detector states and alert policies are
    checkpointed to the state dir every ``checkpoint_interval_s`` (default 60 s) and on
    stop. ``write_scores`` (default true) writes the ``anomaly`` measurement: points per
    scored field while any of its detectors scores 0.1 or more, and one when it returns.
    ``process`` (default true) runs detection in a child process of the collector, so that
    ingest and detection use two cores (``sitewatch.collector.detection_worker``); false
    runs it inline, on the ingest thread.
    """

    enabled: bool = True
    process: bool = True
    defaults: bool = True
    rules: list[RuleConfig] = Field(default_factory=list)
    checkpoint_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    write_scores: bool = True

    def all_rules(self) -> list[RuleConfig]:
        defaults = [RuleConfig.model_validate(rule) for rule in DEFAULT_RULES]
        return (defaults if self.defaults else []) + list(self.rules)

    def issues(self, path: str = "detection") -> list[ConfigIssue]:
        """Problems a schema cannot see: unknown detectors and their bad parameters."""
        problems: list[ConfigIssue] = []
        for index, rule in enumerate(self.rules):
            where = f"{path}.rules[{index}]"
            problems += rule.policy.issues(f"{where}.policy")
            if not rule.profile and not rule.fields:
                problems.append(ConfigIssue(f"{where}.fields", "name at least one field "
                                            "(or a profile)"))
            if not rule.profile and not rule.detectors:
                problems.append(ConfigIssue(f"{where}.detectors", "name at least one detector "
                                            "(or a profile)"))
            for field_name, detectors in rule.field_detectors().items():
                for det, params in detectors.items():
                    problems += _param_issues(f"{where}.detectors.{det}", det,
                                              with_field(det, params, field_name))
        # One issue per bad key, not one per field the rule covers.
        return list(dict.fromkeys(problems))


def with_field(detector: str, params: Mapping[str, Any], field_name: str) -> dict[str, Any]:
    """``params``, plus the stream's field for detectors whose defaults depend on it
    (``plausibility`` knows the physical range of ``humidity_pct``)."""
    kind = REGISTRY.get(detector)
    if kind is not None and "field" in kind.params.model_fields and "field" not in params:
        return {**params, "field": field_name}
    return dict(params)


def _param_issues(path: str, detector: str, params: Mapping[str, Any]) -> list[ConfigIssue]:
    kind = REGISTRY.get(detector)
    if kind is None:
        return [ConfigIssue(path, f"unknown detector; expected one of {sorted(REGISTRY)}")]
    try:
        kind.params.model_validate(params)
    except ValidationError as error:
        return [
            ConfigIssue(f"{path}.{issue.path}" if issue.path else path, issue.message)
            for issue in issues_from(error)
        ]
    return []


@dataclass(frozen=True)
class Binding:
    """A detector bound to a stream by a rule, with everything a decision needs."""

    rule: str
    detector: str
    params: DetectorParams
    policy: PolicyConfig
    severity: Severity

    @property
    def key(self) -> str:
        return f"{self.rule}/{self.detector}"

    @property
    def audience(self) -> str:
        """Who acts on it: installers fix sensors, technicians fix equipment."""
        return "installer" if self.detector in SENSOR_FAULT_DETECTORS else "technician"


class RuleSet:
    """The rules compiled for lookups: ``bindings(site, device, sensor, labels)`` gives,
    per field, the detectors to run (in rule order, one per rule and detector name)."""

    def __init__(self, config: DetectionConfig) -> None:
        self._rules: list[tuple[RuleConfig, dict[str, list[Binding]]]] = []
        for rule in config.all_rules():
            per_field: dict[str, list[Binding]] = {}
            for field_name, detectors in rule.field_detectors().items():
                per_field[field_name] = [
                    Binding(
                        rule.name,
                        det,
                        REGISTRY[det].params.model_validate(with_field(det, params, field_name)),
                        rule.policy,
                        rule.effective_severity,
                    )
                    for det, params in detectors.items()
                ]
            self._rules.append((rule, per_field))

    def bindings(
        self, site: str, device: str, sensor: str, labels: Mapping[str, str]
    ) -> dict[str, list[Binding]]:
        chosen: dict[str, dict[str, Binding]] = {}
        for rule, per_field in self._rules:
            if not rule.match.matches(site, device, sensor, labels):
                continue
            for field_name, bindings in per_field.items():
                slot = chosen.setdefault(field_name, {})
                for binding in bindings:
                    slot[binding.key] = binding
        return {name: list(slot.values()) for name, slot in chosen.items() if slot}
