"""The alert engine on a real SQLite store, with a fake clock and a recording dispatcher:
lifecycle, one alert per problem, flapping, escalation, reminders, silences, restarts,
audit trail, ``alerts`` lines and the self-check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting import commands
from sitewatch.collector.alerting.config import AlertingConfig, parse_alerting
from sitewatch.collector.alerting.engine import AlertEngine
from sitewatch.collector.alerting.model import AlertState, Notification
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision
from tests.lineparse import parse_line

T0 = 1_795_464_000.0


class RecordingDispatcher:
    """Our own seam: keeps what the engine submits; ``accept=False`` models a full queue."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.accept = True

    def submit(self, notification: Notification) -> bool:
        if self.accept:
            self.sent.append(notification)
        return self.accept

    def pages(self) -> list[Notification]:
        """Notifications that reach people (machine-only updates have no recipients)."""
        return [n for n in self.sent if n.recipients]

    def names(self, notification: Notification) -> list[str]:
        return sorted(contact.name for contact in notification.recipients)


def _config(**overrides: Any) -> AlertingConfig:
    data: dict[str, Any] = {
        "public_url": "http://collector.local:8080",
        "renotify_interval_s": 3600,
        "teams": [
            {"name": "fridge", "members": [{"name": "Ana", "apprise": ["ntfy://ntfy.sh/ana"]}]},
            {"name": "managers", "members": [{"name": "Mo", "apprise": ["ntfy://ntfy.sh/mo"]}]},
            {"name": "installers",
             "members": [{"name": "Ian", "apprise": ["mailto://ian:pw@mail.example.com"]}]},
        ],
        "routes": [
            {"match": {"audience": "installer"}, "levels": ["installers"]},
            {"match": {"labels": {"zone": "cold-room"}}, "levels": ["fridge", "managers"],
             "escalate_after_s": 900},
            {"match": {}, "levels": ["fridge"]},
        ],
        "self_check": {"max_idle_s": 600, "notifier_failures": 3},
    }  # fmt: skip
    data.update(overrides)
    return parse_alerting(data)


class Rig:
    """An engine with everything it talks to, rebuilt on the same database by ``restart``."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.path = tmp_path / "alerts.db"
        self.clock = FakeClock(wall_s=T0)
        self.config = _config(**config)
        self.catalog = SensorCatalog()
        self.catalog.set_sensor("plant-a", "pi-01", "cold-room", labels={"zone": "cold-room",
                                "equipment": "walk-in-1"}, fields=["temperature_c"])  # fmt: skip
        self.dispatcher = RecordingDispatcher()
        self.lines: list[str] = []
        self.store = AlertStore(self.path)
        self.engine = self._engine()

    def _engine(self) -> AlertEngine:
        return AlertEngine(
            self.config, self.store, dispatcher=self.dispatcher, write_lines=self.lines.extend,
            catalog=self.catalog, clock=self.clock,
        )  # fmt: skip

    def restart(self) -> None:
        self.store.close()
        self.store = AlertStore(self.path)
        self.dispatcher = RecordingDispatcher()
        self.engine = self._engine()

    def decide(
        self,
        verdict: str,
        *,
        sensor: str = "cold-room",
        field: str = "temperature_c",
        rule: str = "cold-room",
        detector: str = "threshold",
        severity: str = "critical",
        audience: str = "technician",
        value: float = 9.1,
    ) -> None:
        self.engine.decided(Decision(
            verdict="fire" if verdict == "fire" else "resolve", site="plant-a",
            device="pi-01", sensor=sensor, field=field, rule=rule, detector=detector,
            severity=severity, audience=audience, ts_ms=int(self.clock.time() * 1000),
            value=value, score=1.0, message=f"{field} above 8.0 for 10 min", alert_id="x",
        ))  # fmt: skip

    def run(self, seconds: float, step_s: float = 1.0) -> None:
        """Let time pass with the collector's once-a-second tick."""
        end = self.clock.time() + seconds
        while self.clock.time() < end:
            self.clock.advance(min(step_s, end - self.clock.time()))
            self.engine.tick()

    def only_open(self) -> Any:
        alerts = self.store.open_alerts()
        assert len(alerts) == 1, alerts
        return alerts[0]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_alert_engine_fire_opens_one_alert_and_pages_the_first_level(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    assert alert.state == AlertState.FIRING
    assert alert.key == "plant-a/pi-01/cold-room/cold-room"
    assert alert.labels == {"zone": "cold-room", "equipment": "walk-in-1"}
    assert alert.fired_ms == alert.created_ms == int(T0 * 1000)
    [page] = rig.dispatcher.sent
    assert page.kind == "firing" and rig.dispatcher.names(page) == ["Ana"]
    assert page.ack_url == f"http://collector.local:8080/alerts/{alert.id}"
    assert page.alert.id == alert.id and page.alert.notify_count == 1


def test_alert_engine_decisions_of_one_rule_and_sensor_share_one_alert(rig: Rig) -> None:
    rig.decide("fire", detector="threshold")
    rig.decide("fire", detector="forecast")
    rig.decide("fire", field="humidity_pct", detector="threshold")
    alert = rig.only_open()
    assert alert.conditions == {
        "temperature_c/threshold", "temperature_c/forecast", "humidity_pct/threshold"
    }
    rig.decide("resolve", detector="threshold")
    rig.decide("resolve", field="humidity_pct", detector="threshold")
    assert rig.only_open().conditions == {"temperature_c/forecast"}
    rig.decide("resolve", detector="forecast")
    assert rig.store.open_alerts() == []
    assert rig.store.get(alert.id).state == AlertState.RESOLVED  # type: ignore[union-attr]
    assert len(rig.dispatcher.pages()) == 1
    # Another rule on the same sensor is another problem.
    rig.decide("fire", rule="door-open", detector="door_open", field="open")
    assert [a.rule for a in rig.store.open_alerts()] == ["door-open"]


def test_alert_engine_lifecycle_with_audit_trail(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    rig.clock.advance(120)
    commands.ack_alert(rig.store, alert.id, by="Ana Lima", comment="on my way",
                       now_s=rig.clock.time())  # fmt: skip
    assert rig.only_open().state == AlertState.ACKNOWLEDGED
    rig.run(5)
    rig.decide("resolve")
    done = rig.store.get(alert.id)
    assert done is not None and done.state == AlertState.RESOLVED
    assert done.resolved_by == "detection" and done.acked_by == "Ana Lima"
    trail = [(e.action, e.actor, e.comment, e.state) for e in rig.store.audit(alert.id)]
    assert trail == [
        ("fire", "detection", None, AlertState.FIRING),
        ("ack", "Ana Lima", "on my way", AlertState.ACKNOWLEDGED),
        ("auto_resolve", "detection", None, AlertState.RESOLVED),
    ]
    ack = rig.store.audit(alert.id)[1]
    assert ack.ts_ms == int((T0 + 120) * 1000)
    # The CLI's ack reached the machine channels through the engine's next tick, and the
    # resolve cleared them.
    kinds = [n.kind for n in rig.dispatcher.sent if not n.recipients]
    assert kinds == ["update", "resolved"]


def test_alert_engine_writes_an_alerts_point_per_transition(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    commands.ack_alert(rig.store, alert.id, by="Ana", now_s=rig.clock.time())
    rig.run(2)
    rig.run(2)  # a second tick must not write the CLI's ack again
    rig.decide("resolve")
    parsed = [parse_line(line) for line in rig.lines]
    assert [(m, f["action"], f["state"], f["actor"]) for m, _, f, _ in parsed] == [
        ("alerts", "fire", "firing", "detection"),
        ("alerts", "ack", "acknowledged", "Ana"),
        ("alerts", "auto_resolve", "resolved", "detection"),
    ]
    _, tags, fields, ts = parsed[0]
    assert tags == {"site": "plant-a", "device": "pi-01", "sensor": "cold-room",
                    "rule": "cold-room", "severity": "critical"}  # fmt: skip
    assert fields["alert_id"] == alert.id and fields["value"] == 9.1
    assert ts == int(T0 * 1000)


def test_alert_engine_alerts_points_carry_the_times_to_ack_and_to_resolve(rig: Rig) -> None:
    # What Grafana averages into MTTA and MTTR: on the ack's point and the resolution's.
    rig.decide("fire")
    first = rig.only_open()
    rig.run(120)
    commands.ack_alert(rig.store, first.id, by="Ana", now_s=rig.clock.time())
    rig.run(480)
    rig.decide("resolve")  # by itself, 600 s after it fired
    rig.decide("fire", sensor="freezer", rule="freezer")
    second = rig.only_open()
    rig.run(30)
    commands.resolve_alert(rig.store, second.id, by="Ana", now_s=rig.clock.time())
    rig.run(1)
    times = {
        (f["alert_id"], f["action"]): (f.get("acknowledged_after_s"), f.get("resolved_after_s"))
        for _, _, f, _ in (parse_line(line) for line in rig.lines)
    }
    assert times == {
        (first.id, "fire"): (None, None),
        (first.id, "ack"): (120.0, None),
        (first.id, "auto_resolve"): (None, 600.0),
        (second.id, "fire"): (None, None),
        (second.id, "resolve"): (None, 30.0),
    }


def test_alert_engine_flapping_signal_pages_once_per_problem(rig: Rig) -> None:
    for _ in range(12):  # fire / resolve every 2 minutes, all within the re-notify interval
        rig.decide("fire")
        rig.run(60)
        rig.decide("resolve")
        rig.run(60)
    assert len(rig.dispatcher.pages()) == 1
    ids = {n.alert.id for n in rig.dispatcher.sent}
    assert len(ids) == 1  # one alert, reopened, not twelve
    assert len(rig.store.history(0)) == 1
    # The machine channels still followed every flap (retained MQTT state stays right).
    kinds = [n.kind for n in rig.dispatcher.sent if not n.recipients]
    assert kinds.count("resolved") == 12 and kinds.count("firing") == 11
    # Once the re-notify interval has passed since the page, a return is news again.
    rig.run(3600)
    rig.decide("fire")
    assert len(rig.dispatcher.pages()) == 2


def test_alert_engine_flapping_with_resolved_messages_tells_once_each(tmp_path: Path) -> None:
    rig = Rig(tmp_path, notify_resolved=True, resolve_quiet_s=600)
    for _ in range(6):
        rig.decide("fire")
        rig.run(60)
        rig.decide("resolve")
        rig.run(120)  # back well within the quiet time
    assert [n.kind for n in rig.dispatcher.pages()] == ["firing"]
    rig.run(600)  # it stays clear: now people hear it is over, once
    assert [n.kind for n in rig.dispatcher.pages()] == ["firing", "resolved"]
    assert rig.dispatcher.names(rig.dispatcher.pages()[1]) == ["Ana"]
    rig.run(600)
    assert len(rig.dispatcher.pages()) == 2
    # People were told it cleared, so its return is a new alert and a new page.
    rig.decide("fire")
    assert [n.kind for n in rig.dispatcher.pages()] == ["firing", "resolved", "firing"]
    assert len(rig.store.history(0)) == 2


def test_alert_engine_escalates_when_nobody_acknowledges(rig: Rig) -> None:
    rig.decide("fire")
    rig.run(899)
    assert len(rig.dispatcher.pages()) == 1
    rig.run(1)
    pages = rig.dispatcher.pages()
    assert [p.kind for p in pages] == ["firing", "escalation"]
    assert rig.dispatcher.names(pages[1]) == ["Mo"]
    assert pages[1].alert.escalation_level == 1
    rig.run(1800)  # the last level: no further escalation before the reminder
    assert len(rig.dispatcher.pages()) == 2
    actions = [e.action for e in rig.store.audit(rig.only_open().id)]
    assert actions.count("escalate") == 1


def test_alert_engine_does_not_escalate_once_acknowledged(rig: Rig) -> None:
    rig.decide("fire")
    rig.run(600)
    commands.ack_alert(rig.store, rig.only_open().id, by="Ana", now_s=rig.clock.time())
    rig.run(7200)  # past the escalation time and two re-notify intervals
    assert [p.kind for p in rig.dispatcher.pages()] == ["firing"]
    assert rig.only_open().state == AlertState.ACKNOWLEDGED


def test_alert_engine_reminds_while_firing_unacknowledged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.decide("fire", sensor="office", rule="office-hot", severity="warning")  # default route
    rig.run(3599)
    assert len(rig.dispatcher.pages()) == 1
    rig.run(1)
    rig.run(3600)
    pages = rig.dispatcher.pages()
    assert [p.kind for p in pages] == ["firing", "reminder", "reminder"]
    assert pages[2].alert.notify_count == 3


def test_alert_engine_silence_suppresses_then_fires_again_when_it_ends(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    commands.silence_alert(rig.store, alert.id, duration="2h", reason="defrost cycle",
                           by="Ana", now_s=rig.clock.time())  # fmt: skip
    rig.run(7199)  # past escalation and the re-notify interval: still nothing
    assert len(rig.dispatcher.pages()) == 1
    assert rig.only_open().state == AlertState.SILENCED
    rig.run(1)
    assert rig.only_open().state == AlertState.FIRING
    pages = rig.dispatcher.pages()
    assert [p.kind for p in pages] == ["firing", "firing"]
    trail = [(e.action, e.actor) for e in rig.store.audit(alert.id)]
    assert ("silence", "Ana") in trail and ("unsilence", "engine") in trail
    silence = next(e for e in rig.store.audit(alert.id) if e.action == "silence")
    assert silence.comment is not None and "defrost cycle" in silence.comment


def test_alert_engine_silence_outlasting_the_problem_tells_nobody(rig: Rig) -> None:
    rig.decide("fire")
    commands.silence_alert(rig.store, rig.only_open().id, duration="30m", reason="service",
                           by="Ana", now_s=rig.clock.time())  # fmt: skip
    rig.run(600)
    rig.decide("resolve")
    rig.run(3600)
    assert len(rig.dispatcher.pages()) == 1
    assert rig.store.open_alerts() == []


def test_alert_engine_restart_renotifies_nothing(rig: Rig) -> None:
    rig.decide("fire")
    rig.decide("fire", sensor="office", rule="office-hot", severity="warning")
    rig.run(300)
    assert len(rig.dispatcher.pages()) == 2
    rig.restart()
    rig.decide("fire")  # detection may say it again after its own restart
    rig.run(599)
    assert rig.dispatcher.pages() == []
    # The escalation timer survived the restart: 900 s after the first page, not after it.
    rig.run(1)
    assert [p.kind for p in rig.dispatcher.pages()] == ["escalation"]
    rig.restart()
    rig.run(60)
    assert rig.dispatcher.pages() == []


def test_alert_engine_pending_route_holds_then_fires(tmp_path: Path) -> None:
    rig = Rig(tmp_path, routes=[{"match": {}, "levels": ["fridge"], "pending_s": 300}])
    rig.decide("fire")
    assert rig.only_open().state == AlertState.PENDING
    rig.run(200)
    rig.decide("resolve")  # cleared while pending: nobody, not even MQTT, hears of it
    assert rig.dispatcher.sent == []
    rig.decide("fire")
    rig.run(299)
    assert rig.dispatcher.sent == []
    rig.run(1)
    assert [p.kind for p in rig.dispatcher.pages()] == ["firing"]
    alert = rig.only_open()
    assert alert.state == AlertState.FIRING and alert.fired_ms == int((T0 + 500) * 1000)


def test_alert_engine_routes_sensor_faults_to_installers(rig: Rig) -> None:
    rig.decide("fire", rule="sensor-health", detector="flatline", audience="installer",
               severity="warning")  # fmt: skip
    [page] = rig.dispatcher.pages()
    assert rig.dispatcher.names(page) == ["Ian"]


def test_alert_engine_self_check_raises_an_alert_when_nothing_is_evaluated(rig: Rig) -> None:
    for _ in range(700):
        rig.clock.advance(1)
        rig.engine.note_reading(rig.clock.time())
        rig.engine.tick()
    [alert] = rig.store.open_alerts()
    assert alert.site == "_collector" and alert.rule == "self-check"
    assert alert.sensor == "detection" and alert.audience == "installer"
    [page] = rig.dispatcher.pages()
    assert rig.dispatcher.names(page) == ["Ian"]
    rig.engine.note_evaluated(rig.clock.time())
    rig.run(1)
    assert rig.store.open_alerts() == []


def test_alert_engine_self_check_is_quiet_when_no_readings_arrive(rig: Rig) -> None:
    rig.run(3600)  # nothing evaluated, but nothing to evaluate either
    assert rig.store.open_alerts() == []
    for _ in range(300):  # readings flowing, evaluated every 10 s
        rig.clock.advance(1)
        rig.engine.note_reading(rig.clock.time())
        if int(rig.clock.time()) % 10 == 0:
            rig.engine.note_evaluated(rig.clock.time())
        rig.engine.tick()
    assert rig.store.open_alerts() == []


def test_alert_engine_self_check_raises_an_alert_on_notifier_failures(rig: Rig) -> None:
    rig.decide("fire")
    alert_id = rig.only_open().id
    for attempt in range(3):
        rig.engine.on_notify_result(alert_id, "apprise", False, f"smtp down ({attempt})")
        rig.run(1)
    internal = [a for a in rig.store.open_alerts() if a.site == "_collector"]
    assert [a.sensor for a in internal] == ["notifier-apprise"]
    assert "smtp down (2)" in internal[0].message
    failed = [e for e in rig.store.audit(alert_id) if e.action == "notify_failed"]
    assert [(e.actor, e.comment) for e in failed] == [
        ("apprise", f"smtp down ({attempt})") for attempt in range(3)
    ]
    rig.engine.on_notify_result(alert_id, "apprise", True, None)
    rig.run(1)
    assert [a.site for a in rig.store.open_alerts()] == ["plant-a"]


def test_alert_engine_two_failures_are_not_enough(rig: Rig) -> None:
    rig.decide("fire")
    alert_id = rig.only_open().id
    for _ in range(5):  # fail, fail, succeed: never three in a row
        rig.engine.on_notify_result(alert_id, "mqtt", False, "broker away")
        rig.engine.on_notify_result(alert_id, "mqtt", False, "broker away")
        rig.engine.on_notify_result(alert_id, "mqtt", True, None)
        rig.run(1)
    assert [a.site for a in rig.store.open_alerts()] == ["plant-a"]


def test_alert_engine_records_a_notification_the_dispatcher_dropped(rig: Rig) -> None:
    rig.dispatcher.accept = False
    rig.decide("fire")
    alert = rig.only_open()
    assert [e.action for e in rig.store.audit(alert.id)] == ["fire", "notify_dropped"]
    assert rig.engine.dropped == 1
    # The page counts as made: a full queue must not turn into a page every second.
    rig.dispatcher.accept = True
    rig.run(60)
    assert rig.dispatcher.sent == []


def test_alert_engine_manual_resolve_then_return_is_a_new_alert(rig: Rig) -> None:
    rig.decide("fire")
    first = rig.only_open()
    commands.resolve_alert(rig.store, first.id, by="Ana", comment="replaced the seal",
                           now_s=rig.clock.time())  # fmt: skip
    rig.run(1)
    rig.decide("resolve")  # detection's own resolve arrives later: nothing left to do
    rig.run(60)
    rig.decide("fire")
    second = rig.only_open()
    assert second.id != first.id
    assert [p.kind for p in rig.dispatcher.pages()] == ["firing", "firing"]


def test_alert_engine_survives_a_broken_store(rig: Rig) -> None:
    rig.store.close()
    rig.decide("fire")  # must not raise into the ingest thread
    rig.engine.tick()
    assert rig.engine.store_errors == 2
    assert rig.dispatcher.sent == [] and rig.lines == []


def test_alert_engine_silence_survives_a_flap_and_ends_acknowledged(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    commands.ack_alert(rig.store, alert.id, by="Ana", now_s=rig.clock.time())
    commands.silence_alert(rig.store, alert.id, duration="1h", reason="door repair",
                           by="Ana", now_s=rig.clock.time())  # fmt: skip
    rig.run(60)
    rig.decide("resolve")
    rig.run(60)
    rig.decide("fire")  # back during the repair: same alert, still silenced
    assert rig.only_open().id == alert.id
    assert rig.only_open().state == AlertState.SILENCED
    rig.run(3600)
    # The silence ended with the problem there; the ack was for the earlier episode.
    assert rig.only_open().state == AlertState.FIRING
    assert [p.kind for p in rig.dispatcher.pages()] == ["firing", "firing"]


def test_alert_engine_acknowledged_before_the_silence_stays_acknowledged(rig: Rig) -> None:
    rig.decide("fire")
    alert = rig.only_open()
    commands.silence_alert(rig.store, alert.id, duration="10m", reason="looking",
                           by="Ana", now_s=rig.clock.time())  # fmt: skip
    commands.ack_alert(rig.store, alert.id, by="Ana", now_s=rig.clock.time())
    rig.run(600)
    assert rig.only_open().state == AlertState.ACKNOWLEDGED
    assert len(rig.dispatcher.pages()) == 1


def test_alert_engine_resync_tells_machine_channels_only(rig: Rig) -> None:
    rig.decide("fire")
    rig.decide("fire", sensor="office", rule="office-hot", severity="warning")
    rig.restart()
    assert rig.engine.resync() == 2
    assert [n.kind for n in rig.dispatcher.sent] == ["update", "update"]
    assert rig.dispatcher.pages() == []


def test_alert_engine_with_the_real_dispatcher_audits_results(rig: Rig) -> None:
    # The engine's own seam is faked everywhere else; here it meets notify.Dispatcher once,
    # with a channel that refuses, to check the result callback's wiring end to end.
    import threading

    from sitewatch.collector.alerting.notify import DeliveryError, Dispatcher

    class Refusing:
        name = "refusing"

        def send(self, notification: Notification) -> None:
            raise DeliveryError("no route to host", permanent=True)

    reported = threading.Event()

    def on_result(alert_id: str, channel: str, ok: bool, error: str | None) -> None:
        rig.engine.on_notify_result(alert_id, channel, ok, error)
        reported.set()

    dispatcher = Dispatcher([Refusing()], on_result=on_result, clock=FakeClock())
    rig.engine.dispatcher = dispatcher
    with dispatcher:
        rig.decide("fire")
        assert reported.wait(10), "the dispatcher never reported"
    alert = rig.only_open()
    failed = [e for e in rig.store.audit(alert.id) if e.action == "notify_failed"]
    assert [(e.actor, e.comment) for e in failed] == [
        ("refusing", "no route to host (gave up)")
    ]
