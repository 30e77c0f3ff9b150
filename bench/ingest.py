"""Ingest throughput and latency: the real collector beside a bare baseline relay.

One invocation measures, each run against a mosquitto and an influxd (Debian's 1.6.7) of
its own, started fresh on free loopback ports (influxd compacts what a run wrote for a while
after it, which would slow the next run), under the same load:

- **baseline**: a bare relay in its own process: paho subscriber (QoS1, loop in the main
  thread), ``json.loads``, line protocol by f-string, 5000-line batches POSTed to ``/write``
  from a writer thread, and what is short of a batch once no message came for 50 ms (as
  the collector's writer does). No validation, no tracking, no spool, no manual
  acknowledgement. (To 2026-11-23 it flushed that remainder every 0.5 s, which could add
  up to half a second to its run.)
- **collector**: ``sitewatch-collector run`` exactly as deployed (validation, seq tracking,
  dead letters, manual ack after the write, spool, status and metrics), twice: with
  detection off, and with detection on (the default rules: plausibility, flatline and the
  anomaly score on both climate fields, silence per sensor; scores and decisions written).

Throughput: ``--messages`` messages of ``--readings`` readings each (default 4000 × 50) are
published as fast as mosquitto_pub can (QoS1, one publisher per device); readings/s =
readings / (time until InfluxQL counts all of them − first publish). ``--rounds`` rounds
(default 3) each run the baseline and the collector runs back to back; what is printed is
the median over the rounds, each round's ratios taken to its own baseline: this machine's
speed drifts by a third from one minute to the next, the same code with it. Until influxd's own
count of points written says they may all be in, nothing is asked of InfluxQL: a count
scans every point it counts, and polled through a run it would take from the run a share of
the machine that grows as the run goes on. (To 2026-11-23 the bench polled InfluxQL every
0.2 s; that understated the short baseline run most, by up to a third, and so flattered the
ratios.) For each run the CPU time its processes used meanwhile
is printed too, in µs per reading: the relay or the collector and its detection process,
influxd and mosquitto. Unlike readings/s, these barely move with other work on the machine,
so they compare two versions fairly on a busy one.
Latency: the collector alone, at a fixed ``--latency-rate`` readings/s (default 10,000) for
``--latency-s`` seconds; publish → queryable by InfluxQL, p50 and p99.

``--home-assistant`` adds a third collector run: detection off, Home Assistant discovery on
(``home_assistant.enabled``), every flooded device announced first by a retained birth, so
each reading also updates the state the collector publishes for Home Assistant.

``--free-detectors`` adds a collector run with detection on whose detectors cost nothing
(``bench/_free_detectors.py``: every detector's update returns 0 at once, all else runs as
deployed): the highest ratio detection on could reach, however fast the detectors were made.
``--same-points`` adds a second relay run that writes the collector's own points (tags in key
order; ``temperature_c``, ``humidity_pct``, ``dew_point_c``, ``quality``) instead of its two
fields, and prints the collector's ratios to it too: a yardstick in which influxd does the
same work for both.

Targets on the 2-core machine: collector without detection ≥ 100,000 readings/s with 50
readings per message, ratio to baseline ≥ 0.6, p99 publish → queryable ≤ 2 s at 10,000
readings/s (latency measured with detection on); with detection on, ratio ≥ 0.5.

    .venv/bin/python bench/ingest.py [--messages 4000] [--readings 50] [--rounds 3]
        [--home-assistant] [--free-detectors] [--same-points]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.localrun import Influxd, Mosquitto, require_mosquitto_pub, wait_until

DEVICES = 4

BASELINE = r"""
import json, sys, threading, queue, urllib3
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, influx_url, db = int(sys.argv[1]), sys.argv[2], sys.argv[3]
http = urllib3.PoolManager(maxsize=1)
batches = queue.Queue(maxsize=8)
def writer():
    while True:
        body = batches.get()
        http.request("POST", f"{influx_url}/write?db={db}&precision=ms", body=body)
threading.Thread(target=writer, daemon=True).start()
import time
lines, lock, last_message = [], threading.Lock(), [0.0]
def esc(v): return v.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")
def relay_lines(data):
    tags = f"site={esc(data['site'])},device={esc(data['device'])}"
    return [f"environment,{tags},sensor={esc(r['sensor'])} "
            f"temperature_c={float(r['temperature_c'])},"
            f"humidity_pct={float(r['humidity_pct'])} {r['ts']}" for r in data["readings"]]
def same_lines(data):  # the collector's points: tags in key order, its four fields
    device, site = esc(data["device"]), esc(data["site"])
    out = []
    for r in data["readings"]:
        t, h = float(r["temperature_c"]), float(r["humidity_pct"])
        out.append(f"environment,device={device},sensor={esc(r['sensor'])},site={site} "
                   f"temperature_c={t!r},humidity_pct={h!r},dew_point_c={dew_point_c(t, h):.2f},"
                   f'quality="{r["quality"]}" {r["ts"]}')
    return out
lines_of = relay_lines
if sys.argv[4:] == ["same-points"]:
    from sitewatch.collector.lineproto import dew_point_c  # the collector's own formula
    lines_of = same_lines
def on_message(client, userdata, message):
    new = lines_of(json.loads(message.payload))
    with lock:  # the tail flusher takes the lines from another thread
        last_message[0] = time.monotonic()
        lines.extend(new)
        if len(lines) >= 5000:
            batches.put("\n".join(lines)); lines.clear()
def on_connect(client, userdata, flags, rc, props):
    client.subscribe("sitewatch/v1/+/+/telemetry", qos=1)
def on_subscribe(*args):
    print("ready", flush=True)
client = paho.Client(CallbackAPIVersion.VERSION2, client_id="baseline", clean_session=False)
client.on_message, client.on_connect, client.on_subscribe = on_message, on_connect, on_subscribe
client.connect("127.0.0.1", port)
def flush_tail():  # lines short of a batch, once no message came for 50 ms (as the collector)
    while True:
        time.sleep(0.01)
        with lock:
            if lines and time.monotonic() - last_message[0] >= 0.05:
                batches.put("\n".join(lines)); lines.clear()
threading.Thread(target=flush_tail, daemon=True).start()
client.loop_forever()
"""


def _message(device: str, boot_id: str, seq: int, readings: int, ts_ms: int) -> str:
    return json.dumps(
        {
            "v": 1,
            "site": "bench",
            "device": device,
            "boot_id": boot_id,
            "seq": seq,
            "historical": False,
            "readings": [
                {
                    "sensor": f"s{i}",
                    "ts": ts_ms,
                    "temperature_c": 20.0 + (seq % 97) / 10,
                    "humidity_pct": 50.0 + i % 7,
                    "quality": "ok",
                }
                for i in range(readings)
            ],
        },
        separators=(",", ":"),
    )


Flood = list[tuple[subprocess.Popen[bytes], str]]


def _publishers(broker: Mosquitto, messages: int, readings: int, tag: str) -> Flood:
    """One mosquitto_pub per device, connected, each with the payloads it is to publish.

    Built before the clock starts (``_publish``): building 4000 messages takes this process
    about 0.3 s, which belongs to no run. (To 2026-12-06 the clock started before it,
    adding that 0.3 s to every run: it flattered the ratios, most for the slower runs.)"""
    start_ms = int(time.time() * 1000)
    procs: Flood = []
    for d in range(DEVICES):
        device = f"{tag}-{d}"
        boot_id = secrets.token_hex(8)
        body = "\n".join(
            _message(device, boot_id, seq, readings, start_ms + seq)  # distinct ts per message
            for seq in range(1, messages // DEVICES + 1)
        )
        proc = subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-l",
                "-t",
                f"sitewatch/v1/bench/{device}/telemetry",
                "-M",
                "100",
                "-i",
                f"pub-{device}",
            ],
            stdin=subprocess.PIPE,
        )
        procs.append((proc, body))
    # mosquitto logs "New client connected from ... as <client id> (...)".
    ids = [f" as pub-{tag}-{d} " for d in range(DEVICES)]
    wait_until(lambda: all(i in broker.log_path.read_text() for i in ids), 30, "the publishers")
    return procs


def _publish(procs: Flood) -> None:
    """Hand every publisher its payloads (their stdin stays open: mosquitto_pub -l drops
    its unsent queue at EOF)."""
    for proc, body in procs:
        assert proc.stdin is not None
        proc.stdin.write(body.encode() + b"\n")
        proc.stdin.flush()


def _count(influx: Influxd, db: str, tag: str, since_ms: int = 0) -> int:
    rows = influx.query(
        f"SELECT count(temperature_c) FROM environment WHERE device =~ /^{tag}-/"
        f" AND time >= {since_ms}ms",
        db,
    )
    return int(rows[0]["count"]) if rows else 0


def _points_written(influx: Influxd) -> int:
    """Points influxd has written since it started: its own counter (``/debug/vars``), read
    in about a millisecond. An InfluxQL count scans every point it counts (about 30 ms of
    influxd's CPU per 200,000 points): polled while a run goes on, it would take a growing
    share of the machine from the run it measures, and more from a slower run."""
    with urllib.request.urlopen(f"{influx.url}/debug/vars", timeout=10) as response:  # noqa: S310
        stats = json.load(response)
    return sum(
        int(stat["values"].get("pointsWrittenOK", 0))
        for name, stat in stats.items()
        if name.startswith("httpd")
    )


def _machine_cpu() -> tuple[int, int]:
    """Jiffies since boot over all cores: in all, and idle (idle + iowait), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def _throughput(
    influx: Influxd, broker: Mosquitto, db: str, tag: str, args: argparse.Namespace
) -> tuple[float, float]:
    """Readings/s from the first publish until every reading is stored, and the share of the
    machine's cores busy meanwhile (every process, the publishers and this one included)."""
    total = _readings(args)
    written_before = _points_written(influx)

    def stored_at() -> float | None:
        """When every reading was found stored: influxd's count of points written says
        when to look (it counts the collector's other points too), one InfluxQL count
        confirms."""
        if _points_written(influx) - written_before < total:
            return None
        now = time.monotonic()
        return now if _count(influx, db, tag) >= total else None

    procs = _publishers(broker, args.messages, args.readings, tag)
    started = time.monotonic()
    jiffies_before, idle_before = _machine_cpu()
    _publish(procs)
    done = wait_until(stored_at, 600, f"{total} readings in {db}", interval_s=0.02)
    assert done is not None  # wait_until returns only a truthy value
    jiffies, idle = _machine_cpu()
    busy = 1.0 - (idle - idle_before) / max(1, jiffies - jiffies_before)
    for proc, _ in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
    return total / (done - started), busy


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the collector's detection process)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _wait_idle(pids: list[int], window_s: float = 0.3, busy_s: float = 0.03) -> None:
    """Wait until the processes together use less than ``busy_s`` of CPU in ``window_s``:
    the collector is subscribed before its detection process has finished starting (about
    0.2 s of imports and restoring), and a run measures the steady state, as the relay's
    does, not start-up work counted as CPU per reading."""
    def idle() -> bool:
        before = sum(_cpu_s(pid) for pid in pids)
        time.sleep(window_s)
        return sum(_cpu_s(pid) for pid in pids) - before < busy_s

    wait_until(idle, 30, "the collector's processes idle", interval_s=0.0)


@contextlib.contextmanager
def _cpu_per_reading(
    pids: list[tuple[str, int]], readings: int
) -> Iterator[dict[str, float]]:
    """Fills the yielded dict, on exit, with the CPU each named process (several of one
    name summed) used meanwhile, in µs per reading of ``readings``."""
    before = {pid: _cpu_s(pid) for _, pid in pids}
    cpu: dict[str, float] = {}
    yield cpu
    for name, pid in pids:
        cpu[name] = cpu.get(name, 0.0) + (_cpu_s(pid) - before[pid]) * 1e6 / readings


def _births(broker: Mosquitto, tag: str, readings: int) -> None:
    """Retained births for the flood's devices, their sensors ``s0``… as the flood names them."""
    for d in range(DEVICES):
        device = f"{tag}-{d}"
        birth = {
            "v": 1, "site": "bench", "device": device, "boot_id": secrets.token_hex(8),
            "seq": 0, "state": "online", "ts": int(time.time() * 1000), "agent_version": "bench",
            "sensors": [
                {"id": f"s{i}", "driver": "simulated", "fields": ["temperature_c", "humidity_pct"],
                 "interval_s": 10.0, "labels": {}}
                for i in range(readings)
            ],
        }
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-r",
             "-t", f"sitewatch/v1/bench/{device}/status", "-m", json.dumps(birth)],
            check=True,
        )


def _collector_config(
    workdir: Path, broker: Mosquitto, influx: Influxd, db: str, detection: bool,
    home_assistant: bool = False,
) -> Path:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"collector-{db}"},
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influx.port}", "database": db},
        "state_dir": str(workdir / f"state-{db}"),
        "metrics": {"enabled": False},
        "detection": {"enabled": detection},
        "home_assistant": {"enabled": home_assistant},
    }
    path = workdir / f"collector-{db}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start_collector(
    config: Path, log: Path, *, free_detectors: bool = False
) -> subprocess.Popen[bytes]:
    """``sitewatch-collector run``, or with ``free_detectors`` the same through
    ``_free_detectors.py`` (detectors that cost nothing). Its log goes to ``log``: with
    detection on, the flood's constant humidity makes every sensor's flatline alert, a
    few hundred warnings a run."""
    if free_detectors:
        command = [str(Path(__file__).with_name("_free_detectors.py"))]
    else:
        command = ["-m", "sitewatch.collector.cli"]
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, *command, "run", "--config", str(config), "--log-level", "WARNING"],
            stderr=stderr,
        )


def _latency(influx: Influxd, broker: Mosquitto, db: str, args: argparse.Namespace) -> list[float]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="latency-publisher")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    per_message = args.readings
    rate_msgs = args.latency_rate / per_message
    published: list[tuple[float, int]] = []  # per message: when, and its readings' ts (ms)
    queryable: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        # Counts only from the oldest message not yet seen stored: a count scans every
        # point it counts, and a count of the whole run would cost more as the run goes on.
        while not stop.is_set():
            seen = len(queryable)
            if seen < len(published):
                count = _count(influx, db, "lat", since_ms=published[seen][1]) // per_message
                now = time.monotonic()
                for k in range(seen, min(seen + count, len(published))):
                    queryable[k] = now
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    boot_id = secrets.token_hex(8)
    start = time.monotonic()
    total = int(args.latency_s * rate_msgs)
    last_ts_ms = 0
    for seq in range(1, total + 1):
        due = start + (seq - 1) / rate_msgs
        time.sleep(max(0.0, due - time.monotonic()))
        # A distinct timestamp per message even when two fall in the same millisecond:
        # otherwise the second would overwrite the first and never be counted.
        ts_ms = max(int(time.time() * 1000), last_ts_ms + 1)
        last_ts_ms = ts_ms
        payload = _message("lat-0", boot_id, seq, per_message, ts_ms)
        published.append((time.monotonic(), ts_ms))
        client.publish("sitewatch/v1/bench/lat-0/telemetry", payload, qos=1)
    wait_until(lambda: len(queryable) >= total, 60, "every latency message queryable")
    stop.set()
    client.loop_stop()
    return [queryable[k] - published[k][0] for k in range(total)]


@dataclass
class Run:
    """One flood through the relay or a collector."""

    rate: float  # readings/s
    cpu_us: dict[str, float]  # CPU µs per reading, by process
    busy: float  # share of the machine's cores busy from first publish to last stored
    latencies: list[float] = field(default_factory=list)  # s, publish → queryable


@dataclass(frozen=True)
class Kind:
    """A kind of run: what floods through, and which option adds it (None: always run)."""

    name: str  # in the round lines; name[:4] is its database and its devices' prefix
    label: str  # in the report
    relay: bool = False  # the baseline relay (else the collector)
    same_points: bool = False  # the relay writes the collector's points
    detection: bool = False
    free_detectors: bool = False
    home_assistant: bool = False
    option: str | None = None


KINDS = (
    Kind("baseline", "baseline relay", relay=True),
    Kind("plain", "collector, detection off"),
    Kind("detect", "collector, detection on", detection=True),
    Kind("hass", "collector, home assistant on", home_assistant=True, option="home_assistant"),
    Kind("free", "collector, detectors free", detection=True, free_detectors=True,
         option="free_detectors"),
    Kind("same", "relay, collector's points", relay=True, same_points=True,
         option="same_points"),
)  # fmt: skip
COLLECTORS = tuple(kind.name for kind in KINDS if not kind.relay)


def _relay_run(
    influx: Influxd, broker: Mosquitto, servers: list[tuple[str, int]], db: str,
    args: argparse.Namespace, *, same_points: bool = False,
) -> Run:
    """The baseline relay over one flood (with ``same_points``, writing the collector's
    points)."""
    influx.create_database(db)
    relay = subprocess.Popen(
        [sys.executable, "-c", BASELINE, str(broker.port), influx.url, db,
         *(["same-points"] if same_points else [])],
        stdout=subprocess.PIPE,
    )
    try:
        assert relay.stdout is not None
        relay.stdout.readline()  # "ready": subscribed, so the flood is not missed
        with _cpu_per_reading([("relay", relay.pid), *servers], _readings(args)) as cpu:
            rate, busy = _throughput(influx, broker, db, db, args)
    finally:
        relay.terminate()
        relay.wait(10)
    return Run(rate, cpu, busy)


def _collector_run(
    workdir: Path, influx: Influxd, broker: Mosquitto, servers: list[tuple[str, int]], db: str,
    args: argparse.Namespace, *, detection: bool, home_assistant: bool = False,
    free_detectors: bool = False, latency: bool = False,
) -> Run:
    """The collector over one flood, and (with ``latency``) the publish → queryable
    latencies measured after it."""
    influx.create_database(db)
    if home_assistant:
        _births(broker, db, args.readings)
    config = _collector_config(workdir, broker, influx, db, detection, home_assistant)
    log = workdir / f"collector-{db}.log"
    collector = _start_collector(config, log, free_detectors=free_detectors)
    latencies: list[float] = []
    try:
        status = workdir / f"state-{db}" / "status.json"
        wait_until(
            lambda: status.exists() and json.loads(status.read_text())["broker_connected"],
            30,
            "the collector's subscription",
        )
        # Its children: the detection process (and multiprocessing's resource tracker).
        pids = [("collector", collector.pid)]
        pids += [("detection", child) for child in _children(collector.pid)]
        _wait_idle([pid for _, pid in pids])
        with _cpu_per_reading(pids + servers, _readings(args)) as cpu:
            rate, busy = _throughput(influx, broker, db, db, args)
        if latency:
            latencies = sorted(_latency(influx, broker, db, args))
    except BaseException:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"the collector's log ({log}) ends:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        collector.terminate()
        collector.wait(30)
    return Run(rate, cpu, busy, latencies)


@contextlib.contextmanager
def _servers(workdir: Path) -> Iterator[tuple[Mosquitto, Influxd, list[tuple[str, int]]]]:
    """A mosquitto and an influxd of their own under ``workdir``, and their pids by name."""
    broker = Mosquitto(workdir / "broker")
    influx = Influxd(workdir / "influx")
    broker.start()
    try:
        influx.start()
        try:
            assert broker.proc is not None and influx.proc is not None
            yield broker, influx, [("influxd", influx.proc.pid), ("mosquitto", broker.proc.pid)]
        finally:
            influx.stop()
    finally:
        broker.stop()


def _readings(args: argparse.Namespace) -> int:
    """Readings one flood publishes: whole messages per publisher."""
    return int((args.messages // DEVICES) * DEVICES * args.readings)


def main() -> int:
    require_mosquitto_pub()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--readings", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of baseline, detection off, detection on (default 3)")
    parser.add_argument("--latency-rate", type=float, default=10_000.0)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument(
        "--home-assistant", action="store_true",
        help="also run the collector with Home Assistant discovery on, in each round",
    )
    parser.add_argument(
        "--free-detectors", action="store_true",
        help="also run the collector with detection on and detectors that cost nothing, in "
             "each round: the ceiling of the detection-on ratio",
    )
    parser.add_argument(
        "--same-points", action="store_true",
        help="also run the relay writing the collector's points, in each round, and print the "
             "ratios to it",
    )
    args = parser.parse_args()
    kinds = [kind for kind in KINDS if kind.option is None or getattr(args, kind.option)]
    rounds: dict[str, list[Run]] = {}  # by kind, a Run per round
    with tempfile.TemporaryDirectory(prefix="sitewatch-ingest-") as tmp:
        for k in range(args.rounds):
            for kind in kinds:
                workdir, db = Path(tmp) / f"{kind.name}{k}", kind.name[:4]
                # Fresh servers for every run: influxd compacts what a run wrote for a while
                # after it, which would slow the next run down.
                with _servers(workdir) as (broker, influx, servers):
                    if kind.relay:
                        measured = _relay_run(influx, broker, servers, db, args,
                                              same_points=kind.same_points)
                    else:
                        measured = _collector_run(
                            workdir, influx, broker, servers, db, args,
                            detection=kind.detection, home_assistant=kind.home_assistant,
                            free_detectors=kind.free_detectors,
                            latency=kind.name == "detect" and k == args.rounds - 1,
                        )
                rounds.setdefault(kind.name, []).append(measured)
            base = rounds["baseline"][-1].rate
            print(f"round {k + 1}: " + ", ".join(
                f"{kind.name} {rounds[kind.name][-1].rate:,.0f}/s"
                + ("" if kind.relay else f" ({rounds[kind.name][-1].rate / base:.2f})")
                + f" busy {rounds[kind.name][-1].busy:.0%}"
                for kind in kinds), flush=True)  # fmt: skip
    _report(args, rounds)
    return 0


def _report(args: argparse.Namespace, rounds: dict[str, list[Run]]) -> None:
    """Medians over the rounds: each round's ratio is to that round's own baseline."""
    median = statistics.median
    bases = [measured.rate for measured in rounds["baseline"]]
    ratios = {
        run: [m.rate / base for m, base in zip(measured, bases, strict=True)]
        for run, measured in rounds.items()
    }
    print(
        f"ingest, {args.messages} messages × {args.readings} readings, QoS1, {DEVICES} "
        f"publishers; broker and influxd on the same {os.cpu_count()} cores; medians of "
        f"{args.rounds} rounds (ratios to each round's own baseline; lowest and highest in "
        "brackets; busy: share of the machine's cores in use from first publish to last stored)"
    )
    for kind in KINDS:
        if kind.name not in rounds:
            continue
        run = kind.name
        line = f"  {kind.label:<29} {median(m.rate for m in rounds[run]):>10,.0f} readings/s"
        if not kind.relay:
            line += (f"  ratio {median(ratios[run]):.2f} "
                     f"[{min(ratios[run]):.2f}, {max(ratios[run]):.2f}]")
        print(line + f"  busy {median(m.busy for m in rounds[run]):.0%}")
    if "same" in rounds:
        sames = [measured.rate for measured in rounds["same"]]
        print("  ratios to the relay writing the collector's points: " + ", ".join(
            f"{run} {median(to_same):.2f} [{min(to_same):.2f}, {max(to_same):.2f}]"
            for run in COLLECTORS if run in rounds
            for to_same in [[m.rate / same for m, same in zip(rounds[run], sames, strict=True)]]
        ))  # fmt: skip
    print("  CPU per reading (µs, median; unlike readings/s, it barely moves with other work "
          "on the machine):")
    figures: dict[str, dict[str, float]] = {}
    for run, measured in rounds.items():
        cpu = figures[run] = {
            name: median(m.cpu_us[name] for m in measured) for name in measured[0].cpu_us
        }
        print(f"    {run:<9}" + ", ".join(f"{name} {us:.1f}" for name, us in cpu.items())
              + f"; in all {sum(cpu.values()):.1f}")
    _what_half_takes(rounds["detect"], median(bases), sum(figures["detect"].values()))
    if "free" in rounds:
        detection_us, engine_us = figures["detect"]["detection"], figures["free"]["detection"]
        print(f"  with detectors that cost nothing, detection on reaches "
              f"{median(ratios['free']):.2f}: no detector made faster can take it higher. "
              f"The detectors use {detection_us - engine_us:.1f} of detection's "
              f"{detection_us:.1f} µs per reading")
    latencies = sorted(t for m in rounds["detect"] for t in m.latencies)
    p50 = median(latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"  latency at {args.latency_rate:,.0f} readings/s for {args.latency_s:.0f} s: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (publish → queryable by InfluxQL)"
    )
    plain, detect = median(ratios["plain"]), median(ratios["detect"])
    ok = median(m.rate for m in rounds["plain"]) >= 100_000 and plain >= 0.6 and p99 <= 2.0
    print(f"targets without detection (≥ 100,000/s, ratio ≥ 0.6, p99 ≤ 2 s): "
          f"{'met' if ok else 'MISSED'}")
    print(f"target with detection (ratio ≥ 0.5): {'met' if detect >= 0.5 else 'MISSED'}")


def _what_half_takes(detect: list[Run], base_rate: float, listed_us: float) -> None:
    """What a ratio of 0.5 asks of the detection-on run when the flood keeps the machine as
    busy as it does now: its processes' CPU per reading, in all, at most the machine's busy
    core-µs per reading at half the baseline's rate, less what the publishers and this
    process take (the busy core-µs per reading now, less the processes listed)."""
    cores = os.cpu_count() or 1
    busy = statistics.median(m.busy for m in detect)
    rate = statistics.median(m.rate for m in detect)
    unlisted_us = cores * busy * 1e6 / rate - listed_us
    budget_us = cores * busy * 1e6 / (0.5 * base_rate) - unlisted_us
    print(f"  for 0.5 ({0.5 * base_rate:,.0f} readings/s) at {busy:.0%} busy, detect's "
          f"processes would have {budget_us:.1f} µs per reading in all (now {listed_us:.1f}; "
          f"publishers and the bench {unlisted_us:.1f})")


if __name__ == "__main__":
    sys.exit(main())
