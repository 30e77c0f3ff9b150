"""The collector's configuration: the annotated example loads, bad files name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sitewatch.collector.config import (
    CollectorConfig,
    CollectorConfigError,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "firmware_config" / "collector.example.yaml"


def _base(tmp_path: Path) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "client_id": "collector-1"},
        "influx": {"api": "v1", "url": "http://127.0.0.1:8086", "database": "sitewatch"},
        "state_dir": str(tmp_path / "state"),
    }


def _issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(CollectorConfigError) as caught:
        parse_config(data)
    return [str(issue) for issue in caught.value.issues]


def test_collector_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.influx.api == "v1" and config.mqtt.client_id == "sitewatch-collector-1"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation)
    return keys


def test_collector_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    written = set(re.findall(r"^\s*#?\s*([a-z_]+):", text, flags=re.MULTILINE))
    assert _keys(CollectorConfig) - written == set()


def test_collector_config_v2_needs_org_bucket_and_token(tmp_path: Path) -> None:
    data = _base(tmp_path)
    data["influx"] = {"api": "v2", "url": "http://127.0.0.1:8086", "bucket": "b"}
    assert _issues(data) == ["influx.org: required with api v2"]
    data["influx"]["org"] = "o"
    assert _issues(data) == ["influx.token_file: give token_file or token_env (one of them)"]


def test_collector_config_v1_refuses_v2_keys(tmp_path: Path) -> None:
    data = _base(tmp_path)
    data["influx"]["bucket"] = "b"
    assert _issues(data) == ["influx.bucket: only for api v2"]


def test_collector_config_errors_name_the_field(tmp_path: Path) -> None:
    data = _base(tmp_path)
    del data["mqtt"]["client_id"]
    data["influx"]["batch_size"] = 0
    data["mqtt"]["prot"] = "5"
    issues = _issues(data)
    assert "mqtt.client_id: Field required" in issues
    assert "mqtt.prot: unknown key" in issues
    assert any(i.startswith("influx.batch_size: ") for i in issues)


def test_collector_config_unreadable_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _base(tmp_path)
    data["influx"] = {
        "api": "v2",
        "url": "http://127.0.0.1:8086",
        "org": "o",
        "bucket": "b",
        "token_file": str(tmp_path / "missing"),
    }
    assert _issues(data) == [f"influx.token_file: cannot read {tmp_path / 'missing'}"]
    data["influx"] = {
        "api": "v2",
        "url": "http://127.0.0.1:8086",
        "org": "o",
        "bucket": "b",
        "token_env": "SITEWATCH_TEST_TOKEN",
    }
    monkeypatch.delenv("SITEWATCH_TEST_TOKEN", raising=False)
    assert _issues(data) == ["influx.token_env: $SITEWATCH_TEST_TOKEN is not set"]
    monkeypatch.setenv("SITEWATCH_TEST_TOKEN", "s3cret")
    assert parse_config(data).influx.token() == "s3cret"
