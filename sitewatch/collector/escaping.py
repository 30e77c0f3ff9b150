r"""Escaping for InfluxDB line protocol, one ``str.translate`` per string.

Tag keys, tag values and field keys escape comma, equals sign and space. A backslash in them
becomes ``/``, because the dialects disagree about it: InfluxDB 1.x never unescapes ``\\``
(an escaped backslash reads back doubled) and refuses a line whose tag ends in one (it takes
the separator after it for an escaped character), while 2.x and VictoriaMetrics follow the
spec. A ``/`` reads back the same everywhere.

String field values are quoted and escape double quote and backslash, which every dialect
unescapes. A line ends at a newline, so newlines in free text become spaces (carriage
returns too: 1.x refuses one before the timestamp). Characters that cannot be encoded as
UTF-8 (lone surrogates) become ``?``.

A point's tags go in order of their keys (``tag_set``): InfluxDB keys a series by its
sorted tags and sorts every point's that come in another order (its write guide asks for them
sorted; here that sorting cost influxd about 0.2 µs per point, a twentieth of its work on a
reading).

>>> print(escape_tag("kitchen, north=1"), escape_tag("C:\\temp"))
kitchen\,\ north\=1 C:/temp
>>> print(tag_set([("site", "plant a"), ("device", "pi-01"), ("zone", "")]))
device=pi-01,site=plant\ a
>>> print(string_field('say "hi" \\o/\n'))
"say \"hi\" \\o/ "
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["escape_tag", "string_field", "tag_set"]

_TAG = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "/", "\n": "\\ ", "\r": "\\ "})
_STRING = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": " ", "\r": " "})


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def escape_tag(text: str) -> str:
    """A tag key, tag value or field key, escaped (newlines become escaped spaces,
    backslashes ``/``)."""
    return _encodable(text).translate(_TAG)


def string_field(text: str) -> str:
    """A string field value, quoted and escaped (newlines become spaces)."""
    return f'"{_encodable(text).translate(_STRING)}"'


def tag_set(tags: Iterable[tuple[str, str]]) -> str:
    """``key=value`` pairs, escaped, joined by commas in order of their escaped keys (as
    InfluxDB compares them, byte by byte). InfluxDB refuses an empty tag value and a key given
    twice, so pairs with an empty value are left out, and of keys that escape alike (a key
    ending in a newline and the same key ending in a carriage return) the first pair is kept."""
    escaped: dict[str, str] = {}
    for key, value in tags:
        if value:
            escaped.setdefault(escape_tag(key), escape_tag(value))
    return ",".join(f"{key}={escaped[key]}" for key in sorted(escaped))
