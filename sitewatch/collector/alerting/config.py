"""The ``alerting:`` section of the collector config: teams, routes, timings and channels.

Teams have members; a member is reached through apprise URLs written in the file
(``apprise``), read from a file (``apprise_file``, one URL per line, ``#`` comments) or from
an environment variable (``apprise_env``, URLs separated by spaces), so URLs with passwords
need never be in the config. Routes are tried in order and the first whose ``match`` fits
the alert wins; the last must match everything (``match: {}``), so no alert is dropped.
A route's ``levels`` are escalation levels, each one team (or a list of teams).

``AlertingConfig.issues()`` lists what a schema cannot see (unknown teams, a missing default
route, unreadable secret files), each with its path (``alerting.routes[1].levels[0]``);
``parse_alerting`` does both steps for a bare mapping.

>>> config = parse_alerting({
...     "teams": [{"name": "refrigeration", "members": [{"name": "Ana",
...                "apprise": ["mailto://ana:pw@smtp.example.com?to=ana@example.com"]}]}],
...     "routes": [{"match": {}, "levels": ["refrigeration"]}]})
>>> config.routes[0].levels, config.renotify_interval_s
(['refrigeration'], 14400.0)
>>> parse_alerting({"teams": [], "routes": [{"levels": ["nobody"]}]})
Traceback (most recent call last):
...
sitewatch.configfile.ConfigError: invalid configuration:
  alerting.routes[0].levels[0]: unknown team 'nobody'; no teams are defined
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from sitewatch.collector.alerting.webauth import MIN_TOKEN_CHARS, users_file_problems
from sitewatch.collector.rules import Severity
from sitewatch.configfile import (
    ConfigError,
    ConfigIssue,
    Section,
    read_secret,
    secret_file_issues,
    validate,
)

__all__ = [
    "AlertingConfig",
    "AlertmanagerConfig",
    "MemberConfig",
    "MqttAlertsConfig",
    "RouteConfig",
    "RouteMatch",
    "SelfCheckConfig",
    "TeamConfig",
    "WebConfig",
    "parse_alerting",
]

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]

_URL_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


def _url_problem(url: str) -> str | None:
    # Never echo the URL: it may carry a password.
    if _URL_SHAPE.match(url):
        return None
    return "not an apprise URL (expected scheme://…; the value is not shown, it may be secret)"


def _checked_url(url: str) -> str:
    problem = _url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


AppriseUrl = Annotated[str, AfterValidator(_checked_url)]


def _split_urls(text: str, *, lines: bool) -> list[str]:
    if lines:
        rows = (row.strip() for row in text.splitlines())
        return [row for row in rows if row and not row.startswith("#")]
    return text.split()


def _source_issues(path: str, urls: list[str]) -> list[ConfigIssue]:
    if not urls:
        return [ConfigIssue(path, "holds no URL")]
    return [
        ConfigIssue(path, f"URL {index + 1}: {problem}")
        for index, url in enumerate(urls)
        if (problem := _url_problem(url))
    ]


class MemberConfig(Section):
    """A person: ``name`` and where to reach them (at least one of ``apprise``,
    ``apprise_file``, ``apprise_env``; they add up)."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    apprise: list[AppriseUrl] = Field(default_factory=list)
    apprise_file: Path | None = None
    apprise_env: EnvName | None = None

    @model_validator(mode="after")
    def _reachable(self) -> MemberConfig:
        if not self.apprise and self.apprise_file is None and self.apprise_env is None:
            raise ValueError("give apprise, apprise_file or apprise_env: how to reach them")
        return self

    def urls(self) -> tuple[str, ...]:
        """Every apprise URL of this member, secrets read now (at start-up).

        ``OSError`` if ``apprise_file`` cannot be read (``issues`` reports that first)."""
        urls = list(self.apprise)
        if self.apprise_file is not None:
            urls += _split_urls(self.apprise_file.read_text(), lines=True)
        if self.apprise_env is not None:
            urls += _split_urls(os.environ.get(self.apprise_env, ""), lines=False)
        return tuple(dict.fromkeys(urls))

    def issues(self, path: str) -> list[ConfigIssue]:
        problems = secret_file_issues(
            {f"{path}.apprise_file": self.apprise_file}, {f"{path}.apprise_env": self.apprise_env}
        )
        if problems:
            return problems
        if self.apprise_file is not None:
            found = _split_urls(self.apprise_file.read_text(), lines=True)
            problems += _source_issues(f"{path}.apprise_file", found)
        if self.apprise_env is not None:
            found = _split_urls(os.environ.get(self.apprise_env, ""), lines=False)
            problems += _source_issues(f"{path}.apprise_env", found)
        return problems


class TeamConfig(Section):
    """A team: a ``name`` that routes refer to, and its ``members``."""

    name: Name
    members: Annotated[list[MemberConfig], Field(min_length=1)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RouteMatch(Section):
    """Which alerts a route takes; every given criterion must hold (empty: all alerts).

    ``audience``: ``technician`` (equipment problems) or ``installer`` (sensor faults).
    ``severity``: a list (or one) of info/warning/critical. ``rule``: glob(s) on the rule
    name. ``site``/``device``/``sensor``: globs (``cold-*``). ``labels``: the sensor's labels,
    each value a glob (``{zone: cold-room}``).
    """

    audience: Literal["technician", "installer"] | None = None
    severity: list[Severity] | None = None
    rule: list[str] | None = None
    site: str = "*"
    device: str = "*"
    sensor: str = "*"
    labels: dict[str, str] = Field(default_factory=dict)

    _lists = field_validator("severity", "rule", mode="before")(_as_list)

    @property
    def matches_everything(self) -> bool:
        return (
            self.audience is None
            and self.severity is None
            and (self.rule is None or "*" in self.rule)
            and self.site == self.device == self.sensor == "*"
            and not self.labels
        )


class RouteConfig(Section):
    """One route: ``match``, the escalation ``levels`` (team names, in order; a level may
    be a list of teams), ``escalate_after_s`` (unacknowledged this long at a level → the
    next one; default: never) and ``pending_s`` (hold a new alert this long before telling
    anyone, in case it clears; default 0)."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    levels: Annotated[list[str | list[str]], Field(min_length=1)]
    escalate_after_s: Annotated[float, Field(gt=0)] | None = None
    pending_s: Annotated[float, Field(ge=0, le=86400)] = 0.0

    def level_teams(self) -> list[list[str]]:
        return [[level] if isinstance(level, str) else list(level) for level in self.levels]


class MqttAlertsConfig(Section):
    """Alerts as retained MQTT messages under ``sitewatch/v1/<site>/alerts/...``."""

    enabled: bool = True
    """Publish them (retained while open, cleared on resolve)."""


class AlertmanagerConfig(Section):
    """Push alerts to a Prometheus Alertmanager (API v2) at ``url``; firing alerts are
    posted again every ``resend_interval_s`` (default 60 s), as Alertmanager expects."""

    url: HttpUrl
    resend_interval_s: Annotated[float, Field(ge=10, le=3600)] = 60.0
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """How long one request to Alertmanager may take (seconds)."""


class SelfCheckConfig(Section):
    """The collector watching itself: an internal alert (site ``_collector``) when readings
    arrive but no rule was evaluated for ``max_idle_s`` (default 600 s), or when a
    notification channel failed ``notifier_failures`` times in a row (default 5)."""

    enabled: bool = True
    """Watch the collector itself (default true)."""
    max_idle_s: Annotated[float, Field(gt=0)] = 600.0
    notifier_failures: Annotated[int, Field(ge=1, le=1000)] = 5


class WebConfig(Section):
    """The collector's web page (``alerting.web``): open alerts, ack/resolve/silence, charts
    and device states, for phones (``sitewatch.collector.alerting.web``). Off by default.

    ``host``/``port`` (default 127.0.0.1:8080; port 0 takes any free port) is where it
    listens: keep it on loopback behind a TLS reverse proxy, or bind the LAN address on a
    trusted network. People log in with a name and password from ``users_file`` (one
    ``name:scrypt$…`` line each, made with ``webauth.users_file_line``); scripts send
    ``Authorization: Bearer <token>`` with the token read from ``token_file`` (first line) or
    the environment variable ``token_env`` (at least 16 characters). At least one of the two
    is required. A login lasts ``session_ttl_s`` (default 12 h). ``secure_cookies`` marks the
    session cookie ``Secure`` (set it when the page is served over https).
    """

    enabled: bool = False
    """Serve the page (default false)."""
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    users_file: Path | None = None
    token_file: Path | None = None
    token_env: EnvName | None = None
    session_ttl_s: Annotated[float, Field(ge=60, le=30 * 86400)] = 43200.0
    secure_cookies: bool = False

    def issues(self, path: str = "alerting.web") -> list[ConfigIssue]:
        """What a schema cannot see: a way in, readable secrets, a well-formed users file
        and a long enough token (nothing when disabled)."""
        if not self.enabled:
            return []
        if self.users_file is None and self.token_file is None and self.token_env is None:
            return [ConfigIssue(f"{path}.users_file", "the web page needs users_file, "
                                "token_file or token_env: otherwise nobody can log in")]
        if self.token_file is not None and self.token_env is not None:
            return [ConfigIssue(f"{path}.token_file", "give token_file or token_env, not both")]
        problems = secret_file_issues(
            {f"{path}.users_file": self.users_file, f"{path}.token_file": self.token_file},
            {f"{path}.token_env": self.token_env},
        )
        if problems:
            return problems
        if self.users_file is not None:
            problems += [ConfigIssue(f"{path}.users_file", problem)
                         for problem in users_file_problems(self.users_file.read_text())]
        token = read_secret(self.token_file, self.token_env)
        if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
            at = f"{path}.token_file" if self.token_file is not None else f"{path}.token_env"
            problems.append(ConfigIssue(at, f"the token must have at least {MIN_TOKEN_CHARS} "
                                        "characters (the value is not shown)"))
        return problems


class AlertingConfig(Section):
    """The ``alerting`` section; see the module docstring and the example config.

    ``public_url``: the collector's web page, for the links in messages.
    ``renotify_interval_s`` (default 4 h): the least time between two messages to people
    about one problem: a reminder for a still-firing, unacknowledged alert comes this long
    after the last message, and a problem that clears and comes back within it (flapping)
    continues the same alert without a new message.
    ``notify_resolved`` (default false): also tell people when a problem cleared by itself.
    That message is held for ``resolve_quiet_s`` (default 900 s) and dropped if the problem
    comes back meanwhile (it then continues the same alert, silently); once people were told
    it cleared, a return is a new alert and a new message.
    """

    enabled: bool = True
    """False keeps the section but sends nothing, as without it: decisions are only logged
    and stored."""
    public_url: HttpUrl | None = None
    renotify_interval_s: Annotated[float, Field(ge=60)] = 14400.0
    notify_resolved: bool = False
    resolve_quiet_s: Annotated[float, Field(ge=0, le=86400)] = 900.0
    teams: list[TeamConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    mqtt: MqttAlertsConfig = Field(default_factory=MqttAlertsConfig)
    alertmanager: AlertmanagerConfig | None = None
    self_check: SelfCheckConfig = Field(default_factory=SelfCheckConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    def issues(self, path: str = "alerting") -> list[ConfigIssue]:
        """Problems a schema cannot see, each with its path (nothing when disabled)."""
        if not self.enabled:
            return []
        problems: list[ConfigIssue] = self.web.issues(f"{path}.web")
        names = [team.name for team in self.teams]
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                problems.append(ConfigIssue(f"{path}.teams[{index}].name",
                                            f"team {name!r} is defined twice"))
            seen.add(name)
        for t_index, team in enumerate(self.teams):
            for m_index, member in enumerate(team.members):
                problems += member.issues(f"{path}.teams[{t_index}].members[{m_index}]")
        known = sorted(seen)
        for r_index, route in enumerate(self.routes):
            where = f"{path}.routes[{r_index}]"
            for l_index, level in enumerate(route.levels):
                teams = [level] if isinstance(level, str) else level
                if not teams:
                    problems.append(ConfigIssue(f"{where}.levels[{l_index}]", "names no team"))
                for t_index, team_name in enumerate(teams):
                    if team_name in seen:
                        continue
                    at = f"{where}.levels[{l_index}]"
                    at += "" if isinstance(level, str) else f"[{t_index}]"
                    expected = f"teams are {known}" if known else "no teams are defined"
                    problems.append(ConfigIssue(at, f"unknown team {team_name!r}; {expected}"))
            if route.match.matches_everything and r_index != len(self.routes) - 1:
                problems.append(ConfigIssue(
                    f"{where}.match",
                    "matches every alert, so the routes after it are never used; "
                    "put the default route last",
                ))  # fmt: skip
        if not self.routes or not self.routes[-1].match.matches_everything:
            problems.append(ConfigIssue(
                f"{path}.routes",
                "a default route is required: end with a route whose match is {} so no "
                "alert is dropped",
            ))  # fmt: skip
        return problems


def parse_alerting(data: Any, source: str | None = None) -> AlertingConfig:
    """Validate a bare ``alerting`` mapping (schema, then ``issues``); ``ConfigError``
    listing every problem, paths prefixed with ``alerting``."""
    if not isinstance(data, dict):
        raise ConfigError.single("alerting", "must be a mapping of keys", source)
    wrapped = validate(
        _Wrapper,
        {"alerting": data},
        source,
        ConfigError,
        checks=lambda config: config.alerting.issues("alerting"),
    )
    return wrapped.alerting


class _Wrapper(Section):
    """Lets pydantic's error paths start at ``alerting`` as they do in the whole file."""

    alerting: AlertingConfig
