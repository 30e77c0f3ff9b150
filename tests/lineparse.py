"""A reference line-protocol parser, for checking the lines the collector makes.

``parse_line`` follows the line-protocol spec (InfluxDB 2.x): in measurements, tag keys, tag
values and field keys a backslash escapes the next comma, equals sign, space or backslash;
in string fields it escapes a double quote or a backslash. It raises ``ValueError`` for a
line a server would refuse to parse. It models no server: tests that write lines write them
to the real influxd the fixtures start.
"""

from __future__ import annotations

FieldValue = float | int | bool | str

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
