"""Soak: a simulated fleet through mosquitto and the real collector into influxd, for a long time.

Starts a mosquitto and an influxd on free loopback ports, ``sitewatch-collector run`` exactly
as deployed (detection on with the default rules, confirmations on) and ``--devices``
simulated devices publishing ``--rate`` readings/s in total for ``--duration-s`` seconds
(``sitewatch.localrun.soak`` says what the devices send and how everything is measured).
Every ``--print-every-s`` it prints elapsed time, readings published and stored (InfluxQL
count), the lag (published − stored, as readings and as the age of the oldest reading not
yet stored; and the age of the newest stored reading), and RSS and CPU of the collector,
influxd, mosquitto and the publishers. At the end: throughput, lag p50/p99, the collector's
RSS growth after warm-up, and the accounting.

Targets (exit status 0 only when all hold): every published reading stored exactly once
(per device stored = published; the collector received each reading once, with no
duplicates, gaps, dead letters or drops; every message acknowledged by the broker and
confirmed by the collector, and no detection process restart); the collector's RSS at the
end within ``--max-rss-growth-pct`` (5 %) of its RSS after warm-up, checked for its main
process and for its children (the detection process, multiprocessing's resource tracker)
separately; p99 lag ≤ ``--max-lag-s`` (2 s, as bench/ingest.py's
publish → queryable target); throughput ≥ 95 % of the offered rate.

    .venv/bin/python bench/soak.py [--duration-s 1800] [--devices 200] [--rate 5000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.localrun.soak import SoakSettings, run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5000.0, help="readings/s, whole fleet")
    parser.add_argument("--sensors", type=int, default=5, help="sensors per device")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="default: 10 %% of the run, at least 120 s, at most half of it")
    parser.add_argument("--print-every-s", type=float, default=30.0)
    parser.add_argument("--max-rss-growth-pct", type=float, default=5.0)
    parser.add_argument("--max-lag-s", type=float, default=2.0)
    parser.add_argument("--min-throughput-ratio", type=float, default=0.95)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep servers' data, collector state and logs here")
    parser.add_argument("--csv", type=Path, default=None,
                        help="write every sample (about one a second) to this CSV file")
    args = parser.parse_args()
    settings = SoakSettings(
        duration_s=args.duration_s, devices=args.devices, rate=args.rate,
        sensors_per_device=args.sensors, publishers=args.publishers, warmup_s=args.warmup_s,
        print_every_s=args.print_every_s,
    )  # fmt: skip
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sitewatch-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_soak(settings, workdir, lambda line: print(line, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.csv is not None:
        rows = [result.samples[0].csv_header()] if result.samples else []
        args.csv.write_text("\n".join(rows + [s.csv_row() for s in result.samples]) + "\n")
    for line in result.summary():
        print(line)
    failures = result.failures(
        max_rss_growth_pct=args.max_rss_growth_pct, max_waiting_p99_s=args.max_lag_s,
        min_throughput_ratio=args.min_throughput_ratio,
    )  # fmt: skip
    bounds = (f"zero loss, zero duplicates, RSS growth ≤ {args.max_rss_growth_pct:g} %, "
              f"p99 lag ≤ {args.max_lag_s:g} s, throughput ≥ "
              f"{args.min_throughput_ratio:.0%} of {args.rate:,.0f}/s")  # fmt: skip
    if failures:
        print(f"targets ({bounds}): MISSED")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print(f"targets ({bounds}): met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
