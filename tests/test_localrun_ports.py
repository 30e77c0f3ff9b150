"""``free_port`` within a range: how parallel test workers keep out of each other's ports."""

from __future__ import annotations

import socket

import pytest

from sitewatch.localrun.process import PORT_RANGE_ENV, free_port


def test_localrun_free_port_takes_the_range_in_turn_and_skips_ports_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # find four free ports in a row below the ephemeral range
        for first in range(29_000, 29_900, 7):
            try:
                for port in range(first, first + 4):
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        monkeypatch.setenv(PORT_RANGE_ENV, f"{first}-{first + 3}")
        probe.bind(("127.0.0.1", first + 1))
        probe.listen()
        handed = [free_port() for _ in range(6)]
    assert first + 1 not in handed  # in use
    assert set(handed) == {first, first + 2, first + 3}
    assert len(set(handed[:3])) == 3  # none again before the range wraps
