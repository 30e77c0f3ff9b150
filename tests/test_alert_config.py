"""The ``alerting`` config section and routing: every problem named by its path, secrets
from files and the environment (never echoed), first-match routing with escalation levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.collector.alerting.config import AlertingConfig, parse_alerting
from sitewatch.collector.alerting.routing import Router, Target
from sitewatch.configfile import ConfigError

EXAMPLE = """
enabled: true
public_url: http://collector.local:8080
renotify_interval_s: 14400
teams:
  - name: refrigeration
    members:
      - name: Ana
        apprise: ["mailto://ana:pass@smtp.example.com?to=ana@example.com"]
  - name: installers
    members: [{name: Ben, apprise: ["ntfy://ntfy.sh/sitewatch-ben"]}]
  - name: managers
    members: [{name: Mo, apprise: ["ntfy://ntfy.sh/sitewatch-mo"]}]
routes:
  - match: {audience: installer}
    levels: [installers]
  - match: {labels: {zone: cold-room}, severity: [critical, warning]}
    levels: [refrigeration, managers]
    escalate_after_s: 900
    pending_s: 0
  - match: {}
    levels: [refrigeration]
mqtt: {enabled: true}
alertmanager: {url: "http://127.0.0.1:9093", resend_interval_s: 60}
self_check: {max_idle_s: 600, notifier_failures: 5}
"""


def _base(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE)
    data.update(overrides)
    return data


def _problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_alerting(data)
    return [str(issue) for issue in caught.value.issues]


def _target(**fields: Any) -> Target:
    values: dict[str, Any] = {
        "site": "plant-a", "device": "pi-01", "sensor": "t1", "rule": "cold-room",
        "severity": "critical", "audience": "technician", "labels": {},
    }  # fmt: skip
    values.update(fields)
    return Target(**values)


def test_alert_config_example_from_the_design_parses() -> None:
    config = parse_alerting(yaml.safe_load(EXAMPLE))
    assert [team.name for team in config.teams] == ["refrigeration", "installers", "managers"]
    assert config.routes[1].match.severity == ["critical", "warning"]
    assert config.routes[1].escalate_after_s == 900.0
    assert config.alertmanager is not None and config.alertmanager.resend_interval_s == 60.0
    assert config.self_check.notifier_failures == 5
    assert config.notify_resolved is False


def test_alert_config_requires_a_default_route() -> None:
    data = _base(routes=[{"match": {"audience": "installer"}, "levels": ["installers"]}])
    assert _problems(data) == [
        "alerting.routes: a default route is required: end with a route whose match is {} "
        "so no alert is dropped"
    ]
    assert "alerting.routes" in _problems(_base(routes=[]))[0]


def test_alert_config_default_route_must_come_last() -> None:
    routes = [{"match": {}, "levels": ["refrigeration"]},
              {"match": {"audience": "installer"}, "levels": ["installers"]}]  # fmt: skip
    problems = _problems(_base(routes=routes))
    assert problems[0].startswith("alerting.routes[0].match: matches every alert")
    assert problems[1].startswith("alerting.routes: a default route is required")


def test_alert_config_unknown_teams_are_named_by_path() -> None:
    routes = [
        {"match": {"audience": "installer"}, "levels": ["instalers"]},
        {"match": {}, "levels": ["refrigeration", ["managers", "owners"]]},
    ]
    assert _problems(_base(routes=routes)) == [
        "alerting.routes[0].levels[0]: unknown team 'instalers'; teams are "
        "['installers', 'managers', 'refrigeration']",
        "alerting.routes[1].levels[1][1]: unknown team 'owners'; teams are "
        "['installers', 'managers', 'refrigeration']",
    ]


def test_alert_config_schema_errors_name_their_path() -> None:
    data = _base(renotify_interval_s=5, colour="red")
    data["teams"][0]["members"][0] = {"name": "Ana"}
    data["teams"].append({"name": "refrigeration", "members": []})
    data["routes"][1]["escalate_after_s"] = 0
    data["routes"][1]["match"]["severity"] = ["critical", "urgent"]
    problems = _problems(data)
    assert "alerting.renotify_interval_s: Input should be greater than or equal to 60 (got 5)" \
        in problems
    assert "alerting.colour: unknown key" in problems
    assert ("alerting.teams[0].members[0]: give apprise, apprise_file or apprise_env: how to "
            "reach them") in problems  # fmt: skip
    assert any(p.startswith("alerting.teams[3].members: List should have at least 1 item")
               for p in problems)  # fmt: skip
    assert any(p.startswith("alerting.routes[1].escalate_after_s:") for p in problems)
    assert any(p.startswith("alerting.routes[1].match.severity[1]:") for p in problems)


def test_alert_config_duplicate_team_names_are_an_error() -> None:
    data = _base()
    data["teams"].append({"name": "managers", "members": [{"name": "X", "apprise": ["a://b"]}]})
    assert _problems(data) == ["alerting.teams[3].name: team 'managers' is defined twice"]


def test_alert_config_never_echoes_a_bad_url_that_may_hold_a_secret() -> None:
    data = _base()
    data["teams"][0]["members"][0]["apprise"] = ["smtp.example.com user:hunter2"]
    problems = _problems(data)
    assert problems[0].startswith("alerting.teams[0].members[0].apprise[0]: not an apprise URL")
    assert all("hunter2" not in problem for problem in problems)


def test_alert_config_reads_urls_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "ana.urls"
    secret.write_text("# Ana's channels\nmailtos://ana:s3cret@smtp.example.com\n\n"
                      "tgram://123:abc/456\n")  # fmt: skip
    monkeypatch.setenv("BEN_URLS", "ntfy://ntfy.sh/ben  json://hooks.example.com/x")
    data = _base()
    data["teams"][0]["members"][0] = {"name": "Ana", "apprise_file": str(secret)}
    data["teams"][1]["members"][0] = {"name": "Ben", "apprise_env": "BEN_URLS",
                                      "apprise": ["ntfy://ntfy.sh/ben"]}  # fmt: skip
    config = parse_alerting(data)
    assert config.teams[0].members[0].urls() == (
        "mailtos://ana:s3cret@smtp.example.com", "tgram://123:abc/456"
    )
    assert config.teams[1].members[0].urls() == (
        "ntfy://ntfy.sh/ben", "json://hooks.example.com/x"
    )
    router = Router(config)
    [ana] = router.route(_target(labels={"zone": "cold-room"})).contacts(0)
    assert ana.apprise == ("mailtos://ana:s3cret@smtp.example.com", "tgram://123:abc/456")
    assert "s3cret" not in repr(ana)


def test_alert_config_secret_sources_must_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOBODY_URLS", raising=False)
    monkeypatch.setenv("EMPTY_URLS", "   ")
    empty = tmp_path / "empty.urls"
    empty.write_text("# nothing yet\n")
    data = _base()
    data["teams"][0]["members"] = [
        {"name": "Ana", "apprise_file": str(tmp_path / "missing.urls")},
        {"name": "Bea", "apprise_env": "NOBODY_URLS"},
        {"name": "Cy", "apprise_env": "EMPTY_URLS"},
        {"name": "Di", "apprise_file": str(empty)},
    ]
    assert _problems(data) == [
        f"alerting.teams[0].members[0].apprise_file: cannot read {tmp_path / 'missing.urls'}",
        "alerting.teams[0].members[1].apprise_env: $NOBODY_URLS is not set",
        "alerting.teams[0].members[2].apprise_env: holds no URL",
        "alerting.teams[0].members[3].apprise_file: holds no URL",
    ]


def test_alert_config_disabled_section_is_not_checked() -> None:
    assert AlertingConfig(enabled=False).issues() == []
    assert AlertingConfig().issues()[0].path == "alerting.routes"


def test_alert_routing_first_match_wins_with_globs_and_labels() -> None:
    data = _base()
    data["routes"] = [
        {"match": {"audience": "installer"}, "levels": ["installers"]},
        {"match": {"rule": ["door-*", "freezer"], "site": "plant-?"}, "levels": ["managers"]},
        {"match": {"labels": {"zone": "cold-*"}, "severity": "critical"},
         "levels": ["refrigeration", "managers"], "escalate_after_s": 600, "pending_s": 60},
        {"match": {}, "levels": ["refrigeration"]},
    ]  # fmt: skip
    router = Router(parse_alerting(data))
    fault = _target(audience="installer", rule="door-open", labels={"zone": "cold-room"})
    assert router.route(fault).index == 0
    assert router.route(_target(rule="door-open")).index == 1
    assert router.route(_target(rule="door-open", site="plant-10")).index == 3
    cold = router.route(_target(labels={"zone": "cold-store"}))
    assert (cold.index, cold.escalate_after_s, cold.pending_s) == (2, 600.0, 60.0)
    assert [c.name for c in cold.contacts(0)] == ["Ana"]
    assert [c.name for c in cold.contacts(1)] == ["Mo"]
    assert [c.name for c in cold.contacts(5)] == ["Mo"]  # beyond the last: the last
    assert [(c.name, c.team) for c in cold.contacts_through(1)] == [
        ("Ana", "refrigeration"), ("Mo", "managers")
    ]
    assert router.route(_target(labels={"zone": "cold-store"}, severity="warning")).index == 3
    assert router.route(_target(labels={})).index == 3  # a missing label does not match


def test_alert_routing_a_level_of_several_teams_reaches_each_person_once() -> None:
    data = _base()
    data["teams"][2]["members"].append(
        {"name": "Ana", "apprise": ["mailto://ana:pass@smtp.example.com?to=ana@example.com"]}
    )
    data["routes"][-1] = {"match": {}, "levels": [["refrigeration", "managers"]]}
    route = Router(parse_alerting(data)).route(_target())
    assert [(c.name, c.team) for c in route.contacts(0)] == [
        ("Ana", "refrigeration"), ("Mo", "managers")
    ]
