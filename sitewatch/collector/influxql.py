"""Reading stored points back with InfluxQL: for the alert page's charts and for backtests.

InfluxQL is the one query language every InfluxDB answers: 1.x natively (``/query`` with the
database), 2.x through its 1.x compatibility API (``/query`` with ``db`` = the bucket, which
needs a DBRP mapping for it; a token in ``Authorization``), 3.x natively. Times come back as
epoch milliseconds. Errors raise ``QueryError`` with the server's words.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import urllib3

from sitewatch.collector.config import InfluxConfig

__all__ = ["InfluxQuery", "QueryError", "quote_ident", "quote_string"]


class QueryError(RuntimeError):
    """InfluxDB refused or failed a query; the message is the server's or the network's."""


def quote_ident(name: str) -> str:
    """``name`` as an InfluxQL double-quoted identifier.

    >>> print(quote_ident('temp "c"'))
    "temp \\"c\\""
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """``text`` as an InfluxQL single-quoted string literal.

    >>> print(quote_string("o'clock"))
    'o\\'clock'
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxQuery:
    """InfluxQL over HTTP for the database (v1) or bucket (v2) the collector writes to."""

    def __init__(self, config: InfluxConfig) -> None:
        self._url = f"{config.url.rstrip('/')}/query"
        self._db = config.database if config.api == "v1" else config.bucket
        self._params: dict[str, str] = {"db": self._db or "", "epoch": "ms"}
        if config.api == "v1" and config.retention_policy:
            self._params["rp"] = config.retention_policy
        self._headers: dict[str, str] = {}
        if config.api == "v1" and config.username is not None:
            auth = f"{config.username}:{config.password() or ''}"
            self._headers.update(urllib3.make_headers(basic_auth=auth))
        elif config.api == "v2":
            self._headers["Authorization"] = f"Token {config.token() or ''}"
        self._http = urllib3.PoolManager(
            num_pools=1, maxsize=2, retries=False,
            timeout=urllib3.Timeout(total=config.timeout_s),
        )  # fmt: skip

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Rows of the first statement: column → value plus the series' tags (GROUP BY)."""
        try:
            response = self._http.request(
                "GET", f"{self._url}?{urlencode({**self._params, 'q': influxql})}",
                headers=self._headers,
            )
        except urllib3.exceptions.HTTPError as error:
            raise QueryError(f"cannot reach InfluxDB at {self._url}: {error}") from None
        try:
            body = json.loads(response.data or b"{}")
        except ValueError:
            body = {}
        if response.status != 200:
            reason = body.get("error") if isinstance(body, dict) else None
            raise QueryError(f"InfluxDB answered {response.status}: {reason or response.data!r}")
        results = body.get("results") or [{}]
        if "error" in results[0]:
            raise QueryError(f"InfluxDB: {results[0]['error']}")
        return [
            {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            for series in results[0].get("series", [])
            for values in series.get("values", [])
        ]

    def readings(
        self,
        measurement: str,
        field: str,
        *,
        site: str,
        device: str,
        sensor: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int = 10_000,
    ) -> list[tuple[int, float]]:
        """``(ts_ms, value)`` of one sensor's field, oldest first (booleans as 0/1)."""
        where = (
            f"site = {quote_string(site)} AND device = {quote_string(device)} "
            f"AND sensor = {quote_string(sensor)} AND time >= {int(since_ms)}ms"
        )
        if until_ms is not None:
            where += f" AND time <= {int(until_ms)}ms"
        # Every name and value is quoted by quote_ident/quote_string, numbers are int().
        rows = self.query(
            f"SELECT {quote_ident(field)} FROM {quote_ident(measurement)} WHERE {where} "  # noqa: S608
            f"ORDER BY time ASC LIMIT {int(limit)}"
        )
        out = []
        for row in rows:
            value = row.get(field)
            if isinstance(value, bool):
                out.append((int(row["time"]), 1.0 if value else 0.0))
            elif isinstance(value, int | float):
                out.append((int(row["time"]), float(value)))
        return out

    def close(self) -> None:
        self._http.clear()
