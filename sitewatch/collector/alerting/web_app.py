"""What the alert web page does with each request: who is asking (session cookie or API
token), whether a change carries its CSRF token, and which page or action answers. See
``web`` for the rules; ``web_pages`` writes the HTML and ``web_http`` serves it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from sitewatch.clock import Clock
from sitewatch.collector.alerting import commands
from sitewatch.collector.alerting.commands import CommandError, CommandResult
from sitewatch.collector.alerting.config import WebConfig
from sitewatch.collector.alerting.message import utc_text
from sitewatch.collector.alerting.model import Alert, AuditEntry
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.alerting.web_chart import line_chart
from sitewatch.collector.alerting.web_http import (
    Request,
    Response,
    html_response,
    json_response,
    redirect,
)
from sitewatch.collector.alerting.web_pages import (
    ChartView,
    Viewer,
    alert_page,
    alerts_page,
    devices_page,
    login_page,
    message_page,
    recheck_page,
)
from sitewatch.collector.alerting.webauth import (
    LoginThrottle,
    Session,
    Sessions,
    UsersFile,
    bearer_token,
    same_secret,
)

__all__ = [
    "API_ACTOR",
    "CHART_WINDOW_S",
    "DevicesSource",
    "ReadingsSource",
    "SeriesQuery",
    "WebApp",
    "chart_fields",
    "local_path",
]

log = logging.getLogger(__name__)

CHART_WINDOW_S = 6 * 3600.0
"""How much history an alert's chart shows."""

SESSION_COOKIE = "sitewatch_session"
SECURE_SESSION_COOKIE = "__Host-sitewatch_session"  # the browser enforces Secure, Path=/
HINT_COOKIE = "sitewatch_seen"  # Lax, says nothing secret: "a session may exist" (recheck_page)
LOGIN_COOKIE = "sitewatch_login"  # pairs the login form with the browser that loaded it
API_ACTOR = "api"
_RESOLVED_TAIL_MS = 30 * 60_000  # a resolved alert's chart ends this long after it resolved
_MAX_CHARTS = 3

_ID = r"([A-Za-z0-9_-]{1,64})"
_ALERT = re.compile(rf"^/alerts/{_ID}$")
_ACTION = re.compile(rf"^/alerts/{_ID}/(ack|resolve|silence)$")
_API_ALERT = re.compile(rf"^/api/alerts/{_ID}$")
_API_ACTION = re.compile(rf"^/api/alerts/{_ID}/(ack|resolve|silence)$")
_CONDITION_NOTE = re.compile(r"^(\S+)/\S+ (?:firing|cleared)$")
_DONE = {"ack": "Acknowledged.", "resolve": "Resolved.", "silence": "Silenced."}
_BEARER_REALM = ("WWW-Authenticate", 'Bearer realm="sitewatch"')

Action = Literal["ack", "resolve", "silence"]


@dataclass(frozen=True)
class SeriesQuery:
    """One chart's data: a sensor field's readings in ``[since_ms, until_ms]`` (UTC ms)."""

    site: str
    device: str
    sensor: str
    field: str
    since_ms: int
    until_ms: int


ReadingsSource = Callable[[SeriesQuery], Sequence[tuple[int, float]]]
"""``(ts_ms, value)`` pairs, oldest first; may raise (the page then says why, and works)."""

DevicesSource = Callable[[], Sequence[Mapping[str, Any]]]
"""The collector's device states: ``Collector.snapshot()["devices"]``."""


def chart_fields(alert: Alert, trail: Sequence[AuditEntry]) -> list[str]:
    """The fields worth a chart: those of the alert's conditions, then those its audit
    trail names (a resolved alert has no conditions left); the pseudo-field ``reading``
    (a sensor gone silent) has nothing to draw. At most three."""
    fields = [condition.split("/", 1)[0] for condition in sorted(alert.conditions)]
    for entry in trail:
        match = _CONDITION_NOTE.match(entry.comment or "")
        if match:
            fields.append(match.group(1))
    return [f for f in dict.fromkeys(fields) if f != "reading"][:_MAX_CHARTS]


def local_path(value: str | None) -> str:
    """``value`` when it is a path on this site (where to go after login or an action),
    else ``/``: never another site (``//evil``, ``/\\evil``) and never the login page."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or len(value) > 512
        or any(c == "\\" or c.isspace() or ord(c) < 32 for c in value)
        or urlsplit(value).path in ("/login", "/logout")
    ):
        return "/"
    return value


@dataclass(frozen=True)
class Identity:
    user: str
    session: Session | None  # None: the API token

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.user, None if self.session is None else self.session.csrf)


class WebApp:
    """What each request gets: authentication, then the page or the action."""

    def __init__(
        self,
        config: WebConfig,
        store: AlertStore,
        readings: ReadingsSource | None,
        devices: DevicesSource | None,
        clock: Clock,
    ) -> None:
        self.config = config
        self.store = store
        self.readings = readings
        self.devices = devices
        self.clock = clock
        self.users = UsersFile(config.users_file) if config.users_file is not None else None
        self.sessions = Sessions(config.session_ttl_s, clock)
        self.throttle = LoginThrottle(clock)
        self.token: str | None = None
        self.session_cookie = SECURE_SESSION_COOKIE if config.secure_cookies else SESSION_COOKIE

    # -- cookies ----------------------------------------------------------------------------
    def _cookie(self, name: str, value: str, max_age_s: int, *, same_site: str = "Strict",
                path: str = "/") -> tuple[str, str]:  # fmt: skip
        secure = "; Secure" if self.config.secure_cookies else ""
        return ("Set-Cookie", f"{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; "
                              f"SameSite={same_site}{secure}")  # fmt: skip

    def _login_form(self, request: Request, status: int, next_path: str,
                    error: str | None) -> Response:  # fmt: skip
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", nonce):
            nonce = secrets.token_urlsafe(32)  # reused otherwise: two tabs both work
        headers = [self._cookie(LOGIN_COOKIE, nonce, 3600, path="/login")]
        if status == HTTPStatus.UNAUTHORIZED:
            headers.append(_BEARER_REALM)
        html = login_page(next_path=next_path, nonce=nonce, error=error)
        return html_response(status, html, headers)

    # -- who is asking ----------------------------------------------------------------------
    def identify(self, request: Request) -> Identity | None:
        header = request.headers.get("Authorization")
        if header is not None:  # a wrong token never falls back to the cookie
            token = bearer_token(header)
            if token is not None and self.token is not None and same_secret(token, self.token):
                return Identity(API_ACTOR, None)
            return None
        value = request.cookies.get(self.session_cookie)
        session = self.sessions.get(value) if value else None
        if session is None:
            return None
        if self.users is None or not self.users.has(session.user):
            self.sessions.end(session.token)  # removed from the users file: out at once
            return None
        return Identity(session.user, session)

    def _csrf_ok(self, identity: Identity, request: Request, form: Mapping[str, str]) -> bool:
        if identity.session is None:
            return True
        given = form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
        return bool(given) and same_secret(given, identity.session.csrf)

    # -- dispatch ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method not in ("GET", "HEAD", "POST"):
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"",
                            headers=[("Allow", "GET, HEAD, POST")])  # fmt: skip
        if path == "/favicon.ico":
            return Response(HTTPStatus.NOT_FOUND)
        if path == "/login":
            return self._login(request) if method == "POST" else self._login_get(request)
        api = path.startswith("/api/")
        identity = self.identify(request)
        if identity is None:
            return self._unauthenticated(request, api)
        if method != "POST":
            return self._get(request, identity, api)
        form = request.form()
        if not self._csrf_ok(identity, request, form):
            log.warning("web: POST %s by %s from %s without a valid CSRF token: refused",
                        path, identity.user, request.client)  # fmt: skip
            if api:
                return json_response(HTTPStatus.FORBIDDEN, {"error": "missing or wrong CSRF token"})
            return html_response(HTTPStatus.FORBIDDEN, message_page(
                "Refused", "This form has expired or did not come from this site. Reload the "
                "page and try again.", identity.viewer))  # fmt: skip
        return self._post(request, identity, form, api)

    def _unauthenticated(self, request: Request, api: bool) -> Response:
        if api or request.method == "POST":
            if api:
                response = json_response(HTTPStatus.UNAUTHORIZED,
                                         {"error": "log in or send a token"})  # fmt: skip
            else:
                response = html_response(HTTPStatus.UNAUTHORIZED, message_page(
                    "Log in first", "Your login has ended; nothing was changed.", None,
                    back="/login"))  # fmt: skip
            response.headers.append(_BEARER_REALM)
            return response
        next_path = local_path(request.target)
        if request.cookies.get(HINT_COOKIE):
            return html_response(HTTPStatus.UNAUTHORIZED, recheck_page(next_path), [
                self._cookie(HINT_COOKIE, "", 0, same_site="Lax"),
                _BEARER_REALM,
            ])  # fmt: skip
        return self._login_form(request, HTTPStatus.UNAUTHORIZED, next_path, None)

    def _get(self, request: Request, identity: Identity, api: bool) -> Response:
        path = request.path
        if api:
            return self._api_get(path)
        viewer = identity.viewer
        now_ms = int(self.clock.time() * 1000)
        done = _DONE.get(request.query.get("done", ""))
        if path == "/":
            html = alerts_page(self.store.open_alerts(), viewer, now_ms=now_ms, notice=done)
            return html_response(HTTPStatus.OK, html)
        if path == "/devices":
            return html_response(HTTPStatus.OK, self._devices_html(viewer, now_ms))
        match = _ALERT.match(path)
        alert = self.store.get(match.group(1)) if match else None
        if alert is None:
            return html_response(HTTPStatus.NOT_FOUND, message_page(
                "Not found", "There is no such page or alert.", viewer))  # fmt: skip
        return html_response(HTTPStatus.OK, self._alert_html(alert, viewer, now_ms, done, None))

    def _post(
        self, request: Request, identity: Identity, form: Mapping[str, str], api: bool
    ) -> Response:
        path = request.path
        if path == "/logout" and identity.session is not None:
            self.sessions.end(identity.session.token)
            log.info("web: %s logged out", identity.user)
            return redirect("/login", [
                self._cookie(self.session_cookie, "", 0),
                self._cookie(HINT_COOKIE, "", 0, same_site="Lax"),
            ])  # fmt: skip
        match = (_API_ACTION if api else _ACTION).match(path)
        if match is None:
            if api:
                return json_response(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})
            return html_response(HTTPStatus.NOT_FOUND, message_page(
                "Not found", "There is no such action.", identity.viewer))  # fmt: skip
        alert_id, action = match.group(1), cast(Action, match.group(2))
        alert = self.store.get(alert_id)
        if alert is None:
            if api:
                return json_response(HTTPStatus.NOT_FOUND, {"error": f"no alert {alert_id!r}"})
            return html_response(HTTPStatus.NOT_FOUND, message_page(
                "Not found", "There is no such alert.", identity.viewer))  # fmt: skip
        actor = identity.user
        if identity.session is None and form.get("by", "").strip():
            actor = form["by"].strip()
        try:
            result = self._act(action, alert.id, actor, form)
        except CommandError as error:
            if api:
                return json_response(HTTPStatus.CONFLICT, {"error": str(error)})
            return self._refused(form.get("back"), identity.viewer, str(error))
        log.info("web: %s %s alert %s", actor, action, alert.id)
        if api:
            return json_response(HTTPStatus.OK, result.data)
        back = local_path(form.get("back") or f"/alerts/{alert.id}")
        return redirect(f"{back.split('?', 1)[0]}?done={action}")

    def _act(self, action: Action, alert_id: str, actor: str,
             form: Mapping[str, str]) -> CommandResult:  # fmt: skip
        now_s = self.clock.time()
        comment = form.get("comment")
        if action == "ack":
            return commands.ack_alert(self.store, alert_id, by=actor, comment=comment,
                                      now_s=now_s)  # fmt: skip
        if action == "resolve":
            return commands.resolve_alert(self.store, alert_id, by=actor, comment=comment,
                                          now_s=now_s)  # fmt: skip
        return commands.silence_alert(
            self.store, alert_id, duration=form.get("duration", ""),
            reason=form.get("reason", ""), by=actor, now_s=now_s,
        )  # fmt: skip

    def _refused(self, back: str | None, viewer: Viewer, error: str) -> Response:
        """The page the action came from, saying why it could not be done (409)."""
        now_ms = int(self.clock.time() * 1000)
        target = urlsplit(local_path(back)).path
        match = _ALERT.match(target)
        alert = self.store.get(match.group(1)) if match else None
        if alert is not None:
            html = self._alert_html(alert, viewer, now_ms, None, error)
        else:
            html = alerts_page(self.store.open_alerts(), viewer, now_ms=now_ms, error=error)
        return html_response(HTTPStatus.CONFLICT, html)

    def _api_get(self, path: str) -> Response:
        if path == "/api/alerts":
            return json_response(HTTPStatus.OK, commands.list_alerts(self.store).data)
        if path == "/api/devices":
            devices = None if self.devices is None else [dict(d) for d in self.devices()]
            return json_response(HTTPStatus.OK, {"devices": devices})
        match = _API_ALERT.match(path)
        alert = self.store.get(match.group(1)) if match else None
        if alert is None:
            return json_response(HTTPStatus.NOT_FOUND, {"error": "no such alert or endpoint"})
        return json_response(HTTPStatus.OK, commands.show_alert(self.store, alert.id).data)

    # -- login ------------------------------------------------------------------------------
    def _login_get(self, request: Request) -> Response:
        next_path = local_path(request.query.get("next"))
        if self.identify(request) is not None:
            return redirect(next_path)
        return self._login_form(request, HTTPStatus.OK, next_path, None)

    def _login(self, request: Request) -> Response:
        form = request.form()
        next_path = local_path(form.get("next"))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not same_secret(form.get("csrf", ""), nonce):
            return self._login_form(request, HTTPStatus.FORBIDDEN, next_path,
                                    "The login form expired. Please try again.")  # fmt: skip
        if self.users is None:
            return self._login_form(request, HTTPStatus.UNAUTHORIZED, next_path,
                                    "Password login is not set up on this collector.")  # fmt: skip
        name, password = form.get("username", "").strip(), form.get("password", "")
        wait_s = self.throttle.wait_s(request.client, name)
        if wait_s > 0:
            log.warning("web: login for %r from %s refused: too many wrong passwords",
                        name, request.client)  # fmt: skip
            return self._login_form(request, HTTPStatus.TOO_MANY_REQUESTS, next_path,
                                    f"Too many wrong passwords. Try again in "
                                    f"{int(wait_s // 60) + 1} min.")  # fmt: skip
        if not name or not self.users.verify(name, password):
            self.throttle.failed(request.client, name)
            log.warning("web: wrong name or password for %r from %s", name, request.client)
            return self._login_form(request, HTTPStatus.UNAUTHORIZED, next_path,
                                    "Wrong name or password.")  # fmt: skip
        self.throttle.succeeded(request.client, name)
        session = self.sessions.create(name)
        log.info("web: %s logged in from %s", name, request.client)
        ttl_s = int(self.config.session_ttl_s)
        return redirect(next_path, [
            self._cookie(self.session_cookie, session.token, ttl_s),
            self._cookie(HINT_COOKIE, "1", ttl_s, same_site="Lax"),
            self._cookie(LOGIN_COOKIE, "", 0, path="/login"),
        ])  # fmt: skip

    # -- pages ------------------------------------------------------------------------------
    def _alert_html(self, alert: Alert, viewer: Viewer, now_ms: int, notice: str | None,
                    error: str | None) -> str:  # fmt: skip
        trail = self.store.audit(alert.id)
        charts = self._charts(alert, trail, now_ms)
        return alert_page(alert, trail, charts, viewer, now_ms=now_ms, notice=notice,
                          error=error)  # fmt: skip

    def _charts(self, alert: Alert, trail: Sequence[AuditEntry], now_ms: int) -> list[ChartView]:
        fields = chart_fields(alert, trail)
        if self.readings is None:
            return [ChartView(f, None, "Readings are not available on this page.") for f in fields]
        until_ms = now_ms
        if not alert.is_open and alert.resolved_ms is not None:
            until_ms = min(now_ms, alert.resolved_ms + _RESOLVED_TAIL_MS)
        since_ms = until_ms - int(CHART_WINDOW_S * 1000)
        span = f"{utc_text(since_ms)} to {utc_text(until_ms)}"
        views = []
        for name in fields:
            query = SeriesQuery(alert.site, alert.device, alert.sensor, name, since_ms, until_ms)
            try:
                points = list(self.readings(query))
            except Exception as error:  # the page must work with InfluxDB down
                log.warning("web: no readings for alert %s (%s): %s", alert.id, name, error)
                views.append(ChartView(name, None, f"Readings unavailable: {error}"))
                continue
            if not points:
                views.append(ChartView(name, None, f"No readings from {span}."))
                continue
            start_ms = alert.fired_ms if alert.fired_ms is not None else alert.created_ms
            svg = line_chart(points, since_ms=since_ms, until_ms=until_ms, label=name,
                             marks=[(start_ms, "alert")], limit=alert.limit)  # fmt: skip
            views.append(ChartView(name, svg, f"{len(points)} readings, {span}."))
        return views

    def _devices_html(self, viewer: Viewer, now_ms: int) -> str:
        devices: Sequence[Mapping[str, Any]] | None = None
        if self.devices is not None:
            try:
                devices = list(self.devices())
            except Exception:  # a status problem must not break the page
                log.exception("web: cannot read the device states")
        counts: dict[tuple[str, str], int] = {}
        for alert in self.store.open_alerts():
            counts[(alert.site, alert.device)] = counts.get((alert.site, alert.device), 0) + 1
        return devices_page(devices, counts, viewer, now_ms=now_ms)
