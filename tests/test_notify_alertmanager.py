"""Alerts pushed to a real Prometheus Alertmanager (Debian ``prometheus-alertmanager``, started
by the ``alertmanager`` fixture): they show up active with our labels, resolve there, and
are re-sent on time."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from sitewatch.clock import FakeClock, SystemClock
from sitewatch.collector.alerting.channels.alertmanager import AlertmanagerChannel, rfc3339
from sitewatch.collector.alerting.message import render
from sitewatch.collector.alerting.model import Alert, AlertState, Notification
from sitewatch.collector.alerting.notify import DeliveryError, Dispatcher
from sitewatch.localrun import Alertmanager, free_port, wait_until

ACK_URL = "http://collector.local:8080/alerts/c0ffee"


def _firing(created_ms: int) -> Notification:
    alert = Alert(
        id="c0ffee", key="plant-a/pi-01/cold-room/too-warm", site="plant-a", device="pi-01",
        sensor="cold-room", rule="too-warm", severity="critical", audience="technician",
        labels={"zone": "kitchen", "equipment": "walk-in-1"}, state=AlertState.FIRING,
        message="above 8.0 for 10 min", value=8.4, limit=8.0, predicted_breach_s=None,
        conditions=frozenset({"temperature_c/threshold"}), created_ms=created_ms,
        updated_ms=created_ms,
    )  # fmt: skip
    return Notification("firing", alert, [], ACK_URL)


def _resolved(firing: Notification, resolved_ms: int) -> Notification:
    alert = dataclasses.replace(
        firing.alert, state=AlertState.RESOLVED, resolved_ms=resolved_ms, resolved_by="detection"
    )
    return Notification("resolved", alert, [], ACK_URL)


def _ours(server: Alertmanager) -> list[dict[str, Any]]:
    return [a for a in server.alerts() if a["labels"].get("alertname") == "too-warm"]


def test_notify_alertmanager_alert_fires_with_our_labels_and_resolves(
    alertmanager: Alertmanager,
) -> None:
    now_ms = int(time.time() * 1000)
    firing = _firing(created_ms=now_ms - 60_000)
    channel = AlertmanagerChannel(alertmanager.url)
    results: list[tuple[str, str, bool, str | None]] = []

    with Dispatcher([channel], on_result=lambda *r: results.append(r)) as dispatcher:
        dispatcher.submit(firing)
        [held] = wait_until(
            lambda: [a for a in _ours(alertmanager) if a["status"]["state"] == "active"],
            30,
            "the alert active in Alertmanager",
        )
        assert held["labels"] == {
            "alertname": "too-warm", "site": "plant-a", "device": "pi-01",
            "sensor": "cold-room", "severity": "critical", "audience": "technician",
            "zone": "kitchen", "equipment": "walk-in-1",
        }  # fmt: skip
        text = render(firing, now_ms)
        assert held["annotations"]["summary"] == text.subject
        assert held["annotations"]["description"].startswith("FIRING: too-warm (critical)\n")
        assert held["annotations"]["state"] == "firing"
        assert held["annotations"]["alert_id"] == "c0ffee"
        assert held["generatorURL"] == ACK_URL
        assert held["startsAt"] == rfc3339(now_ms - 60_000)

        dispatcher.submit(_resolved(firing, resolved_ms=now_ms - 1_000))
        wait_until(lambda: not _ours(alertmanager), 30, "the alert resolved in Alertmanager")

    assert results == [("c0ffee", "alertmanager", True, None)] * 2
    assert channel.resend_due(time.monotonic() + 3600) == []  # resolved: nothing to re-send


def test_notify_alertmanager_resend_due_every_interval_while_open(
    alertmanager: Alertmanager,
) -> None:
    clock = FakeClock(wall_s=time.time())
    firing = _firing(created_ms=int(clock.time() * 1000))
    channel = AlertmanagerChannel(alertmanager.url, resend_interval_s=60, clock=clock)

    assert channel.resend_due() == []  # nothing posted yet
    channel.send(firing)
    clock.advance(59)
    assert channel.resend_due() == []
    clock.advance(1)
    assert channel.resend_due() == [firing]
    assert channel.resend_due() == []  # marked as re-sent: not again until the next interval
    clock.advance(60)
    [again] = channel.resend_due()
    channel.send(again)
    assert [a["labels"]["alertname"] for a in alertmanager.alerts()] == ["too-warm"]

    channel.send(_resolved(firing, resolved_ms=int(clock.time() * 1000) - 1_000))
    clock.advance(600)
    assert channel.resend_due() == []


def test_notify_alertmanager_refused_alert_is_a_permanent_failure(
    alertmanager: Alertmanager,
) -> None:
    now_ms = int(time.time() * 1000)
    firing = _firing(created_ms=now_ms)
    ends_before_it_starts = _resolved(firing, resolved_ms=now_ms - 3_600_000)

    with pytest.raises(DeliveryError) as raised:
        AlertmanagerChannel(alertmanager.url).send(ends_before_it_starts)

    assert raised.value.permanent
    assert "HTTP 400" in str(raised.value)


def test_notify_alertmanager_unreachable_is_a_retryable_failure() -> None:
    channel = AlertmanagerChannel(f"http://127.0.0.1:{free_port()}", clock=SystemClock())

    with pytest.raises(DeliveryError) as raised:
        channel.send(_firing(created_ms=int(time.time() * 1000)))

    assert not raised.value.permanent
    assert str(raised.value).startswith("http://127.0.0.1/api/v2/alerts: ")
