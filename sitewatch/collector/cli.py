"""``sitewatch-collector``: the central side of sitewatch.

For now it offers ``tail``, a validating live view of a broker's sitewatch traffic; storage
in InfluxDB, detection and alerting follow.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from sitewatch import __version__
from sitewatch.wire import subscription

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitewatch-collector", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--version", action="version", version=f"sitewatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    tail = commands.add_parser("tail", help="print every reading, event and status, validated")
    tail.add_argument("--host", default="127.0.0.1")
    tail.add_argument("--port", type=int, default=1883)
    tail.add_argument("--site", default="+", help="only this site (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from sitewatch.collector.mqtt import Subscriber
    from sitewatch.collector.tail import print_message

    subscriber = Subscriber(
        args.host,
        args.port,
        [subscription(args.site)],
        lambda topic, payload, retained: print_message(topic, payload),
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        subscriber.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    subscriber.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
