"""NAB results for a detector: the ``score`` path over every file of a NAB-layout corpus.

For each ``DIR/data/<category>/<name>.csv`` it runs ``sitewatch.collector.score.score_file``
(the code behind ``sitewatch-collector score``: each row scored then learned, as live) with
one fresh detector and its default parameters, the same for every file, and writes
``OUT/<category>/<name>.csv`` (``timestamp,value,anomaly_score``). Then it times the detector
alone over the same rows, parsed beforehand (best of ``--repeat`` passes), prints the mean
µs per reading (scored then learned, in one ``update_one`` call where the detector has it,
as live), and prints the command that scores the results with
NAB's rules (the scorer picks one threshold for the whole corpus).

    .venv/bin/python bench/nab.py --corpus ../shared/nab --out /tmp/nab-anomaly
    python3 ../shared/tools/nab_score.py --corpus ../shared/nab --results /tmp/nab-anomaly \\
        --profile all
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.collector.detectors import updating
from sitewatch.collector.score import Row, ScoreInputError, build, iter_series, score_file


def _detector_us(detector_name: str, series: list[list[Row]], repeat: int) -> float:
    """Mean µs per reading of scoring then learning it (``update_one`` where the detector has
    it, as the live path calls it, else score_one + learn_one) over every series, best of
    ``repeat``."""
    readings = sum(len(rows) for rows in series)
    best = float("inf")
    for _ in range(repeat):
        elapsed = 0.0
        for rows in series:
            detector = build(detector_name)
            update = updating(detector).update_one
            last = -float("inf")
            started = time.perf_counter()
            for row in rows:
                ts_s = row.ts_s
                if ts_s > last:
                    last = ts_s
                    update(ts_s, row.value)
            elapsed += time.perf_counter() - started
        best = min(best, elapsed)
    return best / max(readings, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path, help="NAB layout: data/<cat>/*.csv")
    parser.add_argument("--out", required=True, type=Path, help="results directory")
    parser.add_argument("--detector", default="anomaly")
    parser.add_argument("--repeat", type=int, default=3, help="timing passes (best is kept)")
    args = parser.parse_args()

    files = sorted((args.corpus / "data").glob("*/*.csv"))
    if not files:
        print(f"no {args.corpus}/data/<category>/<name>.csv files", file=sys.stderr)
        return 2
    rows_total = 0
    started = time.perf_counter()
    for path in files:
        target = args.out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            summary = score_file(path, target, args.detector)
        except ScoreInputError as error:
            print(error, file=sys.stderr)
            return 2
        rows_total += summary.rows
        print(f"{path.parent.name}/{path.name}: {summary.rows} rows", file=sys.stderr)
    wall_s = time.perf_counter() - started
    series = [list(iter_series(path)) for path in files]
    us = _detector_us(args.detector, series, args.repeat)

    scorer = args.corpus.resolve().parent / "tools" / "nab_score.py"
    scorer_text = str(scorer) if scorer.exists() else "../shared/tools/nab_score.py"
    print(f"{len(files)} files, {rows_total} rows scored into {args.out} in {wall_s:.1f} s")
    print(
        f"{args.detector}: {us:.2f} µs per reading (scored and learned, best of {args.repeat})"
    )
    print("score with (the scorer needs numpy and pandas: python3 -m pip install pandas):")
    print(
        f"  python3 {scorer_text} --corpus {args.corpus.resolve()} "
        f"--results {args.out.resolve()} --profile all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
