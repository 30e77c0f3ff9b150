"""The agent's broker security against a real mosquitto, and its reconnect back-off.

Per-device credentials (``mqtt.username`` with ``password_file`` or ``password_env``), TLS
with broker verification and client certificates, and what a device does when it is refused
or cannot verify the broker: it delivers nothing, says why in its log (never the secret), and
keeps retrying with a jittered back-off, so a fixed secret or broker is picked up without a
restart and a fleet does not hammer the broker in lockstep.

Agents run as their own processes (``sitewatch-agent run``) with simulated sensors, as in
``test_agent_delivery.py``; certificates are made with the ``openssl`` CLI in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from sitewatch.agent.mqtt import LinkSettings, MqttLink
from sitewatch.clock import SystemClock
from sitewatch.collector.provisioning.pki import CertificateAuthority
from sitewatch.localrun import Mosquitto, free_port, have_mosquitto, wait_until
from sitewatch.wire import TelemetryMessage, parse_message
from tests import processes
from tests.mqtt_probe import Probe

pytestmark = pytest.mark.integration

PASSWORD_ENV = "SITEWATCH_TEST_MQTT_PASSWORD"
COLLECTOR = ("collector", "collector-pw-5b1e")
"""The probe's own login on brokers without anonymous access."""

StartBroker = Callable[..., Mosquitto]
WriteConfig = Callable[..., Path]
Agents = list[subprocess.Popen[bytes]]


# -- processes ---------------------------------------------------------------------------


@pytest.fixture
def agents() -> Iterator[Agents]:
    procs: Agents = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[StartBroker]:
    """Start a mosquitto with the given ``Mosquitto`` options; killed after the test."""
    if not have_mosquitto():
        pytest.fail("mosquitto is not installed; the README's test command installs it")
    brokers: list[Mosquitto] = []

    def start(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker-{len(brokers)}", **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.kill()


def agent_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != PASSWORD_ENV}
    return {**env, **(extra or {})}


def start_agent(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return processes.start_agent(config, log, agent_env(env))


def status(config: Path, env: dict[str, str] | None = None) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "sitewatch.agent.cli", "status", "--config", str(config), "--json"],
        capture_output=True, check=True, text=True, env=agent_env(env),
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


def outbox_path(config: Path) -> Path:
    return Path(yaml.safe_load(config.read_text())["outbox"]["path"])


def readings_from(probe: Probe, device: str) -> int:
    """Readings the probe received in telemetry from ``device`` (site ``plant-a``)."""
    count = 0
    for received in probe.snapshot():
        if f"/plant-a/{device}/" in received.topic:
            message = parse_message(received.topic, received.payload)
            if isinstance(message, TelemetryMessage):
                count += len(message.readings)
    return count


def messages_from(probe: Probe, device: str) -> int:
    return sum(f"/plant-a/{device}/" in m.topic for m in probe.snapshot())


def retries(log: Path) -> int:
    """How often the agent's link has scheduled a reconnect (logged at DEBUG)."""
    return log.read_text().count("reconnecting in")


def delivering(config: Path, probe: Probe, device: str, env: dict[str, str] | None = None) -> bool:
    """The broker acknowledged readings (no collector here to confirm them: they wait in the
    outbox as unconfirmed until the agent falls back) and the probe got some."""
    stats = status(config, env)
    return stats["acked"] + stats["unconfirmed"] > 0 and readings_from(probe, device) > 0


def refused_repeatedly(config: Path, log: Path) -> bool:
    """Three scheduled retries while producing, or (a defect) a connection: stop waiting."""
    connected = "connected to 127.0.0.1" in log.read_text()
    return connected or (retries(log) >= 3 and status(config)["produced"] > 0)


# -- credentials -------------------------------------------------------------------------


def password_file(path: Path, logins: dict[str, str]) -> Path:
    """A mosquitto password file (hashed) made by ``mosquitto_passwd``."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    for index, (user, secret) in enumerate(logins.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([tool, "-b", *create, str(path), user, secret], check=True,
                       capture_output=True)
    return path


def secret_file(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def test_agent_security_device_passwords_from_file_and_env_deliver(
    start_broker: StartBroker, write_agent_config: WriteConfig, agents: Agents, tmp_path: Path
) -> None:
    file_secret, env_secret = "pi01-Fr0m-File-9d2c", "pi02-Fr0m-Env-41aa"
    logins = {"pi-01": file_secret, "pi-02": env_secret, COLLECTOR[0]: COLLECTOR[1]}
    hashes = password_file(tmp_path / "passwd", logins)
    broker = start_broker(allow_anonymous=False, extra_conf=f"password_file {hashes}\n")
    probe = Probe(broker.host, broker.port, username=COLLECTOR[0], password=COLLECTOR[1])

    from_file = write_agent_config(broker.port, device="pi-01", name="pi-01.yaml", mqtt={
        "username": "pi-01", "password_file": str(secret_file(tmp_path / "pi-01.pw", file_secret)),
    })
    from_env = write_agent_config(broker.port, device="pi-02", name="pi-02.yaml", mqtt={
        "username": "pi-02", "password_env": PASSWORD_ENV,
    })
    env = {PASSWORD_ENV: env_secret}
    logs = [tmp_path / "pi-01.log", tmp_path / "pi-02.log"]
    agents.append(start_agent(from_file, logs[0]))
    agents.append(start_agent(from_env, logs[1], env))

    wait_until(lambda: delivering(from_file, probe, "pi-01"), 20,
               "pi-01 (password_file) delivering")
    wait_until(lambda: delivering(from_env, probe, "pi-02", env), 20,
               "pi-02 (password_env) delivering")
    probe.close()
    assert all(proc.poll() is None for proc in agents)
    for log, secret in zip(logs, (file_secret, env_secret), strict=True):
        text = log.read_text()
        assert "connected to 127.0.0.1" in text
        assert secret not in text


def test_agent_security_wrong_password_is_refused_retried_and_never_logged(
    start_broker: StartBroker, write_agent_config: WriteConfig, agents: Agents, tmp_path: Path
) -> None:
    right, wrong = "pi01-Right-c0ffee", "pi01-Wr0ng-Secret-77e1"
    hashes = password_file(tmp_path / "passwd", {"pi-01": right, COLLECTOR[0]: COLLECTOR[1]})
    broker = start_broker(allow_anonymous=False, extra_conf=f"password_file {hashes}\n")
    probe = Probe(broker.host, broker.port, username=COLLECTOR[0], password=COLLECTOR[1])
    secret = secret_file(tmp_path / "pi-01.pw", wrong)
    config = write_agent_config(broker.port, mqtt={"username": "pi-01",
                                                   "password_file": str(secret)})
    log = tmp_path / "agent.log"
    agents.append(start_agent(config, log))

    # Refused at least three times, while producing into its outbox.
    wait_until(lambda: refused_repeatedly(config, log), 20, "repeated refused connects")
    assert agents[0].poll() is None, "the agent died on a refused login"
    text = log.read_text()
    refusals = re.findall(r"broker refused the connection: not authori[sz]ed", text, re.IGNORECASE)
    assert len(refusals) == 1, text  # said once, not once per retry
    assert "connection lost" not in text and "connected to 127.0.0.1" not in text
    assert wrong not in text and right not in text
    assert status(config)["acked"] == 0
    assert messages_from(probe, "pi-01") == 0
    assert broker.log_path.read_text().count("not authorised") >= 2  # real attempts, refused

    # The secret is read at each connect: fixing the file is picked up without a restart.
    secret_file(secret, right)
    wait_until(lambda: delivering(config, probe, "pi-01"), 20, "delivery after fixing the secret")
    probe.close()
    assert wrong not in log.read_text() and right not in log.read_text()


# -- TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, two client certificates
    (the agent's and the probe's), an unrelated CA that signed none of them, and a server
    certificate from the right CA for another host."""

    ca: Path
    server_cert: Path
    server_key: Path
    agent_cert: Path
    agent_key: Path
    probe_cert: Path
    probe_key: Path
    other_ca: Path
    elsewhere_cert: Path
    elsewhere_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Made with the project's own ``provisioning.pki``, as an installer would make them."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed: cannot make throwaway certificates")
    directory = tmp_path / "pki"
    ca, _ = CertificateAuthority.open_or_create(directory / "ca", "sitewatch-test-ca")
    other_ca, _ = CertificateAuthority.open_or_create(directory / "other", "someone-elses-ca")

    def issue(name: str, usage: Literal["server", "client"], hosts: list[str] | None = None
              ) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        ca.issue(name, usage, cert, key, hosts=hosts)
        return cert, key

    server = issue("localhost", "server", ["127.0.0.1", "localhost"])
    agent = issue("sitewatch-plant-a-pi-01", "client")
    probe = issue("collector", "client")
    elsewhere = issue("broker.elsewhere.example", "server", ["broker.elsewhere.example"])
    return Pki(ca.cert, *server, *agent, *probe, other_ca.cert, *elsewhere)


def tls_listener(pki: Pki, require_certificate: bool = False, elsewhere: bool = False) -> str:
    cert, key = (pki.elsewhere_cert, pki.elsewhere_key) if elsewhere else (
        pki.server_cert, pki.server_key)
    return (f"cafile {pki.ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n")


def test_agent_security_tls_verified_broker_delivers(
    start_broker: StartBroker,
    write_agent_config: WriteConfig,
    agents: Agents,
    pki: Pki,
    tmp_path: Path,
) -> None:
    broker = start_broker(listener_conf=tls_listener(pki))
    probe = Probe(broker.host, broker.port, ca_file=pki.ca)
    config = write_agent_config(broker.port, mqtt={"tls": {"enabled": True,
                                                           "ca_file": str(pki.ca)}})
    log = tmp_path / "agent.log"
    agents.append(start_agent(config, log))
    wait_until(lambda: delivering(config, probe, "pi-01"), 20, "delivery over TLS")
    probe.close()
    assert "connected to 127.0.0.1" in log.read_text()


@pytest.mark.parametrize("untrusted", ["signed by another CA", "issued for another host"])
def test_agent_security_tls_untrusted_broker_delivers_nothing_and_keeps_retrying(
    untrusted: str,
    start_broker: StartBroker,
    write_agent_config: WriteConfig,
    agents: Agents,
    pki: Pki,
    tmp_path: Path,
) -> None:
    other_host = untrusted == "issued for another host"
    broker = start_broker(listener_conf=tls_listener(pki, elsewhere=other_host))
    # The probe skips the host name check: it only watches for what the agent publishes.
    probe = Probe(broker.host, broker.port, ca_file=pki.ca, check_hostname=not other_host)
    ca_file = pki.ca if other_host else pki.other_ca
    config = write_agent_config(broker.port, mqtt={"tls": {"enabled": True,
                                                           "ca_file": str(ca_file)}})
    log = tmp_path / "agent.log"
    agents.append(start_agent(config, log))
    wait_until(lambda: refused_repeatedly(config, log), 20, "repeated failed TLS handshakes")
    probe.close()
    assert agents[0].poll() is None, "the agent died on an untrusted broker"
    text = log.read_text()
    assert "certificate verify failed" in text, text
    assert "mismatch" in text or not other_host, text
    assert "connected to 127.0.0.1" not in text
    assert status(config)["acked"] == 0
    assert messages_from(probe, "pi-01") == 0


def test_agent_security_tls_client_certificate_required(
    start_broker: StartBroker,
    write_agent_config: WriteConfig,
    agents: Agents,
    pki: Pki,
    tmp_path: Path,
) -> None:
    broker = start_broker(listener_conf=tls_listener(pki, require_certificate=True))
    probe = Probe(broker.host, broker.port, ca_file=pki.ca, cert_file=pki.probe_cert,
                  key_file=pki.probe_key)
    with_cert = write_agent_config(broker.port, device="pi-01", name="pi-01.yaml", mqtt={"tls": {
        "enabled": True, "ca_file": str(pki.ca), "cert_file": str(pki.agent_cert),
        "key_file": str(pki.agent_key)}})
    without_cert = write_agent_config(broker.port, device="pi-02", name="pi-02.yaml", mqtt={
        "tls": {"enabled": True, "ca_file": str(pki.ca)}})
    logs = [tmp_path / "pi-01.log", tmp_path / "pi-02.log"]
    agents.append(start_agent(with_cert, logs[0]))
    agents.append(start_agent(without_cert, logs[1]))

    wait_until(lambda: delivering(with_cert, probe, "pi-01"), 20, "delivery with a client cert")
    wait_until(lambda: refused_repeatedly(without_cert, logs[1]), 20,
               "the agent without a client certificate retrying")
    probe.close()
    assert agents[1].poll() is None, "the agent without a certificate died"
    assert "connected to 127.0.0.1" not in logs[1].read_text()
    assert "peer did not return a certificate" in broker.log_path.read_text()
    assert status(without_cert)["acked"] == 0
    assert messages_from(probe, "pi-02") == 0


# -- reconnect back-off ------------------------------------------------------------------


class RecordingClock(SystemClock):
    """Real time, but every sleep is recorded (seconds) and returns at once until ``count``
    are recorded; then ``enough`` is set and sleeps wait for ``stop`` for real, so the link
    idles until the test stops it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sleeps: list[float] = []
        self.enough = threading.Event()
        self._lock = threading.Lock()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        with self._lock:
            self.sleeps.append(seconds)
            recorded = len(self.sleeps)
        if recorded < self.count:
            return stop is not None and stop.is_set()
        self.enough.set()
        return super().sleep(min(seconds, 10.0), stop)


class NoListener:
    """A LinkListener for a link that must never connect."""

    def __init__(self) -> None:
        self.connected = 0

    def on_connected(self, link: MqttLink) -> None:
        self.connected += 1

    def on_disconnected(self) -> None:
        pass

    def on_published(self, mid: int) -> None:
        pass

    def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        pass

    def on_tick(self, link: MqttLink) -> None:
        pass


def reconnect_delays(
    port: int, rng: random.Random | None, min_s: float, max_s: float, count: int
) -> list[float]:
    """The first ``count`` reconnect delays (seconds) of a link to a port nobody listens on."""
    settings = LinkSettings(host="127.0.0.1", port=port, client_id="backoff-test",
                            will_topic="sitewatch/v1/plant-a/pi-01/status", will_payload=b"{}",
                            reconnect_min_s=min_s, reconnect_max_s=max_s)
    clock, listener = RecordingClock(count), NoListener()
    link = MqttLink(settings, listener, clock, rng=rng)
    link.start()
    try:
        assert clock.enough.wait(10), f"only {len(clock.sleeps)} reconnect attempts in 10 s"
    finally:
        link.stop(timeout_s=5)
    assert listener.connected == 0
    assert link.last_error is not None and f"cannot connect to 127.0.0.1:{port}" in link.last_error
    return clock.sleeps[:count]


def test_agent_link_reconnect_backoff_grows_capped_with_jitter() -> None:
    min_s, max_s, count = 1.0, 30.0, 16
    port = free_port()
    fleet = {
        "seed 1": reconnect_delays(port, random.Random(1), min_s, max_s, count),
        "seed 2": reconnect_delays(port, random.Random(2), min_s, max_s, count),
        # As the agent builds its link: two devices with the default rng.
        "default rng a": reconnect_delays(port, None, min_s, max_s, count),
        "default rng b": reconnect_delays(port, None, min_s, max_s, count),
    }
    for name, delays in fleet.items():
        assert len(delays) == count, name
        for attempt, delay in enumerate(delays, start=1):
            ceiling = min(max_s, min_s * 2**attempt)
            assert min_s / 2 <= delay <= ceiling, (name, attempt, delay, delays)
        assert max(delays) <= max_s
        # The ceiling grew: some late delay exceeds what the first three attempts allow (8 × min).
        assert max(delays[4:]) > min_s * 2**3, (name, delays)
    # Jitter: devices that lost the same broker at the same moment do not retry in lockstep.
    names = list(fleet)
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            pairs = zip(fleet[first], fleet[second], strict=True)
            assert all(a != b for a, b in pairs), (first, second)
