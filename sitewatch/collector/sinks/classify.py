"""What an InfluxDB write's HTTP answer means for the writer: one ``WriteResult`` per write.

Both sinks (v1 ``/write`` and v2 ``/api/v2/write``) share this table, so the same server
answer always leads to the same action:

======================  ===========  ===================================================
answer                  outcome      why
======================  ===========  ===================================================
2xx                     ok           stored
400, 422                rejected     malformed line, field type conflict, partial write:
                                     sending it again cannot help; the refused lines are
                                     named when the server quotes them
413                     too_large    the body is over the server's limit: split it
401, 403                retry        credentials can be fixed without losing data
404                     retry        database/bucket missing or wrong URL: fixable too
429, 5xx, other         retry        the server is busy or broken: later, honouring
                                     Retry-After
no answer               retry        refused, reset, timed out, TLS failure
======================  ===========  ===================================================

No exception leaves these functions: a sink turns every server or network failure into a
result.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC

from sitewatch.collector.protocols import Outcome, WriteResult

__all__ = [
    "classify_response",
    "network_failure",
    "parse_retry_after",
    "rejected_lines",
    "server_message",
]

# Cap on how much of a server's answer goes into a reason (dead-letter log, status output).
MAX_REASON_CHARS = 4000

# How InfluxDB (1.x and 2.x OSS) quotes a line it could not parse.
_PARSE_PREFIX = "unable to parse '"
_PARSE_SUFFIX = "': "


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date.

    ``now_s`` is the current wall time (seconds since the epoch) for dates. A date in the
    past gives 0; anything unreadable gives None (no advice).

    >>> parse_retry_after("120", now_s=0.0)
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:30 GMT", now_s=60.0)
    30.0
    >>> parse_retry_after("soon", now_s=0.0) is None
    True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_s
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def server_message(body: bytes | str | None, headers: Mapping[str, str] | None) -> str:
    """The server's own words about a failed write.

    InfluxDB 1.x answers ``{"error": "..."}``, 2.x ``{"code": ..., "message": "..."}``,
    3.x ``{"error": "...", "data": [...]}``; other servers (VictoriaMetrics, proxies) send
    plain text. Falls back to InfluxDB's error headers, then to "".

    >>> server_message(b'{"error":"database not found: \\\\"x\\\\""}', None)
    'database not found: "x"'
    >>> server_message(b"404 page not found\\n", None)
    '404 page not found'
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    text = text.strip()
    try:
        document = json.loads(text) if text.startswith("{") else None
    except ValueError:
        document = None
    if isinstance(document, dict):
        for key in ("error", "message"):
            if isinstance(document.get(key), str) and document[key]:
                return _clip(str(document[key]))
    if text:
        return _clip(text)
    for header in ("X-Influxdb-Error", "X-Platform-Error-Code"):
        value = (headers or {}).get(header)
        if value:
            return _clip(value)
    return ""


def _clip(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[:MAX_REASON_CHARS] + f"… ({len(text) - MAX_REASON_CHARS} more characters)"


def rejected_lines(
    message: str, lines: Sequence[str], body: bytes | str | None = None
) -> tuple[int, ...]:
    """Indices of the lines the server says it refused, when it says (else ``()``).

    InfluxDB 1.x/2.x quote each line they cannot parse (``unable to parse '<line>': why``);
    InfluxDB 3.x lists ``data[].line_number`` (1-based) in its JSON body. Field type
    conflicts name only the field, never the line, so they give ``()``: split to find out.

    >>> rejected_lines("partial write: unable to parse 'm x': invalid field format dropped=0",
    ...                ["m v=1", "m x", "m v=2"])
    (1,)
    """
    found: set[int] = set()
    if _PARSE_PREFIX in message:
        where: dict[str, list[int]] = {}
        for index, line in enumerate(lines):
            where.setdefault(line, []).append(index)
        start = message.find(_PARSE_PREFIX)
        while start != -1:
            begin = start + len(_PARSE_PREFIX)
            # The line may itself contain "': ", so try every candidate end in turn.
            end = message.find(_PARSE_SUFFIX, begin)
            while end != -1:
                quoted = message[begin:end]
                if quoted in where:
                    found.update(where[quoted])
                    break
                end = message.find(_PARSE_SUFFIX, end + 1)
            start = message.find(_PARSE_PREFIX, begin)
    found.update(_line_numbers(body, len(lines)))
    return tuple(sorted(found))


def _line_numbers(body: bytes | str | None, count: int) -> set[int]:
    """InfluxDB 3.x's ``{"data": [{"line_number": N, ...}]}`` as 0-based indices."""
    if not body:
        return set()
    try:
        document = json.loads(body)
    except ValueError:
        return set()
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return set()
    numbers = (item.get("line_number") for item in data if isinstance(item, dict))
    return {n - 1 for n in numbers if isinstance(n, int) and 1 <= n <= count}


def classify_response(
    status: int,
    message: str,
    *,
    lines: Sequence[str],
    retry_after_s: float | None = None,
    body: bytes | str | None = None,
    target: str = "",
    not_found_hint: str = "",
) -> WriteResult:
    """The result for an HTTP answer; see the module's table.

    ``message`` is ``server_message(...)`` of the answer; ``target`` names what was written
    to (``database "x" at http://...``) for reasons that need it; ``not_found_hint`` is
    added to a 404's reason (what to fix).
    """
    if 200 <= status < 300:
        return WriteResult.ok()
    said = message or f"HTTP {status} with no message"
    if status in (400, 422):
        return WriteResult(
            Outcome.REJECTED, reason=said, rejected=rejected_lines(said, lines, body)
        )
    if status == 413:
        return WriteResult(Outcome.TOO_LARGE, reason=said)
    if status in (401, 403):
        return WriteResult(
            Outcome.RETRY,
            reason=f"authentication failed (HTTP {status}) writing to {target}: {said}; "
            "check the username/password or token",
            retry_after_s=retry_after_s,
        )
    if status == 404:
        return WriteResult(
            Outcome.RETRY,
            reason=f"not found (HTTP 404) writing to {target}: {said}"
            + (f" ({not_found_hint})" if not_found_hint else ""),
            retry_after_s=retry_after_s,
        )
    if status == 429:
        reason = f"rate limited (HTTP 429) by {target}: {said}"
    elif status >= 500:
        reason = f"server error (HTTP {status}) from {target}: {said}"
    else:
        reason = f"unexpected HTTP {status} from {target}: {said}"
    return WriteResult(Outcome.RETRY, reason=reason, retry_after_s=retry_after_s)


def network_failure(error: BaseException, target: str) -> WriteResult:
    """The result for a write that got no HTTP answer (refused, reset, timeout, TLS)."""
    return WriteResult(Outcome.RETRY, reason=f"no answer from {target}: {error}")
