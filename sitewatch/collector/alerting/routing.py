"""Who hears about an alert: the first route whose match fits it, and that route's
escalation levels turned into contacts. A person is known by name: someone in two teams of
one level is told once.

A route matches on the alert's audience, severity, rule (globs), site/device/sensor (globs)
and the sensor's labels (each value a glob); every given criterion must hold. Levels are
teams; level 0 is told first, level 1 when nobody acknowledged within the route's
``escalate_after_s``, and so on. Contacts carry their apprise URLs, read once when the
router is built (at start-up), so a secret file is not read on every alert.

>>> from sitewatch.collector.alerting.config import parse_alerting
>>> router = Router(parse_alerting({
...     "teams": [
...         {"name": "fridge", "members": [{"name": "Ana", "apprise": ["ntfy://ntfy.sh/ana"]}]},
...         {"name": "boss", "members": [{"name": "Bo", "apprise": ["ntfy://ntfy.sh/bo"]}]}],
...     "routes": [
...         {"match": {"labels": {"zone": "cold-*"}, "severity": "critical"},
...          "levels": ["fridge", "boss"], "escalate_after_s": 900},
...         {"match": {}, "levels": ["fridge"]}]}))
>>> route = router.route(Target("a", "pi", "t1", "cold-room", "critical", "technician",
...                             {"zone": "cold-store"}))
>>> route.index, route.escalate_after_s, [c.name for c in route.contacts(1)]
(0, 900.0, ['Bo'])
>>> router.route(Target("a", "pi", "t1", "cold-room", "warning", "technician", {})).index
1
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from sitewatch.collector.alerting.config import AlertingConfig, RouteConfig, RouteMatch
from sitewatch.collector.alerting.model import Alert, Contact

__all__ = ["Route", "Router", "Target", "matches"]


@dataclass(frozen=True)
class Target:
    """What routing looks at (an ``Alert`` has all of these too)."""

    site: str
    device: str
    sensor: str
    rule: str
    severity: str
    audience: str
    labels: Mapping[str, str]


def matches(match: RouteMatch, target: Target | Alert) -> bool:
    """Whether every criterion of ``match`` holds for ``target``."""
    if match.audience is not None and target.audience != match.audience:
        return False
    if match.severity is not None and target.severity not in match.severity:
        return False
    if match.rule is not None and not any(
        fnmatch.fnmatchcase(target.rule, pattern) for pattern in match.rule
    ):
        return False
    if not (
        fnmatch.fnmatchcase(target.site, match.site)
        and fnmatch.fnmatchcase(target.device, match.device)
        and fnmatch.fnmatchcase(target.sensor, match.sensor)
    ):
        return False
    return all(
        key in target.labels and fnmatch.fnmatchcase(target.labels[key], pattern)
        for key, pattern in match.labels.items()
    )


@dataclass(frozen=True)
class Route:
    """The route an alert took: its position in the config (``index``), its escalation
    ``levels`` as contacts, and its timings."""

    index: int
    levels: tuple[tuple[Contact, ...], ...]
    escalate_after_s: float | None
    pending_s: float

    @property
    def last_level(self) -> int:
        return len(self.levels) - 1

    def contacts(self, level: int) -> tuple[Contact, ...]:
        """The people of one level (the last level beyond it)."""
        if not self.levels:
            return ()
        return self.levels[min(max(level, 0), self.last_level)]

    def contacts_through(self, level: int) -> tuple[Contact, ...]:
        """Everyone from level 0 to ``level``, each person once: who has been told so far."""
        seen: dict[str, Contact] = {}
        for index in range(min(max(level, 0), self.last_level) + 1):
            for contact in self.levels[index]:
                seen.setdefault(contact.name, contact)
        return tuple(seen.values())


_NOWHERE = Route(index=-1, levels=(), escalate_after_s=None, pending_s=0.0)


class Router:
    """The routes of one ``AlertingConfig``, with contacts resolved; see the module
    docstring. Reads secret files and variables when built (``OSError`` if a file
    cannot be read: the config's ``issues`` reports that first)."""

    def __init__(self, config: AlertingConfig) -> None:
        teams: dict[str, tuple[Contact, ...]] = {
            team.name: tuple(Contact(member.name, team.name, member.urls())
                             for member in team.members)
            for team in config.teams
        }  # fmt: skip
        self._routes = [
            (route, self._build(index, route, teams)) for index, route in enumerate(config.routes)
        ]

    @staticmethod
    def _build(index: int, route: RouteConfig, teams: Mapping[str, tuple[Contact, ...]]) -> Route:
        levels = []
        for names in route.level_teams():
            people: dict[str, Contact] = {}  # a person in two teams of a level: told once
            for name in names:
                for contact in teams.get(name, ()):
                    people.setdefault(contact.name, contact)
            levels.append(tuple(people.values()))
        return Route(index, tuple(levels), route.escalate_after_s, route.pending_s)

    def route(self, target: Target | Alert) -> Route:
        """The first matching route; a route to nobody if none matches (the config's
        required default route makes that impossible in a validated config)."""
        for config, route in self._routes:
            if matches(config.match, target):
                return route
        return _NOWHERE
