"""The collector's alert web page, served for real on a loopback port.

In headless Chromium (selenium + Debian's chromedriver): log in, see the firing alerts by
severity, acknowledge one and silence another, see the new state and the audit entries with
the logged-in name; a link from another site lands on the alert once logged in.
Over plain HTTP (urllib): nothing unauthenticated or without the CSRF token changes anything
or shows an alert; the API token works; wrong passwords, expired or revoked sessions and
guessing are refused. Alerts come from the real ``AlertEngine`` on a temporary SQLite store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.alerting.config import AlertingConfig, WebConfig, parse_alerting
from sitewatch.collector.alerting.engine import AlertEngine
from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.alerting.web import (
    AlertWebServer,
    SeriesQuery,
    chart_fields,
    influx_readings,
)
from sitewatch.collector.alerting.webauth import (
    hash_password,
    parse_users,
    set_password,
    users_file_line,
    verify_password,
)
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.config import InfluxConfig
from sitewatch.collector.decisions import Decision
from sitewatch.collector.influxql import InfluxQuery, QueryError
from sitewatch.collector.lineproto import dew_point_c, telemetry_lines
from sitewatch.collector.sinks.influx_v1 import InfluxV1Sink
from sitewatch.configfile import ConfigError
from sitewatch.localrun import Influxd
from sitewatch.wire import Quality, Reading, TelemetryMessage

T0 = 1_795_464_000.0
PASSWORD = "frost on the coils"
TOKEN = "t0ken-for-scripts-0123456789abcdef"
SECRET_WORDS = ("above 8.0 for 10 min", "cold-room-high", "walk-in-1", "door left open")


class FakeInflux:
    """Readings as InfluxDB would return them for the alert page's charts: a cold room
    warming from 4 °C past 8 °C over the last hours, one reading a minute; ``down`` makes
    every query fail as an unreachable server does."""

    def __init__(self) -> None:
        self.queries: list[SeriesQuery] = []
        self.down = False

    def __call__(self, query: SeriesQuery) -> list[tuple[int, float]]:
        self.queries.append(query)
        if self.down:
            raise QueryError("cannot reach InfluxDB at http://127.0.0.1:8086/query: refused")
        if (query.sensor, query.field) != ("cold-room", "temperature_c"):
            return []
        start = int(T0 * 1000) - 5 * 3600_000
        return [(start + i * 60_000, 4.0 + i * 0.016) for i in range(300)]


def _alerting() -> AlertingConfig:
    return parse_alerting({
        "public_url": "http://collector.local:8080",
        "teams": [{"name": "fridge", "members": [{"name": "Ana",
                                                  "apprise": ["ntfy://ntfy.sh/ana"]}]}],
        "routes": [{"match": {}, "levels": ["fridge"]}],
    })  # fmt: skip


def _decision(verdict: Literal["fire", "resolve"], sensor: str, field_name: str, rule: str,
              severity: str, message: str, value: float, ts_ms: int) -> Decision:  # fmt: skip
    return Decision(verdict, "plant-a", "pi-01", sensor, field_name, rule, "threshold",
                    severity, "technician", ts_ms, value, 1.0, message, "x")  # fmt: skip


@dataclass
class Rig:
    """A store with two firing alerts made by the real engine, and a web server on it."""

    tmp_path: Path
    clock: FakeClock = field(default_factory=lambda: FakeClock(wall_s=T0))
    influx: FakeInflux = field(default_factory=FakeInflux)

    def __post_init__(self) -> None:
        self.users_file = self.tmp_path / "web-users"
        set_password(self.users_file, "ana", PASSWORD)
        self.token_file = self.tmp_path / "web-token"
        self.token_file.write_text(TOKEN + "\n")
        self.store = AlertStore(self.tmp_path / "alerts.db")
        catalog = SensorCatalog()
        catalog.set_sensor("plant-a", "pi-01", "cold-room", fields=["temperature_c"],
                           labels={"zone": "cold-room", "equipment": "walk-in-1"})  # fmt: skip
        catalog.set_sensor("plant-a", "pi-01", "door", fields=["open"],
                           labels={"zone": "cold-room"})  # fmt: skip
        self.engine = AlertEngine(_alerting(), AlertStore(self.tmp_path / "alerts.db"),
                                  catalog=catalog, clock=self.clock)  # fmt: skip
        now_ms = int(T0 * 1000)
        self.engine.decided(_decision("fire", "door", "open", "door-open", "warning",
                                      "door left open for 15 min", 1.0, now_ms))  # fmt: skip
        self.engine.decided(_decision("fire", "cold-room", "temperature_c", "cold-room-high",
                                      "critical", "above 8.0 for 10 min", 8.6, now_ms))  # fmt: skip
        self.clock.advance(600)
        self.cold = self._open("cold-room-high")
        self.door = self._open("door-open")
        self.devices: list[dict[str, Any]] = [
            {"site": "plant-a", "device": "pi-01", "state": "online",
             "last_seen_ms": int(self.clock.time() * 1000) - 4000, "boot_id": "b1",
             "agent_version": "0.1.0", "faulted_sensors": []},
            {"site": "plant-a", "device": "pi-02", "state": "sensor-fault",
             "last_seen_ms": None, "boot_id": None, "agent_version": None,
             "faulted_sensors": ["freezer"]},
        ]  # fmt: skip
        self.server: AlertWebServer | None = None

    def _open(self, rule: str) -> Alert:
        found = [a for a in self.store.open_alerts() if a.rule == rule]
        assert len(found) == 1 and found[0].state == AlertState.FIRING
        return found[0]

    def start(self, **web: Any) -> AlertWebServer:
        settings: dict[str, Any] = {"enabled": True, "port": 0, "users_file": self.users_file,
                                    "token_file": self.token_file, **web}  # fmt: skip
        self.server = AlertWebServer(WebConfig(**settings), self.store, readings=self.influx,
                                     devices=lambda: self.devices, clock=self.clock)  # fmt: skip
        self.server.start()
        return self.server

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.engine.store.close()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


# -- HTTP without a browser ------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: Any
    body: str

    def set_cookies(self) -> list[str]:
        return list(self.headers.get_all("Set-Cookie") or [])


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 303 comes back as it is, to be inspected


class Client:
    """A user agent over urllib that keeps cookies by name and never follows redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.opener = urllib.request.build_opener(_NoRedirects)

    def request(
        self,
        method: str,
        path: str,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Reply:
        data = None
        all_headers = dict(headers or {})
        if form is not None:
            data = urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        # Always http://127.0.0.1:<port>: the server under test.
        request = urllib.request.Request(  # noqa: S310
            self.base + path, data=data, method=method, headers=all_headers
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                reply = Reply(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as error:
            reply = Reply(error.code, error.headers, error.read().decode())
        for cookie in reply.set_cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, form=form if form is not None else {}, **kwargs)

    def login(self, name: str = "ana", password: str = PASSWORD, next_path: str = "/") -> Reply:
        page = self.get("/login")
        nonce = _hidden(page.body, "csrf")
        return self.post("/login", {"username": name, "password": password, "csrf": nonce,
                                    "next": next_path})  # fmt: skip

    def csrf(self) -> str:
        return _hidden(self.get("/").body, "csrf")


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', html)
    assert match, f"no hidden {name} field in the page"
    return match.group(1)


def _unchanged(rig: Rig) -> None:
    for alert in (rig.cold, rig.door):
        assert rig.store.get(alert.id) == alert
        assert [e.action for e in rig.store.audit(alert.id)] == ["fire"]


def _reveals_nothing(body: str) -> None:
    for word in SECRET_WORDS:
        assert word not in body


def test_alert_web_unauthenticated_requests_change_nothing_and_show_nothing(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    for path in ("/", f"/alerts/{rig.cold.id}", "/devices", "/api/alerts",
                 f"/api/alerts/{rig.cold.id}", "/api/devices", "/nowhere"):  # fmt: skip
        reply = client.get(path)
        assert reply.status == 401, path
        _reveals_nothing(reply.body)
        assert "walk-in" not in reply.body and "pi-02" not in reply.body
    page = client.get(f"/alerts/{rig.cold.id}")
    assert 'id="login"' in page.body  # the login form, coming back to the alert
    assert _hidden(page.body, "next") == f"/alerts/{rig.cold.id}"
    for path, form in (
        (f"/alerts/{rig.cold.id}/ack", {"comment": "x"}),
        (f"/alerts/{rig.cold.id}/resolve", {}),
        (f"/alerts/{rig.door.id}/silence", {"duration": "2h", "reason": "defrost"}),
        (f"/api/alerts/{rig.cold.id}/ack", {"by": "mallory"}),
        ("/logout", {}),
    ):
        reply = client.post(path, form)
        assert reply.status == 401, path
        _reveals_nothing(reply.body)
    # A wrong token and a made-up session cookie are no better.
    reply = client.post(f"/api/alerts/{rig.cold.id}/ack",
                        headers={"Authorization": "Bearer not-the-token-0123456789"})  # fmt: skip
    assert reply.status == 401
    client.cookies["sitewatch_session"] = "forged-session-value"
    assert client.post(f"/alerts/{rig.cold.id}/ack", {"csrf": "guess"}).status == 401
    assert client.get("/").status == 401
    _unchanged(rig)


def test_alert_web_post_without_csrf_token_is_refused(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    assert client.login().status == 303
    csrf = client.csrf()
    for form in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}):
        reply = client.post(f"/alerts/{rig.cold.id}/ack", form)
        assert reply.status == 403
        _reveals_nothing(reply.body)
    reply = client.post(f"/api/alerts/{rig.cold.id}/resolve", {"comment": "x"})
    assert reply.status == 403
    assert client.post("/logout", {}).status == 403  # logging someone out is a change too
    _unchanged(rig)
    # The same request with the session's token does act, as the logged-in user.
    reply = client.post(f"/alerts/{rig.cold.id}/ack", {"csrf": csrf, "back": "/"})
    assert reply.status == 303 and reply.headers["Location"] == "/?done=ack"
    acked = rig.store.get(rig.cold.id)
    assert acked is not None and acked.state == AlertState.ACKNOWLEDGED
    assert acked.acked_by == "ana" and acked.acked_ms == int(rig.clock.time() * 1000)
    # Through the CSRF header, as a script with a session would send it.
    reply = client.post(f"/api/alerts/{rig.door.id}/silence",
                        {"duration": "30m", "reason": "defrost"},
                        headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert reply.status == 200 and json.loads(reply.body)["alert"]["silenced_by"] == "ana"


def test_alert_web_login_sets_a_safe_session_cookie_and_logout_ends_it(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    reply = client.login(next_path=f"/alerts/{rig.cold.id}")
    assert reply.status == 303 and reply.headers["Location"] == f"/alerts/{rig.cold.id}"
    session = next(c for c in reply.set_cookies() if c.startswith("sitewatch_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    assert "Max-Age=43200" in session and "Secure" not in session
    page = client.get(f"/alerts/{rig.cold.id}")
    assert page.status == 200 and "above 8.0 for 10 min" in page.body
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Server"] == "sitewatch"
    assert client.post("/logout", {"csrf": client.csrf()}).status == 303
    assert client.get("/").status == 401
    # An open redirect is not possible through "next".
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/login"):
        assert Client(rig.url).login(next_path=evil).headers["Location"] == "/"


def test_alert_web_secure_cookies_use_the_host_prefix(rig: Rig) -> None:
    rig.start(secure_cookies=True)
    reply = Client(rig.url).login()
    session = next(c for c in reply.set_cookies() if "_session=" in c)
    assert session.startswith("__Host-sitewatch_session=") and "; Secure" in session


def test_alert_web_wrong_password_or_unknown_user_fails(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    for name, password in (("ana", "frost on the coil"), ("ana", ""), ("bob", PASSWORD),
                           ("ANA", PASSWORD)):  # fmt: skip
        reply = client.login(name, password)
        assert reply.status == 401
        assert "Wrong name or password." in reply.body
        assert not any("_session=" in c for c in reply.set_cookies())
        assert client.get("/").status == 401
    # The login form is bound to its cookie: a form posted from elsewhere is refused.
    stranger = Client(rig.url)
    reply = stranger.post("/login", {"username": "ana", "password": PASSWORD, "csrf": "x" * 43})
    assert reply.status == 403 and not any("_session=" in c for c in reply.set_cookies())
    assert client.login().status == 303


def test_alert_web_guessing_passwords_is_slowed_down(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    for _ in range(10):
        assert client.login("ana", "guess").status == 401
    reply = client.login("ana", PASSWORD)  # even the right one, for now
    assert reply.status == 429 and "Too many wrong passwords" in reply.body
    rig.clock.advance(601)
    assert client.login("ana", PASSWORD).status == 303


def test_alert_web_sessions_expire_and_removed_users_are_out_at_once(rig: Rig) -> None:
    rig.start(session_ttl_s=3600)
    client = Client(rig.url)
    client.login()
    rig.clock.advance(3599)
    assert client.get("/").status == 200
    rig.clock.advance(2)
    assert client.get("/").status == 401
    client.login()
    assert client.get("/").status == 200
    rig.users_file.write_text(users_file_line("bo", "another password") + "\n")
    assert client.get("/").status == 401
    assert client.login().status == 401
    assert client.login("bo", "another password").status == 303


def test_alert_web_bearer_token_for_scripts(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    listing = client.get("/api/alerts", headers=auth)
    assert listing.status == 200
    ids = [a["id"] for a in json.loads(listing.body)["alerts"]]
    assert ids == [rig.cold.id, rig.door.id]  # most severe first
    shown = json.loads(client.get(f"/api/alerts/{rig.cold.id}", headers=auth).body)
    assert shown["alert"]["message"] == "above 8.0 for 10 min"
    assert [e["action"] for e in shown["audit"]] == ["fire"]
    reply = client.post(f"/api/alerts/{rig.cold.id}/ack", json_body={"by": "nightly-script",
                        "comment": "seen by the BMS"}, headers=auth)  # fmt: skip
    assert reply.status == 200 and json.loads(reply.body)["alert"]["acked_by"] == "nightly-script"
    reply = client.post(f"/api/alerts/{rig.cold.id}/ack", {}, headers=auth)
    assert reply.status == 409 and "was acknowledged by nightly-script" in reply.body
    reply = client.post(f"/api/alerts/{rig.door.id}/resolve", {}, headers=auth)
    assert reply.status == 200
    door = rig.store.get(rig.door.id)
    assert door is not None and door.state == AlertState.RESOLVED and door.resolved_by == "api"
    assert client.post("/api/alerts/feedbeef/ack", {}, headers=auth).status == 404
    devices = json.loads(client.get("/api/devices", headers=auth).body)["devices"]
    assert [d["device"] for d in devices] == ["pi-01", "pi-02"]
    html = client.get(f"/alerts/{rig.cold.id}", headers=auth)
    assert html.status == 200 and "above 8.0 for 10 min" in html.body


def test_alert_web_pages_show_alerts_charts_and_devices(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    client.login()
    index = client.get("/").body
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in index
    assert index.index('id="severity-critical"') < index.index('id="severity-warning"')
    assert "https://" not in index and "<script" not in index  # no external assets, no JS
    page = client.get(f"/alerts/{rig.cold.id}").body
    for expected in ("plant-a", "cold-room", "walk-in-1", "pi-01", "8.6", "firing",
                     "2026-11-23 20:00 UTC", "10 m ago"):  # fmt: skip
        assert expected in page
    assert page.count("<polyline") == 1 and "300 readings" in page
    query = rig.influx.queries[-1]
    assert (query.sensor, query.field) == ("cold-room", "temperature_c")
    assert query.until_ms == int(rig.clock.time() * 1000)
    assert query.until_ms - query.since_ms == 6 * 3600_000
    door = client.get(f"/alerts/{rig.door.id}").body
    assert "No readings from" in door and "<polyline" not in door
    rig.influx.down = True
    without = client.get(f"/alerts/{rig.cold.id}")
    assert without.status == 200
    assert "Readings unavailable: cannot reach InfluxDB" in without.body
    assert f'id="ack-{rig.cold.id}"' in without.body  # acting still works without InfluxDB
    devices = client.get("/devices").body
    assert 'id="device-plant-a-pi-02"' in devices and "sensor-fault" in devices
    assert "freezer" in devices
    assert client.get("/alerts/feedbeef").status == 404


def test_alert_web_refused_action_says_why(rig: Rig) -> None:
    rig.start()
    client = Client(rig.url)
    client.login()
    csrf = client.csrf()
    reply = client.post(f"/alerts/{rig.door.id}/silence",
                        {"csrf": csrf, "duration": "2h", "reason": " ",
                         "back": f"/alerts/{rig.door.id}"})  # fmt: skip
    assert reply.status == 409 and "give a reason for the silence" in reply.body
    reply = client.post(f"/alerts/{rig.door.id}/silence",
                        {"csrf": csrf, "duration": "45d", "reason": "holiday"})  # fmt: skip
    assert reply.status == 409 and "at most 30 days" in reply.body
    _unchanged(rig)


def test_alert_web_start_and_stop_are_idempotent(rig: Rig) -> None:
    server = rig.start()
    server.start()
    host, port = server.address
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.address
    again = AlertWebServer(WebConfig(enabled=True, port=port, users_file=rig.users_file),
                           rig.store)  # fmt: skip
    with again:  # the port is free again
        assert again.address == (host, port)


def test_alert_web_chart_fields_come_from_conditions_and_the_trail(rig: Rig) -> None:
    assert chart_fields(rig.cold, rig.store.audit(rig.cold.id)) == ["temperature_c"]
    now_ms = int(rig.clock.time() * 1000)
    steps: list[tuple[Literal["fire", "resolve"], str]] = [
        ("fire", "reading"), ("resolve", "temperature_c"), ("resolve", "reading")]
    for verdict, field_name in steps:
        rig.engine.decided(_decision(verdict, "cold-room", field_name, "cold-room-high",
                                     "critical", "silent", 1.0, now_ms))  # fmt: skip
    resolved = rig.store.get(rig.cold.id)
    assert resolved is not None and not resolved.conditions
    assert chart_fields(resolved, rig.store.audit(rig.cold.id)) == ["temperature_c"]


@pytest.mark.integration
def test_alert_web_influx_readings_reads_what_the_collector_stored(influxd: Influxd) -> None:
    """The charts' readings from a real influxd, stored through the collector's own line
    protocol: climate and equipment fields, and the derived dew point margin."""
    t0_ms = int(T0 * 1000)
    catalog = SensorCatalog()
    readings = [
        Reading(sensor="cold-room", ts=t0_ms + i * 60_000, quality=Quality.OK,
                temperature_c=4.0 + i / 10, humidity_pct=80.0)
        for i in range(30)
    ] + [
        Reading(sensor="door", ts=t0_ms + i * 60_000, quality=Quality.OK, open=i % 2 == 1)
        for i in range(4)
    ]  # fmt: skip
    message = TelemetryMessage(site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=0,
                               readings=readings)  # fmt: skip
    result = InfluxV1Sink(influxd.url, "sitewatch").write(telemetry_lines(message, catalog))
    assert result.reason == "", result
    query = InfluxQuery(InfluxConfig(api="v1", url=influxd.url, database="sitewatch"))
    read = influx_readings(query)

    def series(sensor: str, field_name: str, minutes: int) -> list[tuple[int, float]]:
        return list(read(SeriesQuery("plant-a", "pi-01", sensor, field_name,
                                     t0_ms + 60_000, t0_ms + minutes * 60_000)))  # fmt: skip

    try:
        temperature = series("cold-room", "temperature_c", 10)
        assert [ts for ts, _ in temperature] == [t0_ms + m * 60_000 for m in range(1, 11)]
        assert temperature[0][1] == pytest.approx(4.1)
        margin = series("cold-room", "dew_point_margin_c", 3)
        assert [v for _, v in margin] == pytest.approx(
            [4.0 + m / 10 - dew_point_c(4.0 + m / 10, 80.0) for m in range(1, 4)], abs=0.011)
        assert series("door", "open", 3) == [(t0_ms + 60_000, 1.0), (t0_ms + 120_000, 0.0),
                                             (t0_ms + 180_000, 1.0)]  # fmt: skip
        assert series("nowhere", "temperature_c", 10) == []
    finally:
        query.close()


# -- passwords and config ---------------------------------------------------------------------
def test_alert_web_password_hashes_and_users_file(tmp_path: Path) -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second  # salted
    assert verify_password("pw", first) and not verify_password("pW", first)
    assert not verify_password("pw", first[:-4] + "AAAA")
    assert not verify_password("pw", "scrypt$1048576$32$16$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5")
    path = tmp_path / "users"
    set_password(path, "ana", "one")
    set_password(path, "bo", "two")
    set_password(path, "ana", "three")
    users, problems = parse_users(path.read_text())
    assert problems == [] and sorted(users) == ["ana", "bo"]
    assert verify_password("three", users["ana"]) and not verify_password("one", users["ana"])
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        users_file_line("a:b", "pw")


def test_alert_web_config_needs_a_way_in_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _alerting().model_dump(mode="json", exclude_none=True)
    assert AlertingConfig.model_validate(base).web == WebConfig()
    assert (WebConfig().enabled, WebConfig().host, WebConfig().port) == (False, "127.0.0.1", 8080)

    def issues(web: dict[str, Any]) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            parse_alerting({**base, "web": web})
        return [str(issue) for issue in caught.value.issues]

    assert issues({"enabled": True}) == [
        "alerting.web.users_file: the web page needs users_file, token_file or token_env: "
        "otherwise nobody can log in"]  # fmt: skip
    assert issues({"enabled": True, "users_file": str(tmp_path / "none")}) == [
        f"alerting.web.users_file: cannot read {tmp_path / 'none'}"]  # fmt: skip
    bad = tmp_path / "users"
    bad.write_text(f"ana:{hash_password('pw')}\nbo:secret\n")
    assert issues({"enabled": True, "users_file": str(bad)}) == [
        "alerting.web.users_file: line 2: the hash is not a scrypt$… hash from users_file_line"]
    short = tmp_path / "token"
    short.write_text("abc\n")
    assert issues({"enabled": True, "token_file": str(short)}) == [
        "alerting.web.token_file: the token must have at least 16 characters (the value is "
        "not shown)"]  # fmt: skip
    assert issues({"enabled": True, "token_file": str(short), "token_env": "WEB_TOKEN"}) == [
        "alerting.web.token_file: give token_file or token_env, not both"]
    assert issues({"enabled": True, "token_env": "SITEWATCH_NO_SUCH_VAR"}) == [
        "alerting.web.token_env: $SITEWATCH_NO_SUCH_VAR is not set"]
    assert issues({"enabled": True, "port": 70000, "users_file": str(bad)})[0].startswith(
        "alerting.web.port: ")
    assert issues({"enabled": True, "session_ttl_s": 5, "users_file": str(bad)})[0].startswith(
        "alerting.web.session_ttl_s: ")
    monkeypatch.setenv("WEB_TOKEN", TOKEN)
    config = parse_alerting({**base, "web": {"enabled": True, "token_env": "WEB_TOKEN"}})
    assert config.web.enabled and config.web.session_ttl_s == 43200.0
    # Disabled, nothing is checked: the defaults need no files.
    assert parse_alerting({**base, "web": {"users_file": str(tmp_path / "none")}}).web.enabled \
        is False


# -- the real browser -------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven through Debian's chromedriver, with a profile of its own."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages chromium and "
                    "chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     "--window-size=412,915"):  # a phone-sized window  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15)


def _log_in(driver: Any, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    _wait(driver).until(ec.presence_of_element_located((By.ID, "login")))
    driver.find_element(By.ID, "username").send_keys("ana")
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()


def test_alert_web_browser_login_acknowledge_and_silence(rig: Rig, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    rig.start()
    browser.get(rig.url + "/")
    _log_in(browser, "not the password")
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "error"),
                                                          "Wrong name or password"))  # fmt: skip
    assert "cold-room-high" not in browser.page_source
    _log_in(browser)

    # The open alerts, the critical one first, each with its buttons.
    _wait(browser).until(ec.presence_of_element_located((By.ID, f"alert-{rig.cold.id}")))
    assert browser.find_element(By.ID, "user").text == "ana"
    sections = browser.find_elements(By.CSS_SELECTOR, "main section")
    assert [s.get_attribute("id") for s in sections] == ["severity-critical", "severity-warning"]
    card = browser.find_element(By.ID, f"alert-{rig.cold.id}")
    assert "above 8.0 for 10 min" in card.text and "firing" in card.text
    assert "walk-in-1" in card.text

    # Acknowledge from the list: the card's state changes, the page says so.
    browser.find_element(By.ID, f"ack-{rig.cold.id}").click()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "notice"), "Acknowledged."))
    card = browser.find_element(By.ID, f"alert-{rig.cold.id}")
    assert "acknowledged by ana" in card.text
    assert not browser.find_elements(By.ID, f"ack-{rig.cold.id}")  # nothing left to ack

    # The alert's page: who acknowledged, the audit entry with the user's name, the chart.
    card.find_element(By.LINK_TEXT, "cold-room-high").click()
    _wait(browser).until(ec.presence_of_element_located((By.ID, "audit")))
    assert browser.find_element(By.ID, "state").text.startswith("acknowledged by ana at ")
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    cells = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [(c[1], c[2]) for c in cells] == [("fire", "detection"), ("ack", "ana")]
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")

    # Silence the door alert from its page, with a duration and a reason.
    browser.get(f"{rig.url}/alerts/{rig.door.id}")
    browser.find_element(By.ID, f"silence-open-{rig.door.id}").click()
    Select(browser.find_element(By.ID, f"duration-{rig.door.id}")).select_by_value("4h")
    browser.find_element(By.ID, f"reason-{rig.door.id}").send_keys("door sensor being replaced")
    browser.find_element(By.ID, f"silence-{rig.door.id}").click()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "notice"), "Silenced."))
    assert "silenced by ana until 2026-11-24 00:10 UTC: door sensor being replaced" in (
        browser.find_element(By.ID, "state").text)
    last = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")[-1].text
    assert "silence" in last and "ana" in last

    # The store holds it all, and the engine takes the web's changes up at its next tick.
    cold, door = rig.store.get(rig.cold.id), rig.store.get(rig.door.id)
    assert cold is not None and cold.state == AlertState.ACKNOWLEDGED and cold.acked_by == "ana"
    assert door is not None and door.state == AlertState.SILENCED
    assert door.silenced_until_ms == int((rig.clock.time() + 4 * 3600) * 1000)
    assert len(rig.store.unemitted()) == 2
    rig.engine.tick()
    assert rig.store.unemitted() == []

    # Logging out ends it: the pages ask for a login again.
    browser.find_element(By.ID, "logout").click()
    _wait(browser).until(ec.presence_of_element_located((By.ID, "login")))
    browser.get(f"{rig.url}/alerts/{rig.cold.id}")
    _wait(browser).until(ec.presence_of_element_located((By.ID, "login")))
    assert "above 8.0" not in browser.page_source


class _LinkPage(BaseHTTPRequestHandler):
    """Another site (a chat app, a mail client) with a link to the alert."""

    target = ""

    def do_GET(self) -> None:
        body = f'<!doctype html><a id="go" href="{self.target}">open the alert</a>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_alert_web_browser_link_from_another_site_lands_on_the_alert(
    rig: Rig, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    rig.start()
    alert_url = f"{rig.url}/alerts/{rig.cold.id}"
    browser.get(alert_url)
    _log_in(browser)
    _wait(browser).until(ec.presence_of_element_located((By.ID, "audit")))

    # "localhost" is another site than "127.0.0.1": the SameSite=Strict session cookie is
    # not sent on the way in, and the page has to get it back by itself.
    handler = type("Link", (_LinkPage,), {"target": alert_url})
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://localhost:{other.server_address[1]}/")
        browser.find_element(By.ID, "go").click()
        _wait(browser).until(ec.presence_of_element_located((By.ID, "audit")))
        assert browser.current_url == alert_url
        assert "above 8.0 for 10 min" in browser.page_source
    finally:
        other.shutdown()
        other.server_close()
        thread.join(5)
