"""Agent footprint: peak RSS and CPU of the real agent beside a bare baseline publisher.

Starts a mosquitto on a free loopback port, then runs side by side, for the same duration:

- the **agent** (``sitewatch-agent run``) with 10 simulated sensors sampled at 1 Hz, its
  outbox, batching, health telemetry and delivery accounting, run the way
  ``systemd/sitewatch-agent.service`` runs it: ``PYTHONOPTIMIZE=2`` (no docstrings in memory)
  with the bytecode cache warmed by one earlier start, as on every start after the first;
- the same agent under plain ``python`` (docstrings loaded), for comparison;
- a **baseline**: a bare paho-mqtt publisher in its own process that publishes the same
  10 readings per second as one JSON message each second, with no outbox, no validation and
  no sampling policy (the least any Python MQTT agent can cost).

All are sampled from /proc every 0.5 s. Prints peak RSS (MiB), mean CPU (% of one core) over
the run after a warm-up, and the agent/baseline ratios. Targets: agent RSS ≤ 40 MiB and CPU
≤ 1 % of one core.

    .venv/bin/python bench/agent_footprint.py [--duration-s 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.localrun import Mosquitto

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

BASELINE = """
import json, random, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
client = paho.Client(CallbackAPIVersion.VERSION2, client_id="baseline")
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_start()
seq = 0
next_t = time.monotonic()
while True:
    seq += 1
    ts = int(time.time() * 1000)
    readings = [{"sensor": f"s{i}", "ts": ts, "temperature_c": 20 + random.random(),
                 "humidity_pct": 50.0, "quality": "ok"} for i in range(10)]
    client.publish("bench/baseline", json.dumps({"seq": seq, "readings": readings}), qos=1)
    next_t += 1.0
    time.sleep(max(0.0, next_t - time.monotonic()))
"""


@dataclass
class Usage:
    peak_rss_mib: float = 0.0
    peak_anon_mib: float = 0.0
    cpu_s_at_warm: float | None = None
    wall_at_warm: float | None = None
    cpu_s: float = 0.0
    wall: float = 0.0

    @property
    def cpu_pct(self) -> float:
        if self.cpu_s_at_warm is None or self.wall_at_warm is None:
            return float("nan")
        return 100.0 * (self.cpu_s - self.cpu_s_at_warm) / (self.wall - self.wall_at_warm)


def _sample(pid: int, usage: Usage, warm: bool) -> None:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                usage.peak_rss_mib = max(usage.peak_rss_mib, int(line.split()[1]) / 1024)
            elif line.startswith("RssAnon:"):
                usage.peak_anon_mib = max(usage.peak_anon_mib, int(line.split()[1]) / 1024)
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    usage.cpu_s = (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    usage.wall = time.monotonic()
    if warm and usage.cpu_s_at_warm is None:
        usage.cpu_s_at_warm, usage.wall_at_warm = usage.cpu_s, usage.wall


def _agent_config(workdir: Path, port: int, device: str) -> Path:
    models = ["cold_room", "freezer", "server_room", "office"]
    sensors: list[dict[str, object]] = [
        {"id": f"climate-{i}", "driver": "simulated", "model": models[i % 4], "seed": i,
         "interval_s": 1.0}
        for i in range(8)
    ]
    sensors += [
        {"id": "compressor", "driver": "simulated", "model": "compressor", "seed": 8,
         "interval_s": 1.0},
        {"id": "door", "driver": "simulated", "model": "door", "seed": 9, "interval_s": 1.0},
    ]
    config = {
        "site": "bench", "device": device,
        "mqtt": {"host": "127.0.0.1", "port": port},
        "outbox": {"path": str(workdir / device / "outbox.db")},
        "hardware": {"pin_factory": "mock"},
        "sensors": sensors,
    }
    path = workdir / f"{device}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _unit_env(pycache: Path) -> dict[str, str]:
    """The environment ``systemd/sitewatch-agent.service`` gives the agent: ``-OO`` (no
    docstrings in memory) with the bytecode cached under its ``CacheDirectory``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONOPTIMIZE="2", PYTHONPYCACHEPREFIX=str(pycache))
    return env


def _warm_bytecode_cache(config: Path, env: dict[str, str]) -> None:
    """Start the agent once so that everything it imports is compiled into the cache, as the
    first start after installing does on a Pi; the measured run then loads cached bytecode."""
    cache = Path(env["PYTHONPYCACHEPREFIX"])
    agent = subprocess.Popen(
        [sys.executable, "-m", "sitewatch.agent.cli", "run", "--config", str(config),
         "--log-level", "WARNING"],
        env=env,
    )
    deadline = time.monotonic() + 30
    compiled = -1
    # Done when a second has passed without a new module compiled.
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now_compiled = sum(1 for _ in cache.rglob("*.pyc"))
        if now_compiled == compiled:
            break
        compiled = now_compiled
    agent.send_signal(signal.SIGTERM)
    agent.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description="agent footprint beside a bare publisher")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sitewatch-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker")
        broker.start()
        unit_env = _unit_env(workdir / "pycache")
        _warm_bytecode_cache(_agent_config(workdir, broker.port, "pi-first-start"), unit_env)
        configs = {
            "agent": _agent_config(workdir, broker.port, "pi-unit"),
            "agent, plain python": _agent_config(workdir, broker.port, "pi-plain"),
        }
        run = [sys.executable, "-m", "sitewatch.agent.cli", "run", "--log-level", "WARNING"]
        procs = {
            "agent": subprocess.Popen([*run, "--config", str(configs["agent"])], env=unit_env),
            "agent, plain python": subprocess.Popen(
                [*run, "--config", str(configs["agent, plain python"])]
            ),
            "baseline": subprocess.Popen([sys.executable, "-c", BASELINE, str(broker.port)]),
        }
        usage = {name: Usage() for name in procs}
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.duration_s:
                warm = time.monotonic() - started >= args.warmup_s
                for name, proc in procs.items():
                    _sample(proc.pid, usage[name], warm)
                time.sleep(0.5)
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
            broker.stop()
        stats = subprocess.run(
            [sys.executable, "-m", "sitewatch.agent.cli", "status", "--config",
             str(configs["agent"])],
            capture_output=True, text=True, check=False,
        ).stdout
    a, b = usage["agent"], usage["baseline"]
    print(f"agent footprint over {args.duration_s:.0f} s (10 simulated sensors at 1 Hz), "
          f"CPU measured after {args.warmup_s:.0f} s warm-up")
    print("agent: run as systemd/sitewatch-agent.service runs it (python -OO, cached bytecode);"
          " plain: the same agent under plain python")
    print(f"{'':20} {'peak RSS MiB':>13} {'(anon MiB)':>11} {'CPU % of a core':>16}")
    for name, u in usage.items():
        print(f"{name:20} {u.peak_rss_mib:13.1f} {u.peak_anon_mib:11.1f} {u.cpu_pct:16.2f}")
    print(
        f"{'ratio agent/baseline':20} {a.peak_rss_mib / b.peak_rss_mib:13.2f}"
        f" {a.peak_anon_mib / b.peak_anon_mib:11.2f} {a.cpu_pct / max(b.cpu_pct, 0.01):16.2f}"
    )
    print("(RSS includes shared, file-backed pages of libpython, libcrypto and pydantic-core;"
          " anon is the process's own memory)")
    print(f"targets for the agent: RSS <= 40 MiB: {'met' if a.peak_rss_mib <= 40 else 'MISSED'}; "
          f"CPU <= 1 %: {'met' if a.cpu_pct <= 1.0 else 'MISSED'}")
    print("agent accounting at the end:\n" + stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
