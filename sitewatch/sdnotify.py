"""A minimal systemd notify client: readiness, watchdog pings and status text.

The protocol is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). systemd recommends
re-implementing it instead of linking libsystemd, and it is short enough to own. Every
function is a no-op returning False when ``NOTIFY_SOCKET`` is unset (not run by systemd).

Send ``watchdog()`` only after the agent has checked its own health (loop lag, sensor
threads, outbox writable), never from a free-running timer thread: the point of the
watchdog is that a wedged agent stops pinging.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval_s"]


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` to systemd; True if sent, False when not under systemd or on error.

    Like ``sd_notify(3)``, a failure is returned, not raised: the agent keeps working
    without systemd, and a missed watchdog ping is handled by systemd itself.
    """
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a transport we do not speak (vsock:)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is complete (``Type=notify``): sensors and outbox are open."""
    return notify("READY=1")


def watchdog() -> bool:
    """Ping the service watchdog (``WatchdogSec=``); call after a successful health check."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd a clean shutdown has begun."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to ping (seconds): half of ``WATCHDOG_USEC``, or None when not enabled.

    None also when ``WATCHDOG_PID`` names another process (the setting is not for us).
    """
    env = os.environ if env is None else env
    try:
        period_us = int(env.get("WATCHDOG_USEC", ""))
        pid = int(env["WATCHDOG_PID"]) if "WATCHDOG_PID" in env else os.getpid()
    except ValueError:
        return None
    if period_us <= 0 or pid != os.getpid():
        return None
    return period_us / 2 / 1_000_000
