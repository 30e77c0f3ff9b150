"""The alert report on a history generated through the real engine and commands: MTTA,
MTTR and resolution rate equal the values computed by hand from the schedule, the Pareto is
in the right order, and the text, JSON and HTML forms carry them."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting import commands
from sitewatch.collector.alerting.config import parse_alerting
from sitewatch.collector.alerting.engine import AlertEngine
from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.collector.alerting.report import (
    build_report,
    pareto_svg,
    render_html,
    render_text,
    report_from_store,
)
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision

T0 = 1_795_464_000

# sensor → equipment label (None: the sensor has no equipment label)
SENSORS = {
    "f1-top": "fridge-1", "f1-door": "fridge-1", "f2": "fridge-2", "oven": "oven-1",
    "hall": None,
}  # fmt: skip
# How many alerts each sensor raises: fridge-1 7, fridge-2 4, hall 2, oven-1 1.
PLAN = ["f1-top"] * 4 + ["f1-door"] * 3 + ["f2"] * 4 + ["hall"] * 2 + ["oven"]


@dataclass
class Incident:
    sensor: str
    fired_s: int
    ack_after_s: int | None
    resolve_after_s: int | None
    by_hand: bool


def _decision(verdict: str, sensor: str, ts_s: int, site: str = "plant-a") -> Decision:
    return Decision(
        verdict="fire" if verdict == "fire" else "resolve", site=site, device="pi-01",
        sensor=sensor, field="temperature_c", rule="too-warm" if sensor != "hall" else "hall",
        detector="threshold", severity="warning", audience="technician", ts_ms=ts_s * 1000,
        value=9.0, score=1.0, message="too warm", alert_id="x",
    )  # fmt: skip


def _generate(tmp_path: Path) -> tuple[AlertStore, list[Incident], FakeClock]:
    """Drive the engine through a seeded schedule of incidents, one after another."""
    rng = random.Random(20261124)
    clock = FakeClock(wall_s=float(T0))
    catalog = SensorCatalog()
    for sensor, equipment in SENSORS.items():
        labels = {"equipment": equipment} if equipment else {}
        catalog.set_sensor("plant-a", "pi-01", sensor, labels=labels, fields=["temperature_c"])
    config = parse_alerting({
        "renotify_interval_s": 3600,
        "teams": [{"name": "t", "members": [{"name": "Ana", "apprise": ["ntfy://n/a"]}]}],
        "routes": [{"match": {}, "levels": ["t"]}],
        "self_check": {"enabled": False},
    })  # fmt: skip
    store = AlertStore(tmp_path / "alerts.db")
    engine = AlertEngine(config, store, catalog=catalog, clock=clock)
    order = PLAN[:]
    rng.shuffle(order)
    incidents = []
    for index, sensor in enumerate(order):
        ack_after = rng.randrange(30, 1800) if index % 4 != 3 else None
        resolve_after = rng.randrange(1900, 7200) if index != len(order) - 1 else None
        incidents.append(Incident(sensor, int(clock.time()), ack_after, resolve_after,
                                  by_hand=index % 5 == 2))  # fmt: skip
    for incident in incidents:
        engine.decided(_decision("fire", incident.sensor, int(clock.time())))
        alert = store.open_alerts()[0]
        waited_s = 0
        if incident.ack_after_s is not None:
            clock.advance(incident.ack_after_s)
            waited_s = incident.ack_after_s
            commands.ack_alert(store, alert.id, by="Ana", now_s=clock.time())
            engine.tick()
        if incident.resolve_after_s is None:
            break  # the last one stays open
        clock.advance(incident.resolve_after_s - waited_s)  # acks come before resolves
        if incident.by_hand:
            commands.resolve_alert(store, alert.id, by="Bo", now_s=clock.time())
        else:
            engine.decided(_decision("resolve", incident.sensor, int(clock.time())))
        engine.tick()
        clock.advance(4000)  # past the re-notify interval: the next one is a new alert
    # Noise the report must leave out: an alert of another site, a self-check alert and
    # an alert that never left pending; an hour after the rest.
    clock.advance(3600)
    engine.decided(_decision("fire", "f2", int(clock.time()), site="plant-b"))
    store.insert(_alert("self", site="_collector", fired_ms=int(clock.time() * 1000)))
    store.insert(_alert("pend", state=AlertState.PENDING, fired_ms=None,
                        created_ms=int(clock.time() * 1000)))  # fmt: skip
    return store, incidents, clock


def _alert(alert_id: str, **fields: object) -> Alert:
    base: dict[str, object] = {
        "id": alert_id, "key": f"k/{alert_id}", "site": "plant-a", "device": "pi-01",
        "sensor": "x", "rule": "r", "severity": "info", "audience": "installer",
        "labels": {}, "state": AlertState.FIRING, "message": "", "value": None,
        "limit": None, "predicted_breach_s": None, "conditions": (),
        "created_ms": T0 * 1000, "updated_ms": T0 * 1000,
    }  # fmt: skip
    base.update(fields)
    return Alert(**base)  # type: ignore[arg-type]


def test_alert_report_mtta_and_mttr_equal_the_hand_computed_values(tmp_path: Path) -> None:
    store, incidents, clock = _generate(tmp_path)
    acked = [i.ack_after_s for i in incidents if i.ack_after_s is not None]
    resolved = [i.resolve_after_s for i in incidents if i.resolve_after_s is not None]
    report = report_from_store(store, since_ms=T0 * 1000, until_ms=int(clock.time() * 1000) + 1,
                               site="plant-a")  # fmt: skip
    assert report.total == len(PLAN) == 14
    assert report.acknowledged == len(acked)
    assert report.resolved == len(resolved) == 13
    assert report.still_open == 1
    assert report.mtta_s == sum(acked) / len(acked)
    assert report.mttr_s == sum(resolved) / len(resolved)
    assert report.resolution_rate == 13 / 14
    assert report.per_rule == [("too-warm", 12), ("hall", 2)]
    assert report.per_equipment == [
        ("fridge-1", 7), ("fridge-2", 4), ("(no equipment label)", 2), ("oven-1", 1)
    ]
    assert [(o.name, o.alerts) for o in report.pareto] == [
        ("fridge-1", 7), ("fridge-2", 4), ("pi-01/hall", 2), ("oven-1", 1)
    ]
    assert [round(o.cumulative_pct, 2) for o in report.pareto] == [50.0, 78.57, 92.86, 100.0]
    by_sensor = report_from_store(store, since_ms=T0 * 1000, until_ms=int(clock.time() * 1000)
                                  + 1, site="plant-a", pareto_by="sensor")  # fmt: skip
    assert [(o.name, o.alerts) for o in by_sensor.pareto] == [
        ("pi-01/f1-top", 4), ("pi-01/f2", 4), ("pi-01/f1-door", 3), ("pi-01/hall", 2),
        ("pi-01/oven", 1),
    ]  # fmt: skip
    store.close()


def test_alert_report_leaves_out_other_sites_and_the_collectors_own(tmp_path: Path) -> None:
    store, _, clock = _generate(tmp_path)
    until = int(clock.time() * 1000) + 1
    everything = report_from_store(store, since_ms=T0 * 1000, until_ms=until)
    assert everything.total == 15  # both plants, without the self-check and pending ones
    assert everything.pareto[0].name == "plant-a/fridge-1"  # site names added for two sites
    own = report_from_store(store, since_ms=T0 * 1000, until_ms=until, site="_collector")
    assert own.total == 1
    later = report_from_store(store, since_ms=until - 1000, until_ms=until)
    assert later.total == 1  # only plant-b's alert is that recent
    assert later.still_open == 1 and later.mttr_s is None
    store.close()


def test_alert_report_of_nothing_has_no_means(tmp_path: Path) -> None:
    report = build_report([], since_ms=0, until_ms=1)
    assert (report.total, report.mtta_s, report.mttr_s, report.resolution_rate) == (
        0, None, None, None
    )
    assert "MTTA:             n/a" in render_text(report)
    assert "no alerts" in pareto_svg([])


def test_alert_report_pareto_ties_are_ordered_by_name() -> None:
    alerts = [
        _alert(f"a{n}", sensor=s, labels={"equipment": e}, fired_ms=T0 * 1000)
        for n, (s, e) in enumerate([("1", "b"), ("2", "a"), ("3", "c"), ("4", "c")])
    ]
    report = build_report(alerts, since_ms=0, until_ms=1)
    assert [o.name for o in report.pareto] == ["c", "a", "b"]


def test_alert_report_text_json_and_html(tmp_path: Path) -> None:
    store, _, clock = _generate(tmp_path)
    html_path = tmp_path / "out" / "report.html"
    result = commands.report(store, since="2d", site="plant-a", html_path=html_path,
                             now_s=clock.time())  # fmt: skip
    data = json.loads(json.dumps(result.data))
    assert data["alerts"] == 14 and data["resolved"] == 13 and data["open"] == 1
    assert data["pareto"][0] == {"name": "fridge-1", "alerts": 7, "share_pct": 50.0,
                                 "cumulative_pct": 50.0}  # fmt: skip
    assert "Alerts:           14" in result.text
    assert re.search(r"fridge-1\s+7\s+50 %\s+50 %", result.text)
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    # Self-contained: nothing is fetched (the only URL is the SVG namespace).
    assert re.findall(r"(?:src|href)=", page) == []
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert page.count("<rect") == 4  # one bar per offender
    assert "MTTA (mean time to acknowledge)" in page and "fridge-2" in page
    store.close()


def test_alert_report_chart_groups_the_long_tail() -> None:
    alerts = [
        _alert(f"a{n}", sensor=f"s{n}", labels={"equipment": f"e{n:02d}"},
               fired_ms=T0 * 1000)
        for n in range(30)
    ]  # fmt: skip
    report = build_report(alerts, since_ms=0, until_ms=1)
    svg = pareto_svg(report.pareto)
    assert svg.count("<rect") == 20 and "others (11)" in svg
    assert "<script" not in render_html(report)
