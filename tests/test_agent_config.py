"""Bad agent configs are refused with the path of the field and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.agent.config import load_config, parse_config
from sitewatch.agent.errors import ConfigError


def base(tmp_path: Path) -> dict[str, Any]:
    return {
        "site": "plant-a",
        "device": "pi-01",
        "mqtt": {"host": "broker.local"},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "hardware": {"pin_factory": "mock"},
        "sensors": [
            {"id": "compressor", "driver": "gpio_input", "pin": "GPIO4", "role": "running"},
            {"id": "cold-room", "driver": "dht22", "pin": 17, "interval_s": 30},
        ],
    }


def issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return [str(issue) for issue in caught.value.issues]


def test_agent_config_base_is_valid(tmp_path: Path) -> None:
    config = parse_config(base(tmp_path))
    assert [s.id for s in config.sensor_configs()] == ["compressor", "cold-room"]


def test_agent_config_missing_site(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["site"]
    assert issues(data) == ["site: Field required"]


def test_agent_config_wrong_type_for_interval(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"][1]["interval_s"] = "soon"
    (issue,) = issues(data)
    assert issue.startswith("sensors[1].interval_s: ") and "'soon'" in issue


def test_agent_config_unknown_key(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["mqtt"]["hots"] = "broker.local"
    data["sensors"][0]["pull_upp"] = True
    assert sorted(issues(data)) == ["mqtt.hots: unknown key", "sensors[0].pull_upp: unknown key"]


def test_agent_config_unknown_driver(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"][1]["driver"] = "dht99"
    (issue,) = issues(data)
    assert issue.startswith("sensors[1].driver: unknown driver 'dht99'; expected one of ")
    assert "dht22" in issue and "gpio_input" in issue


def test_agent_config_pin_clash_names_both_sensors(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"][1]["pin"] = 4
    assert issues(data) == ["sensors[1].pin: GPIO4 is already used by sensors[0]"]


def test_agent_config_ds18b20_share_their_bus_pin(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"] = [
        {"id": "probe-a", "driver": "ds18b20", "address": "28-0316a2795aff"},
        {"id": "probe-b", "driver": "ds18b20", "address": "28-0316a2795b00"},
        {"id": "door", "driver": "gpio_input", "pin": 4, "role": "door"},
    ]
    assert issues(data) == ["sensors[2].pin: GPIO4 is already used by sensors[0]"]


def test_agent_config_duplicate_ids(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"][1]["id"] = "compressor"
    assert issues(data) == ["sensors[1].id: 'compressor' is already used by sensors[0]"]


def test_agent_config_dht22_interval_too_short(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["sensors"][1]["interval_s"] = 2
    (issue,) = issues(data)
    assert issue.startswith("sensors[1].interval_s: ") and "2.5" in issue


def test_agent_config_unreadable_password_file(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["mqtt"].update(username="pi-01", password_file=str(tmp_path / "missing.secret"))
    assert issues(data) == [f"mqtt.password_file: cannot read {tmp_path / 'missing.secret'}"]


def test_agent_config_password_file_that_is_a_directory(tmp_path: Path) -> None:
    secret = tmp_path / "secrets"
    secret.mkdir()  # unreadable as a file even for root, unlike a mode-000 file
    data = base(tmp_path)
    data["mqtt"].update(username="pi-01", password_file=str(secret))
    assert issues(data) == [f"mqtt.password_file: cannot read {secret}"]


def test_agent_config_tls_cert_without_key(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["mqtt"]["tls"] = {"enabled": True, "cert_file": str(tmp_path / "pi-01.crt")}
    assert issues(data) == ["mqtt.tls: cert_file and key_file go together"]


def test_agent_config_every_problem_at_once(tmp_path: Path) -> None:
    data = copy.deepcopy(base(tmp_path))
    del data["site"]
    data["mqtt"]["port"] = 0
    paths = sorted(issue.split(":")[0] for issue in issues(data))
    assert paths == ["mqtt.port", "site"]


def test_agent_config_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    data = base(tmp_path)
    data["sensors"][1]["pin"] = "GPIO4"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"invalid configuration {path}:\n  sensors[1].pin: GPIO4 is already used by sensors[0]"
    )


def test_agent_config_load_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_agent_config_bounds_labels_as_the_birth_message_does(tmp_path: Path) -> None:
    # Labels become InfluxDB tags on every point: a config the collector would refuse in the
    # birth message is refused at start instead.
    data = base(tmp_path)
    data["sensors"][0]["labels"] = {f"l{i}": "x" for i in range(17)}
    (issue,) = issues(data)
    assert issue.startswith("sensors[0].labels: ") and "16" in issue
