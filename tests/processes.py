"""Agents and collectors as real processes, started and observed the way an operator would:
``sitewatch-agent run`` / ``sitewatch-collector run``, and their ``status --json``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sitewatch.agent.outbox import read_stats
from sitewatch.collector.service import STATUS_FILE
from sitewatch.localrun import wait_until


def outbox_path(config: Path) -> Path:
    return Path(yaml.safe_load(config.read_text())["outbox"]["path"])


UNIT_PYTHON_ENV = {"PYTHONOPTIMIZE": "2"}
"""The interpreter flags ``systemd/sitewatch-agent.service`` sets (a test keeps them equal)."""

_PYCACHE = Path(tempfile.gettempdir()) / f"sitewatch-tests-pycache-{os.getuid()}"


def unit_like_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) plus the unit's interpreter flags, with the
    bytecode cached once for the whole test session as the unit's ``CacheDirectory`` does."""
    env = {k: v for k, v in (base or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **UNIT_PYTHON_ENV, "PYTHONPYCACHEPREFIX": str(_PYCACHE)}


def _outbox_set_up(config: Path) -> bool:
    try:
        read_stats(outbox_path(config))
    except FileNotFoundError:  # no file yet, or no tables in it yet
        return False
    return True


def start_agent(
    config: Path, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``sitewatch-agent run`` as the systemd unit runs it (``-OO``) and wait until its
    outbox is set up (its accounting can be read). ``env`` replaces this process's
    environment."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sitewatch.agent.cli", "run", "--config", str(config),
         "--log-level", "DEBUG"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=unit_like_env(env),
    )
    wait_until(lambda: _outbox_set_up(config) or proc.poll() is not None, 20,
               "the agent's outbox")
    assert proc.poll() is None, log.read_text()
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15) -> int:
    """SIGTERM, as systemd stops it; it must exit within the unit's TimeoutStopSec."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout_s)


def agent_status(config: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "sitewatch.agent.cli", "status", "--config", str(config), "--json"],
        capture_output=True, check=True, text=True,
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


def agent_counts(config: Path) -> dict[str, Any]:
    """The agent's accounting, read in this process: the same figures ``agent_status`` gets
    from ``sitewatch-agent status --json`` (less ``confirm``), for the conditions that
    ``wait_until`` polls. Each ``status`` command is a Python start (about 0.2 s of CPU), so
    polling it every 50 ms takes a whole core from the agents and servers under test; checks
    of the final accounting still use ``agent_status``, the operator's command."""
    return read_stats(outbox_path(config)).as_dict()


def start_collector(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``sitewatch-collector run`` and wait until it is connected to the broker."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sitewatch.collector.cli", "run", "--config", str(config),
         "--log-level", "DEBUG"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    state = Path(yaml.safe_load(config.read_text())["state_dir"]) / "status.json"
    wait_until(
        lambda: proc.poll() is not None
        or (state.exists() and json.loads(state.read_text())["broker_connected"]),
        30, "the collector's broker session",
    )
    assert proc.poll() is None, log.read_text()
    return proc


def collector_status(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "sitewatch.collector.cli", "status", "--config", str(config),
         "--json"],
        capture_output=True, check=True, text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def collector_counts(config: Path) -> dict[str, Any]:
    """The collector's status file (written every second and at stop), read in this process:
    what ``collector_status`` gets from ``sitewatch-collector status --json`` (about 0.35 s of
    CPU each), for the conditions that ``wait_until`` polls."""
    state = Path(yaml.safe_load(config.read_text())["state_dir"]) / STATUS_FILE
    result: dict[str, Any] = json.loads(state.read_text())
    return result


def write_collector_config(
    directory: Path,
    broker_port: int,
    influx_url: str,
    database: str,
    *,
    name: str = "collector",
    **changes: Any,
) -> Path:
    """Write ``<directory>/<name>.yaml``: a collector on the test broker and influxd (v1 API,
    quick flushes and retries, state in ``<name>-state``, metrics off). A keyword argument
    that is a dict is merged into its section; anything else replaces it."""
    config: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": name},
        "influx": {"api": "v1", "url": influx_url, "database": database,
                   "flush_interval_s": 0.2, "retry_min_s": 0.2, "retry_max_s": 0.5},
        "state_dir": str(directory / f"{name}-state"),
        "metrics": {"enabled": False},
        "delivery_interval_s": 1.0,
    }
    return write_config(directory / f"{name}.yaml", config, changes)


def write_config(path: Path, config: dict[str, Any], changes: Mapping[str, Any]) -> Path:
    """Write ``config`` with ``changes`` as YAML to ``path``: a change that is a dict is
    merged into its section, anything else replaces it."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path
