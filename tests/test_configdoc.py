"""The generated configuration reference, the example configs, and the README's facts.

``docs/configuration.md`` is generated from the pydantic models (``sitewatch.configdoc``); these
tests fail when it is stale, when it misses a key a model has, when an example config no
longer loads, and when the README names a command, an option or a configuration key that does
not exist.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from sitewatch import configdoc
from sitewatch.agent import cli as agent_cli
from sitewatch.agent.config import AgentConfig
from sitewatch.agent.config import load_config as load_agent_config
from sitewatch.agent.sensors import REGISTRY as DRIVERS
from sitewatch.collector import cli as collector_cli
from sitewatch.collector.config import CollectorConfig
from sitewatch.collector.config import load_config as load_collector_config
from sitewatch.collector.detectors import REGISTRY as DETECTORS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "firmware_config").glob("*.yaml"))


# -- the reference -----------------------------------------------------------------------


def test_configdoc_reference_is_what_the_models_say() -> None:
    expected = configdoc.render()
    current = REFERENCE.read_text() if REFERENCE.exists() else ""
    if current != expected:
        diff = difflib.unified_diff(current.splitlines(), expected.splitlines(),
                                    "docs/configuration.md", "generated", lineterm="", n=1)
        shown = "\n".join(list(diff)[:40])
        pytest.fail(f"docs/configuration.md is out of date; regenerate it with "
                    f"`{configdoc.REGENERATE}` and commit it. First differences:\n{shown}")


def test_configdoc_check_passes_whatever_the_hash_seed(tmp_path: Path) -> None:
    # Set and dict orders that leak into the output would differ between these runs.
    output = tmp_path / "configuration.md"
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    subprocess.run([sys.executable, "-m", "sitewatch.configdoc", "--output", str(output)],
                   check=True, capture_output=True, env=env, cwd=ROOT)
    env["PYTHONHASHSEED"] = "2"
    checked = subprocess.run(
        [sys.executable, "-m", "sitewatch.configdoc", "--output", str(output), "--check"],
        capture_output=True, text=True, env=env, cwd=ROOT)
    assert checked.returncode == 0, checked.stderr
    output.write_text(output.read_text().replace("| `site` |", "| `site2` |"))
    stale = subprocess.run(
        [sys.executable, "-m", "sitewatch.configdoc", "--output", str(output), "--check"],
        capture_output=True, text=True, env=env, cwd=ROOT)
    assert stale.returncode == 1 and configdoc.REGENERATE in stale.stderr


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in getattr(annotation, "__args__", ()):
        yield from _models(argument)


def _keys(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """Every key path a model allows, walked independently of configdoc (variants of a
    union share one path, as in the reference)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for nested in _models(field.annotation):
            listed = "list" in str(field.annotation).lower()
            yield from _keys(nested, f"{path}[]." if listed else f"{path}.")


def test_configdoc_lists_every_key_of_every_model_driver_and_detector() -> None:
    text = configdoc.render()
    paths = set(re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE))
    expected = set(_keys(AgentConfig, "")) | set(_keys(CollectorConfig, ""))
    expected |= {f"detection.rules[].detectors.{name}.{param}"
                 for name, kind in DETECTORS.items() for param in kind.params.model_fields}
    assert sorted(expected - paths) == []
    for name in DRIVERS:
        assert f"### `sensors[]` with `driver: {name}`" in text


class _Documented(BaseModel):
    """A test model. ``plain`` counts readings; ``both``/``other`` share a clause.

    ``named``: named in the docstring (a second part; continued here). ``plain`` ignores
    this sentence about ``elsewhere``.

    Parameters
    ----------
    numpy_s, other_numpy
        From a numpydoc entry.
    """

    plain: int = 3
    both: Annotated[float, Field(gt=0, le=60)] = 1.5
    other: str = "x"
    named: bool = False
    attribute_s: float = 7200.0
    """From the attribute docstring."""
    explicit: int = Field(0, description="From Field.")
    numpy_s: float = 0.5
    other_numpy: float = 1.0
    undocumented_bytes: int = 1 << 20


def test_configdoc_descriptions_come_from_each_kind_of_docstring() -> None:
    found = configdoc.field_descriptions(_Documented)
    assert found["plain"] == ("``plain`` counts readings. "
                              "``plain`` ignores this sentence about ``elsewhere``.")
    assert found["both"] == found["other"] == "``both``/``other`` share a clause."
    assert found["named"] == "named in the docstring (a second part; continued here)."
    assert found["attribute_s"] == "From the attribute docstring."
    assert found["explicit"] == "From Field."
    assert found["numpy_s"] == found["other_numpy"] == "From a numpydoc entry."
    assert found["undocumented_bytes"] == ""


def test_configdoc_rows_give_type_default_units_and_limits() -> None:
    (section,) = configdoc.sections(_Documented, "example")
    rows = {row.path: row for row in section.rows}
    assert (rows["example.both"].type, rows["example.both"].default,
            rows["example.both"].limits) == ("number", "`1.5`", "> 0, ≤ 60")
    assert rows["example.attribute_s"].default == "`7200` (2 h)"
    assert rows["example.attribute_s"].limits == "seconds"
    assert rows["example.undocumented_bytes"].default == "`1048576` (1 MiB)"
    assert rows["example.other"].default == "`x`"


# -- the example configs -----------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_configdoc_every_example_config_loads_with_its_model(path: Path) -> None:
    if path.name.startswith("agent"):
        assert load_agent_config(path).sensor_configs()
    elif path.name.startswith("collector"):
        assert load_collector_config(path).mqtt.client_id
    else:
        pytest.fail(f"{path.name}: name it agent*.yaml or collector*.yaml, or teach this test "
                    "which model loads it")


# -- the README --------------------------------------------------------------------------


def _help(main: Any, argv: list[str]) -> str | None:
    """``--help`` of a (sub)command, or None when argparse does not know it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    return out.getvalue() if stopped.value.code == 0 else None


def _readme_code() -> list[str]:
    """Every inline code span and every line of a fenced block in the README."""
    text = README.read_text()
    fence = r"^[ \t]*```[a-z]*\n(.*?)^[ \t]*```"
    blocks = re.findall(fence, text, re.MULTILINE | re.DOTALL)
    prose = re.sub(fence, "", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"``(.+?)``|`([^`\n]+)`", prose.replace("\n", " "))
    return [a or b for a, b in spans] + [line for block in blocks for line in block.splitlines()]


def _commands() -> Iterator[tuple[Any, list[str], list[str], str]]:
    """(main, command words, options, the code) for each CLI use the README shows."""
    mains = {"sitewatch-agent": agent_cli.main, "sitewatch-collector": collector_cli.main}
    for code in _readme_code():
        if code.startswith("alerts "):  # "(`alerts ack ID --by NAME`…)" after the full form
            code = "sitewatch-collector " + code
        for match in re.finditer(r"(sitewatch-agent|sitewatch-collector)((?:\s+\S+)*)", code):
            words = match.group(2).split()
            if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                continue
            command = [words[0]]
            if len(words) > 1 and re.fullmatch(r"[a-z]+(\|[a-z]+)*", words[1]):
                command.append(words[1])
            options = [re.sub(r"[\[\]=].*", "", word.lstrip("["))
                       for word in words if word.lstrip("[").startswith("--")]
            yield mains[match.group(1)], command, options, code


def test_readme_names_only_commands_and_options_that_exist() -> None:
    found = list(_commands())
    assert len(found) >= 15  # the README really was read
    problems = []
    for main, command, options, code in found:
        head = _help(main, command[:1])
        if head is None:
            problems.append(f"{code!r}: no command {command[0]!r}")
            continue
        helps = [head]
        if len(command) > 1 and "{" in head.split("positional arguments")[0]:
            helps = []
            for action in command[1].split("|"):
                text = _help(main, [command[0], action])
                if text is None:
                    problems.append(f"{code!r}: no command {command[0]} {action}")
                else:
                    helps.append(text)
        problems += [f"{code!r}: no option {option}" for option in options
                     for text in helps if not re.search(rf"{re.escape(option)}\b", text)]
    assert problems == []


_FILE_TYPES = frozenset({"py", "db", "json", "jsonl", "yaml", "conf", "txt", "md", "service"})


def test_readme_names_only_configuration_keys_that_exist() -> None:
    rows = re.findall(r"^\| `([^`]+)` \|", configdoc.render(), re.MULTILINE)
    paths = {re.sub(r"\[\]|\.<name>", "", row) for row in rows}
    names = {part for path in paths for part in path.split(".")}
    checked, unknown = 0, []
    for code in _readme_code():
        token = code.split(":")[0].strip()
        if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", token) or token.split(".")[0] not in names:
            continue
        if token.rpartition(".")[2] in _FILE_TYPES:  # outbox.py, alerts.db: files
            continue
        checked += 1
        if not any(path == token or path.endswith("." + token) for path in paths):
            unknown.append(token)
    assert checked >= 10
    assert unknown == []
