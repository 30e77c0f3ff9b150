"""The HTTP plumbing under the alert web page: a request and a response as plain values,
and a ``ThreadingHTTPServer`` whose handler reads a bounded body, hands the request to an
app (``App.handle``) and writes its response with the security headers every page gets
(no caching, no framing, no sniffing, a strict Content-Security-Policy: the pages load
nothing from anywhere and run no script).

The server thread model is the standard library's: one thread per connection, daemon
threads so a phone holding a connection open never delays ``shutdown``.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "MAX_BODY_BYTES",
    "SECURITY_HEADERS",
    "App",
    "PageServer",
    "PageServer6",
    "Request",
    "Response",
    "html_response",
    "json_response",
    "redirect",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
"""The largest request body read (forms are a few hundred bytes); larger gets 413."""

SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
     "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
)  # fmt: skip


@dataclass
class Request:
    """One HTTP request: ``target`` as sent (path and query), ``path`` alone, the query's
    first values, the headers, the whole body (at most ``MAX_BODY_BYTES``) and the
    client's address."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    client: str

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for header in self.headers.get_all("Cookie") or []:
            for part in str(header).split(";"):
                name, sep, value = part.strip().partition("=")
                if sep and name not in jar:
                    jar[name] = value.strip().strip('"')
        return jar

    def form(self) -> dict[str, str]:
        """The POST body's fields (form-encoded or a JSON object), first value of each."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = self.body.decode("utf-8", errors="replace")
        if content_type == "application/json":
            try:
                data = json.loads(text or "{}")
            except ValueError:
                return {}
            if not isinstance(data, dict):
                return {}
            return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}
        try:
            parsed = parse_qs(text, keep_blank_values=True, max_num_fields=50)
        except ValueError:
            return {}
        return {key: values[0] for key, values in parsed.items()}


@dataclass
class Response:
    """What to answer: status, body, its content type and extra headers (cookies,
    Location); ``SECURITY_HEADERS`` and Content-Length are added when it is sent."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)



def html_response(status: int, html: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, html.encode("utf-8"), headers=headers or [])


def json_response(status: int, data: Mapping[str, Any]) -> Response:
    return Response(status, json.dumps(data).encode("utf-8"), "application/json")


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """303 See Other: after a POST, the browser GETs ``location``."""
    return Response(HTTPStatus.SEE_OTHER, b"", headers=[("Location", location), *(headers or [])])


class App(Protocol):
    """What the server serves: one response per request (may raise: the handler answers
    500 and logs it)."""

    def handle(self, request: Request) -> Response: ...


class PageServer(ThreadingHTTPServer):
    """Serves ``app`` at ``address`` (IPv4; ``PageServer6`` for an IPv6 host)."""

    daemon_threads = True  # a stuck phone connection never holds up stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind resolves the host's FQDN, which can hang for
        # seconds on a Pi without DNS; the name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class PageServer6(PageServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a silent client may hold its connection and thread

    def version_string(self) -> str:
        return "sitewatch"  # the Server header: no Python version for scanners

    # The do_* names are those BaseHTTPRequestHandler calls.
    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: %s " + format, self.client_address[0], *args)

    def _serve(self) -> None:
        app = cast(PageServer, self.server).app
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        refusal = None
        if self.headers.get("Transfer-Encoding"):
            refusal = Response(HTTPStatus.LENGTH_REQUIRED, b"send a Content-Length")
        elif length < 0:
            refusal = Response(HTTPStatus.BAD_REQUEST, b"bad Content-Length")
        elif length > MAX_BODY_BYTES:
            refusal = Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request too large")
        if refusal is not None:  # the body is not read: this connection ends here
            self.close_connection = True
            refusal.content_type = "text/plain; charset=utf-8"
            self._send(refusal)
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        try:
            query = {k: v[0] for k, v in parse_qs(parts.query, max_num_fields=20).items()}
        except ValueError:  # more fields than any page takes
            query = {}
        request = Request(self.command, self.path, parts.path, query, self.headers, body,
                          str(self.client_address[0]))  # fmt: skip
        try:
            response = app.handle(request)
        except Exception:  # the request boundary: log it, answer 500, keep serving
            log.exception("web: %s %s failed", self.command, parts.path)
            self.close_connection = True
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error",
                                "text/plain; charset=utf-8")  # fmt: skip
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (*SECURITY_HEADERS, *response.headers):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
