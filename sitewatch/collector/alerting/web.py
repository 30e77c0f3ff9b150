"""The collector's web page for technicians: open alerts by severity with acknowledge,
resolve and silence buttons, each alert's facts, audit trail and recent readings, and the
devices' states. Plain HTML that works on a phone without JavaScript, served by the standard
library's ``ThreadingHTTPServer`` on its own thread (``AlertWebServer``).

Who may do what:

- Everything needs a login (name and password from the users file, giving a session
  cookie: random, ``HttpOnly``, ``SameSite=Strict``, ``Secure`` with ``secure_cookies``,
  ending ``session_ttl_s`` after login) or the API token (``Authorization: Bearer …``,
  for scripts). Without one, a page answers 401 with the login form, ``/api/…`` answers
  401 with JSON, and a POST answers 401 and changes nothing; no alert content is ever
  sent. A link followed from an email or a chat app arrives without the Strict cookie: a
  Lax cookie that says nothing but "logged in before" makes the page reload itself once,
  which brings the session cookie along.
- Every change is a POST. With a session it must carry the session's CSRF token (the forms
  do), else 403 and nothing changes; token requests need none (browsers never send that
  header on their own). The login form is bound to a cookie of its own the same way.
- Acks, resolves and silences go through ``commands`` (the CLI's code) on the alert store,
  recorded in the audit trail under the logged-in name (token requests: the ``by`` field,
  else ``api``); the engine picks them up at its next tick.

JSON for scripts: ``GET /api/alerts`` (as ``alerts list --json``), ``GET /api/alerts/<id>``
(as ``alerts show --json``), ``POST /api/alerts/<id>/ack|resolve|silence`` (form or JSON
body: ``comment``, ``duration``, ``reason``, ``by``), ``GET /api/devices``.

Readings for the charts and device states come from injected callables, so the page works
(without them) when InfluxDB or the collector's status are not at hand.

Modules: this one starts and stops the server; ``web_app`` authenticates and routes,
``web_pages`` writes the HTML, ``web_chart`` the SVG charts, ``web_http`` is the HTTP
plumbing and ``webauth`` holds passwords, sessions and the login brake.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.alerting.config import WebConfig
from sitewatch.collector.alerting.store import AlertStore
from sitewatch.collector.alerting.web_app import (
    CHART_WINDOW_S,
    DevicesSource,
    ReadingsSource,
    SeriesQuery,
    WebApp,
    chart_fields,
)
from sitewatch.collector.alerting.web_http import PageServer, PageServer6
from sitewatch.collector.alerting.webauth import MIN_TOKEN_CHARS
from sitewatch.collector.catalog import EQUIPMENT_FIELDS
from sitewatch.configfile import read_secret

if TYPE_CHECKING:
    from sitewatch.collector.influxql import InfluxQuery

__all__ = [
    "CHART_WINDOW_S",
    "AlertWebServer",
    "DevicesSource",
    "ReadingsSource",
    "SeriesQuery",
    "chart_fields",
    "influx_readings",
]

log = logging.getLogger(__name__)


def influx_readings(query: InfluxQuery) -> ReadingsSource:
    """A ``ReadingsSource`` reading from InfluxDB with the collector's ``InfluxQuery``:
    equipment fields from ``equipment``, climate fields from ``environment``, and the
    derived ``dew_point_margin_c`` as temperature minus dew point."""

    def read(field_name: str, q: SeriesQuery) -> list[tuple[int, float]]:
        measurement = "equipment" if field_name in EQUIPMENT_FIELDS else "environment"
        return query.readings(
            measurement, field_name, site=q.site, device=q.device, sensor=q.sensor,
            since_ms=q.since_ms, until_ms=q.until_ms,
        )  # fmt: skip

    def readings(q: SeriesQuery) -> Sequence[tuple[int, float]]:
        if q.field != "dew_point_margin_c":
            return read(q.field, q)
        dew = dict(read("dew_point_c", q))
        return [(ts, t - dew[ts]) for ts, t in read("temperature_c", q) if ts in dew]

    return readings


class AlertWebServer:
    """The web page on ``config.host``:``config.port``, on a thread of its own.

    Parameters
    ----------
    config
        The ``alerting.web`` section (users file, token, session length, cookies).
    store
        The alert store; a connection of its own is best (``AlertStore.in_state_dir``), so
        page loads never wait on the engine's lock. The caller closes it after ``stop``.
    readings
        Recent readings for the charts (``influx_readings(InfluxQuery(config.influx))``);
        None: the alert page says readings are not available.
    devices
        The device states (``lambda: collector.snapshot()["devices"]``); None: the devices
        page says they are not available.
    clock
        Session expiry (monotonic) and action times (wall); a ``FakeClock`` in tests.

    ``start`` binds (``OSError`` if the port is taken or the token file cannot be read) and
    serves; ``stop`` closes the socket and joins the thread. Both are safe to call twice;
    ``with`` does both. The token is read at ``start``, the users file at each login (again
    whenever it changed).
    """

    def __init__(
        self,
        config: WebConfig,
        store: AlertStore,
        *,
        readings: ReadingsSource | None = None,
        devices: DevicesSource | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.app = WebApp(config, store, readings, devices, clock or SystemClock())
        self._lock = threading.Lock()
        self._server: PageServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when the config says 0); ``RuntimeError`` when
        not started."""
        server = self._server
        if server is None:
            raise RuntimeError("the web server is not running")
        host, port = server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            token = read_secret(self.config.token_file, self.config.token_env)
            token = token.strip() if token else None
            if token is not None and len(token) < MIN_TOKEN_CHARS:
                log.error("web: the API token is too short; token requests are refused")
                token = None
            self.app.token = token
            server_class = PageServer6 if ":" in self.config.host else PageServer
            server = server_class((self.config.host, self.config.port), self.app)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                      name="alert-web", daemon=True)  # fmt: skip
            thread.start()
            self._server, self._thread = server, thread
        log.info("web: serving the alert page on %s", self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving; ``RuntimeError`` if the thread does not end within ``timeout_s``."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"the web server thread did not stop within {timeout_s:g} s")

    def __enter__(self) -> AlertWebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
