"""InfluxDB v2 write API through influxdb-client (``influx.api: v2``).

For InfluxDB 2.x, 3.x, Cloud, 1.8+ and servers that speak ``/api/v2/write`` (such as
VictoriaMetrics, which ignores ``org``/``bucket``). The client's ``WriteApi`` runs in
SYNCHRONOUS mode on purpose: its default batching mode retries and drops on its own
schedule and only logs failures, while here every write's fate must reach the writer, which
owns batching, retries and the spool. Each write is one request of the lines with
millisecond precision, gzip-compressed when ``gzip`` (default on), authorized by ``token``.

Debian's InfluxDB 1.6.7 has no ``/api/v2/write``: it answers 404 ``404 page not found``,
which comes back as ``retry`` with a reason that says to use ``api: v1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from sitewatch.clock import Clock, SystemClock
from sitewatch.collector.protocols import Outcome, WriteResult
from sitewatch.collector.sinks.classify import (
    classify_response,
    network_failure,
    parse_retry_after,
    server_message,
)

__all__ = ["InfluxV2Sink"]

# The client declares its precision constants as plain strings but types the parameter as
# the class; "ms" is the value the API expects.
_MILLISECONDS = cast(WritePrecision, WritePrecision.MS)


class InfluxV2Sink:
    """Writes line protocol through influxdb-client's ``WriteApi``; never raises on write.

    ``url`` is the server's base URL; ``org`` and ``bucket`` say where the points go;
    ``token`` authorizes (InfluxDB 1.8 takes ``username:password`` here). ``timeout_s``
    bounds each request (default 10 s). ``clock`` gives wall time to read Retry-After dates.
    """

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str,
        gzip: bool = True,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._org = org
        self._bucket = bucket
        self._target = f'bucket "{bucket}" (org "{org}") at {url}'
        self._clock: Clock = clock or SystemClock()
        # retries=False: one write is one request; the writer owns retrying.
        self._client = InfluxDBClient(
            url=url,
            token=token,
            org=org,
            timeout=max(1, round(timeout_s * 1000)),
            enable_gzip=gzip,
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: Sequence[str]) -> WriteResult:
        """Write ``lines`` in one request and classify the answer (see ``classify``)."""
        if not lines:
            return WriteResult.ok()
        try:
            self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record="\n".join(lines).encode("utf-8"),
                write_precision=_MILLISECONDS,
            )
        except InfluxDBError as error:
            return self._answer(error, lines)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return network_failure(error, self._target)
        return WriteResult.ok()

    def _answer(self, error: InfluxDBError, lines: Sequence[str]) -> WriteResult:
        status: Any = getattr(error, "status", None)
        if not isinstance(status, int):
            # The client raised without an HTTP answer to show for it.
            return WriteResult(Outcome.RETRY, reason=f"{self._target}: {error.message}")
        body: Any = getattr(error, "body", None)
        headers: Mapping[str, str] = getattr(error, "headers", None) or {}
        message = server_message(body, headers)
        hint = (
            "this server has no v2 write API: InfluxDB before 1.8 needs influx.api v1"
            if message == "404 page not found"
            else "check influx.url, influx.org and influx.bucket"
        )
        return classify_response(
            status,
            message,
            lines=lines,
            retry_after_s=parse_retry_after(error.retry_after, self._clock.time()),
            body=body,
            target=self._target,
            not_found_hint=hint,
        )

    def close(self) -> None:
        """Close the client and its connections; safe to call twice."""
        self._client.close()  # type: ignore[no-untyped-call]  # (untyped in the client)
