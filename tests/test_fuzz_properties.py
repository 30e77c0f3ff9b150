"""Hypothesis properties over what sitewatch reads from outside and what it writes to InfluxDB.

- Wire (``sitewatch.wire``): every valid message survives encode → parse unchanged; any JSON
  near a valid message (keys missing or added, wrong types, NaN and infinities, huge integers,
  unicode, empty and very long strings, deep nesting, damaged bytes, a wrong topic) either
  parses into a valid model or is refused with ``WireError`` and a reason, never with another
  exception. The collector's dead-letter path (``confirm.data_identity``, which reads the
  identity of a refused message) takes the same input without raising.
- Configuration (``configfile``, the agent's and the collector's ``load_config`` /
  ``parse_config``): mutated mappings and damaged YAML files either load or raise
  ``ConfigError`` whose every issue names the field's path, never another exception.
- Line protocol (``escaping``, ``alerting.lines``, ``decisions``): the ``alerts`` lines, whose
  tags and string fields carry free text (an alert's message, a person's name), parse back to
  what went in, or to what the escaping documents (backslash in a tag → ``/``, newline →
  space, unencodable → ``?``, empty tags left out, non-finite values left out), and a real
  influxd gives the same back.

Not repeated here: arbitrary bytes (``test_wire.py``), label and event-detail text through the
parser and a real influxd, and float typing (``test_lineproto.py``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sitewatch.agent import config as agent_config
from sitewatch.collector import config as collector_config
from sitewatch.collector.alerting.lines import alert_line
from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.confirm import data_identity
from sitewatch.collector.decisions import Decision, alerts_line
from sitewatch.collector.lineproto import telemetry_lines
from sitewatch.configfile import ConfigError
from sitewatch.localrun import PROJECT_ROOT, Influxd
from sitewatch.wire import (
    Health,
    Kind,
    Message,
    Quality,
    Reading,
    TelemetryMessage,
    WireError,
    encode,
    parse_message,
    parse_topic,
    topic_for,
)
from tests.lineparse import parse_line
from tests.test_lineproto import _post
from tests.wire_strategies import (
    MAX_INT64,
    MEASURED,
    device_ids,
    identifiers,
    mutated,
    near_valid,
    wire_messages,
)

NOW_MS = 1_795_464_000_000

messages = wire_messages()


def _finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def _all_floats(node: Any) -> list[float]:
    if isinstance(node, float):
        return [node]
    if isinstance(node, dict):
        return [x for value in node.values() for x in _all_floats(value)]
    if isinstance(node, list | tuple):
        return [x for value in node for x in _all_floats(value)]
    return []


# -- properties: wire --------------------------------------------------------------------------


@settings(deadline=None)
@given(messages)
def test_fuzz_wire_every_valid_message_round_trips_unchanged(message: Message) -> None:
    payload = encode(message)
    parsed = parse_message(topic_for(message), payload)
    assert type(parsed) is type(message) and parsed == message
    assert encode(parsed) == payload  # byte for byte: a replay is the same message
    json.loads(payload)  # strict JSON (no NaN literals) for other readers, Node-RED or HA


_TELEMETRY = TelemetryMessage(
    site="plant-a", device="pi-01", boot_id="3f2a9c1d", seq=42,
    readings=[Reading(sensor="cold-room", ts=NOW_MS, temperature_c=4.2, humidity_pct=81.0,
                      quality=Quality.OK)],
)
_TELEMETRY_TOPIC = topic_for(_TELEMETRY)
_DEEP_PAYLOAD = b'{"v": 1, "site": "plant-a", "device": "pi-01", "readings": ' + b"[" * 100_000


@settings(deadline=None)
@given(near_valid())
@example((_TELEMETRY_TOPIC, b"[" * 100_000))  # 100 kB of nesting
@example((_TELEMETRY_TOPIC, _DEEP_PAYLOAD))
@example((_TELEMETRY_TOPIC, encode(_TELEMETRY).replace(b"42", b"9" * 5000)))  # 5000 digits
@example((_TELEMETRY_TOPIC, encode(_TELEMETRY).replace(b"4.2", b"1e400")))
@example((_TELEMETRY_TOPIC, encode(_TELEMETRY).replace(b"cold-room", b"\\ud800")))
@example((_TELEMETRY_TOPIC, encode(_TELEMETRY).replace(b"pi-01", b"pi-02", 1)))  # spoofed
@example(("sitewatch/v1/plant-a/ack/telemetry", encode(_TELEMETRY)))
@example(("sitewatch/v1/plant-a/pi-01/ack", encode(_TELEMETRY)))
@example(("sitewatch/v1/plant-a/pi-01/telemetry/x", encode(_TELEMETRY)))
@example((_TELEMETRY_TOPIC, encode(_TELEMETRY).replace(b'"seq"', b'"' + b"k" * 200_000 + b'"')))
@example(("", b""))
def test_fuzz_wire_near_valid_json_parses_or_is_refused_with_a_reason(
    case: tuple[str, bytes],
) -> None:
    topic, payload = case
    try:
        message = parse_message(topic, payload, now_ms=NOW_MS)
    except WireError as error:
        assert isinstance(error.reason, str) and error.reason.strip()
        assert len(error.reason) < 2000  # fit for a log line, whatever the payload
        return
    # Accepted: a valid model of the topic's kind, for the topic's site and device, with
    # nothing a strict model refuses, and stable when encoded again.
    parts = parse_topic(topic)
    assert (message.site, message.device) == (parts.site, parts.device)
    assert topic_for(message) == topic
    assert all(math.isfinite(x) for x in _all_floats(message.model_dump()))
    assert type(message).model_validate(message.model_dump()) == message
    assert parse_message(topic, encode(message), now_ms=NOW_MS) == message


_HEALTH = Health(ts=NOW_MS, uptime_s=1.0, produced=1, acked=1, outbox_messages=0,
                 outbox_readings=0, outbox_bytes=0, dropped_readings=0, dropped_events=0,
                 read_errors={"rack": {"timeout": MAX_INT64, "crc": MAX_INT64}})


def test_fuzz_wire_every_accepted_count_fits_influxdb_and_health_time_is_checked() -> None:
    """What the wire accepts can be stored: InfluxDB's integers are signed 64-bit (a seq or
    count above that made a ``device_health`` line InfluxDB refused), and the health point's
    own ``ts`` is checked against the future like the readings' (it is the point's time)."""
    most = _TELEMETRY.model_copy(update={"seq": MAX_INT64, "health": _HEALTH})
    assert parse_message(_TELEMETRY_TOPIC, encode(most), now_ms=NOW_MS) == most
    [line] = telemetry_lines(most, SensorCatalog())[-1:]
    fields = parse_line(line)[2]
    assert fields["seq"] == MAX_INT64 and fields["read_errors"] == MAX_INT64  # a capped sum
    for change in ({"seq": MAX_INT64 + 1}, {"health": {"produced": MAX_INT64 + 1}},
                   {"health": {"read_errors": {"rack": {"crc": MAX_INT64 + 1}}}},
                   {"health": {"ts": NOW_MS + 3_600_000}}):
        data = json.loads(encode(most))
        for key, value in change.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        with pytest.raises(WireError):
            parse_message(_TELEMETRY_TOPIC, json.dumps(data).encode(), now_ms=NOW_MS)


@settings(deadline=None)
@given(near_valid())
@example((_TELEMETRY_TOPIC, b"[" * 100_000))
@example((_TELEMETRY_TOPIC, _DEEP_PAYLOAD))
@example((_TELEMETRY_TOPIC, b'{"site": "plant-a", "device": "pi-01", "seq": ' + b"9" * 5000 + b"}"))
@example((_TELEMETRY_TOPIC, b" " * (300 * 1024)))  # over the size limit: never parsed
def test_fuzz_collector_dead_letter_identity_never_raises(case: tuple[str, bytes]) -> None:
    """What the collector reads from a refused message to confirm it to its agent."""
    topic, payload = case
    identity = data_identity(topic, payload)
    if identity is not None:
        parts = parse_topic(topic)
        assert identity[:2] == (parts.site, parts.device)
        assert parts.kind in (Kind.TELEMETRY, Kind.EVENT) and identity[3] >= 1


# -- properties: configuration -----------------------------------------------------------------

_EXAMPLES = PROJECT_ROOT / "firmware_config"
AGENT_BASE: dict[str, Any] = yaml.safe_load((_EXAMPLES / "agent.example.yaml").read_text())
AGENT_BASE["sensors"].append({
    "id": "sim", "driver": "simulated", "model": "compressor", "interval_s": 1.0, "seed": 3,
    "faults": [{"kind": "short_cycling", "start_s": 0}], "labels": {"zone": "x"},
})
AGENT_BASE["mqtt"].update({"username": "pi-cold-01", "password_env": "SITEWATCH_FUZZ_PW",
                           "tls": {"enabled": True}})
COLLECTOR_BASE: dict[str, Any] = yaml.safe_load(
    (_EXAMPLES / "collector.example.yaml").read_text()
)
COLLECTOR_BASE["alerting"]["web"] = {"enabled": True, "token_env": "SITEWATCH_FUZZ_TOKEN"}
_SECRETS = {"SITEWATCH_FUZZ_PW": "fuzz-password", "SITEWATCH_FUZZ_TOKEN": "fuzz-token-0123456789"}


@contextlib.contextmanager
def _secrets_set() -> Iterator[None]:
    """The environment variables the base configs read their secrets from (so that an
    unbroken config loads), restored afterwards."""
    before = {name: os.environ.get(name) for name in _SECRETS}
    os.environ.update(_SECRETS)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

_YAML_ODD: list[Any] = [
    None, True, False, 0, -1, 2**63, 2**64 + 1, 10**40, 1e308, 5e-324, float("nan"),
    float("inf"), float("-inf"), "", " ", "NaN", "\x00", "a\x00b", "é😀\u202e", "/dev/null",
    "/nonexistent/file", "~", "yes", "0o17", "1_000", [], {}, [None], {"": None},
    b"\x00\xff",  # !!binary
    datetime.date(2024, 2, 29),  # YAML reads 2024-02-29 as a date
]

yaml_values = st.one_of(
    st.sampled_from(_YAML_ODD),
    st.integers(), st.floats(), st.text(max_size=30),
    st.integers(300, 3000).map(lambda n: "x" * n),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5) | st.integers() | st.booleans() | st.none(),
                    st.integers() | st.text(max_size=5), max_size=3),
)


def _yaml_mapping(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``base`` mutated with YAML's value types, sometimes with a non-string key (YAML reads
    ``1:``, ``yes:``, ``null:`` as keys of those types)."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        tree = draw(mutated(base, yaml_values))
        if draw(st.integers(0, 9)) == 0:
            tree[draw(st.sampled_from([1, 1.5, True, None]))] = copy.deepcopy(draw(yaml_values))
        return tree

    return build()


def _nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep (deeper than ``repr`` can go at about 1000)."""
    top: list[Any] = []
    inner = top
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return top


def _assert_names_its_fields(error: ConfigError, data: dict[Any, Any],
                             model: type[BaseModel]) -> None:
    assert error.issues
    text = str(error)
    roots = set(model.model_fields) | {str(key) for key in data}
    odd_keys = any(not isinstance(key, str) for key in data)
    for issue in error.issues:
        assert issue.path, f"an issue without a field path: {issue}"
        assert issue.path in text and issue.message in text
        assert odd_keys or any(issue.path == root or issue.path.startswith((f"{root}.", f"{root}["))
                               for root in roots), issue.path


@settings(max_examples=150, deadline=None)
@given(_yaml_mapping(AGENT_BASE))
@example({**AGENT_BASE, "sensors": [{"driver": ["dht22"]}]})
@example({**AGENT_BASE, "sensors": [{"driver": {"name": "dht22"}}]})
@example({**AGENT_BASE, "sensors": [{**AGENT_BASE["sensors"][0], "driver": 10**5000}]})
@example({**AGENT_BASE, "mqtt": {**AGENT_BASE["mqtt"], "port": 10**5000}})
@example({**AGENT_BASE, "mqtt": {**AGENT_BASE["mqtt"], "password_env": None,
                                  "password_file": "a\x00b"}})
def test_fuzz_config_agent_mapping_loads_or_names_the_field(data: Any) -> None:
    try:
        with _secrets_set():
            agent_config.parse_config(data, "agent.yaml")
    except ConfigError as error:
        _assert_names_its_fields(error, data, agent_config.AgentConfig)


@settings(max_examples=150, deadline=None)
@given(_yaml_mapping(COLLECTOR_BASE))
@example({**COLLECTOR_BASE, "influx": {**COLLECTOR_BASE["influx"], "username": "u",
                                       "password_file": "a\x00b"}})
@example({**COLLECTOR_BASE, "state_dir": 10**5000})
def test_fuzz_config_collector_mapping_loads_or_names_the_field(data: Any) -> None:
    try:
        with _secrets_set():
            collector_config.parse_config(data, "collector.yaml")
    except ConfigError as error:
        _assert_names_its_fields(error, data, collector_config.CollectorConfig)


@pytest.mark.parametrize("program", ["agent", "collector"])
def test_fuzz_config_nesting_deeper_than_repr_is_named_not_raised(program: str) -> None:
    """Not an ``@example``: hypothesis cannot print an argument nested this deep."""
    parse: Callable[[Any, str], object]
    model: type[BaseModel]
    if program == "agent":
        parse, base, model = agent_config.parse_config, AGENT_BASE, agent_config.AgentConfig
    else:
        parse, base = collector_config.parse_config, COLLECTOR_BASE
        model = collector_config.CollectorConfig
    data = {**base, "mqtt": _nested(3000)}
    with pytest.raises(ConfigError) as caught:
        parse(data, f"{program}.yaml")
    _assert_names_its_fields(caught.value, data, model)
    assert [issue.path for issue in caught.value.issues] == ["mqtt"]


@st.composite
def yaml_files(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A config file: the mutated mapping as YAML, sometimes with damaged bytes."""
    text = yaml.safe_dump(draw(_yaml_mapping(base)), allow_unicode=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xe9", b"\t", b":", b"[", b"{", b"&a", b"*a", b"!!int",
                                     b"\x00", b"\n  - ", b"'", b'"', b"%YAML 9.9\n"]))
        raw = raw[:at] + junk + raw[at:]
    return raw


_LOADERS: dict[str, tuple[Callable[[Path], object], dict[str, Any]]] = {
    "agent": (agent_config.load_config, AGENT_BASE),
    "collector": (collector_config.load_config, COLLECTOR_BASE),
}


@pytest.mark.parametrize("program", sorted(_LOADERS))
def test_fuzz_config_files_load_or_raise_config_error(program: str) -> None:
    load, base = _LOADERS[program]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"{program}.yaml"

        @settings(max_examples=40, deadline=None)
        @given(yaml_files(base))
        @example(b"site: caf\xe9\n")  # Latin-1 from an old editor
        @example(b"\xff\xfe" + "site: x\n".encode("utf-16-le"))  # UTF-16 with its BOM
        @example(b"[" * 1000)
        @example(b"site: " + b"[" * 1000 + b"]" * 1000)
        @example(b"port: " + b"9" * 5000)
        @example(b"")
        @example(b"- a\n- b\n")
        @example(b"\x00")
        @example(b"a: &x [*x]")
        def load_one(raw: bytes) -> None:
            path.write_bytes(raw)
            try:
                with _secrets_set():
                    load(path)
            except ConfigError as error:
                assert error.issues and str(error)
                assert error.source == str(path)

        load_one()


# -- properties: line protocol -----------------------------------------------------------------

SCHEMA_MEASUREMENTS = frozenset({
    "environment", "equipment", "device_health", "events", "anomaly", "alerts", "delivery",
})
"""Measurement names are constants of the public schema: nothing from outside names one."""

free_text = st.text(max_size=40)
maybe_odd_float = st.none() | st.floats()


def _expected_text(text: str) -> str:
    """A string field as documented: newlines become spaces, unencodable characters ``?``."""
    cleaned = text.replace("\n", " ").replace("\r", " ")
    return cleaned.encode("utf-8", "replace").decode("utf-8")


def _expected_tag(text: str) -> str:
    """A tag value as documented: as a string field, and backslashes are ``/``."""
    return _expected_text(text).replace("\\", "/")


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    fired = draw(st.none() | st.integers(NOW_MS - 10**9, NOW_MS))
    return Alert(
        id=draw(st.from_regex(r"[0-9a-f]{6,16}", fullmatch=True)),
        key="k",
        site=draw(st.text(min_size=1, max_size=40)),  # never empty (the collector's: _collector)
        device=draw(free_text), sensor=draw(free_text), rule=draw(free_text),
        severity=draw(free_text | st.sampled_from(["critical", ""])),
        audience="technician", labels={}, state=draw(st.sampled_from(list(AlertState))),
        message=draw(st.text(max_size=200)), value=draw(maybe_odd_float), limit=None,
        predicted_breach_s=draw(maybe_odd_float), conditions=frozenset(), created_ms=NOW_MS,
        updated_ms=NOW_MS, fired_ms=fired,
    )


alert_actions = st.sampled_from(["fire", "ack", "resolve", "auto_resolve", "escalate", "silence"])


@settings(deadline=None)
@given(alerts(), alert_actions, free_text)
def test_fuzz_lineproto_alert_line_any_text_parses_back(
    alert: Alert, action: str, actor: str
) -> None:
    line = alert_line(alert, action=action, actor=actor, ts_ms=NOW_MS)
    assert "\n" not in line and "\r" not in line
    line.encode("utf-8")  # no lone surrogate reaches the server
    measurement, tags, fields, ts = parse_line(line)
    assert measurement in SCHEMA_MEASUREMENTS and measurement == "alerts" and ts == NOW_MS
    given_tags = {"site": alert.site, "device": alert.device, "sensor": alert.sensor,
                  "rule": alert.rule, "severity": alert.severity}
    assert tags == {k: _expected_tag(v) for k, v in given_tags.items() if v}
    assert {k: fields[k] for k in ("state", "action", "message", "alert_id", "actor")} == {
        "state": alert.state.value, "action": action, "message": _expected_text(alert.message),
        "alert_id": alert.id, "actor": _expected_text(actor),
    }
    for name, value in (("value", alert.value), ("predicted_breach_s", alert.predicted_breach_s)):
        if value is not None and math.isfinite(value):
            assert fields[name] == value
        else:
            assert name not in fields  # no line-protocol spelling for NaN or infinity


decisions = st.builds(
    Decision,
    verdict=st.sampled_from(["fire", "resolve"]),
    site=identifiers, device=device_ids, sensor=identifiers,
    field=st.sampled_from(sorted(MEASURED)), rule=st.from_regex(r"[A-Za-z0-9_.-]{1,64}",
                                                                fullmatch=True),
    detector=st.sampled_from(["threshold", "anomaly", "flatline", "silence"]),
    severity=st.sampled_from(["critical", "warning", "info"]),
    audience=st.sampled_from(["technician", "installer"]),
    ts_ms=st.integers(0, 32_503_680_000_000), value=st.none() | _finite(-273.15, 1e9),
    score=_finite(0.0, 1.0), message=st.text(max_size=200),
    alert_id=st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    predicted_breach_s=st.none() | _finite(0.0, 1e9),
)


@settings(deadline=None)
@given(decisions)
def test_fuzz_lineproto_decision_alerts_line_parses_back(decision: Decision) -> None:
    """The detection path's own ``alerts`` points (when no alert engine is configured):
    ids are validated identifiers, values finite; the message is free text."""
    measurement, tags, fields, ts = parse_line(alerts_line(decision))
    assert measurement == "alerts" and ts == decision.ts_ms
    assert tags["sensor"] == decision.sensor and tags["rule"] == decision.rule
    assert fields["message"] == _expected_text(decision.message)
    assert fields["score"] == decision.score


# -- against the real influxd ------------------------------------------------------------------

DB = "sitewatch"  # the influxd fixture creates it
_example_ids = itertools.count()


@pytest.mark.integration
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(alert=alerts(), action=alert_actions, actor=free_text)
@example(
    alert=Alert(id="c0ffee", key="k", site='pl,ant "a"', device="pi 01=x", sensor="back\\slash\\",
                rule="line\nbreak", severity="é😀", audience="technician", labels={},
                state=AlertState.FIRING, message='say "hi" \\o/\r\n', value=float("nan"),
                limit=None, predicted_breach_s=float("inf"), conditions=frozenset(),
                created_ms=NOW_MS, updated_ms=NOW_MS, fired_ms=NOW_MS - 5),
    action="ack", actor="Ana \ud800 Lima",
)
def test_fuzz_lineproto_influxd_gives_back_any_alert_text(
    influxd: Influxd, alert: Alert, action: str, actor: str
) -> None:
    ts_ms = NOW_MS + next(_example_ids)  # one point per example, never overwritten
    line = alert_line(alert, action=action, actor=actor, ts_ms=ts_ms)
    assert _post(influxd, [line]) == (204, "")
    [row] = influxd.query(f"SELECT * FROM alerts WHERE time = {ts_ms}ms", DB)
    for key, value in (("site", alert.site), ("device", alert.device), ("sensor", alert.sensor),
                       ("rule", alert.rule), ("severity", alert.severity)):
        assert row.get(key) == (_expected_tag(value) if value else None) or (
            not value and row.get(key) == ""
        ), key
    assert row["message"] == _expected_text(alert.message)
    assert row["actor"] == _expected_text(actor)
    assert (row["state"], row["action"], row["alert_id"]) == (alert.state.value, action, alert.id)
    if alert.value is not None and math.isfinite(alert.value):
        # float(): InfluxDB's JSON writes an integral float as digits only (3.9e16 as
        # 39271957780991530), which Python reads as an int of the printed digits
        assert float(row["value"]) == alert.value
