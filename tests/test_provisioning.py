"""Secure deployment: ``sitewatch-collector provision-*`` and ``broker/mosquitto-secure.conf``.

The files the commands make are used as made: a real mosquitto runs the secure template (its
``/etc/mosquitto`` paths pointed at this test's files, its ``listener 8883`` at a free
loopback port) with the generated password file, ACL file and certificates, and clients log
in with the generated passwords over TLS, verifying the broker against the generated CA.
The end-to-end test runs a simulated agent and the collector, as processes, with the
generated configs, and finds the readings in a real influxd.

Non-arrival is proved by order, never by waiting: mosquitto delivers one client's messages to
a subscriber in the order they were published, and answers a client's packets in order, so a
message that should not arrive must have done so before a later one that does.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from sitewatch.agent.config import load_config as load_agent_config
from sitewatch.collector.cli import main as collector_main
from sitewatch.collector.provisioning.bundles import (
    BROKER_CA_FILE,
    BROKER_CERT_FILE,
    BROKER_KEY_FILE,
)
from sitewatch.collector.provisioning.mosquitto_auth import (
    DEFAULT_ACL_FILE,
    DEFAULT_PASSWORD_FILE,
    acl_blocks,
    password_hash,
    password_users,
    set_acl_rules,
    set_password,
    verify_password,
)
from sitewatch.collector.provisioning.pki import CertificateAuthority
from sitewatch.localrun import (
    BROKER_CONF,
    PROJECT_ROOT,
    Influxd,
    Mosquitto,
    free_port,
    have_mosquitto,
    wait_until,
)
from sitewatch.wire import DEVICE_KINDS, topic
from tests import processes

SECURE_CONF = PROJECT_ROOT / "broker" / "mosquitto-secure.conf"
DEVICES = ("plant-a/pi-01", "plant-a/pi-02", "plant-b/pi-01")
"""Logins provisioned for every broker test: two devices of one site, and a device of another
site with the same device id."""

Capture = pytest.CaptureFixture[str]


def _require_tools() -> None:
    if not have_mosquitto() or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed; the README's test command installs it")
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is not installed (apt-get install openssl)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the files, without a broker ------------------------------------------------------------


def test_provisioning_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    _require_tools()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "pi", "Zebra-42 ünï"],
                   check=True, capture_output=True)
    [line] = passwd.read_text().splitlines()
    user, reference = line.split(":", 1)
    _, scheme, iterations, salt, _ = reference.split("$")
    ours = password_hash("Zebra-42 ünï", salt=base64.b64decode(salt), iterations=int(iterations))
    assert (user, scheme) == ("pi", "7")
    assert ours == reference
    assert verify_password("Zebra-42 ünï", reference)
    assert not verify_password("Zebra-42 uni", reference)
    # Our own hashes: the format mosquitto_passwd writes, a fresh salt each time.
    first, second = password_hash("s"), password_hash("s")
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", first)
    assert first != second and verify_password("s", first) and verify_password("s", second)


def test_provisioning_password_file_update_replaces_only_that_login(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("# hand-made\nalice:$7$101$AAAA$BBBB\nplant-a/pi-01:old\nbob:$7$1$C$D\n")
    passwd.chmod(0o640)
    change = set_password(passwd, "plant-a/pi-01", "new-secret")
    assert (change.created, change.replaced) == (False, True)
    lines = passwd.read_text().splitlines()
    assert lines[0:2] == ["# hand-made", "alice:$7$101$AAAA$BBBB"]
    assert lines[3] == "bob:$7$1$C$D"
    assert verify_password("new-secret", lines[2].split(":", 1)[1])
    assert mode(passwd) == 0o640  # the file keeps its mode
    added = set_password(passwd, "plant-a/pi-02", "other")
    assert (added.created, added.replaced) == (False, False)
    assert password_users(passwd) == ["alice", "plant-a/pi-01", "bob", "plant-a/pi-02"]
    assert "new-secret" not in passwd.read_text()
    fresh = set_password(tmp_path / "new" / "passwd", "x", "y")
    assert fresh.created and mode(tmp_path / "new" / "passwd") == 0o640


def test_provisioning_acl_block_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("# mine\npattern read $SYS/broker/connection/%c/state\n\n"
                   "user grafana\ntopic read sitewatch/#\n")
    set_acl_rules(acl, "plant-a/pi-01", ["topic write a/1"], "first")
    set_acl_rules(acl, "plant-a/pi-02", ["topic write a/2"], "second")
    change = set_acl_rules(acl, "plant-a/pi-01", ["topic write b/1", "topic write b/2"], "again")
    assert change.replaced and not change.created
    preamble, blocks = acl_blocks(acl.read_text().splitlines())
    assert preamble[:2] == ["# mine", "pattern read $SYS/broker/connection/%c/state"]
    assert list(blocks) == ["grafana", "plant-a/pi-01", "plant-a/pi-02"]
    assert [line for line in blocks["grafana"] if line] == [
        "user grafana", "topic read sitewatch/#"]
    assert [line for line in blocks["plant-a/pi-01"] if line.startswith("topic")] == [
        "topic write b/1", "topic write b/2"]
    assert acl.read_text().count("user plant-a/pi-01") == 1


def run_cli(capsys: Capture, *args: str | Path) -> tuple[int, str]:
    """``sitewatch-collector`` in this process: exit status and everything it printed."""
    capsys.readouterr()
    status = collector_main([str(arg) for arg in args])
    out = capsys.readouterr()
    return status, out.out + out.err


def openssl_text(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout


def verified_by(ca: Path, cert: Path) -> bool:
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0


def test_provisioning_device_bundle_is_complete_private_and_reprovisionable(
    tmp_path: Path,
) -> None:
    _require_tools()
    bundle, ca_dir = tmp_path / "pi-01", tmp_path / "ca"
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    args = ["provision-device", "--site", "plant-a", "--device", "pi-01", "--out", str(bundle),
            "--ca-dir", str(ca_dir), "--broker-host", "broker.plant-a.example",
            "--password-file", str(passwd), "--acl-file", str(acl), "--config-dir", str(bundle)]
    first = subprocess.run(["sitewatch-collector", *args], capture_output=True, text=True,
                           check=False, cwd=tmp_path,
                           env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert first.returncode == 0, first.stderr
    password = (bundle / "mqtt.password").read_text().strip()
    assert len(password) >= 40
    assert password not in first.stdout + first.stderr

    # Secrets and keys are the owner's only; the CA directory too.
    assert {name: mode(bundle / name) for name in ("mqtt.password", "pi-01.key")} == {
        "mqtt.password": 0o600, "pi-01.key": 0o600}
    assert mode(ca_dir) == 0o700 and mode(ca_dir / "ca.key") == 0o600
    assert mode(bundle) == 0o700

    # The agent config is valid as written, TLS on, naming the bundle's files.
    config = load_agent_config(bundle / "agent.yaml")
    assert (config.site, config.device) == ("plant-a", "pi-01")
    assert (config.mqtt.host, config.mqtt.port) == ("broker.plant-a.example", 8883)
    assert config.mqtt.username == "plant-a/pi-01" and config.mqtt.password() == password
    assert config.mqtt.tls.enabled
    assert (config.mqtt.tls.ca_file, config.mqtt.tls.cert_file, config.mqtt.tls.key_file) == (
        bundle / "ca.crt", bundle / "pi-01.crt", bundle / "pi-01.key")
    assert [sensor.driver for sensor in config.sensor_configs()] == ["dht22"]

    # The certificate is the device's, for client authentication, from the CA.
    assert verified_by(ca_dir / "ca.crt", bundle / "pi-01.crt")
    text = openssl_text(bundle / "pi-01.crt")
    assert "CN = plant-a/pi-01" in text and "TLS Web Client Authentication" in text
    assert "CA:FALSE" in text

    # The broker's files: the login, and exactly the device's own topics.
    assert verify_password(password, passwd.read_text().split(":", 1)[1].strip())
    _, blocks = acl_blocks(acl.read_text().splitlines())
    assert [line for line in blocks["plant-a/pi-01"] if line.startswith("topic")] == [
        "topic write sitewatch/v1/plant-a/pi-01/telemetry",
        "topic write sitewatch/v1/plant-a/pi-01/event",
        "topic write sitewatch/v1/plant-a/pi-01/status",
        "topic write sitewatch/v1/plant-a/pi-01/skip",
        "topic read sitewatch/v1/plant-a/ack/pi-01",
    ]
    install = (bundle / "INSTALL.txt").read_text()
    assert f"sitewatch-agent check --config {bundle}/agent.yaml" in install

    # Again: same CA, new password and certificate, the login's line replaced.
    ca_cert = (ca_dir / "ca.crt").read_bytes()
    old_cert = (bundle / "pi-01.crt").read_bytes()
    again = subprocess.run(["sitewatch-collector", *args], capture_output=True, text=True,
                           check=False, cwd=tmp_path,
                           env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert again.returncode == 0, again.stderr
    new_password = (bundle / "mqtt.password").read_text().strip()
    assert new_password != password
    assert (ca_dir / "ca.crt").read_bytes() == ca_cert
    assert (bundle / "pi-01.crt").read_bytes() != old_cert
    assert verified_by(ca_dir / "ca.crt", bundle / "pi-01.crt")
    assert password_users(passwd) == ["plant-a/pi-01"]
    assert verify_password(new_password, passwd.read_text().split(":", 1)[1].strip())
    assert acl.read_text().count("user plant-a/pi-01") == 1


def test_provisioning_refuses_bad_ids_before_touching_anything(
    tmp_path: Path, capsys: Capture
) -> None:
    passwd = tmp_path / "passwd"
    status, output = run_cli(
        capsys, "provision-device", "--site", "plant-a", "--device", "pi/01", "--out",
        tmp_path / "out", "--password-file", passwd, "--acl-file", tmp_path / "acl")
    assert status == 2
    assert "device 'pi/01'" in output
    assert not passwd.exists() and not (tmp_path / "out").exists()
    status, output = run_cli(
        capsys, "provision-device", "--site", "plant-a", "--device", "pi-01", "--out",
        tmp_path / "out", "--password-file", passwd, "--acl-file", tmp_path / "acl",
        "--agent-template", tmp_path / "missing.yaml")
    assert status == 2 and "missing.yaml" in output
    # "ack" is the level of the collector's confirmation topics, never a device id.
    status, output = run_cli(
        capsys, "provision-device", "--site", "plant-a", "--device", "ack", "--out",
        tmp_path / "out", "--password-file", passwd, "--acl-file", tmp_path / "acl")
    assert status == 2 and "reserved" in output
    assert not passwd.exists() and not (tmp_path / "out").exists()


def test_provisioning_broker_certificate_carries_every_name(
    tmp_path: Path, capsys: Capture
) -> None:
    _require_tools()
    status, output = run_cli(capsys, "provision-broker", "--ca-dir", tmp_path / "ca", "--host",
                             "mqtt.plant-a.example", "--host", "10.0.0.5", "--out",
                             tmp_path / "broker")
    assert status == 0, output
    text = openssl_text(tmp_path / "broker" / "broker.crt")
    assert "DNS:mqtt.plant-a.example, IP Address:10.0.0.5" in text
    assert "TLS Web Server Authentication" in text
    assert mode(tmp_path / "broker" / "broker.key") == 0o600
    assert verified_by(tmp_path / "broker" / "ca.crt", tmp_path / "broker" / "broker.crt")
    install = (tmp_path / "broker" / "INSTALL.txt").read_text()
    for path in (BROKER_CA_FILE, BROKER_CERT_FILE, BROKER_KEY_FILE):
        assert str(path) in install
    status, output = run_cli(capsys, "provision-broker", "--ca-dir", tmp_path / "ca", "--host",
                             "bad,name", "--out", tmp_path / "broker")
    assert status == 2 and "neither an IP address nor a host name" in output


def _settings(text: str) -> dict[str, str]:
    """Uncommented ``key value`` lines of a mosquitto config."""
    pairs = (line.split(None, 1) for line in text.splitlines()
             if line.strip() and not line.startswith("#"))
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def test_provisioning_secure_template_keeps_broker_settings_and_names_the_files() -> None:
    secure = _settings(SECURE_CONF.read_text())
    plain = _settings(BROKER_CONF.read_text())
    assert {key: secure.get(key) for key in plain} == plain
    assert {key: secure[key] for key in (
        "listener", "allow_anonymous", "password_file", "acl_file", "cafile", "certfile",
        "keyfile", "tls_version")} == {
        "listener": "8883", "allow_anonymous": "false",
        "password_file": str(DEFAULT_PASSWORD_FILE), "acl_file": str(DEFAULT_ACL_FILE),
        "cafile": str(BROKER_CA_FILE), "certfile": str(BROKER_CERT_FILE),
        "keyfile": str(BROKER_KEY_FILE), "tls_version": "tlsv1.2",
    }


# -- a broker running the template with the generated files -----------------------------------


@dataclass
class Deployment:
    """Everything provisioned for one test: bundles, broker files, and all the CLI printed."""

    root: Path
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def ca(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def passwd(self) -> Path:
        return self.root / "broker-files" / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "broker-files" / "acl"

    @property
    def broker_bundle(self) -> Path:
        return self.root / "broker-bundle"

    @property
    def collector_bundle(self) -> Path:
        return self.root / "collector-bundle"

    def bundle(self, login: str) -> Path:
        return self.root / login.replace("/", "--")

    def password(self, login: str) -> str:
        if login == "collector":
            return (self.collector_bundle / "collector-mqtt-password").read_text().strip()
        return (self.bundle(login) / "mqtt.password").read_text().strip()

    def passwords(self) -> list[str]:
        return [self.password(login) for login in ("collector", *DEVICES)]

    def provision_device(self, capsys: Capture, login: str, template: Path | None = None) -> None:
        site, device = login.split("/")
        bundle = self.bundle(login)
        args: list[str | Path] = [
            "provision-device", "--site", site, "--device", device, "--out", bundle,
            "--config-dir", bundle, *self.client_args()]
        if template is not None:
            args += ["--agent-template", template]
        self.run(capsys, *args)

    def client_args(self) -> list[str | Path]:
        return ["--ca-dir", self.root / "ca", "--broker-host", "127.0.0.1", "--broker-port",
                str(self.port), "--password-file", self.passwd, "--acl-file", self.acl]

    def run(self, capsys: Capture, *args: str | Path) -> None:
        status, output = run_cli(capsys, *args)
        self.output.append(output)
        assert status == 0, output


def provision(root: Path, capsys: Capture, template: Path | None = None) -> Deployment:
    """Provision the broker (127.0.0.1, localhost), the collector and ``DEVICES`` (the first
    with ``template`` as its agent template)."""
    _require_tools()
    deployment = Deployment(root, free_port())
    deployment.run(capsys, "provision-broker", "--ca-dir", root / "ca", "--host", "127.0.0.1",
                    "--host", "localhost", "--out", deployment.broker_bundle)
    collector = deployment.collector_bundle
    deployment.run(capsys, "provision-collector", "--out", collector, "--config-dir", collector,
                    *deployment.client_args())
    for index, login in enumerate(DEVICES):
        deployment.provision_device(capsys, login, template if index == 0 else None)
    return deployment


def secure_broker(deployment: Deployment, *, require_certificate: bool = False) -> Mosquitto:
    """A mosquitto running ``broker/mosquitto-secure.conf`` with the deployment's files."""
    text = SECURE_CONF.read_text()
    files = {
        BROKER_CA_FILE: deployment.broker_bundle / "ca.crt",
        BROKER_CERT_FILE: deployment.broker_bundle / "broker.crt",
        BROKER_KEY_FILE: deployment.broker_bundle / "broker.key",
        DEFAULT_PASSWORD_FILE: deployment.passwd,
        DEFAULT_ACL_FILE: deployment.acl,
    }
    for installed, here in files.items():
        assert f" {installed}\n" in text, installed
        text = text.replace(f" {installed}\n", f" {here}\n")
    assert "\nlistener 8883\n" in text and "\nrequire_certificate false\n" in text
    text = text.replace("\nlistener 8883\n", "\n")  # Mosquitto's own loopback listener instead
    if require_certificate:
        text = text.replace("\nrequire_certificate false\n", "\nrequire_certificate true\n")
    assert not any("/etc/mosquitto" in value for value in _settings(text).values())
    broker = Mosquitto(deployment.root / "mosquitto", deployment.port, listener_conf=text,
                       allow_anonymous=False)
    broker.start()
    return broker


@pytest.fixture
def deployment(tmp_path: Path, capsys: Capture) -> Deployment:
    return provision(tmp_path / "deploy", capsys)


@pytest.fixture
def broker(deployment: Deployment) -> Iterator[Mosquitto]:
    server = secure_broker(deployment)
    yield server
    server.kill()


class Client:
    """A test MQTT client logging in over TLS (the broker verified against ``ca``, host name
    included); keeps what it receives and waits for each acknowledgement."""

    def __init__(
        self, port: int, ca: Path, username: str | None, password: str | None, *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.connack: str | None = None
        self._acks: dict[int, Any] = {}
        self._done = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol,
                                  client_id=f"test-{uuid.uuid4().hex[:8]}")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = self._on_subscribe
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *args: self.disconnected.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        with self._done:
            self.connack = str(reason_code)
            self._done.notify_all()

    def _on_message(self, client, userdata, message):  # type: ignore[no-untyped-def]
        with self._done:
            self.messages.append((message.topic, bytes(message.payload)))
            self._done.notify_all()

    def _on_ack(self, client, userdata, mid, reason_code, properties):  # type: ignore[no-untyped-def]
        with self._done:
            self._acks[mid] = reason_code
            self._done.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
        with self._done:
            self._acks[mid] = [str(code) for code in reason_codes]
            self._done.notify_all()

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        with self._done:
            assert self._done.wait_for(condition, 10), f"no {what} within 10 s"

    def connect(self) -> str:
        """Connect; the CONNACK's reason (``Success``, ``Not authorized``, ...)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None
        if self.connack != "Success":
            self.close()
        return self.connack

    def publish(self, topic: str, payload: bytes) -> str:
        """Publish at QoS1 and wait for the PUBACK; its reason (MQTT 5) or ``Success``."""
        info = self.client.publish(topic, payload, qos=1)
        self._wait(lambda: info.mid in self._acks, f"PUBACK for {topic}")
        return str(self._acks[info.mid])

    def subscribe(self, *filters: str) -> list[str]:
        """Subscribe at QoS1 and wait for the SUBACK; its reasons."""
        _, mid = self.client.subscribe([(name, 1) for name in filters])
        assert mid is not None
        self._wait(lambda: mid in self._acks, "SUBACK")
        codes: list[str] = self._acks[mid]
        return codes

    def wait_for(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait until ``(topic, payload)`` arrives; everything received up to and with it."""
        self._wait(lambda: (topic, payload) in self.messages, f"{payload!r} on {topic}")
        with self._done:
            return self.messages[: self.messages.index((topic, payload)) + 1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def login(deployment: Deployment, clients: list[Client], name: str, password: str | None = None,
          **options: Any) -> Client:
    """A connected client logged in as ``name`` (the collector's login is ``collector``)."""
    username = "sitewatch-collector" if name == "collector" else name
    client = Client(deployment.port, deployment.ca, username,
                    deployment.password(name) if password is None else password, **options)
    clients.append(client)
    reason = client.connect()
    assert reason == "Success", reason
    return client


def attempt(deployment: Deployment, username: str | None, password: str | None) -> str:
    """The CONNACK's reason for one login attempt (the connection is closed again)."""
    client = Client(deployment.port, deployment.ca, username, password)
    reason = client.connect()
    if reason == "Success":
        client.close()
    return reason


def plain_mqtt_answer(port: int) -> bytes:
    """What the TLS port answers to a plain MQTT 3.1.1 CONNECT (empty client id)."""
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connect)
        try:
            return sock.recv(64)
        except ConnectionResetError:
            return b""


def test_provisioning_tls_logins_work_and_wrong_ones_are_refused(
    deployment: Deployment, broker: Mosquitto, clients: list[Client]
) -> None:
    login(deployment, clients, "collector")
    for device in DEVICES:
        login(deployment, clients, device)
    assert attempt(deployment, "plant-a/pi-01", deployment.password("plant-a/pi-02")) == (
        "Not authorized")
    # The same device id on another site is another login with its own password.
    assert attempt(deployment, "plant-a/pi-01", deployment.password("plant-b/pi-01")) == (
        "Not authorized")
    assert attempt(deployment, "plant-a/pi-01", None) == "Not authorized"
    assert attempt(deployment, None, None) == "Not authorized"
    assert attempt(deployment, "nobody", "guess") == "Not authorized"
    # TLS only: a plain MQTT CONNECT gets no CONNACK (0x20), only a closed connection.
    assert not plain_mqtt_answer(deployment.port).startswith(b"\x20")
    # The broker is verified: a client trusting another CA does not get through.
    other_ca, _ = CertificateAuthority.open_or_create(deployment.root / "other-ca")
    other = Client(deployment.port, other_ca.cert, "plant-a/pi-01",
                   deployment.password("plant-a/pi-01"))
    with pytest.raises(ssl.SSLCertVerificationError):
        other.connect()
    log = broker.log_path.read_text()
    assert "as test-" in log  # the logins above really reached the broker
    for secret in deployment.passwords():
        assert secret not in log


def test_provisioning_device_cannot_publish_as_another_device(
    deployment: Deployment, broker: Mosquitto, clients: list[Client]
) -> None:
    collector = login(deployment, clients, "collector")
    assert collector.subscribe("sitewatch/#", "homeassistant/#") == ["Granted QoS 1"] * 2
    device = login(deployment, clients, "plant-a/pi-01", protocol=MQTTProtocolVersion.MQTTv5)
    spoofed = [
        "sitewatch/v1/plant-a/pi-02/telemetry",
        "sitewatch/v1/plant-a/pi-02/event",
        "sitewatch/v1/plant-a/pi-02/status",
        "sitewatch/v1/plant-b/pi-01/telemetry",  # its own device id, on another site
        "sitewatch/v1/plant-a/pi-01/other",
        "sitewatch/v1/plant-a/ack/pi-01",  # its confirmations come from the collector only
        "sitewatch/v1/plant-a/ack/pi-02",
        "sitewatch/v1/_collector/deadletter",
        "sitewatch/v1/plant-a/alerts/pi-01/x/y",
        "sitewatch/state/plant-a/pi-02",
        "homeassistant/device/sitewatch__plant-a__pi-02/config",
    ]
    reasons = {topic: device.publish(topic, b"spoofed") for topic in spoofed}
    # Its own topics are allowed; sent last on the same connection, so it arrives last.
    own = [topic("plant-a", "pi-01", kind) for kind in DEVICE_KINDS]
    assert own[-1] != own[0] == "sitewatch/v1/plant-a/pi-01/telemetry"
    for name in own:
        assert device.publish(name, b"mine") == "Success"
    received = collector.wait_for(own[-1], b"mine")
    assert received == [(name, b"mine") for name in own]
    # MQTT 5 even says so in each PUBACK.
    assert reasons == dict.fromkeys(spoofed, "Not authorized")


def test_provisioning_device_reads_only_its_own_confirmations(
    deployment: Deployment, broker: Mosquitto, clients: list[Client]
) -> None:
    collector = login(deployment, clients, "collector")
    collector.subscribe("sitewatch/#")
    reader = login(deployment, clients, "plant-a/pi-02")
    assert reader.subscribe("#", "sitewatch/#", "sitewatch/v1/plant-a/pi-01/telemetry",
                            "sitewatch/v1/plant-a/ack/+") == ["Granted QoS 1"] * 4
    writer = login(deployment, clients, "plant-a/pi-01")
    writer.publish("sitewatch/v1/plant-a/pi-01/telemetry", b"private")
    collector.wait_for("sitewatch/v1/plant-a/pi-01/telemetry", b"private")
    # The broker routed "private" before the collector's confirmations below, which reach the
    # reader in the order the collector sent them: whatever the reader may not see would come
    # before the one it may.
    collector.publish("sitewatch/v1/plant-a/ack/pi-01", b"for pi-01")
    collector.publish("sitewatch/v1/plant-b/ack/pi-02", b"for another site's pi-02")
    collector.publish("sitewatch/v1/plant-a/ack/pi-02", b"for pi-02")
    received = reader.wait_for("sitewatch/v1/plant-a/ack/pi-02", b"for pi-02")
    assert received == [("sitewatch/v1/plant-a/ack/pi-02", b"for pi-02")]


def test_provisioning_again_replaces_the_password_after_a_reload(
    deployment: Deployment, broker: Mosquitto, clients: list[Client], capsys: Capture
) -> None:
    old = deployment.password("plant-a/pi-01")
    before = login(deployment, clients, "plant-a/pi-01")
    other = login(deployment, clients, "plant-a/pi-02")
    deployment.provision_device(capsys, "plant-a/pi-01")
    new = deployment.password("plant-a/pi-01")
    assert new != old
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)  # what `systemctl reload mosquitto` does

    # The broker re-checks connected clients against the reloaded file: the old password's
    # connection is closed, the others stay.
    assert before.disconnected.wait(10), "the old password's connection survived the reload"
    assert attempt(deployment, "plant-a/pi-01", new) == "Success"
    assert attempt(deployment, "plant-a/pi-01", old) == "Not authorized"
    assert other.publish("sitewatch/v1/plant-a/pi-02/telemetry", b"still here") == "Success"
    assert not other.disconnected.is_set()
    assert password_users(deployment.passwd) == ["sitewatch-collector", *DEVICES]


# -- end to end: an agent and the collector with the generated configs ---------------------------


def test_provisioning_agent_and_collector_deliver_over_tls_with_generated_files(
    tmp_path: Path, capsys: Capture, influxd: Influxd,
    write_agent_config: Callable[..., Path],
) -> None:
    # The agent template: this test's simulated sensors and outbox; provisioning replaces
    # its connection with the generated login, TLS files and broker address.
    template = write_agent_config(1, device="template", name="template.yaml")
    deployment = provision(tmp_path / "deploy", capsys, template)
    agent_config = deployment.bundle(DEVICES[0]) / "agent.yaml"
    generated = yaml.safe_load(agent_config.read_text())
    assert generated["mqtt"]["tls"]["cert_file"].endswith("pi-01.crt")
    assert generated["mqtt"]["reconnect_min_s"] == 0.2  # kept from the template

    # Client certificates required as well: both sides present theirs.
    broker = secure_broker(deployment, require_certificate=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mqtt = yaml.safe_load((deployment.collector_bundle / "collector-mqtt.yaml").read_text())
        collector_config = tmp_path / "collector.yaml"
        collector_config.write_text(yaml.safe_dump({
            **mqtt,
            "influx": {"api": "v1", "url": f"http://127.0.0.1:{influxd.port}",
                       "database": "sitewatch", "flush_interval_s": 0.2},
            "state_dir": str(tmp_path / "collector-state"),
            "metrics": {"port": free_port()},
        }))
        logs = {"collector": tmp_path / "collector.log", "agent": tmp_path / "agent.log"}
        procs.append(processes.start_collector(collector_config, logs["collector"]))
        procs.append(processes.start_agent(agent_config, logs["agent"]))

        def stored() -> int:
            rows = influxd.query("SELECT count(quality) FROM environment WHERE device = 'pi-01'"
                                 " AND site = 'plant-a'", "sitewatch")
            return int(rows[0]["count"]) if rows else 0

        wait_until(lambda: stored() >= 20, 60, "pi-01's readings in InfluxDB")
        # The collector's confirmations reach the agent: the ACL lets it read its ack topic.
        wait_until(lambda: processes.agent_counts(agent_config)["confirmed"] > 0, 30,
                   "the collector's confirmations at the agent")
        for proc in procs:
            assert processes.stop_process(proc, 30) == 0
        assert "connected to 127.0.0.1" in logs["agent"].read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        broker.kill()

    texts = {
        "provisioning output": "\n".join(deployment.output),
        "broker log": broker.log_path.read_text(),
        **{f"{name} log": path.read_text() for name, path in logs.items()},
        **{str(path): path.read_text() for path in deployment.root.rglob("*")
           if path.is_file() and path.suffix in (".yaml", ".txt", "")
           and not path.name.endswith("password") and path.parent.name != "ca"},
    }
    assert "peer did not return a certificate" not in texts["broker log"]
    for secret in deployment.passwords():
        leaks = [name for name, text in texts.items() if secret in text]
        assert leaks == [], f"a password appears in {leaks}"
