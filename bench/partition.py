"""What hash partitioning costs a collector: CPU per message it stores vs per message it passes
over (``mqtt.partition: {index, count}``, ``sitewatch.collector.partition``).

One invocation starts a mosquitto and an influxd on free loopback ports, then floods
``--messages`` telemetry messages (one publisher per device, QoS1) at ``sitewatch-collector
run`` twice for each message size (``--readings``, default 50 and 1 readings per message):

- **owned**: the collector owns every device (no partition) and stores everything;
- **passed over**: the collector is index 1 of 2 and every flooded device hashes to index 0,
  so it acknowledges each message and stores nothing.

Detection is off in both (it only adds to the owned cost). The figure is the CPU time (user +
system, the collector and its children, from /proc) from the first message until the last
is stored or passed over, divided by the messages: a shared machine's other load does not
inflate it the way it inflates wall time. With ``n`` collectors hashing one fleet, each one
spends ``owned / n + passed_over × (n - 1) / n`` per fleet message, against ``owned / n``
with site partitions.

    .venv/bin/python bench/partition.py [--messages 20000] [--readings 50 1]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.collector.partition import owner
from sitewatch.localrun import Influxd, Mosquitto, require_mosquitto_pub, wait_until

DEVICES = 4
SITE = "bench"
_TICKS_S = os.sysconf("SC_CLK_TCK")


def _devices(tag: str) -> list[str]:
    """``DEVICES`` device ids that hash to index 0 of 2 (so index 1 passes over them)."""
    found: list[str] = []
    n = 0
    while len(found) < DEVICES:
        name = f"{tag}-{n}"
        if owner(SITE, name, 2) == 0:
            found.append(name)
        n += 1
    return found


def _message(device: str, boot_id: str, seq: int, readings: int, ts_ms: int) -> str:
    return json.dumps({
        "v": 1, "site": SITE, "device": device, "boot_id": boot_id, "seq": seq,
        "readings": [
            {"sensor": f"s{i}", "ts": ts_ms, "temperature_c": 20.0 + (seq % 97) / 10,
             "humidity_pct": 50.0 + i % 7, "quality": "ok"}
            for i in range(readings)
        ],
    }, separators=(",", ":"))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS_S
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _status(state_dir: Path) -> dict[str, object]:
    path = state_dir / "status.json"
    if not path.exists():
        return {}
    data: dict[str, object] = json.loads(path.read_text())
    return data


def _run(workdir: Path, broker: Mosquitto, influx: Influxd, name: str, partition: bool,
         messages: int, readings: int) -> float:
    """CPU µs per message of one collector run over one flood."""
    db = name.replace("-", "_")
    influx.create_database(db)
    state_dir = workdir / f"state-{name}"
    mqtt: dict[str, object] = {"host": "127.0.0.1", "port": broker.port,
                               "client_id": f"collector-{name}"}
    if partition:
        mqtt["partition"] = {"index": 1, "count": 2}
    config = {
        "mqtt": mqtt,
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influx.port}", "database": db},
        "state_dir": str(state_dir), "metrics": {"enabled": False},
        "detection": {"enabled": False}, "confirm": {"enabled": False},
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    collector = subprocess.Popen(
        [sys.executable, "-m", "sitewatch.collector.cli", "run", "--config", str(path),
         "--log-level", "WARNING"])
    try:
        wait_until(lambda: _status(state_dir).get("broker_connected"), 30, "the collector")
        devices = _devices(name)
        per_device = messages // DEVICES
        start_ms = int(time.time() * 1000)
        bodies = []
        for device in devices:
            boot_id = secrets.token_hex(8)
            bodies.append("\n".join(_message(device, boot_id, seq, readings, start_ms + seq)
                                    for seq in range(1, per_device + 1)))
        cpu_before = _cpu_s(collector.pid)
        publishers = []
        for device, body in zip(devices, bodies, strict=True):
            proc = subprocess.Popen(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-l",
                 "-t", f"sitewatch/v1/{SITE}/{device}/telemetry", "-M", "100"],
                stdin=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(body.encode() + b"\n")
            proc.stdin.flush()
            publishers.append(proc)
        total = per_device * DEVICES
        if partition:
            wait_until(lambda: int(str(_status(state_dir).get("passed_over", 0))) >= total,
                       600, f"{total} messages passed over", interval_s=0.2)
        else:
            def stored() -> bool:
                rows = influx.query("SELECT count(temperature_c) FROM environment", db)
                return bool(rows) and int(rows[0]["count"]) >= total * readings
            wait_until(stored, 600, f"{total * readings} readings stored", interval_s=0.2)
        cpu_s = _cpu_s(collector.pid) - cpu_before
        for proc in publishers:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
        return cpu_s / total * 1e6
    finally:
        collector.terminate()
        collector.wait(30)


def main() -> int:
    require_mosquitto_pub()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--readings", type=int, nargs="+", default=[50, 1])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="sitewatch-partition-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker")
        influx = Influxd(workdir / "influx")
        broker.start()
        influx.start()
        try:
            for readings in args.readings:
                owned = _run(workdir, broker, influx, f"own-{readings}", False,
                             args.messages, readings)
                passed = _run(workdir, broker, influx, f"pass-{readings}", True,
                              args.messages, readings)
                results.append((readings, owned, passed))
        finally:
            influx.stop()
            broker.stop()
    print(f"collector CPU per message, {args.messages} messages, QoS1, {DEVICES} publishers, "
          "detection off; broker and influxd on the same machine")
    for readings, owned, passed in results:
        print(f"  {readings:>3} readings/message: owned {owned:8.1f} µs, passed over "
              f"{passed:6.1f} µs ({passed / owned:.0%} of owned)")
        for n in (2, 4):
            hashed = owned / n + passed * (n - 1) / n
            print(f"      {n} collectors by hash: {hashed:8.1f} µs per fleet message each "
                  f"(by site: {owned / n:.1f}); one collector's capacity × "
                  f"{owned / hashed:.2f} (by site: × {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
