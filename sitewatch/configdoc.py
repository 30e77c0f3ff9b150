"""The configuration reference, generated from the pydantic models: ``docs/configuration.md``.

``python -m sitewatch.configdoc`` rewrites the file; ``--check`` only compares and exits 1
when the file is out of date (``tests/test_configdoc.py`` does the same). Nothing is
written by hand: a key added to a model appears in the reference at the next run, with its
type, default, units and limits read from the model itself.

The walk starts at ``AgentConfig`` and ``CollectorConfig`` and follows every nested model:
sections (``mqtt.tls``), lists of sections (``alerting.teams[]``), discriminated unions
(``sensors[]``, one section per ``driver``) and the detector registry behind a rule's
``detectors`` map (one section per detector, ``EXPANSIONS``). Each field becomes a row:
its path, type, default, units (from the name's suffix: ``_s`` seconds, ``_c`` °C…) and
limits (``ge``/``gt``/``le``/``lt``, lengths, patterns), and its description, taken from
the first of these that exists:

1. ``Field(description=...)``;
2. an attribute docstring: a string literal right after the field (``SamplingConfig``);
3. an entry of a numpydoc ``Parameters`` section in the class or its module docstring
   (``anomaly``);
4. the clauses of the class docstring, and of its base models' docstrings, that name the
   field in double backticks (``DHT22Config``: "``pin``: BCM GPIO…").

The output depends only on the models (definition order; registries sorted by name), so it
is the same on every machine and every run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = [
    "DEFAULT_OUTPUT",
    "EXPANSIONS",
    "REGENERATE",
    "Row",
    "Section",
    "describe_type",
    "field_descriptions",
    "main",
    "render",
    "sections",
]

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
"""Where the reference lives in a checkout of the repository."""

REGENERATE = "python -m sitewatch.configdoc"
"""The command that rewrites ``docs/configuration.md``."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One key of a section: its full path and what the model says about it."""

    path: str
    type: str
    default: str
    limits: str
    description: str


@dataclasses.dataclass(frozen=True)
class Section:
    """One table of the reference: every key of one model at one place in the file."""

    path: str
    title: str
    intro: str
    rows: tuple[Row, ...]


@dataclasses.dataclass(frozen=True)
class Expansion:
    """Named models behind a free-form mapping field (a rule's ``detectors``)."""

    type_text: str
    entries: Callable[[], list[tuple[str, type[BaseModel], str]]]
    """(key, model, intro) per entry, sorted by key."""


def _detector_entries() -> list[tuple[str, type[BaseModel], str]]:
    from sitewatch.collector.detectors import REGISTRY

    return [
        (name, kind.params, _summary(_module_docstring(kind.params)))
        for name, kind in sorted(REGISTRY.items())
    ]


EXPANSIONS: dict[tuple[str, str], Expansion] = {
    ("sitewatch.collector.rules.RuleConfig", "detectors"): Expansion(
        "map of detector name → its parameters", _detector_entries
    ),
}
"""(model's qualified name, field) → the models its mapping's values follow."""


# -- descriptions ------------------------------------------------------------------------


def _qualname(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"


@cache
def _module_tree(module_name: str) -> ast.Module | None:
    try:
        source = inspect.getsource(importlib.import_module(module_name))
    except (OSError, TypeError):
        return None
    return ast.parse(source)


def _class_node(model: type) -> ast.ClassDef | None:
    tree = _module_tree(model.__module__)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == model.__qualname__:
            return node
    return None


def _class_docstring(model: type) -> str:
    """The class's own docstring, read from the source (it works under ``python -OO``)."""
    node = _class_node(model)
    return (ast.get_docstring(node) or "") if node is not None else ""


def _module_docstring(model: type) -> str:
    tree = _module_tree(model.__module__)
    return (ast.get_docstring(tree) or "") if tree is not None else ""


def _attribute_docstrings(model: type) -> dict[str, str]:
    """Field → the string literal right after its annotated assignment in the class body."""
    node = _class_node(model)
    if node is None:
        return {}
    found: dict[str, str] = {}
    for statement, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found


def _numpydoc_parameters(docstring: str) -> dict[str, str]:
    """Name → text of each entry of a numpydoc ``Parameters`` section (``a, b`` share one)."""
    lines = docstring.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.strip() == "Parameters" and set(lines[index + 1].strip()) == {"-"}:
            break
    else:
        return {}
    found: dict[str, str] = {}
    names: list[str] = []
    text: list[str] = []

    def flush() -> None:
        for name in names:
            found[name] = " ".join(text)

    for line in lines[index + 2 :]:
        if not line.strip():
            continue
        if line.startswith((" ", "\t")):
            text.append(line.strip())
            continue
        flush()
        head = line.split(" : ")[0]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(, *[A-Za-z_][A-Za-z0-9_]*)*", head.strip()):
            return found  # the prose after the section
        names, text = [name.strip() for name in head.split(",")], []
    flush()
    return found


def _split_clauses(text: str, semicolons: bool = True) -> list[str]:
    """Sentences, and (with ``semicolons``) their ``;``-separated parts, outside parentheses.

    >>> _split_clauses("``a``: one (x; y); ``b``: two. E.g. ``c`` is 1.5 s. Done")
    ['``a``: one (x; y);', '``b``: two.', 'E.g. ``c`` is 1.5 s.', 'Done']
    """
    flat = " ".join(text.split())
    clauses: list[str] = []
    depth, start = 0, 0
    for position, char in enumerate(flat):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and char in (".;" if semicolons else ".") and (
            flat[position + 1 : position + 2] == " "
        ):
            before = flat[max(0, position - 4) : position + 1].lower()
            after = flat[position + 2 : position + 3]
            if char == "." and (before.endswith(("e.g.", "i.e.")) or not (
                after.isupper() or after.isdigit() or after == "`"
            )):
                continue
            clauses.append(flat[start : position + 1].strip())
            start = position + 2
    if flat[start:].strip():
        clauses.append(flat[start:].strip())
    return clauses


def _mentions(clause: str, name: str) -> bool:
    return re.search(rf"``{re.escape(name)}(?:[:\s/=][^`]*)?``", clause) is not None


def _docstring_clauses(model: type[BaseModel]) -> list[str]:
    """The clauses of the docstrings of ``model`` and its base models, general first.

    A ``;`` part that names no field continues the part before it ("…dropped first; every
    drop is counted").
    """
    clauses: list[str] = []
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)):
            continue
        for paragraph in _class_docstring(klass).split("\n\n"):
            if paragraph.lstrip().startswith(">>>"):
                continue
            for clause in _split_clauses(paragraph):
                named = any(_mentions(clause, name) for name in model.model_fields)
                if not named and clauses and clauses[-1].endswith(";"):
                    clauses[-1] += " " + clause
                else:
                    clauses.append(clause)
    return list(dict.fromkeys(clauses))


def _strip_own_name(clause: str, name: str) -> str:
    """``"``pin``: BCM GPIO…;"`` → ``"BCM GPIO….``"."""
    match = re.match(rf"``{re.escape(name)}``: (.+)", clause)
    text = clause if match is None else match.group(1)
    return text[:-1] + "." if text.endswith(";") else text


def field_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """Field → its description, from the first source that has one (module docstring)."""
    attributes: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel):
            attributes.update(_attribute_docstrings(klass))
    parameters = {
        **_numpydoc_parameters(_module_docstring(model)),
        **_numpydoc_parameters(_class_docstring(model)),
    }
    clauses = _docstring_clauses(model)
    found: dict[str, str] = {}
    for name, field in model.model_fields.items():
        if field.description:
            text = field.description
        elif name in attributes:
            text = attributes[name]
        elif name in parameters:
            text = parameters[name]
        else:
            text = " ".join(
                _strip_own_name(clause, name) for clause in clauses if _mentions(clause, name)
            )
        found[name] = " ".join(text.split())
    return found


def _summary(docstring: str) -> str:
    """The first sentence of a docstring."""
    sentences = _split_clauses(docstring.split("\n\n")[0], semicolons=False)
    first = sentences[0] if sentences else ""
    return first if first.endswith(".") or not first else first + "."


def _what(model: type[BaseModel]) -> str:
    """What a model is: its docstring's first sentence, or its module's when the class
    docstring only points there ("One rule; see the module docstring.")."""
    first = _summary(_class_docstring(model))
    if "module docstring" in first:
        return _summary(_module_docstring(model))
    return first


def _intro(model: type[BaseModel]) -> str:
    """A section's introduction: ``_what``, unless it is about particular keys."""
    first = _what(model)
    if any(_mentions(first, name) for name in model.model_fields):
        return ""
    return first


# -- types, defaults, limits -------------------------------------------------------------


_SCALARS: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
    type(None): "null",
}


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``Annotated[...]`` and its metadata, FieldInfo's flattened."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
            if isinstance(item, FieldInfo) and item.discriminator:
                metadata.append(item)
    return annotation, metadata


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return ()


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def describe_type(annotation: Any) -> str:
    """A field's type in words: ``number``, ``list of string``, ``one of `a`, `b```…

    >>> describe_type(typing.Optional[typing.Literal["v1", "v2"]])
    'one of `v1`, `v2`, or null'
    >>> describe_type(dict[str, tuple[float, float]])
    'map of string → [number, number]'
    """
    annotation, _ = _unwrap(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if _is_model(annotation):
        return "section"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    members = _union_args(annotation)
    if members:
        present = [member for member in members if member is not type(None)]
        models = [member for member in present if _is_model(_unwrap(member)[0])]
        if len(models) > 1:
            text = "a section, by its `driver`" if models == present else "varies"
        else:
            text = " or ".join(describe_type(member) for member in present)
        return text + (", or null" if len(present) < len(members) else "")
    if origin in (list, set, frozenset):
        variants = _variants(args[0])
        if variants is not None:
            return f"list of sections, by `{variants[0]}`"
        return f"list of {_plural(describe_type(args[0]))}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_plural(describe_type(args[0]))}"
        return "[" + ", ".join(describe_type(arg) for arg in args) + "]"
    if origin is dict:
        return f"map of {describe_type(args[0])} → {describe_type(args[1])}"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _plural(text: str) -> str:
    plurals = {"section": "sections", "string": "strings", "number": "numbers",
               "integer": "integers", "path": "paths", "boolean": "booleans"}
    return plurals.get(text, text)


_UNITS: dict[str, str] = {"bytes": "bytes", "pct": "%", "s": "seconds", "h": "hours", "c": "°C"}
"""Name suffix → unit (units are in the key names: ``max_age_s``, ``margin_c``)."""

_PER = {"s": "second", "min": "minute", "h": "hour", "week": "week"}


def _unit(name: str) -> str:
    """The unit a key's name gives (``rate_c_per_h`` → °C per hour).

    >>> _unit("max_age_s"), _unit("rate_c_per_h"), _unit("max_starts_per_h"), _unit("seed")
    ('seconds', '°C per hour', 'per hour', '')
    """
    head, per, tail = name.rpartition("_per_")
    if per and tail in _PER:
        unit = _unit(head)
        return f"{unit} per {_PER[tail]}" if unit else f"per {_PER[tail]}"
    suffix = name.rpartition("_")[2]
    return _UNITS.get(suffix, "") if "_" in name else ""


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _constraints(metadata: list[Any], items: str = "") -> list[str]:
    found: list[str] = []
    for item in metadata:
        if isinstance(item, annotated_types.Gt):
            found.append(f"> {_number(item.gt)}")  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Ge):
            found.append(f"≥ {_number(item.ge)}")  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Lt):
            found.append(f"< {_number(item.lt)}")  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            found.append(f"≤ {_number(item.le)}")  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.MinLen):
            if item.min_length == 1:
                found.append("at least one item" if items else "not empty")
            else:
                found.append(f"at least {item.min_length} {items or 'characters'}")
        elif isinstance(item, annotated_types.MaxLen):
            found.append(f"at most {item.max_length} {items or 'characters'}")
        elif getattr(item, "pattern", None):
            found.append(f"matches `{item.pattern}`")
    return found


def _limits(name: str, field: FieldInfo) -> str:
    annotation, inner = _unwrap(field.annotation)
    members = [m for m in _union_args(annotation) if m is not type(None)]
    if len(members) == 1:
        annotation, more = _unwrap(members[0])
        inner += more
    origin = typing.get_origin(annotation)
    is_list = origin in (list, tuple, set, frozenset)
    parts = _constraints(field.metadata, "items" if is_list else "")
    parts += _constraints(inner, "items" if is_list else "")
    if origin in (list, set, frozenset):
        item_parts = _constraints(_unwrap(typing.get_args(annotation)[0])[1])
        parts += [f"each {part}" for part in item_parts]
    unit = _unit(name)
    return "; ".join(text for text in (unit, ", ".join(parts)) if text)


def _human_seconds(value: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if value >= size and value % (size / 4) == 0:
            return f"{_number(value / size)} {unit}"
    return ""


def _human_bytes(value: int) -> str:
    for size, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= size and value % (size // 4) == 0:
            return f"{_number(value / size)} {unit}"
    return ""


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str | Path):
        return str(value) or '""'
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"), ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "computed"
        if isinstance(value, BaseModel):
            return "its defaults"
        if value in ([], {}, ()):
            return "empty"
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    text = f"`{_value(value)}`"
    if isinstance(value, int | float) and not isinstance(value, bool):
        human = ""
        if _unit(name) == "seconds":
            human = _human_seconds(float(value))
        elif _unit(name) == "bytes" and isinstance(value, int):
            human = _human_bytes(value)
        if human:
            text += f" ({human})"
    return text


# -- the walk ----------------------------------------------------------------------------


def _variants(annotation: Any) -> tuple[str, list[tuple[str, type[BaseModel]]]] | None:
    """A discriminated union's tag field and its (tag, model) variants, sorted by tag."""
    annotation, metadata = _unwrap(annotation)
    members = [m for m in _union_args(annotation) if m is not type(None)]
    if len(members) < 2 or not all(_is_model(member) for member in members):
        return None
    tags = [item.discriminator for item in metadata if isinstance(item, FieldInfo)]
    if not tags or not isinstance(tags[0], str):
        return None
    tag = tags[0]
    variants = []
    for member in members:
        literal = member.model_fields[tag].annotation
        variants += [(str(value), member) for value in typing.get_args(literal)]
    return tag, sorted(variants, key=lambda pair: pair[0])


def _children(annotation: Any) -> Iterator[tuple[str, str, type[BaseModel]]]:
    """(path suffix, title suffix, model) for each model a field's value holds."""
    annotation, _ = _unwrap(annotation)
    members = [m for m in _union_args(annotation) if m is not type(None)]
    if len(members) == 1:
        annotation, _ = _unwrap(members[0])
    if _is_model(annotation):
        yield "", "", annotation
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and args:
        variants = _variants(args[0])
        if variants is not None:
            tag, models = variants
            for value, model in models:
                yield "[]", f" with `{tag}: {value}`", model
            return
        for suffix, title, model in _children(args[0]):
            yield "[]" + suffix, title, model
    elif origin is dict and len(args) == 2:
        for suffix, title, model in _children(args[1]):
            yield ".<name>" + suffix, title, model


def sections(model: type[BaseModel], path: str = "", intro: str | None = None,
             title: str = "", seen: set[tuple[str, type]] | None = None) -> list[Section]:
    """The section of ``model`` at ``path``, then those of every model nested in it.

    A model met again at the same path (``sensors[].sampling`` under each driver) is shown
    once.
    """
    seen = set() if seen is None else seen
    seen.add((path, model))
    descriptions = field_descriptions(model)
    rows: list[Row] = []
    later: list[Section] = []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        expansion = EXPANSIONS.get((_qualname(model), name))
        type_text = describe_type(field.annotation)
        if expansion is not None:
            type_text = expansion.type_text
            for entry, entry_model, entry_intro in expansion.entries():
                at = f"{key}.{entry}"
                if (at, entry_model) not in seen:
                    later += sections(entry_model, at, entry_intro, "", seen)
        children = list(_children(field.annotation))
        for suffix, title_suffix, child in children:
            at = key + suffix
            if (at, child) not in seen:
                later += sections(child, at, None, title_suffix, seen)
        description = descriptions[name]
        if not description and len(children) == 1:
            # A section's row says what the section is: its docstring's first sentence.
            description = _what(children[0][2])
        rows.append(Row(key, type_text, _default(name, field), _limits(name, field),
                        description))
    own = Section(path, title, _intro(model) if intro is None else intro, tuple(rows))
    return [own, *later]


# -- rendering ---------------------------------------------------------------------------


def _markdown(text: str) -> str:
    """Docstring text in a table cell: ``x`` → `x`, pipes escaped."""
    return re.sub(r"``(.+?)``", r"`\1`", text).replace("|", "\\|")


def _table(section: Section) -> list[str]:
    lines = ["| key | type | default | units, limits | description |", "|---|---|---|---|---|"]
    for row in section.rows:
        cells = [f"`{row.path}`", row.type, row.default, row.limits, row.description]
        lines.append("| " + " | ".join(_markdown(cell) for cell in cells) + " |")
    return lines


def _render_sections(found: list[Section], top: str) -> list[str]:
    lines: list[str] = []
    for section in found:
        heading = f"`{section.path}`{section.title}" if section.path else top
        lines += ["", f"### {heading}", ""]
        if section.intro:
            lines += [_markdown(section.intro), ""]
        lines += _table(section)
    return lines


def _sampling_defaults() -> list[str]:
    from sitewatch.agent.sensors import REGISTRY

    lines = ["", "Sampling defaults per driver (a sensor's `sampling` overrides them key by key):",
             ""]
    for name, kind in sorted(REGISTRY.items()):
        defaults = kind.config.default_sampling
        shown = ", ".join(f"`{key}: {_value(value)}`" for key, value in defaults.items())
        lines.append(f"- `{name}`: {shown or 'the `sampling` defaults above'}")
    return lines


def _profiles() -> list[str]:
    from sitewatch.collector.rules import DEFAULT_RULES, PROFILES, STREAM_FIELDS

    lines = ["", "### Rule profiles", "",
             "`profile: NAME` in a rule fills in its fields, detectors and severity; the "
             "rule's own `detectors` are merged over them, parameter by parameter.", "",
             "| profile | severity | what it is for | field → detector (parameters) |",
             "|---|---|---|---|"]
    for name, profile in sorted(PROFILES.items()):
        watches = "; ".join(
            f"`{field}` → " + ", ".join(
                f"`{detector}`" + (f" ({_params(params)})" if params else "")
                for detector, params in detectors.items()
            )
            for field, detectors in profile.detectors.items()
        )
        lines.append(f"| `{name}` | {profile.severity} | {_markdown(profile.description)} | "
                     f"{_markdown(watches)} |")
    lines += ["", "### Default rules", "",
              "Applied before the configured rules unless `detection.defaults: false`:", "",
              "| rule | severity | fields | detectors |", "|---|---|---|---|"]
    for rule in DEFAULT_RULES:
        fields = ", ".join(f"`{field}`" for field in rule["fields"])
        detectors = ", ".join(f"`{detector}`" for detector in rule["detectors"])
        lines.append(f"| `{rule['name']}` | {rule['severity']} | {fields} | {detectors} |")
    lines += ["", "Fields a rule may watch (`fields:`): "
              + ", ".join(f"`{field}`" for field in sorted(STREAM_FIELDS)) + "."]
    return lines


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}: {_value(value)}" for key, value in params.items())


_HEADER = f"""\
# Configuration reference

Generated from the pydantic models by `{REGENERATE}`: do not edit this file by hand
(`tests/test_configdoc.py` fails when it differs from what the models say). The annotated
examples in `firmware_config/` show the same keys in context.

Conventions: a path like `mqtt.tls.ca_file` is a key nested under `mqtt:` and `tls:`;
`[]` marks a list of sections (`sensors[].pin` is the `pin` of each sensor) and `<name>` a
key you choose. Units are in key names (`_s` seconds, `_h` hours, `_c` °C, `_pct` percent,
`_bytes` bytes); limits are inclusive (≥, ≤) or strict (>, <). Unknown keys are errors, and
every problem is reported with its path before anything starts. Secrets (passwords, tokens,
apprise URLs with passwords) are never written in these files: keys ending in `_file` name a
file whose first line is the secret, keys ending in `_env` name an environment variable."""


def render() -> str:
    """The whole reference as Markdown (deterministic: the same models give the same text)."""
    from sitewatch.agent.config import AgentConfig
    from sitewatch.collector.config import CollectorConfig

    lines = [_HEADER, "", "## Agent", "",
             "One file per device, usually `/etc/sitewatch/agent.yaml` (annotated example: "
             "`firmware_config/agent.example.yaml`). `sitewatch-agent check --config FILE` "
             "validates it against the hardware."]
    lines += _render_sections(sections(AgentConfig), "Top level")
    lines += _sampling_defaults()
    lines += ["", "## Collector", "",
              "One file per collector, usually `/etc/sitewatch/collector.yaml` (annotated "
              "example: `firmware_config/collector.example.yaml`)."]
    lines += _render_sections(sections(CollectorConfig), "Top level")
    lines += _profiles()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sitewatch.configdoc",
        description="write the configuration reference generated from the pydantic models",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="the Markdown file (default: docs/configuration.md)")
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
