"""A fleet soak: simulated devices → mosquitto → the real collector → influxd, measured.

``run_soak`` starts a mosquitto and an influxd (``sitewatch.localrun``), the collector exactly
as deployed (``sitewatch-collector run`` as its own process; detection on with the default
rules, confirmations on, metrics on a free port) and ``publishers`` publisher processes that
share the simulated devices. Each device is its own MQTT client and speaks the wire contract
as an agent does (``sitewatch.wire`` models): a retained birth naming its sensors and a
retained last will, QoS1 telemetry batches of up to ``batch_readings`` readings or
``batch_interval_s`` seconds, one ``seq`` per message and boot, a health report every
``health_interval_s``, and it follows the collector's confirmations on its ack topic. It does
not keep an outbox or resend: in a soak without faults nothing should need resending, and a
resend would hide the duplicates the soak counts. Readings are noisy rooms (the agent's
simulated room profiles: setpoint, daily cycle, cooling cycle, slow wander, sensor noise,
0.1 resolution like a DHT22), each sensor read every ``sensors_per_device × devices / rate``
seconds, with a distinct timestamp per (device, sensor).

Why not real ``sitewatch-agent`` processes: one agent takes about 39 MiB and 0.5 % of a core
at 10 readings/s (``bench/agent_footprint.py``); 200 of them at 25 readings/s each would want
about 8 GiB and, scaled by rate, more than one of the machine's two cores, which the
collector, influxd and mosquitto share. Two publisher processes do it in about 0.2 of a core.

Measured every ``sample_every_s``: readings published (handed to the device's MQTT client),
readings stored (InfluxQL counts of ``environment`` points, by timestamp window: a window
whose count matches what was published into it is not counted again), the lag (published −
stored, as readings and as the age of the oldest published reading not yet stored) and the
age of the newest stored reading, and RSS (``VmRSS``) and CPU (``utime + stime``) of the
collector, influxd, mosquitto and the publishers from ``/proc``. At the end: throughput,
lag percentiles, the collector's RSS growth after warm-up, and the accounting per device
(stored = published, the collector's received/duplicate/gap counters, confirmations).

The publisher side runs as ``python -m sitewatch.localrun.soak '<FleetSpec JSON>'``; it talks
to ``run_soak`` by lines on stdin (``go <wall start s>``, ``stop``) and JSON lines on stdout.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import json
import math
import os
import random
import secrets
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from sitewatch.agent.sensors.sim_climate import PROFILES, ClimateProfile
from sitewatch.localrun.influxd import Influxd
from sitewatch.localrun.mosquitto import Mosquitto
from sitewatch.localrun.process import free_port, wait_until
from sitewatch.wire import (
    AckMessage,
    Health,
    Kind,
    Quality,
    Reading,
    SensorInfo,
    StatusMessage,
    TelemetryMessage,
    WireError,
    encode,
    parse_message,
    topic,
)

__all__ = ["PUBLISHER_KIND", "FleetSpec", "Sample", "SoakResult", "SoakSettings", "run_soak"]

DATABASE = "sitewatch"
PUBLISHER_KIND = (
    "paho-mqtt clients speaking the wire contract (one MQTT connection per device, "
    "agent-like batches; not sitewatch-agent processes)"
)
_REPORT_INTERVAL_S = 0.1
_MIB = 1024 * 1024


# -- the fleet (publisher processes) ---------------------------------------------------------


@dataclass(frozen=True)
class FleetSpec:
    """What one publisher process simulates. Times in seconds; ``window_ms``: the timestamp
    windows in which it counts what it published (for ``StoredCounter``)."""

    host: str
    port: int
    site: str
    devices: list[str]
    sensors_per_device: int
    interval_s: float
    duration_s: float
    batch_readings: int = 50
    batch_interval_s: float = 5.0
    health_interval_s: float = 60.0
    max_inflight: int = 20
    window_ms: int = 10_000
    seed: int = 0


class _Room:
    """Temperature and humidity of one simulated room, a few µs per reading.

    The room profiles are the agent's simulated ones (``sim_climate.PROFILES``); the slow
    wander is an Ornstein–Uhlenbeck process (15 min time constant) instead of seeded hashes,
    which cost about 45 µs per reading.
    """

    def __init__(self, profile: ClimateProfile, rng: random.Random, step_s: float) -> None:
        self.p = profile
        self.rng = rng
        self.offset_c = rng.gauss(0.0, 0.3)
        self.cycle_offset_s = rng.random() * profile.cycle_period_s
        self.wander_t = rng.gauss(0.0, 1.0)
        self.wander_h = rng.gauss(0.0, 1.0)
        self.keep = math.exp(-step_s / 900.0)
        self.kick = math.sqrt(1.0 - self.keep * self.keep)

    def sample(self, wall_s: float) -> tuple[float, float]:
        p, gauss = self.p, self.rng.gauss
        self.wander_t = self.wander_t * self.keep + self.kick * gauss(0.0, 1.0)
        self.wander_h = self.wander_h * self.keep + self.kick * gauss(0.0, 1.0)
        daily = math.cos(2 * math.pi * ((wall_s % 86400.0) / 3600.0 - 15.0) / 24.0)
        cycle = 0.0
        if p.cycle_period_s:
            phase = ((wall_s + self.cycle_offset_s) % p.cycle_period_s) / p.cycle_period_s
            cycle = -1.0 + 2.0 * phase / 0.7 if phase < 0.7 else 1.0 - 2.0 * (phase - 0.7) / 0.3
        temperature_c = (
            p.setpoint_c + self.offset_c + p.daily_amplitude_c * daily
            + p.cycle_amplitude_c * cycle + p.wander_c * self.wander_t
            + p.noise_c * gauss(0.0, 1.0)
        )  # fmt: skip
        humidity_pct = (
            p.humidity_pct - p.daily_humidity_pct * daily - 2.0 * cycle
            + p.wander_pct * self.wander_h + p.noise_pct * gauss(0.0, 1.0)
        )  # fmt: skip
        return round(temperature_c, 1), round(min(100.0, max(0.1, humidity_pct)), 1)


_ROOM_MODELS = tuple(PROFILES)


class _Device:
    """One simulated device: its MQTT client, sensors, batch and delivery counters."""

    def __init__(self, spec: FleetSpec, name: str, rng: random.Random) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.spec = spec
        self.name = name
        self.boot_id = secrets.token_hex(8)
        self.seq = 0
        self.sensors: list[tuple[str, _Room]] = []
        for k in range(spec.sensors_per_device):
            model = _ROOM_MODELS[(k + len(name)) % len(_ROOM_MODELS)]
            room = _Room(PROFILES[model], random.Random(rng.random()), spec.interval_s)  # noqa: S311
            self.sensors.append((f"{model.replace('_', '-')}-{k + 1}", room))
        self.batch: list[Reading] = []
        self.batch_started = 0.0
        # Agents start at different times: a short first batch puts this device's batches
        # out of step with the others', instead of the whole fleet publishing at once.
        self.batch_limit = rng.randint(1, spec.batch_readings)
        self.health_due = rng.random() * spec.health_interval_s
        self.produced = 0
        self.published = 0
        self.pubacked = 0
        self.confirmed = 0
        self.disconnects = 0
        self.connected = False
        self.subscribed = False
        self.stopping = False
        self.started_mono = time.monotonic()
        self._inflight: dict[int, int] = {}  # mid → readings
        self._unconfirmed: deque[tuple[int, int, int]] = deque()  # (seq, readings, bytes)
        self.status_topic = topic(spec.site, name, Kind.STATUS)
        self.telemetry_topic = topic(spec.site, name, Kind.TELEMETRY)
        self.ack_topic = topic(spec.site, name, Kind.ACK)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sitewatch-{spec.site}-{name}",
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.max_inflight_messages_set(spec.max_inflight)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self.client = client

    def _status(self, state: str) -> bytes:
        online = state == "online"
        return encode(
            StatusMessage(
                site=self.spec.site, device=self.name, boot_id=self.boot_id, seq=self.seq,
                state="online" if online else "offline", ts=int(time.time() * 1000),
                reason=None if online else "stopped", agent_version="soak",
                sensors=[
                    SensorInfo(id=sensor_id, driver="simulated",
                               fields=["temperature_c", "humidity_pct"],
                               interval_s=self.spec.interval_s, labels={"zone": sensor_id})
                    for sensor_id, _ in self.sensors
                ] if online else [],
            )
        )  # fmt: skip

    # paho callbacks (all on the publisher's one thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        self.connected = True
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        client.subscribe(self.ack_topic, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        self.subscribed = True

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.pubacked += self._inflight.pop(mid, 0)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            ack = parse_message(message.topic, message.payload)
        except WireError:
            return
        if not isinstance(ack, AckMessage) or ack.boot_id != self.boot_id:
            return
        while self._unconfirmed and self._unconfirmed[0][0] <= ack.durable_seq:
            self.confirmed += self._unconfirmed.popleft()[1]

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        if not self.stopping:
            self.disconnects += 1

    # readings and batches
    def read(self, sensor: int, ts_ms: int) -> None:
        sensor_id, room = self.sensors[sensor]
        temperature_c, humidity_pct = room.sample(ts_ms / 1000.0)
        if not self.batch:
            self.batch_started = time.monotonic()
        self.batch.append(
            Reading(sensor=sensor_id, ts=ts_ms, quality=Quality.OK, temperature_c=temperature_c,
                    humidity_pct=humidity_pct, n_ok=3, n_tried=3, sample_age_s=0.4)
        )  # fmt: skip
        self.produced += 1

    def batch_due(self, now_mono: float) -> bool:
        return bool(self.batch) and (
            len(self.batch) >= self.batch_limit
            or now_mono - self.batch_started >= self.spec.batch_interval_s
        )

    def flush(self, windows: dict[int, int]) -> float:
        """Publish the batch as one telemetry message (with health when due); returns when."""
        readings, self.batch = self.batch, []
        self.batch_limit = self.spec.batch_readings
        self.seq += 1
        uptime_s = time.monotonic() - self.started_mono
        health = None
        if uptime_s >= self.health_due:
            self.health_due += self.spec.health_interval_s
            health = Health(
                ts=int(time.time() * 1000), uptime_s=round(uptime_s, 3), produced=self.produced,
                acked=self.confirmed, outbox_messages=len(self._unconfirmed),
                outbox_readings=sum(n for _, n, _ in self._unconfirmed),
                outbox_bytes=sum(b for _, _, b in self._unconfirmed), dropped_readings=0,
                dropped_events=0, time_synced=True,
            )  # fmt: skip
        message = TelemetryMessage(
            site=self.spec.site, device=self.name, boot_id=self.boot_id, seq=self.seq,
            readings=readings, health=health,
        )  # fmt: skip
        payload = encode(message)
        published_at = time.time()
        info = self.client.publish(self.telemetry_topic, payload, qos=1)
        self._inflight[info.mid] = len(readings)
        self._unconfirmed.append((self.seq, len(readings), len(payload)))
        self.published += len(readings)
        window_ms = self.spec.window_ms
        for reading in readings:
            index = reading.ts // window_ms
            windows[index] = windows.get(index, 0) + 1
        return published_at


def _publish_fleet(spec: FleetSpec, out: IO[str]) -> int:
    """The publisher process's loop: one thread, ``select`` over every device's socket."""
    rng = random.Random(spec.seed)  # noqa: S311 - simulation, not cryptography
    devices = [_Device(spec, name, rng) for name in spec.devices]
    for device in devices:
        device.client.connect(spec.host, spec.port, keepalive=30)
    windows: dict[int, int] = {}
    sent_windows: dict[int, int] = {}
    schedule: list[tuple[float, int, int]] = []  # (due s after start, device, sensor)
    start_wall_ms: int | None = None
    start_mono = 0.0
    ready_sent = done = stopping = False
    stdin_open = True
    stop_at = 0.0
    misc_due = report_due = 0.0

    flushes: list[list[float]] = []  # [wall s, readings published so far] per message

    def flush(device: _Device) -> None:
        published_at = device.flush(windows)
        flushes.append([published_at, sum(d.published for d in devices)])

    def report(**extra: Any) -> None:
        changed = {i: n for i, n in windows.items() if sent_windows.get(i) != n}
        sent_windows.update(changed)
        settled_ms: int | None
        if done:
            settled_ms = None  # everything published
        elif start_wall_ms is None:
            settled_ms = 0
        else:
            oldest = [d.batch[0].ts for d in devices if d.batch]
            if schedule:
                oldest.append(start_wall_ms + round(schedule[0][0] * 1000))
            settled_ms = min(oldest, default=start_wall_ms)
        line = {
            "t": time.time(),
            "published": sum(d.published for d in devices),
            "pubacked": sum(d.pubacked for d in devices),
            "confirmed": sum(d.confirmed for d in devices),
            "disconnects": sum(d.disconnects for d in devices),
            "settled_ms": settled_ms,
            "w": changed,
            "f": list(flushes),
            **extra,
        }
        flushes.clear()
        out.write(json.dumps(line) + "\n")
        out.flush()

    while True:
        now = time.monotonic()
        sockets = {}
        for device in devices:
            sock = device.client.socket()
            if sock is not None:
                sockets[sock] = device
        wants_write = [s for s, d in sockets.items() if d.client.want_write()]
        watched: list[Any] = [0, *sockets] if stdin_open else list(sockets)
        readable, writable, _ = select.select(watched, wants_write, [], 0.02)
        for sock in writable:
            sockets[sock].client.loop_write()
        for sock in readable:
            if sock == 0:
                data = os.read(0, 4096).decode()
                stdin_open = bool(data)
                commands = data.split("\n") if data else ["stop"]  # EOF: the soak is gone
                for command in filter(None, (c.strip() for c in commands)):
                    if command.startswith("go ") and start_wall_ms is None:
                        start_wall_s = float(command.split()[1])
                        start_wall_ms = round(start_wall_s * 1000)
                        start_mono = time.monotonic() + (start_wall_s - time.time())
                        for d_index in range(len(devices)):
                            for s_index in range(spec.sensors_per_device):
                                due = rng.random() * spec.interval_s
                                schedule.append((due, d_index, s_index))
                        heapq.heapify(schedule)
                    elif command == "stop" and not stopping:
                        stopping = True
                        stop_at = time.monotonic()
                        for device in devices:
                            device.stopping = True
                            if device.connected:
                                device.client.publish(
                                    device.status_topic, device._status("offline"), qos=1,
                                    retain=True,
                                )
            else:
                sockets[sock].client.loop_read()
        now = time.monotonic()
        if now >= misc_due:
            misc_due = now + 1.0
            for device in devices:
                device.client.loop_misc()
                if not device.connected and not device.stopping and device.subscribed:
                    with contextlib.suppress(OSError):
                        device.client.reconnect()
        if not ready_sent and all(d.connected and d.subscribed for d in devices):
            ready_sent = True
            out.write(json.dumps({"ready": True}) + "\n")
            out.flush()
        if start_wall_ms is not None and not done:
            elapsed = now - start_mono
            while schedule and schedule[0][0] <= elapsed:
                due, d_index, s_index = heapq.heappop(schedule)
                if due >= spec.duration_s:
                    continue  # this sensor is finished
                devices[d_index].read(s_index, start_wall_ms + round(due * 1000))
                if len(devices[d_index].batch) >= devices[d_index].batch_limit:
                    flush(devices[d_index])
                heapq.heappush(schedule, (due + spec.interval_s, d_index, s_index))
            for device in devices:
                if device.batch_due(now):
                    flush(device)
            if not schedule:  # every sensor finished: send what is left, as an agent's stop
                for device in devices:
                    if device.batch:
                        flush(device)
                done = True
                report(done=True, devices={d.name: d.published for d in devices})
        if now >= report_due:
            report_due = now + _REPORT_INTERVAL_S
            report()
        if stopping:
            settled = all(not d._inflight for d in devices)
            if settled or now - stop_at > 10.0:
                report(
                    final=True,
                    devices={d.name: d.published for d in devices},
                    confirmed_devices={d.name: d.confirmed for d in devices},
                    unacked_messages=sum(len(d._inflight) for d in devices),
                )
                for device in devices:
                    device.client.disconnect()
                    with contextlib.suppress(OSError):
                        device.client.loop_write()
                return 0


def _publisher_main(argv: list[str]) -> int:
    spec = FleetSpec(**json.loads(argv[0]))
    return _publish_fleet(spec, sys.stdout)


# -- measuring (the soak's own process) -------------------------------------------------------


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """CPU time (user + system, seconds) a process has used; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "(comm)": field 3, state, onwards
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _rss_mib(pid: int) -> float:
    """``VmRSS`` of a process in MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class ProcessMeter:
    """RSS and CPU of one process from ``/proc/<pid>``; ``cpu_pct`` is per cent of one core
    since the previous call (or since the meter was made)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last = (time.monotonic(), _cpu_s(pid) or 0.0)

    def rss_mib(self) -> float:
        return _rss_mib(self.pid)

    def cpu_pct(self) -> float:
        last_t, last_cpu = self._last
        now, cpu_s = time.monotonic(), _cpu_s(self.pid)
        cpu_s = last_cpu if cpu_s is None else cpu_s
        self._last = (now, cpu_s)
        return 100.0 * (cpu_s - last_cpu) / max(now - last_t, 1e-6)


class TreeMeter:
    """RSS and CPU of a process and its descendants (the collector and its detection
    process): children are looked up at every call, so a restarted child is followed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first_t = self._last_t = time.monotonic()
        self._cpu_seen: dict[int, float] = {p: _cpu_s(p) or 0.0 for p in self.pids()}
        self._total_cpu_s = 0.0

    def pids(self) -> list[int]:
        """The process first, then its descendants."""
        found, queue = [], [self.pid]
        while queue:
            pid = queue.pop(0)
            found.append(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError, ValueError):
                    queue += [int(child) for child in children.read_text().split()]
        return found

    def rss_mib(self) -> tuple[float, float]:
        """(the process's own RSS, its descendants' RSS together), MiB."""
        pids = self.pids()
        return _rss_mib(pids[0]), sum(_rss_mib(pid) for pid in pids[1:])

    def cpu_pct(self) -> float:
        """Per cent of one core used by the tree since the previous call."""
        now, used_s = time.monotonic(), 0.0
        for pid in self.pids():
            cpu_s = _cpu_s(pid)
            if cpu_s is not None:
                used_s += max(0.0, cpu_s - self._cpu_seen.get(pid, 0.0))
                self._cpu_seen[pid] = cpu_s
        elapsed_s, self._last_t = max(now - self._last_t, 1e-6), now
        self._total_cpu_s += used_s
        return 100.0 * used_s / elapsed_s

    def average_cpu_pct(self) -> float:
        """Per cent of one core since the meter was made (as of the last ``cpu_pct``)."""
        return 100.0 * self._total_cpu_s / max(self._last_t - self.first_t, 1e-6)


class StoredCounter:
    """Readings stored, by InfluxQL ``count(quality)`` of ``environment`` per timestamp window.

    A window whose count equals what the publishers put in it, once they have published all of
    it, is final and never queried again, so a count costs the same after 9 M readings as after
    9 k (a full count takes about 0.15 s per million points here).
    """

    def __init__(self, influx: Influxd, window_ms: int) -> None:
        self.influx = influx
        self.window_ms = window_ms
        self.final: dict[int, int] = {}
        self.first_open: int | None = None

    def total(self, published: dict[int, int], settled_ms: float) -> int:
        if not published:
            return 0
        first = self.first_open if self.first_open is not None else min(published)
        rows = self.influx.query(
            f"SELECT count(quality) FROM environment WHERE time >= {first * self.window_ms}ms "  # noqa: S608 (integers)
            f"AND time < now() + 1m GROUP BY time({self.window_ms}ms)",
            DATABASE,
        )
        counts = {int(row["time"]) // self.window_ms: int(row["count"] or 0) for row in rows}
        for index in range(first, max(published) + 1):
            settled = (index + 1) * self.window_ms <= settled_ms
            if settled and counts.get(index, 0) == published.get(index, 0):
                self.final[index] = published.get(index, 0)
        while first in self.final:
            first += 1
        self.first_open = first
        open_counts = sum(n for index, n in counts.items() if index not in self.final)
        return sum(self.final.values()) + open_counts

    def newest_age_s(self) -> float | None:
        """Seconds since the timestamp of the newest stored reading (None: none in 5 min)."""
        rows = self.influx.query(
            "SELECT last(quality) FROM environment WHERE time > now() - 5m", DATABASE
        )
        return time.time() - int(rows[0]["time"]) / 1000.0 if rows else None


class _Publisher:
    """A publisher process and what it last reported (its reader thread keeps that current)."""

    def __init__(self, spec: FleetSpec, timeline: _Timeline, log: Path) -> None:
        self.spec = spec
        self.timeline = timeline
        with log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sitewatch.localrun.soak", json.dumps(asdict(spec))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self.meter = ProcessMeter(self.proc.pid)
        self.ready = threading.Event()
        self.done = threading.Event()
        self.final = threading.Event()
        self.latest: dict[str, Any] = {}
        self.windows: dict[int, int] = {}
        self.devices: dict[str, int] = {}
        self.confirmed_devices: dict[str, int] = {}
        self.unacked_messages = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            data = json.loads(line)
            if data.get("ready"):
                self.ready.set()
                continue
            with self.timeline.lock:
                self.windows.update({int(i): n for i, n in data["w"].items()})
                self.latest = data
                self.timeline.report(self, data["f"])
            if data.get("done"):
                self.devices = data["devices"]
                self.done.set()
            if data.get("final"):
                self.devices = data["devices"]
                self.confirmed_devices = data["confirmed_devices"]
                self.unacked_messages = data["unacked_messages"]
                self.final.set()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def value(self, key: str) -> int:
        return int(self.latest.get(key, 0))

    def close(self) -> None:
        """Kill the process if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Timeline:
    """When each publisher had published how many readings (wall time of each publish, its
    running total), to tell how long the oldest reading not yet stored has been waiting."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._times: dict[int, list[float]] = {}
        self._totals: dict[int, list[int]] = {}

    def report(self, publisher: _Publisher, entries: list[list[float]]) -> None:
        """Add a publisher's publishes (``[wall s, running total]``); call with ``lock`` held."""
        times = self._times.setdefault(id(publisher), [])
        totals = self._totals.setdefault(id(publisher), [])
        for t, total in entries:
            times.append(t)
            totals.append(int(total))

    def _published_by(self, t: float) -> int:
        count = 0
        for key, times in self._times.items():
            index = bisect.bisect_right(times, t)
            if index:
                count += self._totals[key][index - 1]
        return count

    def waiting_s(self, stored: int, now: float) -> float:
        """Age of the oldest published reading not yet stored (0 when all are stored),
        assuming readings are stored in the order they were published."""
        with self.lock:
            if self._published_by(now) <= stored:
                return 0.0
            low = min(times[0] for times in self._times.values() if times) - 1.0
            high = now
            while high - low > 0.001:  # the earliest moment the fleet had published stored + 1
                middle = (low + high) / 2
                if self._published_by(middle) > stored:
                    high = middle
                else:
                    low = middle
            return max(0.0, now - high)


@dataclass(frozen=True)
class SoakSettings:
    """One soak. ``rate``: readings/s over the whole fleet; each device has
    ``sensors_per_device`` sensors read every ``sensors_per_device × devices / rate`` s.
    ``warmup_s`` (default: 10 % of the run, at least 2 min, at most half the run) ends where
    the collector's RSS growth is measured from."""

    duration_s: float = 1800.0
    devices: int = 200
    rate: float = 5000.0
    sensors_per_device: int = 5
    publishers: int = 2
    warmup_s: float | None = None
    sample_every_s: float = 1.0
    print_every_s: float = 30.0
    batch_readings: int = 50
    batch_interval_s: float = 5.0
    health_interval_s: float = 60.0
    drain_timeout_s: float = 120.0
    window_ms: int = 10_000
    site: str = "soak"
    seed: int = 1

    @property
    def interval_s(self) -> float:
        return self.sensors_per_device * self.devices / self.rate

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(max(120.0, self.duration_s / 10), self.duration_s / 2)


@dataclass(frozen=True)
class Sample:
    """One measurement during the run; ``t_s`` since the fleet started, RSS in MiB, CPU in
    per cent of one core since the previous sample."""

    t_s: float
    published: int
    stored: int
    waiting_s: float
    newest_age_s: float | None
    rss_mib: float
    main_rss_mib: float
    children_rss_mib: float
    cpu_pct: float
    influxd_rss_mib: float
    influxd_cpu_pct: float
    mosquitto_cpu_pct: float
    publishers_cpu_pct: float
    received: int
    duplicates: int
    spool_depth: int

    @property
    def lag(self) -> int:
        """Readings published and not yet stored. The publishers report every 0.1 s, so
        when storing is quicker than that the count can run ahead: clamped at 0."""
        return max(0, self.published - self.stored)

    @staticmethod
    def csv_header() -> str:
        return ",".join(Sample.__dataclass_fields__)

    def csv_row(self) -> str:
        return ",".join("" if v is None else str(v) for v in asdict(self).values())

    def line(self) -> str:
        newest = "-" if self.newest_age_s is None else f"{self.newest_age_s:.1f} s"
        return (
            f"{self.t_s:6.0f} s  published {self.published:>10,}  stored {self.stored:>10,}  "
            f"lag {self.lag:>6,} ({self.waiting_s:4.1f} s, newest {newest} old)  "
            f"collector {self.rss_mib:6.1f} MiB (main {self.main_rss_mib:.1f}, children "
            f"{self.children_rss_mib:.1f}) {self.cpu_pct:3.0f} %  "
            f"influxd {self.influxd_rss_mib:4.0f} MiB {self.influxd_cpu_pct:3.0f} %  "
            f"mosquitto {self.mosquitto_cpu_pct:3.0f} %  "
            f"publishers {self.publishers_cpu_pct:3.0f} %"
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class SoakResult:
    """The figures of one soak and the accounting behind its verdict."""

    settings: SoakSettings
    collector_command: list[str]
    samples: list[Sample] = field(default_factory=list)
    published: int = 0
    published_by_device: dict[str, int] = field(default_factory=dict)
    stored_by_device: dict[str, int] = field(default_factory=dict)
    confirmed_by_device: dict[str, int] = field(default_factory=dict)
    pubacked: int = 0
    disconnects: int = 0
    unacked_messages: int = 0
    elapsed_to_stored_s: float | None = None
    drain_s: float | None = None
    collector_status: dict[str, Any] = field(default_factory=dict)
    collector_exit: int | None = None
    collector_cpu_avg_pct: float = 0.0
    collector_log_bytes: int = 0

    # figures ---------------------------------------------------------------------------
    @property
    def stored(self) -> int:
        return sum(self.stored_by_device.values())

    @property
    def throughput_per_s(self) -> float:
        """Readings stored per second, from the fleet's start until all were stored."""
        if not self.elapsed_to_stored_s:
            return 0.0
        return self.stored / self.elapsed_to_stored_s

    def _run_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.t_s <= self.settings.duration_s]

    def lag_percentiles(self) -> dict[str, float]:
        run = self._run_samples()
        waits = [s.waiting_s for s in run]
        lags = [float(s.lag) for s in run]
        ages = [s.newest_age_s for s in run if s.newest_age_s is not None]
        return {
            "waiting_p50_s": _percentile(waits, 0.5),
            "waiting_p99_s": _percentile(waits, 0.99),
            "waiting_max_s": max(waits, default=0.0),
            "lag_p50": _percentile(lags, 0.5),
            "lag_p99": _percentile(lags, 0.99),
            "newest_age_p50_s": _percentile(ages, 0.5),
            "newest_age_p99_s": _percentile(ages, 0.99),
        }

    def rss_figures(self, part: str = "rss_mib") -> dict[str, float]:
        """RSS (MiB) at the end of warm-up and at the end of the run, the growth between them
        (per cent), the peak, and the least-squares slope after warm-up (MiB per hour).
        ``part``: the ``Sample`` field, ``rss_mib`` (the collector with its children),
        ``main_rss_mib`` or ``children_rss_mib`` (the detection process and multiprocessing's
        resource tracker).

        "At" is the median over the 60 s before (half the warm-up in short runs): the detection
        process's checkpoint (every 60 s by default) briefly raises its RSS by tens of MiB,
        and a single sample could land on that.
        """
        s = self.settings
        span_s = min(60.0, s.warmup / 2)

        def around(t_s: float) -> float:
            window = [getattr(x, part) for x in self.samples if t_s - span_s <= x.t_s <= t_s]
            return float(statistics.median(window)) if window else 0.0

        warm, end = around(s.warmup), around(s.duration_s)
        after = [(x.t_s, float(getattr(x, part))) for x in self._run_samples()
                 if x.t_s >= s.warmup]  # fmt: skip
        slope = 0.0
        if len(after) >= 3:
            mean_t = statistics.fmean(t for t, _ in after)
            mean_r = statistics.fmean(r for _, r in after)
            var = sum((t - mean_t) ** 2 for t, _ in after)
            if var:
                slope = sum((t - mean_t) * (r - mean_r) for t, r in after) / var * 3600
        minutes: dict[int, list[float]] = {}  # the band of per-minute medians after warm-up
        for t, r in after:
            minutes.setdefault(int((t - s.warmup) // 60), []).append(r)
        medians = [statistics.median(v) for v in minutes.values()] or [0.0]
        return {
            "warm_mib": warm,
            "end_mib": end,
            "growth_pct": 100.0 * (end - warm) / warm if warm else 0.0,
            "peak_mib": max((float(getattr(x, part)) for x in self.samples), default=0.0),
            "slope_mib_per_h": slope,
            "minute_low_mib": float(min(medians)),
            "minute_high_mib": float(max(medians)),
        }

    def rss_over_time(self, points: int = 20) -> list[tuple[float, float]]:
        """The collector's RSS (MiB) at about ``points`` evenly spaced moments of the run."""
        run = self._run_samples()
        if not run:
            return []
        step = self.settings.duration_s / points
        out = []
        for k in range(1, points + 1):
            nearest = min(run, key=lambda x: abs(x.t_s - k * step))
            out.append((nearest.t_s, nearest.rss_mib))
        return out

    # accounting ------------------------------------------------------------------------
    def loss_failures(self) -> list[str]:
        """Every reading published is stored exactly once: per device stored = published,
        the collector received each exactly once (no duplicates, gaps, dead letters or
        drops), the broker acknowledged every message and the collector confirmed them all."""
        problems = []
        if not self.published:
            problems.append("nothing was published")
        if len(self.published_by_device) != self.settings.devices:
            problems.append(
                f"{len(self.published_by_device)} of {self.settings.devices} devices accounted "
                "for by the publishers"
            )
        wrong = {
            device: (published, self.stored_by_device.get(device, 0))
            for device, published in self.published_by_device.items()
            if self.stored_by_device.get(device, 0) != published
        }
        if wrong:
            sample = ", ".join(f"{d}: {p} published, {s} stored" for d, (p, s) in
                               sorted(wrong.items())[:5])  # fmt: skip
            problems.append(f"{len(wrong)} devices stored ≠ published ({sample})")
        extra = set(self.stored_by_device) - set(self.published_by_device)
        if extra:
            problems.append(f"readings stored for devices never published: {sorted(extra)[:5]}")
        status = self.collector_status
        detection = status.get("detection") or {}
        for key in ("process_restarts", "lost_messages"):
            if detection.get(key, 0) != 0:
                problems.append(f"collector detection {key}: {detection.get(key)}")
        if status.get("received") != self.published:
            problems.append(
                f"collector received {status.get('received')} readings, {self.published} "
                "were published"
            )
        for key in ("duplicates", "gaps", "dead_lettered", "dropped", "invalid_messages"):
            if status.get(key, 0) != 0:
                problems.append(f"collector {key}: {status.get(key)}")
        if self.pubacked != self.published or self.unacked_messages:
            problems.append(
                f"broker acknowledged {self.pubacked} of {self.published} readings "
                f"({self.unacked_messages} messages unacknowledged)"
            )
        confirmed = sum(self.confirmed_by_device.values())
        if confirmed != self.published:
            problems.append(f"collector confirmed {confirmed} of {self.published} readings")
        if self.disconnects:
            problems.append(f"{self.disconnects} device disconnects")
        if self.collector_exit != 0:
            problems.append(
                "collector did not stop on SIGTERM" if self.collector_exit is None
                else f"collector exited with {self.collector_exit}"
            )  # fmt: skip
        return problems

    def failures(
        self, *, max_rss_growth_pct: float, max_waiting_p99_s: float | None = None,
        min_throughput_ratio: float | None = None,
    ) -> list[str]:  # fmt: skip
        """``loss_failures`` plus the bounds given (RSS growth always; lag and throughput,
        which are speeds, only when given)."""
        problems = self.loss_failures()
        for part, name in (("main_rss_mib", "process"), ("children_rss_mib", "children")):
            rss = self.rss_figures(part)
            if rss["growth_pct"] > max_rss_growth_pct:
                problems.append(
                    f"collector {name} RSS grew {rss['growth_pct']:.1f} % after warm-up "
                    f"({rss['warm_mib']:.1f} → {rss['end_mib']:.1f} MiB; "
                    f"bound {max_rss_growth_pct} %)"
                )
        lag = self.lag_percentiles()
        if max_waiting_p99_s is not None and lag["waiting_p99_s"] > max_waiting_p99_s:
            problems.append(
                f"p99 lag {lag['waiting_p99_s']:.2f} s exceeds {max_waiting_p99_s} s"
            )
        if min_throughput_ratio is not None:
            wanted = min_throughput_ratio * self.settings.rate
            if self.throughput_per_s < wanted:
                problems.append(
                    f"throughput {self.throughput_per_s:,.0f}/s below {wanted:,.0f}/s"
                )
        return problems

    def summary(self) -> list[str]:
        s = self.settings
        lag = self.lag_percentiles()
        rss = self.rss_figures()
        status = self.collector_status
        detection = status.get("detection") or {}
        confirmed = sum(self.confirmed_by_device.values())
        drain = "-" if self.drain_s is None else f"{self.drain_s:.1f} s"
        complete = sum(
            1 for d, n in self.published_by_device.items() if self.stored_by_device.get(d) == n
        )
        return [
            f"soak: {s.duration_s:.0f} s, {s.devices} devices × {s.sensors_per_device} sensors "
            f"every {s.interval_s:.3g} s = {s.rate:,.0f} readings/s offered, batches of "
            f"≤ {s.batch_readings} readings / {s.batch_interval_s:g} s, QoS1",
            f"  publishers: {s.devices} devices in {s.publishers} process(es); {PUBLISHER_KIND}",
            f"  collector: {' '.join(self.collector_command)} (detection on, default rules; "
            f"confirmations on)",
            f"  published {self.published:,} readings, stored {self.stored:,} "
            f"(broker acknowledged {self.pubacked:,}, collector confirmed {confirmed:,})",
            f"  throughput {self.throughput_per_s:,.0f} readings/s "
            f"(start → last reading stored; drain after the run {drain})",
            f"  lag (oldest published reading not yet stored): p50 {lag['waiting_p50_s']:.2f} s, "
            f"p99 {lag['waiting_p99_s']:.2f} s, max {lag['waiting_max_s']:.2f} s; "
            f"in readings p50 {lag['lag_p50']:,.0f}, p99 {lag['lag_p99']:,.0f}",
            f"  newest stored reading's age: p50 {lag['newest_age_p50_s']:.2f} s, "
            f"p99 {lag['newest_age_p99_s']:.2f} s",
            *(
                f"  collector RSS, {name}: {rss['warm_mib']:.1f} MiB after warm-up "
                f"({s.warmup:.0f} s), {rss['end_mib']:.1f} MiB at the end: "
                f"{rss['growth_pct']:+.2f} % (peak {rss['peak_mib']:.1f} MiB; after warm-up: "
                f"per-minute medians {rss['minute_low_mib']:.1f}–{rss['minute_high_mib']:.1f} "
                f"MiB, slope {rss['slope_mib_per_h']:+.2f} MiB/h)"
                for name, rss in (
                    ("main process", self.rss_figures("main_rss_mib")),
                    ("children (detection, resource tracker)",
                     self.rss_figures("children_rss_mib")),
                    ("total", rss),
                )
            ),
            "  collector RSS over time (s: MiB): "
            + ", ".join(f"{t:.0f}: {mib:.1f}" for t, mib in self.rss_over_time()),
            f"  collector CPU: {self.collector_cpu_avg_pct:.0f} % of one core on average; "
            f"log {self.collector_log_bytes:,} bytes",
            f"  collector counters: received {status.get('received')}, duplicates "
            f"{status.get('duplicates')}, gaps {status.get('gaps')}, late {status.get('late')}, "
            f"dead-lettered {status.get('dead_lettered')}, dropped {status.get('dropped')}, "
            f"spooled {status.get('spooled')}; detection: {detection.get('scored_values')} "
            f"values scored, {detection.get('decisions')} decisions, process restarts "
            f"{detection.get('process_restarts', '-')}, messages lost to detection "
            f"{detection.get('lost_messages', '-')}",
            f"  devices: {complete}/{len(self.published_by_device)} with stored = published; "
            f"disconnects {self.disconnects}",
        ]


# -- running ----------------------------------------------------------------------------------


def _collector_command() -> list[str]:
    script = Path(sys.executable).parent / "sitewatch-collector"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sitewatch.collector.cli"]


def _write_collector_config(workdir: Path, broker: Mosquitto, influx: Influxd) -> Path:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "sitewatch-soak"},
        "influx": {"api": "v1", "url": influx.url, "database": DATABASE},
        "state_dir": str(workdir / "collector-state"),
        "metrics": {"port": free_port()},
        "detection": {"enabled": True},
    }
    path = workdir / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _read_status(state_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def _split(devices: list[str], parts: int) -> Iterable[list[str]]:
    for k in range(parts):
        chunk = devices[k::parts]
        if chunk:
            yield chunk


def run_soak(
    settings: SoakSettings, workdir: Path, emit: Callable[[str], None] = print
) -> SoakResult:
    """Run one soak in ``workdir`` (servers' data, the collector's state and every log stay
    there) and return its figures; ``emit`` gets the progress lines."""
    s = settings
    if s.interval_s < 0.01:
        raise ValueError(f"each sensor would be read every {s.interval_s} s: add sensors")
    command = _collector_command()
    result = SoakResult(settings=s, collector_command=[Path(command[0]).name, *command[1:], "run"])
    broker = Mosquitto(workdir / "broker")
    influx = Influxd(workdir / "influxd")
    collector: subprocess.Popen[bytes] | None = None
    publishers: list[_Publisher] = []
    try:
        broker.start()
        influx.start()
        influx.create_database(DATABASE)
        config = _write_collector_config(workdir, broker, influx)
        state_dir = workdir / "collector-state"
        log_path = workdir / "collector.log"
        with log_path.open("ab") as log:
            collector = subprocess.Popen(
                [*command, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        proc = collector
        wait_until(
            lambda: proc.poll() is not None or _read_status(state_dir).get("broker_connected"),
            60, "the collector's broker session",
        )  # fmt: skip
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited: {log_path.read_text()[-2000:]}")
        meter = TreeMeter(proc.pid)
        assert influx.proc is not None and broker.proc is not None
        influx_meter, broker_meter = ProcessMeter(influx.proc.pid), ProcessMeter(broker.proc.pid)

        names = [f"dev-{k:03d}" for k in range(s.devices)]
        timeline = _Timeline()
        for index, chunk in enumerate(_split(names, s.publishers)):
            spec = FleetSpec(
                host="127.0.0.1", port=broker.port, site=s.site, devices=chunk,
                sensors_per_device=s.sensors_per_device, interval_s=s.interval_s,
                duration_s=s.duration_s, batch_readings=s.batch_readings,
                batch_interval_s=s.batch_interval_s, health_interval_s=s.health_interval_s,
                window_ms=s.window_ms, seed=s.seed * 1000 + index,
            )  # fmt: skip
            publishers.append(_Publisher(spec, timeline, workdir / f"publisher-{index}.log"))
        for publisher in publishers:
            if not publisher.ready.wait(60):
                raise RuntimeError(f"a publisher did not connect its devices: see {workdir}")
        counter = StoredCounter(influx, s.window_ms)
        start_wall = time.time() + 0.5
        for publisher in publishers:
            publisher.send(f"go {start_wall}")
        emit(f"soak running in {workdir}: {s.devices} devices, {s.rate:,.0f} readings/s, "
             f"{s.duration_s:.0f} s")  # fmt: skip

        def sample() -> Sample:
            with timeline.lock:
                windows: dict[int, int] = {}
                for publisher in publishers:
                    for index, n in publisher.windows.items():
                        windows[index] = windows.get(index, 0) + n
                settled = [p.latest.get("settled_ms", 0) for p in publishers]
            settled_ms = min((math.inf if x is None else x for x in settled), default=0)
            stored = counter.total(windows, settled_ms)
            now = time.time()
            with timeline.lock:  # read after the count, so it includes what was counted
                published = sum(p.value("published") for p in publishers)
            status = _read_status(state_dir)
            main_rss, children_rss = meter.rss_mib()
            return Sample(
                t_s=now - start_wall, published=published, stored=stored,
                waiting_s=timeline.waiting_s(stored, now), newest_age_s=counter.newest_age_s(),
                rss_mib=main_rss + children_rss, main_rss_mib=main_rss,
                children_rss_mib=children_rss, cpu_pct=meter.cpu_pct(),
                influxd_rss_mib=influx_meter.rss_mib(), influxd_cpu_pct=influx_meter.cpu_pct(),
                mosquitto_cpu_pct=broker_meter.cpu_pct(),
                publishers_cpu_pct=sum(p.meter.cpu_pct() for p in publishers),
                received=int(status.get("received", 0)),
                duplicates=int(status.get("duplicates", 0)),
                spool_depth=int(status.get("spool_depth", 0)),
            )  # fmt: skip

        # Sampling at random moments (0.5–1.5 × sample_every_s apart): at a fixed period the
        # samples could fall at the same phase of the fleet's batches every time.
        jitter = random.Random(s.seed)  # noqa: S311 - sampling times, not cryptography
        next_sample = start_wall + s.sample_every_s
        next_print = start_wall + s.print_every_s
        while True:
            time.sleep(max(0.0, next_sample - time.time()))
            next_sample += s.sample_every_s * (0.5 + jitter.random())
            if proc.poll() is not None:
                raise RuntimeError(f"collector exited: {log_path.read_text()[-2000:]}")
            current = sample()
            result.samples.append(current)
            printed = time.time() >= next_print
            if printed:
                next_print += s.print_every_s
                emit(current.line())
            all_done = all(p.done.is_set() for p in publishers)
            if all_done and current.stored >= current.published:
                result.elapsed_to_stored_s = current.t_s
                result.drain_s = max(0.0, current.t_s - s.duration_s)
                if not printed:
                    emit(current.line())
                break
            if current.t_s > s.duration_s + s.drain_timeout_s:
                emit(current.line())
                emit(f"gave up waiting for the rest after {s.drain_timeout_s:.0f} s")
                break

        result.published = sum(sum(p.devices.values()) for p in publishers)
        try:  # confirmations go out about once a second; the report shows any shortfall
            wait_until(lambda: sum(p.value("confirmed") for p in publishers) >= result.published,
                       30.0, "every reading confirmed", interval_s=0.2)  # fmt: skip
        except AssertionError:
            pass
        for publisher in publishers:
            publisher.send("stop")
        for publisher in publishers:
            publisher.final.wait(20)
            publisher.proc.wait(20)
            result.published_by_device.update(publisher.devices)
            result.confirmed_by_device.update(publisher.confirmed_devices)
            result.unacked_messages += publisher.unacked_messages
            result.pubacked += publisher.value("pubacked")
            result.disconnects += publisher.value("disconnects")
        result.published = sum(result.published_by_device.values())
        result.collector_cpu_avg_pct = meter.average_cpu_pct()
        proc.terminate()
        try:
            result.collector_exit = proc.wait(60)
        except subprocess.TimeoutExpired:
            emit("the collector did not stop within 60 s of SIGTERM")
        result.collector_status = _read_status(state_dir)
        result.collector_log_bytes = log_path.stat().st_size
        rows = influx.query(
            "SELECT count(quality) FROM environment GROUP BY device", DATABASE
        )
        result.stored_by_device = {row["device"]: int(row["count"]) for row in rows}
        return result
    finally:
        for publisher in publishers:
            publisher.close()
        if collector is not None and collector.poll() is None:
            for pid in reversed(TreeMeter(collector.pid).pids()):  # its children first
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            collector.wait()
        influx.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(_publisher_main(sys.argv[1:]))
