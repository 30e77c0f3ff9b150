"""The apprise channel picks the text per service: chat and push (ntfy) get the short form,
webhooks the full body. A real HTTP server on loopback plays ntfy and a JSON webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting.channels.apprise_channel import AppriseChannel
from sitewatch.collector.alerting.message import render
from sitewatch.collector.alerting.model import Alert, AlertState, Contact, Notification

T0_MS = 1_795_464_000_000
ACK_URL = "http://collector.local:8080/alerts/c0ffee"


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with 200 and keeps (path, JSON body)."""

    posts: list[tuple[str, dict[str, object]]]
    lock: threading.Lock

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        document = json.loads(self.rfile.read(length))
        with self.lock:
            self.posts.append((self.path, document))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "1"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[tuple[str, dict[str, object]]]]]:
    """A loopback HTTP server and the list of what was POSTed to it."""
    posts: list[tuple[str, dict[str, object]]] = []
    handler = type("Handler", (Recorder,), {"posts": posts, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), posts
    finally:
        server.shutdown()
        server.server_close()


def _notification(*urls: str) -> Notification:
    alert = Alert(
        id="c0ffee", key="plant-a/pi-01/cold-room/too-warm", site="plant-a", device="pi-01",
        sensor="cold-room", rule="too-warm", severity="critical", audience="technician",
        labels={"zone": "kitchen"}, state=AlertState.FIRING, message="above 8.0 for 10 min",
        value=8.4, limit=8.0, predicted_breach_s=None,
        conditions=frozenset({"temperature_c/threshold"}), created_ms=T0_MS, updated_ms=T0_MS,
    )  # fmt: skip
    return Notification("firing", alert, [Contact("Ben", "installers", list(urls))], ACK_URL)


def test_notify_apprise_ntfy_gets_the_short_form_and_webhooks_the_full_text(
    http_server: tuple[int, list[tuple[str, dict[str, object]]]],
) -> None:
    port, posts = http_server
    clock = FakeClock(wall_s=T0_MS / 1000 + 600)
    notification = _notification(
        f"ntfy://127.0.0.1:{port}/sitewatch-ben", f"json://127.0.0.1:{port}/hook"
    )

    AppriseChannel(clock=clock).send(notification)

    text = render(notification, now_ms=T0_MS + 600_000)
    by_path = dict(posts)
    assert set(by_path) == {"/", "/hook"}
    ntfy, webhook = by_path["/"], by_path["/hook"]
    assert ntfy["topic"] == "sitewatch-ben"
    assert ntfy["title"] == text.subject
    assert ntfy["message"] == text.short
    assert str(ntfy["message"]).endswith(f"\nAck: {ACK_URL}")
    assert webhook["title"] == text.subject
    assert webhook["message"] == text.body
    assert webhook["type"] == "failure"  # critical
