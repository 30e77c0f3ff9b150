"""A reference line-protocol parser and a fake InfluxDB ``Sink`` built on it.

``parse_line`` follows the line-protocol spec (InfluxDB 2.x): in measurements, tag keys, tag
values and field keys a backslash escapes the next comma, equals sign, space or backslash;
in string fields it escapes a double quote or a backslash. It raises ``ValueError`` for a
line a server would refuse to parse.

``FakeInflux`` models what the writer has to cope with in InfluxDB 1.x: points are keyed by
measurement, tag set and timestamp (a rewrite overwrites), a field keeps the type it was
first written with (a later line with another type is a "field type conflict": the rest of
the batch is stored and the request answers 400, naming no line unless ``report_indices``),
requests with more than ``max_lines`` lines are refused as too large, and the server can be
``down`` (or go down after ``fail_after`` more requests). Unit tests use it where timing is
driven by a ``FakeClock``; the writer is also tested against the real influxd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sitewatch.collector.protocols import Outcome, WriteResult

FieldValue = float | int | bool | str
Identity = tuple[str, frozenset[tuple[str, str]], int]

_KEY_ESCAPES = {",", "=", " ", "\\"}


def _scan(text: str, pos: int, stops: str) -> tuple[str, int]:
    """Unescape from ``pos`` up to the first unescaped character in ``stops``."""
    out = []
    while pos < len(text) and text[pos] not in stops:
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in _KEY_ESCAPES:
            out.append(text[pos + 1])
            pos += 2
            continue
        out.append(char)
        pos += 1
    return "".join(out), pos


def _field_value(text: str, pos: int) -> tuple[FieldValue, int]:
    if text[pos] == '"':
        out, pos = [], pos + 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
                pos += 1
            out.append(text[pos])
            pos += 1
        if pos >= len(text):
            raise ValueError("unterminated string field")
        return "".join(out), pos + 1
    end = pos
    while end < len(text) and text[end] not in ", ":
        end += 1
    raw = text[pos:end]
    if raw in ("true", "false"):
        return raw == "true", end
    if raw.endswith("i"):
        return int(raw[:-1]), end
    return float(raw), end


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, FieldValue], int]:
    """Measurement, tags, fields and timestamp of one line; ``ValueError`` if malformed."""
    if "\n" in line:
        raise ValueError("a newline inside a line")
    measurement, pos = _scan(line, 0, ", ")
    tags: dict[str, str] = {}
    while pos < len(line) and line[pos] == ",":
        key, pos = _scan(line, pos + 1, "=, ")
        if pos >= len(line) or line[pos] != "=" or not key:
            raise ValueError(f"bad tag key at {pos}")
        value, pos = _scan(line, pos + 1, ", ")
        if not value:
            raise ValueError(f"empty tag value for {key!r}")
        tags[key] = value
    if pos >= len(line) or line[pos] != " ":
        raise ValueError("no fields")
    fields: dict[str, FieldValue] = {}
    pos += 1
    while True:
        key, pos = _scan(line, pos, "=, ")
        if pos >= len(line) or line[pos] != "=" or not key:
            raise ValueError(f"bad field key at {pos}")
        fields[key], pos = _field_value(line, pos + 1)
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    if pos >= len(line) or line[pos] != " ":
        raise ValueError("no timestamp")
    return measurement, tags, fields, int(line[pos + 1 :])


def identity(line: str) -> Identity:
    measurement, tags, _, ts = parse_line(line)
    return measurement, frozenset(tags.items()), ts


@dataclass
class FakeInflux:
    """A ``Sink`` that stores points in memory with InfluxDB 1.x's write semantics."""

    max_lines: int | None = None
    report_indices: bool = False
    down: bool = False
    retry_after_s: float | None = None
    fail_after: int | None = None
    points: dict[Identity, dict[str, FieldValue]] = field(default_factory=dict)
    order: list[Identity] = field(default_factory=list)  # first time each point was stored
    requests: list[int] = field(default_factory=list)  # lines per request
    types: dict[tuple[str, str], type] = field(default_factory=dict)

    def write(self, lines: Sequence[str]) -> WriteResult:
        self.requests.append(len(lines))
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.down = True
            self.fail_after -= 1
        if self.down:
            return WriteResult(Outcome.RETRY, "connection refused", (), self.retry_after_s)
        if self.max_lines is not None and len(lines) > self.max_lines:
            return WriteResult(Outcome.TOO_LARGE, "request entity too large")
        refused: list[int] = []
        reasons: list[str] = []
        for index, line in enumerate(lines):
            measurement, tags, fields, ts = parse_line(line)
            conflict = [
                name
                for name, value in fields.items()
                if self.types.get((measurement, name), type(value)) is not type(value)
            ]
            if conflict:
                refused.append(index)
                reasons.append(f"field type conflict: {measurement}.{conflict[0]}")
                continue
            for name, value in fields.items():
                self.types[(measurement, name)] = type(value)
            key = (measurement, frozenset(tags.items()), ts)
            if key not in self.points:
                self.order.append(key)
            self.points.setdefault(key, {}).update(fields)
        if not refused:
            return WriteResult.ok()
        reason = f"partial write: {reasons[0]} dropped={len(refused)}"
        indices = tuple(refused) if self.report_indices else ()
        return WriteResult(Outcome.REJECTED, reason, indices)

    def close(self) -> None:
        pass
