"""What each provisioning command makes: a device's, the collector's or the broker's files.

A *bundle* is a directory of files for one machine, with an ``INSTALL.txt`` that says where
each file goes and with which owner and mode. Secrets in it (the MQTT password, private
keys) have mode 0600; the password is written only there and in hashed form to the broker's
password file, never printed or logged.

- ``provision_device``: the device's login (``<site>/<device>``) in the password file, its
  ACL block, and a bundle with ``agent.yaml`` (TLS on, pointing at the files below under
  ``config_dir``), ``mqtt.password`` and, with a CA, ``ca.crt`` and ``<device>.crt``/``.key``.
- ``provision_collector``: the same for the collector's login, with ``collector-mqtt.yaml``
  (the ``mqtt:`` section of ``collector.yaml``) instead of an agent config.
- ``provision_broker``: the CA (made when absent) and the broker's server certificate.

Provisioning a login again gives it a new password (and certificate) and replaces its lines.
The broker reads password and ACL changes on ``systemctl reload mosquitto`` (SIGHUP).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from sitewatch.collector.provisioning.mosquitto_auth import (
    collector_rules,
    device_rules,
    device_username,
    new_password,
    replace_file,
    set_acl_rules,
    set_password,
)
from sitewatch.collector.provisioning.pki import CertificateAuthority, PkiError, subject_alt_names
from sitewatch.configfile import issues_from
from sitewatch.wire import ACK_LEVEL, Identifier

__all__ = [
    "BROKER_CA_FILE",
    "BROKER_CERT_FILE",
    "BROKER_KEY_FILE",
    "DEFAULT_CONFIG_DIR",
    "AuthFiles",
    "Broker",
    "ProvisioningError",
    "provision_broker",
    "provision_collector",
    "provision_device",
]

DEFAULT_CONFIG_DIR = Path("/etc/sitewatch")
"""Where agent and collector keep their config and secrets (the systemd units' assumption)."""

BROKER_CA_FILE = Path("/etc/mosquitto/ca_certificates/sitewatch-ca.crt")
BROKER_CERT_FILE = Path("/etc/mosquitto/certs/sitewatch-broker.crt")
BROKER_KEY_FILE = Path("/etc/mosquitto/certs/sitewatch-broker.key")
"""Where ``broker/mosquitto-secure.conf`` reads the broker's TLS files."""

_SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644
_DEFAULT_OUTBOX = "/var/lib/sitewatch-agent/outbox.db"
_DEFAULT_SENSORS: list[dict[str, Any]] = [
    {"id": "room", "driver": "dht22", "pin": "GPIO17", "backend": "kernel"},
]
# Agent mqtt keys that provisioning sets; a template's other mqtt keys (back-off, keepalive,
# in-flight window) are kept.
_CONNECTION_KEYS = ("host", "port", "client_id", "username", "password_file", "password_env",
                    "tls")


class ProvisioningError(RuntimeError):
    """Provisioning cannot go on; the message says why (never with a secret in it)."""


@dataclass(frozen=True)
class Broker:
    """Where clients reach the broker: ``host`` (a name or address its certificate carries)
    and ``port`` (8883: MQTT over TLS)."""

    host: str
    port: int = 8883


@dataclass(frozen=True)
class AuthFiles:
    """The broker's password file and ACL file (updated in place)."""

    password_file: Path
    acl_file: Path


def _identifier(value: str, what: str) -> str:
    try:
        return TypeAdapter(Identifier).validate_python(value)
    except ValidationError:
        raise ProvisioningError(
            f"{what} {value!r}: use 1-64 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit"
        ) from None


def _write(path: Path, text: str, mode: int) -> None:
    """Write a bundle file with exactly ``mode`` (an old copy's mode is not kept)."""
    replace_file(path, text, mode=mode, keep_existing=False)


def _bundle_dir(out_dir: Path) -> Path:
    """``out_dir``, created with mode 0700 when new (an existing one keeps its mode: its
    secrets are 0600 anyway)."""
    if not out_dir.is_dir():
        out_dir.mkdir(parents=True)
        out_dir.chmod(0o700)
    return out_dir


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class _Tls:
    """TLS files in a bundle (names) and where they are installed (paths in configs)."""

    ca_name: str | None
    cert_name: str | None
    key_name: str | None

    def config(self, config_dir: Path) -> dict[str, Any]:
        tls: dict[str, Any] = {"enabled": True}
        for key, name in (("ca_file", self.ca_name), ("cert_file", self.cert_name),
                          ("key_file", self.key_name)):
            if name is not None:
                tls[key] = str(config_dir / name)
        return tls


_NO_CA = _Tls(None, None, None)


def _tls_files(ca_dir: Path | None, stem: str) -> _Tls:
    """The TLS files a bundle will hold: with a CA, ``ca.crt`` and ``<stem>.crt``/``.key``."""
    return _NO_CA if ca_dir is None else _Tls("ca.crt", f"{stem}.crt", f"{stem}.key")


def _client_certificate(
    ca_dir: Path | None, common_name: str, out_dir: Path, tls: _Tls, report: list[str]
) -> None:
    """With a CA: copy its certificate and issue a client certificate into ``out_dir``."""
    if ca_dir is None or tls.cert_name is None or tls.key_name is None:
        report.append("TLS: the broker is verified with the system's CA certificates "
                      "(no --ca-dir); no client certificate")
        return
    ca, created = CertificateAuthority.open_or_create(ca_dir)
    if created:
        report.append(f"CA: created {ca.cert} and {ca.key} (keep the key root-only)")
    shutil.copyfile(ca.cert, out_dir / "ca.crt")
    (out_dir / "ca.crt").chmod(_PUBLIC_MODE)
    ca.issue(common_name, "client", out_dir / tls.cert_name, out_dir / tls.key_name)
    report.append(f"client certificate CN={common_name} signed by {ca.cert}")


def _login(
    auth: AuthFiles, username: str, rules: list[str], comment: str, report: list[str]
) -> str:
    """A new password for ``username`` in the password file and its ACL block."""
    password = new_password()
    report.append(set_password(auth.password_file, username, password)
                  .describe(f"login {username!r}"))
    report.append(set_acl_rules(auth.acl_file, username, rules, comment)
                  .describe(f"ACL block of {username!r}"))
    return password


def _install_lines(config_dir: Path, secret: list[str], public: list[str]) -> list[str]:
    return [
        f"  install -d -m 0750 -o root -g sitewatch {config_dir}",
        f"  install -m 0640 -o root -g sitewatch {' '.join(secret)} {config_dir}/",
        *([f"  install -m 0644 -o root -g sitewatch {' '.join(public)} {config_dir}/"]
          if public else []),
    ]


def _agent_config(
    site: str, device: str, broker: Broker, username: str, config_dir: Path, tls: _Tls,
    template: dict[str, Any] | None,
) -> dict[str, Any]:
    rest = dict(template or {"outbox": {"path": _DEFAULT_OUTBOX}, "sensors": _DEFAULT_SENSORS})
    kept_mqtt = {key: value for key, value in dict(rest.pop("mqtt", None) or {}).items()
                 if key not in _CONNECTION_KEYS}
    rest.pop("site", None)
    rest.pop("device", None)
    mqtt = {"host": broker.host, "port": broker.port, "username": username,
            "password_file": str(config_dir / "mqtt.password"), "tls": tls.config(config_dir),
            **kept_mqtt}
    return {"site": site, "device": device, "mqtt": mqtt, **rest}


def _validated(check: Callable[[dict[str, Any]], object], data: dict[str, Any],
               what: str) -> None:
    try:
        check(data)
    except ValidationError as error:
        problems = "; ".join(str(issue) for issue in issues_from(error))
        raise ProvisioningError(f"the {what} would be invalid: {problems}") from None


def _load_template(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ProvisioningError(f"cannot read the agent template {path}: {error}") from None
    if not isinstance(data, dict):
        raise ProvisioningError(f"the agent template {path} is not a YAML mapping")
    return data


def provision_device(
    site: str,
    device: str,
    out_dir: Path,
    *,
    broker: Broker,
    auth: AuthFiles,
    config_dir: Path = DEFAULT_CONFIG_DIR,
    ca_dir: Path | None = None,
    agent_template: Path | None = None,
) -> list[str]:
    """Give a device its login, ACL block and bundle; returns what was done, line by line.

    ``agent_template``: an agent config whose sections other than ``site``, ``device`` and
    the connection part of ``mqtt`` are kept (sensors, outbox, ...); without it the config
    has one DHT22 to replace with the device's real sensors.
    """
    from sitewatch.agent.config import AgentConfig

    site, device = _identifier(site, "site"), _identifier(device, "device")
    if device == ACK_LEVEL:
        raise ProvisioningError(f"device {device!r}: reserved for the collector's "
                                "confirmation topics; choose another id")
    template = _load_template(agent_template) if agent_template is not None else None
    username = device_username(site, device)
    report = [f"device {site}/{device}: MQTT login {username!r}"]
    tls = _tls_files(ca_dir, device)
    config = _agent_config(site, device, broker, username, config_dir, tls, template)
    _validated(AgentConfig.model_validate, config, "agent config")
    bundle = _bundle_dir(out_dir)
    _client_certificate(ca_dir, username, bundle, tls, report)
    password = _login(auth, username, device_rules(site, device),
                      f"sitewatch device {device} of site {site}: its own topics only",
                      report)
    _write(bundle / "mqtt.password", password + "\n", _SECRET_MODE)
    header = (f"## sitewatch agent for device {device} of site {site}, made by\n"
              f"## sitewatch-collector provision-device. Install as {config_dir}/agent.yaml.\n"
              + ("" if template else "## Replace the example sensor with this device's "
                 "sensors (see firmware_config/agent.example.yaml).\n"))
    _write(bundle / "agent.yaml", header + _yaml(config), 0o640)
    report.append(f"agent.yaml: broker {broker.host}:{broker.port} over TLS")
    secret = ["agent.yaml", "mqtt.password", *([tls.key_name] if tls.key_name else [])]
    public = [name for name in (tls.ca_name, tls.cert_name) if name]
    install = [
        f"sitewatch device {device} of site {site} (MQTT login {username!r}).",
        "",
        "mqtt.password is the device's secret: copy it to this device only, then delete this",
        "copy. The broker knows the login once it has reloaded: on the broker run",
        "  systemctl reload mosquitto",
        "",
        "On the device, as root, in a copy of this directory (the sitewatch user and group",
        "exist once the agent is installed: docs/install.md):",
        *_install_lines(config_dir, secret, public),
        f"  sitewatch-agent check --config {config_dir}/agent.yaml",
        "  systemctl restart sitewatch-agent",
        "",
    ]
    _write(bundle / "INSTALL.txt", "\n".join(install), _PUBLIC_MODE)
    report.append(f"wrote {', '.join([*secret, *public, 'INSTALL.txt'])} to {bundle} "
                  f"(the secrets with mode 0600)")
    report.append("next: systemctl reload mosquitto on the broker; on the device: "
                  f"{bundle / 'INSTALL.txt'}")
    return report


def provision_collector(
    out_dir: Path,
    *,
    broker: Broker,
    auth: AuthFiles,
    username: str = "sitewatch-collector",
    client_id: str = "sitewatch-collector-1",
    config_dir: Path = DEFAULT_CONFIG_DIR,
    ca_dir: Path | None = None,
    extra_topics: list[str] | None = None,
) -> list[str]:
    """Give the collector its login (reads everything under ``sitewatch/``), ACL block and
    bundle with the ``mqtt:`` section of its config; returns what was done.
    ``extra_topics``: topic filters outside ``sitewatch/`` and ``homeassistant/`` that the
    collector's config publishes to (read and write)."""
    from sitewatch.collector.config import CollectorMqttConfig

    username = _identifier(username, "username")
    rules = collector_rules(extra_topics)
    report = [f"collector: MQTT login {username!r}, client id {client_id!r}"]
    tls = _tls_files(ca_dir, "collector")
    mqtt = {"host": broker.host, "port": broker.port, "client_id": client_id,
            "username": username,
            "password_file": str(config_dir / "collector-mqtt-password"),
            "tls": tls.config(config_dir)}
    _validated(CollectorMqttConfig.model_validate, mqtt, "collector's mqtt section")
    bundle = _bundle_dir(out_dir)
    _client_certificate(ca_dir, username, bundle, tls, report)
    password = _login(auth, username, rules,
                      "sitewatch collector: reads all sitewatch traffic", report)
    _write(bundle / "collector-mqtt-password", password + "\n", _SECRET_MODE)
    header = ("## The collector's broker connection, made by sitewatch-collector "
              "provision-collector.\n"
              f"## Use it as the mqtt: section of {config_dir}/collector.yaml.\n")
    _write(bundle / "collector-mqtt.yaml", header + _yaml({"mqtt": mqtt}), _PUBLIC_MODE)
    report.append(f"collector-mqtt.yaml: broker {broker.host}:{broker.port} over TLS")
    secret = ["collector-mqtt-password", *([tls.key_name] if tls.key_name else [])]
    public = [name for name in (tls.ca_name, tls.cert_name) if name]
    install = [
        f"sitewatch collector (MQTT login {username!r}).",
        "",
        "On the broker: systemctl reload mosquitto (it then knows the login).",
        "On the collector's machine, as root, in this directory:",
        *_install_lines(config_dir, secret, public),
        f"then put the mqtt: section of collector-mqtt.yaml into {config_dir}/collector.yaml",
        "and run: systemctl restart sitewatch-collector",
        "",
    ]
    _write(bundle / "INSTALL.txt", "\n".join(install), _PUBLIC_MODE)
    report.append(f"wrote {', '.join([*secret, *public, 'collector-mqtt.yaml', 'INSTALL.txt'])}"
                  f" to {bundle} (the secrets with mode 0600)")
    return report


def provision_broker(ca_dir: Path, hosts: list[str], out_dir: Path) -> list[str]:
    """The CA (made when absent) and a server certificate for ``hosts`` (every name and
    address clients use to reach the broker), in a bundle; returns what was done."""
    try:
        subject_alt_names(hosts)
    except PkiError as error:
        raise ProvisioningError(str(error)) from None
    report: list[str] = []
    ca, created = CertificateAuthority.open_or_create(ca_dir)
    if created:
        report.append(f"CA: created {ca.cert} and {ca.key} (keep the key root-only)")
    bundle = _bundle_dir(out_dir)
    ca.issue(hosts[0] if hosts else "broker", "server", bundle / "broker.crt",
             bundle / "broker.key", hosts=hosts)
    shutil.copyfile(ca.cert, bundle / "ca.crt")
    (bundle / "ca.crt").chmod(_PUBLIC_MODE)
    report.append(f"broker certificate for {', '.join(hosts)} signed by {ca.cert}")
    install = [
        "The broker's TLS files. On the broker, as root, in this directory:",
        f"  install -m 0644 ca.crt {BROKER_CA_FILE}",
        f"  install -m 0644 broker.crt {BROKER_CERT_FILE}",
        f"  install -m 0640 -o root -g mosquitto broker.key {BROKER_KEY_FILE}",
        "  install -m 0644 SOURCE/broker/mosquitto-secure.conf \\",
        "      /etc/mosquitto/conf.d/sitewatch.conf   (SOURCE: the sitewatch source tree)",
        "  systemctl restart mosquitto",
        "Clients reach the broker only by the names in the certificate: "
        + ", ".join(hosts) + ".",
        "",
    ]
    _write(bundle / "INSTALL.txt", "\n".join(install), _PUBLIC_MODE)
    report.append(f"wrote ca.crt, broker.crt, broker.key, INSTALL.txt to {bundle} "
                  "(the key with mode 0600)")
    return report
