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

>>> print(escape_tag("kitchen, north=1"), escape_tag("C:\\temp"))
kitchen\,\ north\=1 C:/temp
>>> print(string_field('say "hi" \\o/\n'))
"say \"hi\" \\o/ "
"""

from __future__ import annotations

__all__ = ["escape_tag", "string_field"]

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
