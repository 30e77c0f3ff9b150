"""``sitewatch-agent``: run the agent, check an installation, or show delivery accounting.

Exit status: 0 success; 1 a problem found (``check``) or a runtime failure; 2 a bad
configuration or bad arguments. Configuration errors name the field (``sensors[1].pin``).
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

from sitewatch import __version__
from sitewatch.agent.config import load_config
from sitewatch.agent.errors import ConfigError, SensorFault
from sitewatch.agent.outbox import OutboxStats, read_stats

__all__ = ["main"]

log = logging.getLogger("sitewatch.agent")


def _parser() -> argparse.ArgumentParser:
    # Not __doc__: the unit runs the agent with python -OO, which strips docstrings.
    parser = argparse.ArgumentParser(
        prog="sitewatch-agent",
        description="read sensors and publish them, check an installation, show delivery",
    )
    parser.add_argument("--version", action="version", version=f"sitewatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="read sensors and publish until stopped (SIGTERM)")
    run.add_argument("--config", required=True, type=Path, help="agent YAML file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    check = commands.add_parser("check", help="validate config, firmware overlays and sensors")
    check.add_argument("--config", required=True, type=Path)
    check.add_argument(
        "--config-txt",
        type=Path,
        default=None,
        help="firmware config to inspect (default: hardware.config_txt, /boot/firmware/config.txt)",
    )

    status = commands.add_parser("status", help="delivery accounting from the outbox")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _run(config_path: Path, log_level: str) -> int:
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from sitewatch.agent.service import Agent

    config = load_config(config_path)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(config)
    log.info(
        "agent %s/%s boot %s: %d sensors, outbox %s",
        config.site,
        config.device,
        agent.boot_id,
        len(agent.sensors),
        config.outbox.path,
    )
    agent.run(stop)
    return 0


def _confirmation(stats: OutboxStats, mode: str) -> str:
    if mode == "broker":
        return "broker (delivery.confirm: broker): a message leaves the outbox on PUBACK"
    if stats.broker_fallback:
        return "broker, as a fallback: no collector confirms (none has yet, or it stopped)"
    if stats.last_confirmation_ms is None:
        return "end to end; no confirmation from the collector yet"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stats.last_confirmation_ms / 1000))
    return f"end to end; last confirmation {when} UTC"


def _format_status(stats: OutboxStats, mode: str = "end_to_end") -> str:
    lines = [
        f"readings produced  {stats.produced}",
        f"readings stored    {stats.confirmed}  (confirmed by the collector, end to end)",
        f"readings acked     {stats.acked}  (by the broker; {stats.acked - stats.confirmed}"
        f" of them without the collector's confirmation, {stats.released} of those released"
        " unconfirmed)",
        f"readings pending   {stats.pending}  ({stats.unconfirmed} acked by the broker,"
        f" waiting for the collector's confirmation; {stats.stubbed} of those evicted for the"
        " cap, kept as stubs)",
        f"readings dropped   {stats.dropped}"
        f"  (outbox full: {stats.dropped_for_size}, too old: {stats.dropped_for_age},"
        f" lost by the broker after its ack: {stats.dropped_unconfirmed})",
        f"events   produced {stats.events_produced}  stored {stats.events_confirmed}"
        f"  acked {stats.events_acked}  pending {stats.events_pending}"
        f"  dropped {stats.events_dropped}",
        f"outbox   {stats.pending_messages} messages ({stats.unconfirmed_messages} unconfirmed),"
        f" {stats.pending_bytes} bytes; {stats.resent} messages sent again",
        f"confirmation  {_confirmation(stats, mode)}",
    ]
    return "\n".join(lines)


def _status(config_path: Path, as_json: bool) -> int:
    config = load_config(config_path)
    try:
        stats = read_stats(config.outbox.path)
    except FileNotFoundError as error:
        print(f"sitewatch-agent status: {error} (has the agent run yet?)", file=sys.stderr)
        return 1
    mode = config.delivery.confirm
    if as_json:
        print(json.dumps({**stats.as_dict(), "confirm": mode}, sort_keys=True))
    else:
        print(_format_status(stats, mode))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config, args.log_level)
        if args.command == "status":
            return _status(args.config, args.json)
        from sitewatch.agent.check import run_check

        return run_check(args.config, config_txt=args.config_txt)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except SensorFault as error:
        print(
            f"sensor fault: {error}" + (f"\n  fix: {error.fix}" if error.fix else ""),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
