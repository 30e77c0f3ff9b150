"""The fault suite's driver (``tests/test_fault_suite.py``): a fleet of real processes that a
test breaks and mends one piece at a time, and the accounting at the end.

- ``Fleet`` owns a mosquitto (persistence on, the project's broker config), an influxd, one
  ``sitewatch-collector run`` and several agents, each a process it can SIGKILL, stop
  (SIGTERM) and start again with the same state (data dirs, state dirs, outboxes), and
  optionally a new config (a tiny outbox cap, a tiny spool cap).
- Every wait is a condition with a deadline (``wait_until``), read from what the processes
  themselves report: the agents' outboxes (``outbox.read_stats``, what ``sitewatch-agent
  status`` prints), the collector's status file, influxd's ``/ping`` and InfluxQL counts.
- An agent's wall clock cannot be stepped from outside its process without libfaketime, so a
  *shifted* agent runs the real agent (``sitewatch.agent.service.Agent``, the same code as
  ``sitewatch-agent run``) with a ``ShiftedClock`` injected through the agent's ``clock``
  parameter: ``python -m tests.faults shifted-agent --config … --control FILE``. Its wall time
  is the system's plus the offset written in FILE, applied on SIGUSR1 (and read at start, so
  the clock stays wrong across a restart, as a Pi's would); monotonic time is untouched, as
  when NTP steps a clock. ``AgentProcess.jump`` writes FILE, signals and waits until the
  process says it applied the offset.
- ``Accounting`` compares, per device, what the agent produced with what InfluxDB holds and
  what was dropped on the way, counted where it was dropped, and renders the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from sitewatch.agent.outbox import OutboxStats, read_stats
from sitewatch.atomicfile import write_atomic
from sitewatch.clock import SystemClock
from sitewatch.localrun import PROJECT_ROOT, Influxd, Mosquitto, free_port, wait_until
from tests.processes import agent_status, outbox_path, unit_like_env

__all__ = [
    "DB",
    "SITE",
    "Accounting",
    "AgentProcess",
    "CollectorProcess",
    "DeviceCount",
    "Fleet",
    "ShiftedClock",
    "WebhookInbox",
]

DB = "sitewatch"
SITE = "plant-a"

log = logging.getLogger("sitewatch.faults")


# -- the shifted clock and the agent process that uses it ----------------------------------


class ShiftedClock(SystemClock):
    """The system's clocks with the wall time moved by ``offset_s`` seconds (monotonic time
    is untouched). Setting ``offset_s`` is the clock step."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s


def _applied_path(control: Path) -> Path:
    return control.with_name(control.name + ".applied")


def _read_offset(control: Path) -> float:
    try:
        return float(control.read_text().strip() or 0.0)
    except FileNotFoundError:
        return 0.0


def run_shifted_agent(config_path: Path, control: Path, log_level: str = "DEBUG") -> int:
    """``sitewatch-agent run`` with a ``ShiftedClock``: SIGUSR1 applies the offset in
    ``control`` and writes it to ``<control>.applied``."""
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from sitewatch.agent.config import load_config
    from sitewatch.agent.service import Agent

    config = load_config(config_path)
    clock = ShiftedClock(_read_offset(control))
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_jump(signum: int, frame: FrameType | None) -> None:
        clock.offset_s = _read_offset(control)
        log.warning("wall clock stepped: now %+.3f s off the system's", clock.offset_s)
        write_atomic(_applied_path(control), repr(clock.offset_s).encode(), durable=False)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_jump)
    agent = Agent(config, clock=clock)
    write_atomic(_applied_path(control), repr(clock.offset_s).encode(), durable=False)
    log.info("shifted agent %s boot %s, clock %+.3f s", config.device, agent.boot_id,
             clock.offset_s)
    agent.run(stop)
    return 0


# -- processes -----------------------------------------------------------------------------


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@dataclass
class AgentProcess:
    """One agent: ``sitewatch-agent run`` as the unit runs it, or the shifted-clock driver."""

    device: str
    config: dict[str, Any]
    workdir: Path
    shifted: bool = False
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.device}.yaml"

    @property
    def control(self) -> Path:
        return self.workdir / f"{self.device}.clock"

    @property
    def outbox(self) -> Path:
        return outbox_path(self.config_path)

    def start(self, **changes: Any) -> None:
        """Start the process with the base config plus ``changes`` (sections merged), and
        wait until its outbox exists."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.config_path.write_text(yaml.safe_dump(_merge(self.config, changes)))
        self.starts += 1
        log_path = self.workdir / f"{self.device}-{self.starts}.log"
        if self.shifted:
            command = [sys.executable, "-m", "tests.faults", "shifted-agent",
                       "--config", str(self.config_path), "--control", str(self.control)]
            env = unit_like_env({**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
            _applied_path(self.control).unlink(missing_ok=True)
        else:
            command = [sys.executable, "-m", "sitewatch.agent.cli", "run",
                       "--config", str(self.config_path), "--log-level", "DEBUG"]
            env = unit_like_env()
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                         env=env, cwd=PROJECT_ROOT)
        proc = self.proc
        wait_until(lambda: self._ready() or proc.poll() is not None, 30, f"{self.device} to start")
        assert proc.poll() is None, log_path.read_text()[-3000:]

    def row_ids(self) -> tuple[float, int]:
        """The oldest row id still in the outbox (infinity when empty) and the newest row id
        ever given (read-only, as ``status`` reads it)."""
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True)
        try:
            oldest = db.execute("SELECT MIN(id) FROM messages").fetchone()[0]
            newest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
                                ).fetchone()
        finally:
            db.close()
        return (float("inf") if oldest is None else oldest), (newest[0] if newest else 0)

    def _ready(self) -> bool:
        """The outbox has its tables (it exists a moment before) and, for a shifted agent,
        the clock is set."""
        if self.shifted and not _applied_path(self.control).exists():
            return False
        try:
            self.stats()
        except (FileNotFoundError, sqlite3.OperationalError):
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: nothing is flushed, the outbox keeps what was committed."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.device} is not running"
        _kill(self.proc)

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: it must exit 0 within the unit's timeout."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0, f"{self.device} exited with {self.proc.returncode}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> OutboxStats:
        """The outbox's accounting, read as ``sitewatch-agent status`` reads it."""
        return read_stats(self.outbox)

    def jump(self, offset_s: float) -> None:
        """Step this agent's wall clock to ``offset_s`` seconds off the system's."""
        assert self.shifted and self.proc is not None and self.proc.poll() is None
        write_atomic(self.control, repr(offset_s).encode(), durable=False)
        self.proc.send_signal(signal.SIGUSR1)
        applied = _applied_path(self.control)
        wait_until(lambda: applied.exists() and float(applied.read_text()) == offset_s, 10,
                   f"{self.device}'s clock to step to {offset_s:+.0f} s")


@dataclass
class CollectorProcess:
    """``sitewatch-collector run`` with a base config; ``start`` may change sections."""

    config: dict[str, Any]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "collector.yaml"

    @property
    def state_dir(self) -> Path:
        return Path(self.config["state_dir"])

    def start(self, **changes: Any) -> None:
        """Start it and wait until *this* process reports a broker session (the status
        file of a killed one still says connected)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.config_path.write_text(yaml.safe_dump(_merge(self.config, changes)))
        self.starts += 1
        log_path = self.workdir / f"collector-{self.starts}.log"
        started_ms = int(time.time() * 1000)
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sitewatch.collector.cli", "run",
                 "--config", str(self.config_path), "--log-level", "DEBUG"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
            )
        proc = self.proc

        def up() -> bool:
            status = self.status()
            return bool(status and status["updated_ms"] >= started_ms
                        and status["broker_connected"])

        wait_until(lambda: proc.poll() is not None or up(), 40, "the collector's broker session")
        assert proc.poll() is None, log_path.read_text()[-3000:]

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the collector is not running"
        _kill(self.proc)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(40) == 0, f"the collector exited with {self.proc.returncode}"

    def status(self) -> dict[str, Any] | None:
        """The status file the collector rewrites every second (``sitewatch-collector
        status --json`` prints the same)."""
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data


# -- an apprise json:// receiver -----------------------------------------------------------


class WebhookInbox:
    """A loopback HTTP server that keeps every POSTed JSON body (apprise ``json://``)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    inbox.messages.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"json://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the fleet -----------------------------------------------------------------------------


@dataclass
class Fleet:
    """Everything running for one fault suite run, and the waits its faults need."""

    workdir: Path
    broker: Mosquitto
    influx: Influxd
    collector: CollectorProcess
    agents: dict[str, AgentProcess]
    phases: list[tuple[str, float]] = field(default_factory=list)

    def close(self) -> None:
        for agent in self.agents.values():
            _kill(agent.proc)
        _kill(self.collector.proc)
        self.broker.kill()
        self.influx.kill()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one fault (printed with the accounting)."""
        started = time.monotonic()
        log.warning("fault suite: %s", name)
        yield
        self.phases.append((name, time.monotonic() - started))

    # -- what the agents say
    def stats(self) -> dict[str, OutboxStats]:
        return {device: agent.stats() for device, agent in self.agents.items()}

    def wait_outboxes_grow(self, devices: list[str], by_messages: int, what: str) -> None:
        """Until each device's outbox holds ``by_messages`` more messages than now (the
        broker or the collector is away and the agent keeps its readings)."""
        before = {d: self.agents[d].stats().pending_messages for d in devices}
        wait_until(lambda: all(self.agents[d].stats().pending_messages >= before[d] + by_messages
                               for d in devices), 30, f"the outboxes to grow ({what})")

    def wait_confirmed_past(self, devices: list[str], what: str, timeout_s: float = 60) -> None:
        """Until every message each agent had committed by now has left its outbox: the
        collector confirmed it stored (or the cap evicted it, counted). Row ids only grow,
        across restarts too, so this needs no clock (one agent's clock is wrong)."""
        newest = {d: self.agents[d].row_ids()[1] for d in devices}
        wait_until(lambda: all(self.agents[d].row_ids()[0] > newest[d] for d in devices),
                   timeout_s, f"confirmations of everything committed ({what})")

    # -- what the collector and InfluxDB say
    def wait_collector(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                       timeout_s: float = 30) -> dict[str, Any]:
        """Until the collector's status file satisfies ``predicate``; that status."""

        def matching() -> dict[str, Any] | None:
            status = self.collector.status()
            return status if status is not None and predicate(status) else None

        status = wait_until(matching, timeout_s, what)
        assert status is not None
        return status

    def stored_by_sensor(self, device: str) -> dict[str, int]:
        """Readings stored per sensor: every reading writes one point carrying ``quality``
        (environment or equipment), whatever else it carries."""
        counts: dict[str, int] = {}
        for measurement in ("environment", "equipment"):
            for row in self.influx.query(
                f"SELECT count(quality) FROM {measurement} WHERE device = '{device}'"
                " GROUP BY sensor", DB,
            ):
                counts[row["sensor"]] = counts.get(row["sensor"], 0) + int(row["count"])
        return counts

    def stored_events(self, device: str) -> int:
        """Event points (one per event; ``type`` is a tag, so count rows)."""
        return len(self.influx.query(f"SELECT * FROM events WHERE device = '{device}'", DB))


# -- accounting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceCount:
    """One device's final accounting (readings unless named otherwise)."""

    device: str
    produced: int
    stored: int
    stored_by_sensor: dict[str, int]
    agent_dropped: int
    collector_dropped: int
    confirmed: int
    acked: int
    pending: int
    resent: int
    duplicates: int
    gaps: int
    late: int
    events_produced: int
    events_stored: int
    events_agent_dropped: int
    events_collector_dropped: int
    starts: int

    @property
    def accounted(self) -> int:
        return self.stored + self.agent_dropped + self.collector_dropped

    @property
    def balanced(self) -> bool:
        return self.accounted == self.produced

    @property
    def events_balanced(self) -> bool:
        return self.events_produced == (
            self.events_stored + self.events_agent_dropped + self.events_collector_dropped
        )


@dataclass
class Accounting:
    """The table printed at the end of the suite."""

    devices: list[DeviceCount]
    collector: dict[str, Any]
    phases: list[tuple[str, float]]

    def render(self) -> str:
        columns = ["device", "produced", "confirmed", "stored", "drop:agent", "drop:coll", "Δ",
                   "dup seen+rewritten", "resent", "gaps", "late", "starts",
                   "events p/s/d:a/d:c"]
        rows = [[
            d.device, d.produced, d.confirmed, d.stored, d.agent_dropped, d.collector_dropped,
            d.produced - d.accounted, d.duplicates, d.resent, d.gaps, d.late, d.starts,
            f"{d.events_produced}/{d.events_stored}/{d.events_agent_dropped}/"
            f"{d.events_collector_dropped}",
        ] for d in self.devices]
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]

        def line(cells: list[Any]) -> str:
            return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

        head = line(columns)
        lines = ["fault suite: final accounting per device (readings unless named)", head,
                 "-" * len(head), *(line(r) for r in rows)]
        lines.append("stored per sensor: " + "; ".join(
            f"{d.device}: " + ", ".join(f"{s} {n}" for s, n in sorted(d.stored_by_sensor.items()))
            for d in self.devices))
        lines += textwrap.wrap(
            "confirmed = by the collector, end to end; "
            "drop:agent = the outbox's cap, and stubs the broker lost after its PUBACK "
            "(sitewatch-agent status); drop:coll = the spool's "
            "cap (collector status, per device); Δ = produced - stored - drops; dup = messages "
            "the collector received again and wrote again; resent = messages an agent "
            "published again for want of a confirmation; gaps/late = the collector's seq "
            "tracking (messages); starts = agent processes started; events p/s/d:a/d:c = "
            "produced/stored/dropped by agent/by collector", 100)
        c = self.collector
        lines.append(
            f"collector: spooled {c.get('spooled')} points (its last process), spool drops "
            f"{c.get('dropped')} points, dead letters {c.get('dead_lettered')}, "
            f"invalid messages {c.get('invalid_messages')}")
        lines.append("phases (s): " + ", ".join(f"{name} {took:.1f}" for name, took in
                                                 self.phases))
        return "\n".join(lines)


def final_count(fleet: Fleet, device: str, collector_devices: dict[str, Any]) -> DeviceCount:
    """One device's accounting: the agent's ``sitewatch-agent status --json``, the
    collector's status (per-device counters, spool drops) and InfluxQL counts."""
    agent = fleet.agents[device]
    status = agent_status(agent.config_path)  # the agent's own CLI, as an operator reads it
    counters = collector_devices.get(device, {})
    by_sensor = fleet.stored_by_sensor(device)
    return DeviceCount(
        device=device,
        produced=status["produced"],
        stored=sum(by_sensor.values()),
        stored_by_sensor=by_sensor,
        agent_dropped=status["dropped"],
        collector_dropped=int(counters.get("dropped", 0)),
        confirmed=status["confirmed"],
        acked=status["acked"],
        pending=status["pending"],
        resent=status["resent"],
        duplicates=int(counters.get("duplicates", 0)),
        gaps=int(counters.get("gaps", 0)),
        late=int(counters.get("late", 0)),
        events_produced=status["events_produced"],
        events_stored=fleet.stored_events(device),
        events_agent_dropped=status["events_dropped"],
        events_collector_dropped=int(counters.get("events_dropped", 0)),
        starts=agent.starts,
    )


# -- command line (the shifted agent) ------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    commands = parser.add_subparsers(dest="command", required=True)
    shifted = commands.add_parser("shifted-agent", help="the agent with a steppable wall clock")
    shifted.add_argument("--config", required=True, type=Path)
    shifted.add_argument("--control", required=True, type=Path)
    shifted.add_argument("--log-level", default="DEBUG")
    args = parser.parse_args(argv)
    return run_shifted_agent(args.config, args.control, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
