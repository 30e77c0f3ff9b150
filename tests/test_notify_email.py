"""Email through apprise to a real SMTP server (aiosmtpd, started by the test on a free
loopback port, plain SMTP without TLS), through the channel and the dispatcher."""

from __future__ import annotations

import dataclasses
import logging
from email.message import EmailMessage

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting.channels.apprise_channel import AppriseChannel
from sitewatch.collector.alerting.message import render
from sitewatch.collector.alerting.model import Alert, AlertState, Contact, Notification
from sitewatch.collector.alerting.notify import DeliveryError, Dispatcher
from sitewatch.localrun import free_port, wait_until
from tests.smtp_inbox import Inbox

T0_MS = 1_795_464_000_000
ACK_URL = "http://collector.local:8080/alerts/c0ffee"


def _mailto(port: int, to: str, userinfo: str = "") -> str:
    return f"mailto://{userinfo}127.0.0.1:{port}?from=sitewatch@example.com&to={to}"


def _notification(*contacts: Contact) -> Notification:
    alert = Alert(
        id="c0ffee", key="plant-a/pi-01/cold-room/too-warm", site="plant-a", device="pi-01",
        sensor="cold-room", rule="too-warm", severity="critical", audience="technician",
        labels={"zone": "kitchen", "equipment": "walk-in-1"}, state=AlertState.FIRING,
        message="above 8.0 for 10 min", value=8.4, limit=8.0, predicted_breach_s=None,
        conditions=frozenset({"temperature_c/threshold"}), created_ms=T0_MS, updated_ms=T0_MS,
    )  # fmt: skip
    return Notification("firing", alert, list(contacts), ACK_URL)


def _plain_body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_notify_email_arrives_at_a_real_smtp_server_through_the_dispatcher(
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    clock = FakeClock(wall_s=T0_MS / 1000 + 35 * 60)  # the text's "35 m ago"
    notification = _notification(Contact("Ana", "cold", [_mailto(port, "ana@example.com")]))
    results: list[tuple[str, str, bool, str | None]] = []
    with Dispatcher(
        [AppriseChannel(clock=clock)], on_result=lambda *r: results.append(r)
    ) as dispatcher:
        assert dispatcher.submit(notification)
        wait_until(lambda: inbox.messages(), 30, "the email")
        wait_until(lambda: results, 10, "the delivery result")

    [(recipients, message)] = inbox.messages()
    expected = render(notification, now_ms=T0_MS + 35 * 60 * 1000)
    assert recipients == ["ana@example.com"]
    assert message["Subject"] == expected.subject
    assert message["Subject"].startswith("[CRITICAL] FIRING: too-warm at plant-a · kitchen")
    body = _plain_body(message)
    assert body.strip().splitlines() == expected.body.splitlines()  # SMTP ends lines in CRLF
    assert "Value:  8.4 °C, limit 8.0 °C (0.4 above)" in body
    assert "(35 m ago)" in body
    assert f"open {ACK_URL}" in body
    assert "sitewatch-collector alerts ack c0ffee --by NAME" in body
    assert results == [("c0ffee", "apprise", True, None)]
    assert dispatcher.stats()["apprise"].sent == 1


def test_notify_email_failed_recipient_is_retried_alone_and_no_secret_leaks(
    smtp: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, port = smtp
    closed_port = free_port()  # nothing listens there: connection refused
    ana = Contact("Ana", "cold", [_mailto(port, "ana@example.com")])
    ben_urls = [
        _mailto(closed_port, "ben@example.com", "ben:hunter22pw@"),
        f"json://hook:t0kenPW99@127.0.0.1:{closed_port}/hooks/t0kenPATH99",
    ]
    ben = Contact("Ben", "cold", ben_urls)
    notification = _notification(ana, ben)
    channel = AppriseChannel()

    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError) as raised:
        channel.send(notification)

    error = raised.value
    assert not error.permanent
    assert error.retry_with == dataclasses.replace(notification, recipients=[ben])
    assert str(error).startswith("Ben: mailto://127.0.0.1: ")
    assert "; Ben: json://127.0.0.1: " in str(error)
    assert [recipients for recipients, _ in inbox.messages()] == [["ana@example.com"]]
    # Even with the root logger at DEBUG, neither our errors nor apprise's lines hold a secret.
    for secret in ("hunter22pw", "t0kenPW99", "t0kenPATH99"):
        assert secret not in str(error)
        assert secret not in caplog.text


def test_notify_email_unparseable_url_fails_permanently() -> None:
    notification = _notification(Contact("Ana", "cold", ["no-such-service://token/secret"]))

    with pytest.raises(DeliveryError) as raised:
        AppriseChannel().send(notification)

    assert raised.value.permanent
    assert raised.value.retry_with is None
    assert "secret" not in str(raised.value)
