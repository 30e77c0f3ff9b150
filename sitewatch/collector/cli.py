"""``sitewatch-collector``: the central side of sitewatch.

- ``run --config F``: take every agent's messages off the broker and store them in InfluxDB.
- ``status --config F [--json]``: delivery counters, spool depth, per-device state.
- ``tail [--host H] [--port P] [--site S]``: a validating live view of the broker's traffic.

Exit status: 0 success, 1 a runtime failure (no status yet), 2 a bad configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sitewatch import __version__
from sitewatch.configfile import ConfigError
from sitewatch.wire import subscription

__all__ = ["main"]

log = logging.getLogger("sitewatch.collector")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitewatch-collector", description="the central side of sitewatch"
    )
    parser.add_argument("--version", action="version", version=f"sitewatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="store every reading in InfluxDB until stopped")
    run.add_argument("--config", required=True, type=Path, help="collector YAML file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    status = commands.add_parser("status", help="delivery counters, spool and device states")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    tail = commands.add_parser("tail", help="print every reading, event and status, validated")
    tail.add_argument("--host", default="127.0.0.1")
    tail.add_argument("--port", type=int, default=1883)
    tail.add_argument("--site", default="+", help="only this site (default: all)")
    return parser


def _stop_on_signals(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _run(config_path: Path, log_level: str) -> int:
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from sitewatch.collector.config import load_config
    from sitewatch.collector.service import Collector

    collector = Collector(load_config(config_path))
    stop = threading.Event()
    _stop_on_signals(stop)
    collector.run(stop)
    return 0


def _age(ms: int | None, now_ms: int) -> str:
    return "never" if ms is None else f"{(now_ms - ms) / 1000:.0f} s ago"


def _format_status(snapshot: dict[str, Any]) -> str:
    from sitewatch.collector.metrics import COUNTERS

    now_ms = int(time.time() * 1000)
    lines = [f"as of {_age(snapshot['updated_ms'], now_ms)}"]
    lines += [
        f"  {name:<14}{snapshot.get(name, 0):>12}  {meaning}" for name, meaning in COUNTERS.items()
    ]
    lines.append(f"  spool         {snapshot['spool_depth']:>12}  points waiting for InfluxDB")
    if snapshot.get("influx_error"):
        lines.append(f"  last InfluxDB error: {snapshot['influx_error']}")
    lines.append("devices:")
    for device in snapshot["devices"]:
        faults = (
            f" (faulty: {', '.join(device['faulted_sensors'])})"
            if device["faulted_sensors"]
            else ""
        )
        lines.append(
            f"  {device['site']}/{device['device']:<20} {device['state']:<13}"
            f" last seen {_age(device['last_seen_ms'], now_ms)}{faults}"
        )
    return "\n".join(lines)


def _status(config_path: Path, as_json: bool) -> int:
    from sitewatch.collector.config import load_config
    from sitewatch.collector.metrics import read_snapshot
    from sitewatch.collector.service import STATUS_FILE

    config = load_config(config_path)
    path = config.state_dir / STATUS_FILE
    try:
        snapshot = read_snapshot(path)
    except FileNotFoundError:
        print(
            f"sitewatch-collector status: no {path} (has the collector run yet?)", file=sys.stderr
        )
        return 1
    print(json.dumps(snapshot, sort_keys=True) if as_json else _format_status(snapshot))
    return 0


def _tail(host: str, port: int, site: str) -> int:
    from sitewatch.collector.mqtt import BrokerSession, SessionOptions
    from sitewatch.collector.tail import print_message
    from sitewatch.configfile import BrokerConfig

    stop = threading.Event()
    session = BrokerSession(
        BrokerConfig(host=host, port=port),
        SessionOptions(topics=(subscription(site),), persistent=False, manual_ack=False),
        lambda message: print_message(message.topic, message.payload),
    )
    _stop_on_signals(stop)
    session.run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config, args.log_level)
        if args.command == "status":
            return _status(args.config, args.json)
        return _tail(args.host, args.port, args.site)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
