"""What agent and collector configuration files share: loading YAML, turning pydantic's
errors into one list of ``path: problem`` lines, reading secrets, and the broker connection.

Both programs validate their whole file at start and stop with every problem listed by the
field's path (``sensors[1].pin``, ``influx.token_file``), never with a traceback.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "BrokerConfig",
    "ConfigError",
    "ConfigIssue",
    "Section",
    "TlsConfig",
    "issues_from",
    "load_yaml",
    "readable",
    "secret_file_issues",
    "shown_value",
    "validate",
]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file: where (``sensors[1].pin``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """The configuration is invalid; ``issues`` lists every problem found, each with its path."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        header = f"invalid configuration {source}" if source else "invalid configuration"
        super().__init__(header + ":\n" + "\n".join(f"  {issue}" for issue in issues))

    @classmethod
    def single(cls, path: str, message: str, source: str | None = None) -> ConfigError:
        return cls([ConfigIssue(path, message)], source)


class Section(BaseModel):
    """A config section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


def _format_location(location: tuple[int | str, ...], union_tags: Collection[str]) -> str:
    text = ""
    previous: int | str | None = None
    for index, part in enumerate(location):
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part:
            text += '[""]'  # a key written as an empty string (``"": 1``)
        elif isinstance(previous, int) and part in union_tags:
            pass  # a discriminated union's tag: not a key the user wrote
        elif part.startswith("function-") or (index > 0 and part in ("bool", "str")):
            pass  # pydantic's internal step names
        else:
            text += f".{part}" if text else part
        previous = part
    return text


def issues_from(error: ValidationError, union_tags: Collection[str] = ()) -> list[ConfigIssue]:
    """Every problem in a pydantic ``ValidationError`` as ``path: what was expected``.

    A validator may name its own path by raising ``ValueError("a[1].b: message")``.
    """
    issues = []
    for entry in error.errors():
        message = entry["msg"].removeprefix("Value error, ")
        path = _format_location(tuple(entry["loc"]), union_tags)
        head, _, rest = message.partition(": ")
        if rest and " " not in head and ("[" in head or "." in head):
            path, message = head, rest
        if entry["type"] not in ("missing", "value_error", "extra_forbidden") and "input" in entry:
            message += f" (got {shown_value(entry['input'])})"
        if entry["type"] == "extra_forbidden":
            message = "unknown key"
        issues.append(ConfigIssue(path, message))
    return issues


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 60
_SHOWN.maxlevel = 3


def shown_value(value: Any) -> str:
    """A short ``repr`` of a wrong value for a message: long strings and numbers cut, deep
    nesting elided (a plain ``repr`` raises for an integer of more than 4300 digits)."""
    try:
        return _SHOWN.repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"


Model = TypeVar("Model", bound=BaseModel)


def validate(
    model: type[Model],
    data: Any,
    source: str | None,
    error: type[ConfigError],
    *,
    union_tags: Collection[str] = (),
    checks: Callable[[Model], list[ConfigIssue]] = lambda config: [],
) -> Model:
    """Validate parsed YAML against ``model``, then run ``checks`` (what a schema cannot
    say: pin clashes, unreadable secrets); raise ``error`` listing every problem by path."""
    if not isinstance(data, dict):
        raise error.single("", "the file must be a YAML mapping of keys", source)
    try:
        config = model.model_validate(data)
    except ValidationError as problem:
        raise error(issues_from(problem, union_tags), source) from None
    issues = checks(config)
    if issues:
        raise error(issues, source)
    return config


def load_yaml(path: Path | str, error: type[ConfigError] = ConfigError) -> tuple[Any, str]:
    """The parsed YAML mapping of a config file and its name for messages.

    Raises ``error`` (a ``ConfigError`` subclass of the calling program) when the file cannot
    be read, is not YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        raise error.single("", f"cannot read {path}: {problem.strerror}", str(path)) from None
    except UnicodeDecodeError as problem:
        raise error.single(
            "", f"not UTF-8 text (byte {problem.start}): save the file as UTF-8", str(path)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error.single("", f"not valid YAML: {problem}", str(path)) from None
    except RecursionError:
        raise error.single("", "not valid YAML: nested too deeply", str(path)) from None
    except ValueError as problem:  # an integer of more than 4300 digits
        raise error.single("", f"not valid YAML: {problem}", str(path)) from None
    if not isinstance(data, dict):
        raise error.single("", "the file must be a YAML mapping of keys", str(path))
    return data, str(path)


def readable(path: Path) -> bool:
    """Whether the file can really be read now (``os.access`` says yes to root for mode 000
    and to directories)."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return False
    return True


def read_secret(file: Path | None, env: str | None) -> str | None:
    """A secret from the first line of ``file`` or from the environment variable ``env``."""
    if file is not None:
        lines = file.read_text().splitlines()
        return lines[0] if lines else ""
    if env is not None:
        return os.environ.get(env)
    return None


def secret_file_issues(
    files: dict[str, Path | None], envs: dict[str, str | None]
) -> list[ConfigIssue]:
    """Problems with secret files that cannot be read or variables that are not set."""
    issues = [
        ConfigIssue(path, f"cannot read {file}")
        for path, file in files.items()
        if file is not None and not readable(file)
    ]
    issues += [
        ConfigIssue(path, f"${name} is not set")
        for path, name in envs.items()
        if name is not None and name not in os.environ
    ]
    return issues


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class TlsConfig(Section):
    """TLS to the broker. ``ca_file`` verifies the broker (system CAs when absent);
    ``cert_file``/``key_file`` give this client a certificate."""

    enabled: bool = False
    """TLS on (``tls: true`` is short for ``tls: {enabled: true}``); the broker's certificate
    is always verified, against ``ca_file`` and for the name in ``host``."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BrokerConfig(Section):
    """The broker connection common to agent and collector.

    The password comes from ``password_file`` (first line) or the environment variable named
    by ``password_env``; it is never written in the config file and never logged.
    """

    host: Annotated[str, Field(min_length=1)]
    """The broker's name or address; with TLS, a name its certificate is issued for."""
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    """1883 is MQTT's port without TLS, 8883 the usual one with TLS."""
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    username: str | None = None
    """The login on the broker (default: none, for a broker that allows anonymous clients)."""
    password_file: Path | None = None
    password_env: EnvName | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    """MQTT keepalive: the broker declares the client gone (and publishes an agent's
    ``offline`` last will) after about 1.5 × this without traffic."""

    @model_validator(mode="after")
    def _one_secret_source(self) -> BrokerConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        return self

    def password(self) -> str | None:
        """Read the secret now (at connect time), from the file or the environment."""
        return read_secret(self.password_file, self.password_env)

    def issues(self, prefix: str = "mqtt") -> list[ConfigIssue]:
        """What a schema cannot check: secret files readable, variables set, a username."""
        issues = secret_file_issues(
            {
                f"{prefix}.password_file": self.password_file,
                f"{prefix}.tls.ca_file": self.tls.ca_file,
                f"{prefix}.tls.cert_file": self.tls.cert_file,
                f"{prefix}.tls.key_file": self.tls.key_file,
            },
            {f"{prefix}.password_env": self.password_env},
        )
        if (self.password_file or self.password_env) and not self.username:
            issues.append(
                ConfigIssue(f"{prefix}.username", "a password is configured but no username")
            )
        return issues
