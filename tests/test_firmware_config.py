"""The shipped examples and config.txt fragments: they load, they are complete, they agree.

The annotated example configs are documentation that installers copy, so each one is loaded
through the real loader, each documented default is compared with the code's, and the
fragments are parsed with the same parser ``check`` uses.
"""

from __future__ import annotations

import io
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpiozero.pins.mock import MockFactory
from pydantic import BaseModel

from sitewatch.agent.check import run_check
from sitewatch.agent.config import AgentConfig, load_config, parse_config
from sitewatch.agent.firmware import parse_config_txt, read_config_txt
from sitewatch.agent.pins import parse_pin
from sitewatch.agent.sensors import REGISTRY
from sitewatch.clock import FakeClock
from tests.fakes.sysfs import add_dht11, add_ds18b20

FIRMWARE_CONFIG = Path(__file__).resolve().parent.parent / "firmware_config"
EXAMPLE = FIRMWARE_CONFIG / "agent.example.yaml"
SIMULATED = FIRMWARE_CONFIG / "agent.simulated.yaml"
EXAMPLES = sorted(FIRMWARE_CONFIG.glob("agent*.yaml"))
FRAGMENTS = sorted(FIRMWARE_CONFIG.glob("*.txt"))


def uncommented(text: str) -> str:
    """The example with every commented-out key switched on and the ``##`` prose dropped."""
    lines = []
    for line in text.splitlines():
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        if body.startswith("##"):
            continue
        if body.startswith("#"):
            body = body[2:] if body.startswith("# ") else body[1:]
        lines.append(indent + body)
    return "\n".join(lines)


def nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models inside a field's type (``TlsConfig | None``, ``list[FaultConfig]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from nested_models(argument)


def all_keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for nested in nested_models(field.annotation):
            keys |= all_keys(nested)
    return keys


def test_examples_exist() -> None:
    assert {path.name for path in EXAMPLES} == {"agent.example.yaml", "agent.simulated.yaml"}
    assert {path.name for path in FRAGMENTS} == {
        "dht22-kernel.txt", "ds18b20-1wire.txt", "i2c-spi.txt", "watchdog.txt"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_examples_load_through_the_real_loader(path: Path) -> None:
    config = load_config(path)
    assert config.sensor_configs()
    assert config.mqtt.password_file is None  # a set password_file must exist to load


def test_examples_use_every_registered_driver() -> None:
    used = {sensor.driver for path in EXAMPLES for sensor in load_config(path).sensor_configs()}
    assert used >= set(REGISTRY), f"no example uses {sorted(set(REGISTRY) - used)}"


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = set()
    for section in AgentConfig.model_fields.values():
        for model in nested_models(section.annotation):
            keys |= all_keys(model)
    for entry in REGISTRY.values():
        keys |= all_keys(entry.config)
    keys |= set(AgentConfig.model_fields) - {"sensors"}
    missing = sorted(key for key in keys
                     if not re.search(rf"^[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?{key}:", text, re.M))
    assert missing == []


def normal(value: Any) -> Any:
    """Compare YAML with model values: numbers as floats, sequences as lists, paths as text."""
    if isinstance(value, dict):
        return {key: normal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normal(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def documented_defaults(
    shown: dict[str, Any], documented: dict[str, Any], model: BaseModel, path: str
) -> Iterator[tuple[str, Any, Any]]:
    """(key path, documented value, effective value) for each commented-out key."""
    for key, value in documented.items():
        if key not in type(model).model_fields:
            yield f"{path}{key}", normal(value), "(not a key of this section)"
            continue
        actual = model.sampling_policy() if key == "sampling" else getattr(model, key)  # type: ignore[attr-defined]
        if isinstance(actual, BaseModel) and isinstance(value, dict):
            yield from documented_defaults(shown.get(key) or {}, value, actual, f"{path}{key}.")
        elif key not in shown and value is not None and actual is not None:
            yield f"{path}{key}", normal(value), normal(actual)


def test_example_commented_defaults_match_the_code() -> None:
    text = EXAMPLE.read_text()
    shown, documented = yaml.safe_load(text), yaml.safe_load(uncommented(text))
    config = load_config(EXAMPLE)
    pairs: list[tuple[str, Any, Any]] = []
    for key, value in documented.items():
        if key == "sensors":
            for index, sensor in enumerate(config.sensor_configs()):
                pairs += documented_defaults(shown["sensors"][index], value[index], sensor,
                                             f"sensors[{index}].")
        elif isinstance(value, dict):
            pairs += documented_defaults(shown.get(key) or {}, value, getattr(config, key),
                                         f"{key}.")
    assert len(pairs) > 30  # the comparison really walked the file
    assert [(path, doc) for path, doc, actual in pairs if doc != actual] == []


def test_example_commented_out_sensors_are_valid(tmp_path: Path) -> None:
    shown = yaml.safe_load(EXAMPLE.read_text())
    documented = yaml.safe_load(uncommented(EXAMPLE.read_text()))
    extra = documented["sensors"][len(shown["sensors"]):]
    assert [sensor["driver"] for sensor in extra] == ["simulated", "simulated"]
    config = parse_config({**shown, "sensors": extra,
                           "outbox": {"path": str(tmp_path / "outbox.db")}})
    assert len(config.sensor_configs()) == 2


def test_simulated_example_keeps_its_outbox_path_relative() -> None:
    # The file documents that relative paths follow the agent's working directory.
    assert load_config(SIMULATED).outbox.path == Path("run/sim-01/outbox.db")


def test_simulated_example_passes_check_anywhere(tmp_path: Path) -> None:
    out = io.StringIO()
    code = run_check(SIMULATED, config_txt=tmp_path / "no-config.txt", out=out,
                     hardware_overrides={"sysfs_root": tmp_path, "dev_root": tmp_path,
                                         "clock": FakeClock()})
    assert code == 0, out.getvalue()
    assert out.getvalue().splitlines()[-1] == "4 OK, 0 WARN, 0 FAIL"


def claims_comment(text: str) -> set[int]:
    (line,) = [line for line in text.splitlines() if line.startswith("# Claims:")]
    value = line.removeprefix("# Claims:").strip()
    return set() if value == "none" else {parse_pin(pin.strip()) for pin in value.split(",")}


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda path: path.name)
def test_fragment_claims_the_pins_it_says(path: Path) -> None:
    firmware = read_config_txt(path)
    assert firmware.directives and firmware.problems == ()
    assert all(d.section == "all" and d.enabled for d in firmware.directives)
    claimed = [claim.pin for claim in firmware.claims()]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == claims_comment(path.read_text())


def test_fragments_give_the_example_every_overlay_it_needs() -> None:
    firmware = parse_config_txt("\n".join(path.read_text() for path in FRAGMENTS))
    for sensor in load_config(EXAMPLE).sensor_configs():
        for need in sensor.overlays_needed():
            assert any(need.pin in (None, d.main_pin()) for d in firmware.providing(need.overlay)
                       ), f"{sensor.id} needs {need.line}"


def test_example_passes_check_on_a_pi_set_up_from_the_fragments(tmp_path: Path) -> None:
    config_txt = tmp_path / "config.txt"
    config_txt.write_text("\n".join(path.read_text() for path in FRAGMENTS))
    sysfs = tmp_path / "sys"
    add_dht11(sysfs, 0, 17, temperature_c=3.4, humidity_pct=81.0)
    add_ds18b20(sysfs, load_config(EXAMPLE).sensors[1].address, temperature_c=3.1)
    factory = MockFactory()
    out = io.StringIO()
    try:
        code = run_check(EXAMPLE, config_txt=config_txt, out=out, hardware_overrides={
            "sysfs_root": sysfs, "dev_root": tmp_path / "dev", "pin_factory": factory,
            "clock": FakeClock()})
    finally:
        factory.close()
    assert code == 0, out.getvalue()
    assert out.getvalue().splitlines()[-1] == "4 OK, 0 WARN, 0 FAIL"
