"""The ``sitewatch-collector provision-*`` commands: argument parsing and output.

- ``provision-device --site S --device D --out DIR``: a device's login, ACL block and bundle.
- ``provision-collector --out DIR``: the collector's login, ACL block and bundle.
- ``provision-broker --ca-dir DIR --host H [--host H ...] --out DIR``: the broker's
  certificate (and the CA, made when absent).

What was done is printed, one line each; a password never is. Exit status: 0 done, 1 a
failure while writing (openssl, file permissions), 2 an argument that cannot be used.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

from sitewatch.collector.provisioning.bundles import (
    DEFAULT_CONFIG_DIR,
    AuthFiles,
    Broker,
    ProvisioningError,
    provision_broker,
    provision_collector,
    provision_device,
)
from sitewatch.collector.provisioning.mosquitto_auth import (
    DEFAULT_ACL_FILE,
    DEFAULT_PASSWORD_FILE,
    AuthFileError,
)
from sitewatch.collector.provisioning.pki import PkiError

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("provision-device", "provision-collector", "provision-broker")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return port


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="directory for this machine's files (created, mode 0700)")
    parser.add_argument("--ca-dir", type=Path, default=None,
                        help="the CA's directory (created with the CA when absent): also make a "
                             "client certificate; without it the system's CAs verify the broker")
    parser.add_argument("--broker-host", default=None,
                        help="the broker's name or address as clients reach it, as in its "
                             "certificate (default: this machine's name)")
    parser.add_argument("--broker-port", type=_port, default=8883,
                        help="the broker's TLS port (default 8883)")
    parser.add_argument("--password-file", type=Path, default=DEFAULT_PASSWORD_FILE,
                        help=f"mosquitto password file to update (default {DEFAULT_PASSWORD_FILE})")
    parser.add_argument("--acl-file", type=Path, default=DEFAULT_ACL_FILE,
                        help=f"mosquitto ACL file to update (default {DEFAULT_ACL_FILE})")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                        help="where the files will be installed on that machine; the config "
                             f"names them there (default {DEFAULT_CONFIG_DIR})")


def add_parsers(commands: Any) -> None:
    """Add the provision-* subcommands to ``sitewatch-collector``'s subparsers."""
    device = commands.add_parser(
        "provision-device", help="a device's MQTT login, ACL, certificate and agent config"
    )
    device.add_argument("--site", required=True)
    device.add_argument("--device", required=True)
    _client_options(device)
    device.add_argument("--agent-template", type=Path, default=None,
                        help="an agent config whose sensors, outbox, ... sections are kept "
                             "(default: one example DHT22 to replace)")
    collector = commands.add_parser(
        "provision-collector", help="the collector's MQTT login (reads all), ACL and files"
    )
    _client_options(collector)
    collector.add_argument("--user", default="sitewatch-collector",
                           help="the collector's login (default sitewatch-collector)")
    collector.add_argument("--client-id", default="sitewatch-collector-1",
                           help="the collector's fixed client id (default sitewatch-collector-1)")
    collector.add_argument("--extra-topic", action="append", dest="extra_topics", default=[],
                           help="a topic filter outside sitewatch/ and homeassistant/ the "
                                "collector publishes to (repeat for each)")
    broker = commands.add_parser(
        "provision-broker", help="the broker's TLS certificate (and the CA when absent)"
    )
    broker.add_argument("--ca-dir", required=True, type=Path,
                        help="the CA's directory (created with the CA when absent)")
    broker.add_argument("--host", required=True, action="append", dest="hosts",
                        help="a name or address clients use for the broker (repeat for each)")
    broker.add_argument("--out", required=True, type=Path, help="directory for the broker's files")


def _broker(args: argparse.Namespace) -> Broker:
    return Broker(args.broker_host or socket.getfqdn(), args.broker_port)


def _provision(args: argparse.Namespace) -> list[str]:
    if args.command == "provision-broker":
        return provision_broker(args.ca_dir, args.hosts, args.out)
    auth = AuthFiles(args.password_file, args.acl_file)
    common = {"broker": _broker(args), "auth": auth, "config_dir": args.config_dir,
              "ca_dir": args.ca_dir}
    if args.command == "provision-device":
        return provision_device(args.site, args.device, args.out,
                                agent_template=args.agent_template, **common)
    return provision_collector(args.out, username=args.user, client_id=args.client_id,
                               extra_topics=args.extra_topics, **common)


def run(args: argparse.Namespace) -> int:
    """Carry out a provision-* command; the exit status."""
    try:
        report = _provision(args)
    except (ProvisioningError, AuthFileError) as error:
        print(f"sitewatch-collector {args.command}: {error}", file=sys.stderr)
        return 2
    except (PkiError, OSError) as error:
        print(f"sitewatch-collector {args.command}: {error}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    return 0
