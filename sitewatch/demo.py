"""The local demo behind ``./scripts/demo``: a broker, InfluxDB, simulated agents on two
sites with fault scenarios, the collector storing everything in InfluxDB, detecting and
alerting (the alert page on a local port, with a demo login), and a validating live view of
everything the agents publish and every alert.

Everything runs as plain processes under a run directory (default ``run/demo``, wiped at
each start so a second run starts clean) on free loopback ports. Ctrl-C, or the end of
``--duration-s``, stops the agents cleanly (each says ``offline``), then the collector, the
broker and InfluxDB.

Scenarios: on plant-a the kitchen cold room's cooling fails, its compressor short-cycles and
its door is left open; on plant-b a rack DHT22 dies while the server room and the freezer
run normally.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from sitewatch.collector.alerting.webauth import set_password
from sitewatch.collector.mqtt import BrokerSession, SessionOptions
from sitewatch.collector.tail import print_message
from sitewatch.configfile import BrokerConfig
from sitewatch.demo_scenarios import SCENARIOS, Progress, alerts_in_influx, alerts_on_page
from sitewatch.localrun import Influxd, Mosquitto, free_port
from sitewatch.wire import subscription

__all__ = ["DEVICES", "main"]

DEVICES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("plant-a", "pi-kitchen"): [
        {"id": "cold-room", "driver": "simulated", "model": "cold_room", "seed": 11,
         "interval_s": 5, "labels": {"zone": "kitchen", "equipment": "walk-in-1"},
         # A fast failure (20 °C/h), so the forecast and the alert come within minutes.
         "faults": [{"kind": "cooling_failure", "start_s": 20, "rate_c_per_h": 20}]},
        {"id": "compressor", "driver": "simulated", "model": "compressor", "seed": 12,
         "interval_s": 10, "labels": {"zone": "kitchen", "equipment": "walk-in-1"},
         # Runs and rests of 40 s (3 min is the least the profile allows).
         "faults": [{"kind": "short_cycling", "start_s": 20, "on_s": 40, "off_s": 40}]},
        {"id": "walk-in-door", "driver": "simulated", "model": "door", "seed": 13,
         "interval_s": 10, "labels": {"zone": "kitchen", "equipment": "walk-in-1"},
         "faults": [{"kind": "door_left_open", "start_s": 30}]},
    ],
    ("plant-b", "pi-server"): [
        {"id": "server-room", "driver": "simulated", "model": "server_room", "seed": 21,
         "interval_s": 5, "labels": {"zone": "it"}},
        {"id": "rack-3", "driver": "simulated", "model": "server_room", "seed": 22,
         "interval_s": 5, "labels": {"zone": "it"},
         "faults": [{"kind": "dead", "start_s": 20}],
         "sampling": {"fault_after_periods": 3}},
    ],
    ("plant-b", "pi-freezer"): [
        {"id": "freezer", "driver": "simulated", "model": "freezer", "seed": 31,
         "interval_s": 5, "labels": {"zone": "store"}},
    ],
}
"""The simulated fleet: (site, device) → sensors."""


def _agent_config(run_dir: Path, site: str, device: str, port: int, sensors: list[Any]) -> Path:
    config = {
        "site": site,
        "device": device,
        "mqtt": {"host": "127.0.0.1", "port": port},
        "outbox": {"path": str(run_dir / "agents" / device / "outbox.db")},
        "telemetry": {"batch_interval_s": 2, "health_interval_s": 30},
        "hardware": {"pin_factory": "mock"},
        "sensors": sensors,
    }
    path = run_dir / "agents" / f"{device}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


_EXAMPLE_QUERY = "q=SELECT last(temperature_c) FROM environment GROUP BY device, sensor"


DETECTION: dict[str, Any] = {
    "rules": [
        # The profile fits a trend over 45 min and wants a breach held for 10; the demo's
        # cold room fails in minutes, so its rule fits 2 min and wants a breach held for 1.
        {"name": "walk-in-cold-room", "match": {"sensor": "cold-room"}, "profile": "cold_room",
         "detectors": {"forecast": {"window_s": 120, "decorrelation_s": 30},
                       "threshold": {"for_s": 60}}},
        {"name": "walk-in-compressor", "match": {"sensor": "compressor"},
         "profile": "hvac_compressor"},
        {"name": "walk-in-door", "match": {"sensor": "walk-in-door"}, "profile": "door",
         "detectors": {"door_open": {"max_open_s": 60}}},
        {"name": "server-room", "match": {"labels": {"zone": "it"}}, "profile": "server_room"},
        {"name": "freezer", "match": {"sensor": "freezer"}, "profile": "freezer"},
    ],
}
"""Rules for the demo fleet: a profile per kind of equipment."""


def _alerting(
    web_port: int, users_file: Path, token_file: Path, inbox_port: int
) -> dict[str, Any]:
    # Every member's messages go to the demo's own webhook inbox (apprise json://), which
    # prints them; put mailto://, ntfys://, slack://... URLs in run/demo/collector.yaml to get
    # them where people are.
    def member(name: str) -> dict[str, Any]:
        return {"name": name, "apprise": [f"json://127.0.0.1:{inbox_port}/{name}"]}

    return {
        "public_url": f"http://127.0.0.1:{web_port}",
        "teams": [
            {"name": "kitchen", "members": [member("kitchen-technician")]},
            {"name": "it", "members": [member("it-on-call")]},
            {"name": "installers", "members": [member("installer")]},
        ],
        "routes": [
            {"match": {"audience": "installer"}, "levels": ["installers"]},
            {"match": {"site": "plant-a"}, "levels": ["kitchen", ["kitchen", "installers"]],
             "escalate_after_s": 300},
            {"match": {}, "levels": ["it"]},
        ],
        "web": {"enabled": True, "port": web_port, "users_file": str(users_file),
                "token_file": str(token_file)},
    }


def _collector_config(
    run_dir: Path, broker: Mosquitto, influx: Influxd, web_port: int, users_file: Path,
    token_file: Path, inbox_port: int,
) -> Path:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "demo-collector"},
        "influx": {"api": "v1", "url": influx.url, "database": "sitewatch"},
        "state_dir": str(run_dir / "collector"),
        "metrics": {"port": 0},
        "detection": DETECTION,
        "alerting": _alerting(web_port, users_file, token_file, inbox_port),
    }
    path = run_dir / "collector.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _show(topic: str, payload: bytes, progress: Progress) -> None:
    """The live view: alerts as one line each (and progress when a scenario is caught),
    everything else validated by ``tail``."""
    if "/alerts/" not in topic:
        print_message(topic, payload)
        return
    if not payload:
        print(f"ALERT cleared  {topic.split('/alerts/', 1)[1]}", flush=True)
        return
    try:
        alert = json.loads(payload)
        print(f"ALERT {alert.get('state', '?'):<12} {alert.get('severity', '?'):<8} "
              f"{alert.get('site')}/{alert.get('device')}/{alert.get('sensor')} "
              f"[{alert.get('rule')}] {alert.get('message', '')}", flush=True)
    except (ValueError, AttributeError):
        print(f"ALERT {topic}: {payload[:200]!r}", flush=True)
        return
    if isinstance(alert, dict) and progress.note_alert(alert) is not None:
        print(f"PROGRESS {progress.line()}", flush=True)


def _report_progress(
    progress: Progress, influx: Influxd, stopped: threading.Event, every_s: float
) -> None:
    """Every ``every_s``: readings stored so far and which scenarios have alerted."""
    while not stopped.wait(every_s):
        try:
            rows = influx.query("SELECT count(quality) FROM environment", "sitewatch")
            stored = f"{int(rows[0]['count']):,} climate readings stored, " if rows else ""
        except OSError:
            stored = ""
        print(f"PROGRESS {stored}{progress.line()}", flush=True)


def _confirm_alerted(
    progress: Progress, influx: Influxd, page_url: str, token: str, stopped: threading.Event,
    deadline_s: float,
) -> bool:
    """Once every scenario alerted in the live view: wait (until ``deadline_s``, monotonic)
    for each to be on the alert page and in InfluxDB too; print what was found."""
    wanted = {s.where for s in progress.scenarios}
    on_page: set[str] = set()
    stored: set[str] = set()
    while True:
        try:
            on_page = alerts_on_page(page_url, token) & wanted
            stored = alerts_in_influx(influx) & wanted
        except OSError as error:
            print(f"PROGRESS checking the alert page and InfluxDB: {error}", flush=True)
        if (on_page == wanted and stored == wanted) or time.monotonic() >= deadline_s:
            break
        if stopped.wait(1.0):
            break
    for scenario in progress.scenarios:
        after = progress.alerted_after_s.get(scenario)
        print(f"CHECK {scenario.title:<28} {scenario.where:<32} "
              f"alerted after {after or 0:5.0f} s, "
              f"page {'yes' if scenario.where in on_page else 'NO'}, "
              f"influxdb {'yes' if scenario.where in stored else 'NO'}", flush=True)
    return on_page == wanted and stored == wanted


def _watch(
    collector: subprocess.Popen[bytes], run_dir: Path, stopped: threading.Event, stop: Any
) -> None:
    """Stop the demo, with the collector's last words, if the collector exits by itself."""
    status = collector.wait()
    if stopped.is_set():
        return
    log = (run_dir / "logs" / "collector.log").read_text(errors="replace").splitlines()
    print(f"\nthe collector stopped (exit status {status}); its log ends:", flush=True)
    for line in log[-10:]:
        print(f"  {line}", flush=True)
    stop()


class _Inbox(BaseHTTPRequestHandler):
    """The demo's stand-in for people's phones: prints each message apprise posts to it."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            message = json.loads(body)
            title = str(message.get("title", "")).splitlines()[0] if message.get("title") else ""
        except (ValueError, AttributeError):
            title = body[:120].decode("utf-8", "replace")
        print(f"MESSAGE to {self.path.strip('/')}: {title}", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the message line above is the log."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description="run the whole sitewatch system locally"
    )
    parser.add_argument("--run-dir", type=Path, default=Path("run/demo"))
    parser.add_argument(
        "--duration-s", type=float, default=None, help="stop by itself after this many seconds"
    )
    parser.add_argument(
        "--until-alerted", action="store_true",
        help="stop once every fault scenario's alert is on the alert page and in InfluxDB "
        "(exit status 0), or at --duration-s without (exit status 1)",
    )
    parser.add_argument("--progress-every-s", type=float, default=30.0,
                        help="how often to print progress (seconds, default 30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir: Path = args.run_dir.resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "logs").mkdir(parents=True)
    broker = Mosquitto(run_dir / "broker")
    broker.start()
    influx = Influxd(run_dir / "influxdb")
    influx.start()
    influx.create_database("sitewatch")
    agents: list[subprocess.Popen[bytes]] = []
    stopped = threading.Event()
    collector: subprocess.Popen[bytes] | None = None
    progress = Progress()
    live_view = BrokerSession(
        BrokerConfig(host=broker.host, port=broker.port),
        SessionOptions(topics=(subscription(), "sitewatch/v1/+/alerts/#"), persistent=False,
                       manual_ack=False),
        lambda message: _show(message.topic, message.payload, progress),
    )
    confirmed = False

    def stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"sitewatch demo, run directory {run_dir}")
        print(f"  broker    mosquitto on 127.0.0.1:{broker.port} (log {broker.log_path})")
        print(f"  influxdb  {influx.url}, database sitewatch; try:\n"
              f"            curl -G {influx.url}/query --data-urlencode db=sitewatch"
              f" --data-urlencode {_EXAMPLE_QUERY!r}")
        inbox = ThreadingHTTPServer(("127.0.0.1", 0), _Inbox)
        threading.Thread(target=inbox.serve_forever, daemon=True).start()
        web_port = free_port()
        users_file = run_dir / "web-users"
        password = secrets.token_urlsafe(9)
        set_password(users_file, "demo", password)
        token_file = run_dir / "web-token"  # for scripts: Authorization: Bearer <token>
        token = secrets.token_urlsafe(24)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        collector_config = _collector_config(run_dir, broker, influx, web_port, users_file,
                                             token_file, inbox.server_address[1])
        collector_log = (run_dir / "logs" / "collector.log").open("ab")
        collector = subprocess.Popen(
            [sys.executable, "-m", "sitewatch.collector.cli", "run", "--config",
             str(collector_config)],
            stdout=collector_log, stderr=subprocess.STDOUT,
        )
        print(f"  collector MQTT → InfluxDB, detection and alerts (status: "
              f".venv/bin/sitewatch-collector status --config {collector_config})")
        print(f"  alerts    http://127.0.0.1:{web_port}/  log in as demo / {password}\n"
              f"            .venv/bin/sitewatch-collector alerts list --config {collector_config}")
        for (site, device), sensors in DEVICES.items():
            config = _agent_config(run_dir, site, device, broker.port, sensors)
            log = (run_dir / "logs" / f"{device}.log").open("ab")
            agents.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sitewatch.agent.cli", "run", "--config", str(config)],
                    stdout=log, stderr=subprocess.STDOUT,
                )
            )
            names = ", ".join(s["id"] for s in sensors)
            print(f"  agent     {site}/{device}: {names} (config {config})")
        print("  scenarios " + "; ".join(f"{s.title} ({s.where})" for s in SCENARIOS))
        print("  live view below (ALERT: an alert's state, MESSAGE: what a person gets, "
              "PROGRESS: scenarios caught); Ctrl-C stops everything\n", flush=True)
        threading.Thread(
            target=_watch, args=(collector, run_dir, stopped, stop), daemon=True
        ).start()
        threading.Thread(
            target=_report_progress, args=(progress, influx, stopped, args.progress_every_s),
            daemon=True,
        ).start()
        deadline_s = time.monotonic() + (args.duration_s if args.duration_s is not None
                                         else float("inf"))
        if args.duration_s is not None:
            timer = threading.Timer(args.duration_s, stop)
            timer.daemon = True
            timer.start()
        if args.until_alerted:
            def confirm() -> None:
                nonlocal confirmed
                if progress.done.wait(args.duration_s) and not stopped.is_set():
                    confirmed = _confirm_alerted(progress, influx, f"http://127.0.0.1:{web_port}",
                                                 token, stopped, deadline_s)
                    found = "on the page and in InfluxDB" if confirmed else "NOT everywhere"
                    print(f"PROGRESS every fault scenario alerted: {found}", flush=True)
                stop()

            threading.Thread(target=confirm, daemon=True).start()
        live_view.run(stopped)
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        for agent in agents:
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        if collector is not None:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(30)
            except subprocess.TimeoutExpired:
                collector.kill()
        broker.stop()
        influx.stop()
        print("\ndemo stopped", flush=True)
    if args.until_alerted and not confirmed:
        print("not every fault scenario alerted: " + progress.line(), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
