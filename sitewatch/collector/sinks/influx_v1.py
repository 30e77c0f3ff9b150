"""InfluxDB 1.x: line protocol to ``POST /write`` (``influx.api: v1``).

This is the API of the InfluxDB that Debian and Raspberry Pi OS ship (1.6.7), which has no
``/api/v2/write``. One keep-alive connection (urllib3) carries every write; each write is
one request of ``"\\n".join(lines)`` with millisecond timestamps (``precision=ms``), to
``database`` and, when given, ``retention_policy`` (else the database's default policy).
Credentials go in an ``Authorization: Basic`` header, which InfluxDB 1.x accepts like its
``u``/``p`` query parameters but which keeps the password out of URLs and proxy logs.

InfluxDB 1.x writes partially: when some lines are malformed or conflict with a field's
type it stores the others and answers 400 ``partial write: ...``. Malformed lines are quoted
in that answer and come back as ``rejected`` indices; type conflicts name only the field
(``field type conflict: input field "temperature_c" on measurement "environment" is type
string, already exists as type float dropped=1``), so they come back with no indices and
the writer splits the batch to find them.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

import urllib3

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.protocols import WriteResult
from sitewatch.collector.sinks.classify import (
    classify_response,
    network_failure,
    parse_retry_after,
    server_message,
)

__all__ = ["InfluxV1Sink"]


class InfluxV1Sink:
    """Writes line protocol to an InfluxDB 1.x ``/write`` endpoint; never raises on write.

    ``url`` is the server's base URL (``http://influx.local:8086``, may include a path
    prefix behind a reverse proxy). ``timeout_s`` bounds each request (connect plus answer,
    default 10 s). ``clock`` gives wall time to read Retry-After dates.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        params = {"db": database, "precision": "ms"}
        if retention_policy is not None:
            params["rp"] = retention_policy
        self._write_url = f"{url.rstrip('/')}/write?{urlencode(params)}"
        self._target = f'database "{database}" at {url}'
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username is not None:
            self._headers.update(urllib3.make_headers(basic_auth=f"{username}:{password or ''}"))
        self._clock: Clock = clock or SystemClock()
        # No automatic retries: one write is one request, and the writer owns retrying.
        # A pooled connection the server has closed meanwhile is noticed before reuse.
        self._http = urllib3.PoolManager(
            num_pools=1, maxsize=2, retries=False, timeout=urllib3.Timeout(total=timeout_s)
        )

    def write(self, lines: Sequence[str]) -> WriteResult:
        """Write ``lines`` in one request and classify the answer (see ``classify``)."""
        if not lines:
            return WriteResult.ok()
        body = "\n".join(lines).encode("utf-8")
        try:
            response = self._http.request("POST", self._write_url, body=body, headers=self._headers)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return network_failure(error, self._target)
        if 200 <= response.status < 300:
            return WriteResult.ok()
        message = server_message(response.data, response.headers)
        hint = (
            "create the database, or fix influx.database"
            if message.startswith("database not found")
            else "check influx.url"
        )
        return classify_response(
            response.status,
            message,
            lines=lines,
            retry_after_s=parse_retry_after(
                response.headers.get("Retry-After"), self._clock.time()
            ),
            body=response.data,
            target=self._target,
            not_found_hint=hint,
        )

    def close(self) -> None:
        """Close the pooled connections; safe to call twice."""
        self._http.clear()
