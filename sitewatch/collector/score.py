"""Offline scoring: a detector over a ``timestamp,value`` CSV, exactly as the live path runs it.

``sitewatch-collector score`` uses this to score NAB data files and exported series, so that
settings can be tried on real history before they go live. Each row is scored and then
learned (``score_one`` then ``learn_one``, in one ``update_one`` call where the detector has
it, as live), like a reading arriving on the broker; a row whose
timestamp is not after the last scored one is written with score 0 and not learned, as the
live path stores such a reading but does not score it.

Input: a header naming at least the columns ``timestamp`` and ``value`` (NAB's format), then
one row per reading. Timestamps are ISO 8601 (``2014-02-14 14:30:00``, ``T`` or a space
between date and time, optional fraction and offset); without an offset they are UTC.
Values are finite decimal numbers. Output: ``timestamp,value,anomaly_score`` with the
timestamp and value as they were written in the input. The output is written beside its
final name and renamed into place only once every row has been scored, so bad input never
leaves half a file.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sitewatch.collector.detectors import REGISTRY, build_detector, updating
from sitewatch.collector.protocols import Detector

__all__ = [
    "Row",
    "ScoreInputError",
    "ScoreSummary",
    "build",
    "iter_series",
    "parse_timestamp",
    "run_series",
    "score_file",
]


class ScoreInputError(ValueError):
    """The input is not a ``timestamp,value`` CSV; names the file and line and what was
    expected there."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Row:
    """One reading: its line in the file, its timestamp and value as written, and as numbers."""

    line: int
    timestamp: str
    value_text: str
    ts_s: float
    value: float


@dataclass(frozen=True)
class ScoreSummary:
    """What ``score_file`` did: rows read and rows scored (the others were out of order)."""

    rows: int
    scored: int


def parse_timestamp(text: str) -> float:
    """UTC seconds of an ISO 8601 timestamp; one without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iter_series(path: Path) -> Iterator[Row]:
    """The rows of a ``timestamp,value`` CSV; raises ``ScoreInputError`` at the first bad one."""
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as error:
        raise ScoreInputError(path, 0, f"cannot read it: {error.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise ScoreInputError(path, 1, "expected a header `timestamp,value`, got nothing")
            names = [name.strip().lower() for name in header]
            if "timestamp" not in names or "value" not in names:
                raise ScoreInputError(
                    path,
                    reader.line_num,
                    "expected a header naming the columns `timestamp` and `value`, "
                    f"got {','.join(header)!r}",
                )
            ts_col = names.index("timestamp")
            value_col = names.index("value")
            width = max(ts_col, value_col) + 1
            for fields in reader:
                line = reader.line_num
                if not fields or fields == [""]:
                    continue
                if len(fields) < width:
                    expected = ",".join(header)
                    raise ScoreInputError(
                        path, line, f"expected the columns `{expected}`, got {','.join(fields)!r}"
                    )
                ts_text = fields[ts_col]
                value_text = fields[value_col]
                try:
                    ts_s = parse_timestamp(ts_text)
                except ValueError:
                    raise ScoreInputError(
                        path,
                        line,
                        f"expected a timestamp like 2014-02-14 14:30:00, got {ts_text!r}",
                    ) from None
                try:
                    value = float(value_text)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise ScoreInputError(
                        path, line, f"expected a finite number as the value, got {value_text!r}"
                    )
                yield Row(line, ts_text, value_text, ts_s, value)
        except csv.Error as error:
            raise ScoreInputError(path, reader.line_num, f"not valid CSV: {error}") from None
        except UnicodeDecodeError:
            raise ScoreInputError(path, reader.line_num + 1, "expected UTF-8 text") from None


def run_series(detector: Detector, rows: Iterable[Row]) -> Iterator[tuple[Row, float | None]]:
    """Score each row as the live path would; ``None`` for a row that is not after the last
    scored one (it is neither scored nor learned)."""
    last_ts_s = -math.inf
    update = updating(detector).update_one
    for row in rows:
        ts_s = row.ts_s
        if ts_s <= last_ts_s:
            yield row, None
            continue
        last_ts_s = ts_s
        yield row, update(ts_s, row.value)


def build(detector_name: str) -> Detector:
    """A fresh detector with its default parameters; ``KeyError`` names the known ones."""
    if detector_name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown detector {detector_name!r} (known: {known})")
    return build_detector(detector_name)


def score_file(input_path: Path, output_path: Path, detector_name: str = "anomaly") -> ScoreSummary:
    """Score ``input_path`` with a fresh ``detector_name`` and write ``output_path``.

    Raises ``ScoreInputError`` for bad input (no output is left), ``KeyError`` for an
    unknown detector and ``OSError`` when the output cannot be written.
    """
    detector = build(detector_name)
    tmp = output_path.with_name(output_path.name + ".tmp")
    rows = scored = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            out.write("timestamp,value,anomaly_score\n")
            for row, score in run_series(detector, iter_series(input_path)):
                rows += 1
                if score is None:
                    score = 0.0
                else:
                    scored += 1
                out.write(f"{_csv_field(row.timestamp)},{_csv_field(row.value_text)},{score!r}\n")
        os.replace(tmp, output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ScoreSummary(rows, scored)


def _csv_field(text: str) -> str:
    if any(char in text for char in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
