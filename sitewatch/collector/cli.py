"""``sitewatch-collector``: the central side of sitewatch.

- ``run --config F``: take every agent's messages off the broker and store them in InfluxDB.
- ``status --config F [--json]``: delivery counters, spool depth, per-device state.
- ``tail [--host H] [--port P] [--site S]``: a validating live view of the broker's traffic.
- ``score --input CSV --output CSV [--detector NAME]``: score a ``timestamp,value`` series
  (NAB's format) with a detector exactly as the live path does; bad input exits with 2.
- ``alerts list|show|ack|resolve|silence --config F [--json]``: the technicians' side of the
  alert store (works while the collector runs; it picks changes up within a second).
- ``report --config F --since 7d [--site S] [--json] [--html FILE]``: MTTA, MTTR, alerts per
  rule and equipment, the Pareto of top offenders.
- ``backtest --config F --rules FILE --since 7d [--site S] [--json]``: replay stored readings
  through other rules and print what would have fired and whom it would have woken.
- ``web-user NAME --users-file F``: add a user of the alert page or change their password.
- ``provision-device|provision-collector|provision-broker``: broker logins, ACLs, TLS
  certificates and ready configs for a secure deployment (``sitewatch.collector.provisioning``).

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
from sitewatch.collector.provisioning import cli as provisioning
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
    score = commands.add_parser(
        "score", help="score a timestamp,value CSV with a detector, as the live path does"
    )
    score.add_argument("--input", required=True, type=Path, help="CSV with timestamp,value")
    score.add_argument("--output", required=True, type=Path, help="timestamp,value,anomaly_score")
    score.add_argument(
        "--detector", default="anomaly", help="registered detector (default: anomaly)"
    )
    _alert_parsers(commands)
    provisioning.add_parsers(commands)
    return parser


def _alert_parsers(commands: Any) -> None:
    alerts = commands.add_parser("alerts", help="list, show, acknowledge, resolve, silence")
    actions = alerts.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        sub.add_argument("--config", required=True, type=Path, help="collector YAML file")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        if with_id:
            sub.add_argument("id", help="alert id (or a unique prefix of 4+ characters)")
        return sub

    listing = action("list", "open alerts (with --all, resolved ones too)", with_id=False)
    listing.add_argument("--all", action="store_true", help="include resolved alerts")
    listing.add_argument("--site", default=None)
    action("show", "one alert with its audit trail")
    for name, help_text in (("ack", "acknowledge: you are on it (lasts until it clears)"),
                            ("resolve", "close it by hand")):
        sub = action(name, help_text)
        sub.add_argument("--by", required=True, help="who (recorded in the audit trail)")
        sub.add_argument("--comment", default=None)
    silence = action("silence", "no notifications for a while (it still shows)")
    silence.add_argument("--for", dest="duration", required=True, help="e.g. 2h, 30m, 1d")
    silence.add_argument("--reason", required=True)
    silence.add_argument("--by", required=True)
    report = commands.add_parser("report", help="MTTA, MTTR and the top offenders")
    report.add_argument("--config", required=True, type=Path)
    report.add_argument("--since", default="7d", help="e.g. 7d, 24h (default 7d)")
    report.add_argument("--site", default=None)
    report.add_argument("--json", action="store_true")
    report.add_argument("--html", type=Path, default=None, help="also write an HTML report")
    web_user = commands.add_parser(
        "web-user", help="add a user of the alert page, or change their password"
    )
    web_user.add_argument("--users-file", required=True, type=Path,
                          help="the file alerting.web.users_file names (created if missing)")
    web_user.add_argument("name")
    backtest = commands.add_parser(
        "backtest", help="replay stored readings through rules: what would have fired"
    )
    backtest.add_argument("--config", required=True, type=Path, help="collector YAML file")
    backtest.add_argument("--rules", required=True, type=Path,
                          help="YAML with a detection: section (and alerting:), or rules:")
    backtest.add_argument("--since", default="7d", help="e.g. 7d, 12h (default 7d)")
    backtest.add_argument("--site", default=None)
    backtest.add_argument("--json", action="store_true")


def _alerts(args: argparse.Namespace) -> int:
    from sitewatch.collector.alerting import commands
    from sitewatch.collector.alerting.store import AlertStore
    from sitewatch.collector.config import load_config

    config = load_config(args.config)
    with AlertStore.in_state_dir(config.state_dir) as store:
        try:
            if args.command == "report":
                result = commands.report(store, since=args.since, site=args.site,
                                         html_path=args.html)
            elif args.action == "list":
                result = commands.list_alerts(store, include_resolved=args.all, site=args.site)
            elif args.action == "show":
                result = commands.show_alert(store, args.id)
            elif args.action == "ack":
                result = commands.ack_alert(store, args.id, by=args.by, comment=args.comment)
            elif args.action == "resolve":
                result = commands.resolve_alert(store, args.id, by=args.by,
                                                comment=args.comment)
            else:
                result = commands.silence_alert(store, args.id, duration=args.duration,
                                                reason=args.reason, by=args.by)
        except commands.CommandError as error:
            print(f"sitewatch-collector: {error}", file=sys.stderr)
            return 1
    print(json.dumps(result.data, sort_keys=True) if args.json else result.text)
    return 0


def _web_user(users_file: Path, name: str) -> int:
    import getpass

    from sitewatch.collector.alerting.webauth import set_password

    password = getpass.getpass(f"password for {name}: ")
    if password != getpass.getpass("again: "):
        print("sitewatch-collector web-user: the passwords differ", file=sys.stderr)
        return 1
    set_password(users_file, name, password)
    print(f"{name} can log in to the alert page ({users_file} updated)")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from sitewatch.collector.alerting.commands import CommandError
    from sitewatch.collector.backtest import backtest_command
    from sitewatch.collector.influxql import QueryError

    try:
        text, data = backtest_command(args.config, args.rules, args.since, args.site)
    except CommandError as error:
        print(f"sitewatch-collector backtest: {error}", file=sys.stderr)
        return 2
    except QueryError as error:
        print(f"sitewatch-collector backtest: {error}", file=sys.stderr)
        return 1
    print(json.dumps(data, sort_keys=True) if args.json else text)
    return 0


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
    from sitewatch.collector.gctune import tune_for_throughput
    from sitewatch.collector.service import Collector

    collector = Collector(load_config(config_path))
    stop = threading.Event()
    _stop_on_signals(stop)
    tune_for_throughput()  # what start-up made stays: out of the garbage collector's sight
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


def _score(input_path: Path, output_path: Path, detector: str) -> int:
    from pydantic import ValidationError

    from sitewatch.collector.score import ScoreInputError, score_file

    def fail(problem: str, status: int) -> int:
        print(f"sitewatch-collector score: {problem}", file=sys.stderr)
        return status

    try:
        summary = score_file(input_path, output_path, detector)
    except ScoreInputError as error:
        return fail(str(error), 2)
    except KeyError as error:
        return fail(str(error.args[0]), 2)
    except ValidationError:
        return fail(f"detector {detector!r} needs parameters; it cannot run on defaults", 2)
    except OSError as error:
        return fail(f"cannot write {output_path}: {error.strerror}", 1)
    skipped = summary.rows - summary.scored
    note = f"; {skipped} not after the previous timestamp, written with score 0" if skipped else ""
    print(
        f"scored {summary.scored} of {summary.rows} rows with {detector} into {output_path}{note}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config, args.log_level)
        if args.command == "status":
            return _status(args.config, args.json)
        if args.command == "score":
            return _score(args.input, args.output, args.detector)
        if args.command in ("alerts", "report"):
            return _alerts(args)
        if args.command == "backtest":
            return _backtest(args)
        if args.command == "web-user":
            return _web_user(args.users_file, args.name)
        if args.command in provisioning.COMMANDS:
            return provisioning.run(args)
        return _tail(args.host, args.port, args.site)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
