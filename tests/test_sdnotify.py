"""The systemd notify client, against a real AF_UNIX datagram socket standing in for PID 1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitewatch import sdnotify


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket named by $NOTIFY_SOCKET, as systemd sets it up."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield server


def received(server: socket.socket) -> str:
    return server.recv(4096).decode()


def test_sdnotify_sends_each_message(systemd_socket: socket.socket) -> None:
    assert sdnotify.ready()
    assert received(systemd_socket) == "READY=1"
    assert sdnotify.watchdog()
    assert received(systemd_socket) == "WATCHDOG=1"
    assert sdnotify.stopping()
    assert received(systemd_socket) == "STOPPING=1"


def test_sdnotify_status_is_one_line(systemd_socket: socket.socket) -> None:
    # A newline would start a new KEY=value assignment in the datagram.
    assert sdnotify.status("3 sensors\nREADY=1 outbox  12 queued")
    assert received(systemd_socket) == "STATUS=3 sensors READY=1 outbox 12 queued"


def test_sdnotify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sitewatch-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert received(server) == "READY=1"


def test_sdnotify_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_sdnotify_reports_a_vanished_socket(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "gone")}
    assert sdnotify.notify("READY=1", env) is False


def test_sdnotify_watchdog_interval_is_half_the_period() -> None:
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    own = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval_s(own) == 15.0


def test_sdnotify_watchdog_interval_none_when_not_ours_or_unset() -> None:
    assert sdnotify.watchdog_interval_s({}) is None
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert sdnotify.watchdog_interval_s(other) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
