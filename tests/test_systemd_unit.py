"""The agent's systemd unit: the settings the agent and the hardware depend on are present."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import UNIT_PYTHON_ENV

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "sitewatch-agent.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value in file order (systemd keys may repeat, unlike INI)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def test_systemd_unit_parser_keeps_repeated_keys() -> None:
    parsed = parse_unit("[Service]\n# note\nDeviceAllow=a rw\nDeviceAllow=b \\\n rw\n")
    assert parsed == {"Service": {"DeviceAllow": ["a rw", "b rw"]}}


def test_systemd_unit_lifecycle(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30",
        "Restart": "on-failure", "RestartSec": "5", "TimeoutStopSec": "15",
        "KillMode": "control-group",
    }
    assert {key: service[key][-1] for key in expected} == expected
    assert unit["Unit"]["StartLimitIntervalSec"] == ["600"]
    assert unit["Unit"]["StartLimitBurst"] == ["10"]
    assert service["ExecStart"] == [
        "/opt/sitewatch/.venv/bin/sitewatch-agent run --config /etc/sitewatch/agent.yaml"
    ]


def test_systemd_unit_identity_and_directories(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert service["User"] == ["sitewatch"] and service["Group"] == ["sitewatch"]
    assert set(service["SupplementaryGroups"][0].split()) == {"gpio", "i2c", "spi"}
    assert service["StateDirectory"] == ["sitewatch-agent"]
    assert service["RuntimeDirectory"] == ["sitewatch-agent"]
    # lgpio creates its FIFO in the cwd; LG_WD must name the same writable directory.
    assert service["WorkingDirectory"] == ["/run/sitewatch-agent"]
    assert "LG_WD=/run/sitewatch-agent" in service["Environment"]


def test_systemd_unit_python_flags_are_the_ones_the_tests_run_the_agent_with(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = unit["Service"]
    environment = dict(value.partition("=")[::2] for value in service["Environment"])
    assert {key: environment.get(key) for key in UNIT_PYTHON_ENV} == UNIT_PYTHON_ENV
    # The -OO bytecode goes to a directory the hardened unit can write.
    assert service["CacheDirectory"] == ["sitewatch-agent"]
    assert environment["PYTHONPYCACHEPREFIX"].startswith("/var/cache/sitewatch-agent/")


def test_systemd_unit_hardening_keeps_gpio_usable(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables",
                "ProtectControlGroups"):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert service["DevicePolicy"] == ["closed"]
    # Class names as the kernel registers them in /proc/devices: gpiolib "gpiochip",
    # i2c-dev "i2c", spidev "spi".
    assert sorted(service["DeviceAllow"]) == ["char-gpiochip rw", "char-i2c rw", "char-spi rw"]
    assert "PrivateDevices" not in service
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


COLLECTOR_UNIT = UNIT.with_name("sitewatch-collector.service")


def test_systemd_collector_unit_is_hardened_like_the_agent() -> None:
    unit = parse_unit(COLLECTOR_UNIT.read_text())
    service = unit["Service"]
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30",
        "Restart": "on-failure", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "PrivateDevices": "yes",
        "StateDirectory": "sitewatch-collector", "User": "sitewatch",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    assert {key: service[key][-1] for key in expected} == expected
    assert service["ExecStart"] == [
        "/opt/sitewatch/.venv/bin/sitewatch-collector run --config /etc/sitewatch/collector.yaml"
    ]


@pytest.mark.parametrize("path", [UNIT, COLLECTOR_UNIT], ids=lambda p: p.name)
def test_systemd_unit_passes_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's binary exists; the install path is not on this machine.
    program = path.stem  # sitewatch-agent or sitewatch-collector
    module = "sitewatch.agent.cli" if program.endswith("agent") else "sitewatch.collector.cli"
    text = path.read_text().replace(
        f"/opt/sitewatch/.venv/bin/{program}", f"{sys.executable} -m {module}"
    )
    copy = tmp_path / path.name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    # verify exits 0 even for unknown keys; it reports them on stderr with the file's name.
    complaints = [line for line in result.stderr.splitlines() if path.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []
