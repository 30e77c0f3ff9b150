"""Shared fixtures: a real mosquitto per test, and agent configs written to tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from gpiozero.pins.mock import MockFactory

from sitewatch.localrun import (
    Alertmanager,
    Influxd,
    Mosquitto,
    VictoriaMetrics,
    free_port,
    have_alertmanager,
    have_influxd,
    have_mosquitto,
    victoria_metrics_binary,
)
from sitewatch.localrun.process import PORT_RANGE_ENV
from tests.processes import write_config
from tests.smtp_inbox import Inbox


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest tests first: ``long`` (minutes), then ``integration`` (real servers,
    seconds each), then the rest (milliseconds), each group in file order.

    Why: ``scripts/test`` runs two pytest-xdist workers, each handed the next test as it
    finishes one; a test of minutes handed out last would run alone at the end, whereas handed
    out first it runs beside everything else, and the short tests at the end even the two
    workers out. Tests do not depend on their order.
    """

    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("long"):
            return 0
        return 1 if item.get_closest_marker("integration") else 2

    items.sort(key=group)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker its own ports (``localrun.free_port``): 5000 of
    them from 10000 up, below the kernel's ephemeral range (32768 and up), so two workers
    never pick the same port and no outgoing connection takes one before its server binds."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]) < 4:
        first = 10_000 + 5_000 * int(worker[2:])
        os.environ[PORT_RANGE_ENV] = f"{first}-{first + 4_999}"


SUMMARY_PROPERTY = "summary"


@pytest.fixture
def summary(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Give figures a test measured to the end of the run's output (``pytest_terminal_summary``
    prints them). Why not ``print``: under pytest-xdist a worker's output never reaches the
    terminal, while a report's ``user_properties`` travel to the controller."""

    def add(text: str) -> None:
        record_property(SUMMARY_PROPERTY, text)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what tests handed to ``summary``, passed or failed, in the order they ran."""
    texts = [
        (report.nodeid, str(value))
        for category in ("passed", "failed")
        for report in terminalreporter.stats.get(category, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == SUMMARY_PROPERTY
    ]
    if not texts:
        return
    terminalreporter.section("figures the tests measured")
    for nodeid, text in texts:
        terminalreporter.write_line(f"{nodeid}:")
        terminalreporter.write_line(text)


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    """A fresh MockFactory per test, passed explicitly; reset afterwards (as gpiozero does)."""
    factory = MockFactory()
    try:
        yield factory
    finally:
        factory.reset()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto on a free loopback port, stopped after the test."""
    if not have_mosquitto():
        pytest.fail("mosquitto is not installed; the README's test command installs it")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def write_agent_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an agent config for a simulated device; keyword arguments override sections."""

    def write(
        port: int,
        *,
        device: str = "pi-01",
        sensors: list[dict[str, Any]] | None = None,
        name: str = "agent.yaml",
        **sections: Any,
    ) -> Path:
        state = tmp_path / f"state-{device}"
        config: dict[str, Any] = {
            "site": "plant-a",
            "device": device,
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
            },
            "outbox": {"path": str(state / "outbox.db"), "drain_rate_per_s": 200},
            "telemetry": {"batch_interval_s": 0.2, "health_interval_s": 1.0},
            "hardware": {"pin_factory": "mock"},
            "sensors": sensors
            or [
                {
                    "id": "cold-room",
                    "driver": "simulated",
                    "model": "cold_room",
                    "interval_s": 0.1,
                    "seed": 1,
                    "labels": {"zone": "kitchen"},
                },
                {
                    "id": "server-room",
                    "driver": "simulated",
                    "model": "server_room",
                    "interval_s": 0.1,
                    "seed": 2,
                },
            ],
        }
        return write_config(tmp_path / name, config, sections)

    return write


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """A running influxd (InfluxDB 1.6.7) on a free loopback port with an empty data dir and
    the database ``sitewatch`` created; killed after the test."""
    if not have_influxd():
        pytest.fail("influxd is not installed; the README's test command installs it (influxdb)")
    server = Influxd(tmp_path / "influxd")
    server.start()
    try:
        server.create_database("sitewatch")
        yield server
    finally:
        server.kill()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics (a real server for InfluxDB's v2 write API) on a free loopback
    port; stopped after the test. Skips when its binary cannot be had, except under CI."""
    binary = victoria_metrics_binary()
    if binary is None:
        reason = (
            "victoria-metrics is not available, so the InfluxDB v2 write path is not tested: "
            "run scripts/fetch-victoria-metrics.sh (scripts/bootstrap.sh runs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must test it")
        pytest.skip(reason)
    server = VictoriaMetrics(tmp_path / "victoria", binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    """A running Prometheus Alertmanager (API v2, clustering off) on a free loopback port,
    with a route to a receiver that sends nothing; killed after the test."""
    if not have_alertmanager():
        pytest.fail("prometheus-alertmanager is not installed (apt-get install it)")
    server = Alertmanager(tmp_path / "alertmanager")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A running SMTP server on 127.0.0.1 and its port."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (agents, collectors): killed at its end if still running."""
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for proc in running:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
