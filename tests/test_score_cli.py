"""``sitewatch-collector score``: a NAB-format CSV in, the live path's scores out."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from sitewatch.collector.cli import main
from sitewatch.collector.detectors.anomaly import AnomalyDetector, AnomalyParams
from sitewatch.collector.score import parse_timestamp

START_S = 1_396_310_400.0  # 2014-04-01 00:00:00 UTC


def write_series(path: Path, values: list[float], interval_s: float = 300.0) -> list[str]:
    """A NAB-style file: a ``timestamp,value`` header and naive UTC timestamps."""
    stamps = []
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("timestamp,value\n")
        for k, value in enumerate(values):
            seconds = int(START_S + k * interval_s) % 86400
            day = 1 + int(k * interval_s // 86400)
            stamp = f"2014-04-{day:02d} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:00"
            stamps.append(stamp)
            handle.write(f"{stamp},{value!r}\n")
    return stamps


def spiky_values(days: int = 4) -> list[float]:
    rng = random.Random(4)
    values = [20.0 + rng.gauss(0.0, 1.0) for _ in range(days * 288)]
    values[3 * 288 + 10] += 15.0
    return values


def test_score_timestamps_without_offset_are_utc() -> None:
    assert parse_timestamp("2014-04-01 00:00:00") == START_S
    assert parse_timestamp("2014-04-01T02:00:00+02:00") == START_S
    assert parse_timestamp("2014-04-01 00:00:00.000000") == START_S


def test_score_cli_writes_the_live_paths_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = spiky_values()
    stamps = write_series(tmp_path / "in.csv", values)
    out = tmp_path / "out.csv"

    assert main(["score", "--input", str(tmp_path / "in.csv"), "--output", str(out)]) == 0

    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert [row[0] for row in rows[1:]] == stamps
    assert [float(row[1]) for row in rows[1:]] == values
    scores = [float(row[2]) for row in rows[1:]]
    # The same scores as the detector fed directly, reading by reading.
    detector = AnomalyDetector(AnomalyParams())
    expected = []
    for k, value in enumerate(values):
        expected.append(detector.score_one(START_S + 300.0 * k, value))
        detector.learn_one(START_S + 300.0 * k, value)
    assert scores == expected
    assert max(scores) == scores[3 * 288 + 10] > 0.5
    assert f"scored {len(values)} of {len(values)} rows" in capsys.readouterr().out


def test_score_cli_bad_row_names_the_line_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    write_series(source, [1.0, 2.0, 3.0])
    lines = source.read_text().splitlines()
    lines[2] = "2014-04-01 00:05:00,twelve"  # line 3 of the file
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"

    assert main(["score", "--input", str(source), "--output", str(out)]) == 2

    error = capsys.readouterr().err
    assert f"{source}:3:" in error
    assert "expected a finite number as the value, got 'twelve'" in error
    assert not out.exists()
    assert not list(tmp_path.glob("out.csv*"))


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("", 1, "expected a header `timestamp,value`"),
        ("time,reading\n1,2\n", 1, "expected a header naming the columns `timestamp` and `value`"),
        ("timestamp,value\n2014-04-01 00:00:00,1\nyesterday,2\n", 3, "expected a timestamp like"),
        ("timestamp,value\n2014-04-01 00:00:00\n", 2, "expected the columns `timestamp,value`"),
        ("timestamp,value\n2014-04-01 00:00:00,nan\n", 2, "expected a finite number"),
    ],
)
def test_score_cli_rejects_bad_input_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, line: int, expected: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(content)
    assert main(["score", "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 2
    error = capsys.readouterr().err
    assert f"{source}:{line}: {expected}" in error


def test_score_cli_missing_input_and_unknown_detector_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.csv")
    assert main(["score", "--input", str(tmp_path / "none.csv"), "--output", out]) == 2
    assert "none.csv: cannot read it" in capsys.readouterr().err
    source = tmp_path / "in.csv"
    write_series(source, [1.0])
    assert main(["score", "--input", str(source), "--output", out, "--detector", "nope"]) == 2
    assert "unknown detector 'nope' (known: " in capsys.readouterr().err


def test_score_cli_skips_rows_out_of_order_as_live(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A timestamp that is not after the last scored one is written with score 0 and not
    learned, as the live path stores but does not score such a reading."""
    source = tmp_path / "in.csv"
    stamps = write_series(source, [5.0, 5.0, 5.0, 6.0])
    source.write_text(source.read_text() + f"{stamps[1]},7.0\n")
    out = tmp_path / "out.csv"
    argv = ["score", "--input", str(source), "--output", str(out), "--detector", "anomaly"]
    assert main(argv) == 0
    rows = list(csv.reader(out.open()))
    assert len(rows) == 6
    assert rows[-1] == [stamps[1], "7.0", "0.0"]
    assert "1 not after the previous timestamp" in capsys.readouterr().out
    assert all(math.isfinite(float(row[2])) for row in rows[1:])
