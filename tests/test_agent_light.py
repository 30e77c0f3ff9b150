"""The agent stays light: it never imports numpy or influxdb_client, whatever it runs, and it
works under ``python -OO`` (no docstrings), which is how its systemd unit runs it.

The check runs the real agent (every driver type, against a real broker) in a fresh
interpreter with an import hook that records any attempt to import the heavy modules, so it
fails even on a machine where they are not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sitewatch.localrun import Mosquitto
from tests.fakes.sysfs import add_dht11, add_ds18b20
from tests.processes import unit_like_env

pytestmark = pytest.mark.integration

PROBE = r"""
import importlib.abc, json, sys, threading
attempts = []
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "influxdb_client", "apprise"):
            attempts.append(name)
        return None
sys.meta_path.insert(0, Recorder())
from sitewatch.agent.config import load_config
from sitewatch.agent.service import Agent
agent = Agent(load_config(sys.argv[1]))
stop = threading.Event()
threading.Timer(3.0, stop.set).start()
agent.run(stop)
print(json.dumps({"attempts": attempts,
                  "loaded": sorted(m for m in sys.modules
                                   if m.split(".")[0] in ("numpy", "influxdb_client", "apprise"))}))
"""


def test_agent_never_imports_numpy_or_influxdb_client(
    mosquitto: Mosquitto, write_agent_config: Callable[..., Path], tmp_path: Path,
) -> None:
    sysfs = tmp_path / "sys"
    add_dht11(sysfs, index=0, pin=17, temperature_c=4.2, humidity_pct=81.0)
    add_ds18b20(sysfs, "28-0000000000aa", temperature_c=3.9)
    config = write_agent_config(
        mosquitto.port,
        hardware={"pin_factory": "mock", "sysfs_root": str(sysfs)},
        sensors=[
            {"id": "dht", "driver": "dht22", "pin": 17, "backend": "kernel", "interval_s": 2.5},
            {"id": "probe", "driver": "ds18b20", "interval_s": 1},
            {"id": "relay", "driver": "gpio_input", "pin": 27, "role": "running"},
            {"id": "sim", "driver": "simulated", "model": "compressor", "interval_s": 0.5},
        ],
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        capture_output=True, text=True, timeout=60, env=unit_like_env(),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"attempts": [], "loaded": []}


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["check", "--help"]])
def test_agent_cli_works_without_docstrings(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sitewatch.agent.cli", *command],
        capture_output=True, text=True, timeout=60, env=unit_like_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: sitewatch-agent")
