"""The README's first command, headless: ``./scripts/demo`` brings up broker, InfluxDB,
simulated agents with faults, the collector and the alert page, and an alert of every fault
scenario appears on the page and in InfluxDB; it stops cleanly and runs again from scratch.

The demo itself decides when it is done (``--until-alerted``: every scenario seen in the
live view, then on the page and in InfluxDB), so the test waits exactly as long as the slowest
scenario takes, bounded by ``--duration-s``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitewatch.demo_scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 540  # the issue allows 10 minutes per scenario; ours take about 4
FIRST_RUN_TIMEOUT_S = 120
STOP_S = 120  # beyond --duration-s: stopping the agents, the collector and the servers

pytestmark = [
    pytest.mark.long,  # about 4 minutes: handed out first, so it runs beside the rest
    # pytest's own limit (300 s in pyproject.toml) would end the test before DEADLINE_S.
    pytest.mark.timeout(FIRST_RUN_TIMEOUT_S + DEADLINE_S + STOP_S + 60),
]


def _demo(run_dir: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sitewatch.demo", "--run-dir", str(run_dir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _processes_under(run_dir: Path) -> list[str]:
    """Command lines of running processes that mention ``run_dir`` (broker, influxd, agents,
    collector)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(run_dir) in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


def test_demo_alerts_every_fault_scenario_on_the_page_and_in_influxdb(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    # A first, short run leaves its run directory behind, as a Ctrl-C'd demo does; the real
    # run must start afresh in it.
    first = _demo(run_dir, "--duration-s", "5", timeout_s=FIRST_RUN_TIMEOUT_S)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "demo stopped" in first.stdout
    assert not _processes_under(run_dir)

    result = _demo(run_dir, "--until-alerted", "--duration-s", str(DEADLINE_S),
                   "--progress-every-s", "30", timeout_s=DEADLINE_S + STOP_S)
    out = result.stdout
    tail = out[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, tail
    # What runs where is printed first.
    for what in ("broker", "influxdb", "collector", "alerts", "agent"):
        assert f"  {what} " in out, what
    for scenario in SCENARIOS:
        check = [line for line in out.splitlines()
                 if line.startswith("CHECK") and scenario.where in line]
        assert check, f"no CHECK line for {scenario.title}\n{tail}"
        assert "page yes" in check[0] and "influxdb yes" in check[0], check[0]
        # and the terminal: the live view printed the alert itself
        assert any(line.startswith("ALERT firing") and scenario.where in line
                   for line in out.splitlines()), scenario.title
    assert "MESSAGE to " in out  # a person was notified
    assert "PROGRESS" in out
    assert "demo stopped" in out
    assert not _processes_under(run_dir), "the demo left processes running"
    # The collector's log has no traceback.
    log = (run_dir / "logs" / "collector.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
