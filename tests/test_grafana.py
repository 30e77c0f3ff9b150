"""Grafana provisioning: the dashboards' structure, and every query they make answered with
data by a real influxd that a short simulated run filled.

The run: two simulated agents on two sites (a cold room, a short-cycling compressor, a door
left open, a dead sensor) → real mosquitto → the running collector with detection and
alerting → real influxd. One invalid message makes a dead letter; one door alert is
acknowledged and the other resolved through the alert commands, as a technician would. Then
each variable, panel and annotation query runs over influxd's HTTP /query API the way Grafana
sends it: ``$timeFilter``, ``$__interval`` and the template variables substituted, each
variable taking the values its own query returned.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
import yaml

from sitewatch.collector.alerting import commands
from sitewatch.collector.alerting.model import Alert
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.localrun import PROJECT_ROOT, Influxd, InfluxQLError, Mosquitto, wait_until
from sitewatch.wire import Kind, topic
from tests.processes import start_agent, start_collector
from tests.smtp_inbox import Inbox
from tests.test_collector_e2e import DB, collector_config  # noqa: F401 (a fixture)

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES_YAML = GRAFANA / "provisioning" / "datasources" / "sitewatch.yaml"
PROVIDERS_YAML = GRAFANA / "provisioning" / "dashboards" / "sitewatch.yaml"

BUILT_IN = {"timeFilter", "__interval"}
"""The variables Grafana itself provides that the dashboards may use (the test renders
exactly these)."""

_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}/])")

TIME_FILTER = "time > now() - 1h"
INTERVAL = "1s"
"""What Grafana would put for ``$timeFilter``/``$__interval`` over the last hour; 1 s so a
run of a few seconds spans several GROUP BY time() buckets."""


# -- reading the dashboards -------------------------------------------------------------------
def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _datasource_uid() -> str:
    provisioned = yaml.safe_load(DATASOURCES_YAML.read_text())
    (datasource,) = provisioned["datasources"]
    uid: str = datasource["uid"]
    return uid


@dataclass(frozen=True)
class Query:
    """One InfluxQL query of a dashboard: what it belongs to and its raw text."""

    dashboard: str
    where: str  # "panel 'Temperature' A", "variable device", "annotation 'Alerts'"
    text: str


def _variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return variables


def _queries(name: str, dashboard: Mapping[str, Any]) -> list[Query]:
    """Panel targets and annotations of our datasource (variables apart)."""
    found = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            found.append(Query(name, f"panel {panel['title']!r} {target['refId']}",
                               target["query"]))  # fmt: skip
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        found.append(Query(name, f"annotation {annotation['name']!r}",
                           annotation["target"]["query"]))  # fmt: skip
    return found


def _used_variables(text: str) -> set[str]:
    return {next(g for g in match.groups() if g) for match in _VARIABLE.finditer(text)}


# -- structure ----------------------------------------------------------------------------------
def test_grafana_dashboards_parse_with_stable_unique_uids_and_titles() -> None:
    dashboards = _dashboards()
    assert len(dashboards) == 4
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for name, dashboard in dashboards.items():
        assert re.fullmatch(r"sitewatch-[a-z-]+", dashboard["uid"]), name
        assert len(dashboard["uid"]) <= 40, name  # Grafana's limit
        assert "id" not in dashboard or dashboard["id"] is None, name  # ids are per instance
        assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
        assert "sitewatch" in dashboard["tags"], name


def test_grafana_every_panel_has_type_title_position_and_the_provisioned_datasource() -> None:
    uid = _datasource_uid()
    for name, dashboard in _dashboards().items():
        ids = [panel["id"] for panel in _panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        for panel in _panels(dashboard):
            where = f"{name}: panel {panel.get('title')!r}"
            assert panel.get("type") and panel.get("title"), where
            pos = panel["gridPos"]
            assert {"x", "y", "w", "h"} <= set(pos), where
            assert 0 <= pos["x"] and pos["w"] > 0 and pos["h"] > 0, where
            assert pos["x"] + pos["w"] <= 24, f"{where} is wider than the dashboard"
            assert panel["datasource"] == {"type": "influxdb", "uid": uid}, where
            assert panel["targets"], f"{where} has no query"
            refs = [target["refId"] for target in panel["targets"]]
            assert len(set(refs)) == len(refs), f"{where}: refIds repeat"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, where
                assert target["rawQuery"] is True and target["query"].strip(), where
                assert target["resultFormat"] in ("time_series", "table"), where
        for annotation in dashboard["annotations"]["list"]:
            if not annotation.get("builtIn"):
                assert annotation["datasource"]["uid"] == uid, annotation["name"]
                assert annotation["target"]["rawQuery"] is True, annotation["name"]
        for variable in _variables(dashboard):
            assert variable["type"] == "query", variable["name"]
            assert variable["datasource"]["uid"] == uid, variable["name"]


def test_grafana_panels_do_not_overlap() -> None:
    for name, dashboard in _dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        for panel in _panels(dashboard):
            pos = panel["gridPos"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], (
                        f"{name}: {panel['title']!r} overlaps {other!r} at column {x}, row {y}"
                    )


def test_grafana_queries_use_only_defined_variables_and_bounded_time() -> None:
    for name, dashboard in _dashboards().items():
        defined: set[str] = set()
        for variable in _variables(dashboard):
            # A variable may only use those defined before it: Grafana resolves them in order.
            undefined = _used_variables(variable["query"]) - defined
            assert not undefined, f"{name}: variable {variable['name']} uses {undefined}"
            assert variable["query"].startswith("SHOW TAG VALUES"), variable["name"]
            defined.add(variable["name"])
        used: set[str] = set()
        for query in _queries(name, dashboard):
            names = _used_variables(query.text)
            assert names - BUILT_IN <= defined, f"{query.where} uses {names - BUILT_IN - defined}"
            used |= names
            # No query scans all of history: the time picker's range, or a fixed look-back.
            assert "$timeFilter" in query.text or "time > now() - " in query.text, query.where
            if "GROUP BY time(" in query.text:
                assert "GROUP BY time($__interval)" in query.text, query.where
        assert defined <= used, f"{name}: variables {defined - used} are never used"


def test_grafana_alerts_appear_as_annotations_on_overview_and_device_detail() -> None:
    dashboards = {d["uid"]: d for d in _dashboards().values()}
    for uid in ("sitewatch-overview", "sitewatch-device"):
        queries = [a["target"]["query"] for a in dashboards[uid]["annotations"]["list"]
                   if not a.get("builtIn") and a.get("enable")]  # fmt: skip
        assert any('FROM "alerts"' in query for query in queries), uid


def test_grafana_provisioning_points_at_the_dashboards_and_keeps_secrets_out() -> None:
    datasources = yaml.safe_load(DATASOURCES_YAML.read_text())
    assert datasources["apiVersion"] == 1
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "influxdb" and datasource["access"] == "proxy"
    assert datasource["jsonData"]["version"] == "InfluxQL"
    # Connection and secrets come from the environment (or a file), never from the repo.
    for value in (datasource["url"], datasource["user"], datasource["jsonData"]["dbName"],
                  datasource["secureJsonData"]["password"]):  # fmt: skip
        assert re.fullmatch(r"\$\{\w+\}|\$__env\{\w+\}|\$__file\{[^}]+\}", value), value
    assert "password" not in datasource and "basicAuthPassword" not in datasource

    providers = yaml.safe_load(PROVIDERS_YAML.read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # Grafana expands ${VAR} with os.ExpandEnv: with SITEWATCH_GRAFANA_DIR set to this
    # repository's grafana/ the provider reads exactly these dashboards.
    path = re.sub(r"\$\{(\w+)\}", lambda m: {"SITEWATCH_GRAFANA_DIR": str(GRAFANA)}[m[1]],
                  provider["options"]["path"])  # fmt: skip
    assert Path(path).resolve() == DASHBOARDS.resolve()
    assert sorted(p.name for p in Path(path).glob("*.json")) == sorted(_dashboards())


def test_grafana_provisioning_documents_every_environment_variable() -> None:
    # Grafana leaves an unset variable empty, so each one must say what to set it to.
    for path in (DATASOURCES_YAML, PROVIDERS_YAML):
        text = path.read_text()
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        values = "\n".join(line for line in text.splitlines()
                           if not line.lstrip().startswith("#"))  # fmt: skip
        for name in re.findall(r"\$\{(\w+)\}", values):
            assert re.search(rf"^#\s+{name}=\S", comments, re.MULTILINE), f"{path}: {name}"


# -- every query against a filled influxd ------------------------------------------------------
def _regex_literal(value: str) -> str:
    """``value`` escaped for an InfluxQL regex (``/…/``), as Grafana escapes variable values."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def _render(text: str, values: Mapping[str, list[str]], multi: Mapping[str, bool]) -> str:
    """``text`` as Grafana sends it: multi-value and All variables become ``(a|b)``."""

    def substitute(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name == "timeFilter":
            return TIME_FILTER
        if name == "__interval":
            return INTERVAL
        chosen = [_regex_literal(value) for value in values[name]]
        if multi[name] and len(chosen) > 1:
            return "(" + "|".join(chosen) + ")"
        return chosen[0]

    return _VARIABLE.sub(substitute, text)


def _has_data(series: list[dict[str, Any]]) -> bool:
    """At least one row with a value (not only nulls) in a column other than time."""
    for one in series:
        columns = one.get("columns", [])
        for row in one.get("values", []):
            if any(v is not None for c, v in zip(columns, row, strict=True) if c != "time"):
                return True
    return False


@dataclass
class Answers:
    """Each query of every dashboard, rendered, with what influxd answered."""

    rendered: dict[Query, str]
    series: dict[Query, list[dict[str, Any]]]
    errors: dict[Query, str]

    def empty(self) -> list[str]:
        return [f"{q.dashboard} {q.where}: {self.errors.get(q) or 'no data'}\n  {text}"
                for q, text in self.rendered.items()
                if q in self.errors or not _has_data(self.series[q])]  # fmt: skip

    def value(self, dashboard_uid: str, title: str) -> Any:
        """The single value a stat panel shows."""
        (query,) = [q for q in self.rendered if q.dashboard == dashboard_uid
                    and q.where.startswith(f"panel {title!r}")]  # fmt: skip
        (one,) = self.series[query]
        ((_, value),) = one["values"]
        return value


def _ask(influxd: Influxd, query: Query, text: str, answers: Answers) -> None:
    answers.rendered[query] = text
    try:
        answers.series[query] = influxd.series(text, DB)
        answers.errors.pop(query, None)
    except InfluxQLError as error:
        answers.series[query] = []
        answers.errors[query] = str(error)


def _ask_everything(influxd: Influxd) -> Answers:
    answers = Answers({}, {}, {})
    for dashboard in _dashboards().values():
        uid = dashboard["uid"]
        values: dict[str, list[str]] = {}
        multi: dict[str, bool] = {}
        for variable in _variables(dashboard):
            name = variable["name"]
            query = Query(uid, f"variable {name}", variable["query"])
            multi[name] = bool(variable.get("multi") or variable.get("includeAll"))
            _ask(influxd, query, _render(variable["query"], values, multi), answers)
            found = sorted({row[1] for one in answers.series[query] for row in one["values"]})
            # All (or every value) for multi-value variables; the first, as Grafana's
            # default, for single ones.
            values[name] = found if multi[name] else found[:1]
            if not found:
                break  # the queries using it cannot be rendered yet
        else:
            for query in _queries(uid, dashboard):
                _ask(influxd, query, _render(query.text, values, multi), answers)
    return answers


SENSORS_PLANT_A = [
    {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.2,
     "seed": 1, "labels": {"zone": "kitchen", "equipment": "walk-in"}},
    {"id": "compressor", "driver": "simulated", "model": "compressor", "interval_s": 0.2,
     "seed": 3, "labels": {"equipment": "walk-in"},
     "faults": [{"kind": "short_cycling", "start_s": 0}]},
    {"id": "walk-in-door", "driver": "simulated", "model": "door", "interval_s": 0.2,
     "seed": 5, "labels": {"zone": "cold-room"},
     "faults": [{"kind": "door_left_open", "start_s": 0}]},
    {"id": "office", "driver": "simulated", "model": "office", "interval_s": 0.2, "seed": 7,
     "faults": [{"kind": "dead", "start_s": 0}]},
]  # fmt: skip
SENSORS_PLANT_B = [
    {"id": "walk-in-door", "driver": "simulated", "model": "door", "interval_s": 0.2,
     "seed": 6, "labels": {"zone": "cold-room"},
     "faults": [{"kind": "door_left_open", "start_s": 0}]},
]  # fmt: skip
DOOR_RULE = {"name": "walk-in-door", "match": {"labels": {"zone": "cold-room"}},
             "profile": "door", "detectors": {"door_open": {"max_open_s": 2.0}}}  # fmt: skip


@pytest.mark.integration
def test_grafana_every_panel_annotation_and_variable_query_returns_data(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    collector_config: Callable[..., Path], procs: list[subprocess.Popen[bytes]],  # noqa: F811
    smtp: tuple[Inbox, int], tmp_path: Path,
) -> None:
    _, smtp_port = smtp
    mailto = f"mailto://127.0.0.1:{smtp_port}?from=sitewatch@example.com&to=tech@example.com"
    config = collector_config(
        mosquitto, influxd, detection={"rules": [DOOR_RULE]},
        alerting={"teams": [{"name": "kitchen", "members": [{"name": "Tech",
                                                             "apprise": [mailto]}]}],
                  "routes": [{"match": {}, "levels": ["kitchen"]}]},
    )  # fmt: skip
    procs.append(start_collector(config, tmp_path / "collector.log"))
    for site, device, sensors in (("plant-a", "pi-01", SENSORS_PLANT_A),
                                  ("plant-b", "pi-02", SENSORS_PLANT_B)):  # fmt: skip
        agent_config = write_agent_config(mosquitto.port, device=device, sensors=sensors,
                                          name=f"{device}.yaml", site=site)  # fmt: skip
        procs.append(start_agent(agent_config, tmp_path / f"{device}.log"))
    # Something no agent sends in a healthy fleet: an unreadable message, dead-lettered.
    paho.mqtt.publish.single(topic("plant-a", "pi-01", Kind.TELEMETRY), b'{"v": 1, "site": ',
                             qos=1, hostname="127.0.0.1", port=mosquitto.port)  # fmt: skip

    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    with AlertStore.in_state_dir(state_dir) as store:

        def doors() -> dict[str, Alert]:
            return {a.device: a for a in store.open_alerts() if a.rule == "walk-in-door"}

        wait_until(lambda: len(doors()) == 2, 60, "both door alerts")
        alerts = doors()
        # The technician takes one (MTTA) and closes the other (MTTR).
        commands.ack_alert(store, alerts["pi-01"].id, by="Tech")
        commands.resolve_alert(store, alerts["pi-02"].id, by="Tech", comment="door fixed")

    try:
        wait_until(lambda: not _ask_everything(influxd).empty(), 45,
                   "data for every query", interval_s=0.5)  # fmt: skip
    except AssertionError:
        pass  # the assertion below says which queries are still empty
    answers = _ask_everything(influxd)
    empty = answers.empty()
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert len(answers.rendered) >= 60  # every dashboard was walked, none skipped
    # A few values a defect would change.
    assert answers.value("sitewatch-overview", "Open alerts") == 1  # pi-02's is resolved
    assert answers.value("sitewatch-overview", "Sensors in fault") == 1  # the dead one
    assert answers.value("sitewatch-alerts", "Acknowledged") == 1
    assert answers.value("sitewatch-alerts", "Resolved") == 1
    assert answers.value("sitewatch-alerts", "MTTA") > 0
    assert answers.value("sitewatch-alerts", "MTTR") > 0
    assert answers.value("sitewatch-delivery", "Dead letters") == 1


def test_grafana_helpers_render_variables_as_grafana_does() -> None:
    values = {"site": ["plant-a", "plant.b"], "device": ["pi/01"]}
    multi = {"site": True, "device": False}
    text = 'SELECT x FROM m WHERE "site" =~ /^$site$/ AND "device" =~ /^${device}$/ AND $timeFilter'
    assert _render(text, values, multi) == (
        'SELECT x FROM m WHERE "site" =~ /^(plant-a|plant\\.b)$/ AND "device" =~ /^pi\\/01$/'
        " AND time > now() - 1h"
    )
    assert _has_data([{"columns": ["time", "v"], "values": [[1, None], [2, 0]]}])
    assert not _has_data([{"columns": ["time", "v"], "values": [[1, None]]}])
