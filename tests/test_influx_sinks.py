"""The InfluxDB sinks against real servers: influxd 1.6.7 for the v1 API (read back with
InfluxQL) and VictoriaMetrics for the v2 write API (read back with its export API).

Only the Retry-After tests put something in between: a small HTTP proxy that answers the
first request itself (429/503 with Retry-After) and forwards the rest to the real influxd,
because no real server throttles on demand.
"""

from __future__ import annotations

import email.utils
import http.server
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.config import InfluxConfig
from sitewatch.collector.protocols import Outcome, Sink, WriteResult
from sitewatch.collector.sinks import build_sink
from sitewatch.collector.sinks.classify import (
    classify_response,
    parse_retry_after,
    rejected_lines,
    server_message,
)
from sitewatch.collector.sinks.influx_v1 import InfluxV1Sink
from sitewatch.collector.sinks.influx_v2 import InfluxV2Sink
from sitewatch.localrun import Influxd, VictoriaMetrics

integration = pytest.mark.integration

T0_MS = 1_795_464_000_000  # 2026-11-23T20:00:00Z


def v1_sink(influxd: Influxd, **overrides: object) -> Sink:
    settings: dict[str, object] = {"api": "v1", "url": influxd.url, "database": "sitewatch"}
    settings.update(overrides)
    return build_sink(InfluxConfig.model_validate(settings))


def count(influxd: Influxd, measurement: str = "environment", field: str = "temperature_c") -> int:
    rows = influxd.query(f'SELECT count("{field}") FROM "{measurement}"', "sitewatch")
    return int(rows[0]["count"]) if rows else 0


# --- InfluxDB 1.x (/write), real influxd -------------------------------------------------


@integration
def test_influx_v1_sink_stores_lines_read_back_by_influxql(influxd: Influxd) -> None:
    sink = v1_sink(influxd)
    lines = [
        f"environment,device=pi-01,sensor=cold-room,site=plant-a,zone=kitchen "
        f"temperature_c=3.25,humidity_pct=81.5 {T0_MS}",
        f"environment,device=pi-01,sensor=cold-room,site=plant-a,zone=kitchen "
        f"temperature_c=3.5,humidity_pct=80 {T0_MS + 1}",
        f"equipment,device=pi-02,sensor=compressor,site=plant-a running=true {T0_MS}",
    ]
    try:
        assert sink.write(lines) == WriteResult.ok()
    finally:
        sink.close()
        sink.close()

    rows = influxd.query(
        "SELECT temperature_c, humidity_pct, device, zone FROM environment", "sitewatch"
    )
    assert rows == [
        {
            "time": T0_MS,
            "temperature_c": 3.25,
            "humidity_pct": 81.5,
            "device": "pi-01",
            "zone": "kitchen",
        },
        {
            "time": T0_MS + 1,
            "temperature_c": 3.5,
            "humidity_pct": 80,
            "device": "pi-01",
            "zone": "kitchen",
        },
    ]
    assert influxd.query("SELECT running FROM equipment", "sitewatch") == [
        {"time": T0_MS, "running": True}
    ]


@integration
def test_influx_v1_sink_rewriting_a_batch_doubles_nothing(influxd: Influxd) -> None:
    sink = v1_sink(influxd)
    lines = [f"environment,device=pi-01 temperature_c={20 + i}.5 {T0_MS + i}" for i in range(50)]
    assert sink.write(lines).outcome is Outcome.OK
    assert sink.write(lines).outcome is Outcome.OK
    assert count(influxd) == 50


@integration
def test_influx_v1_sink_field_type_conflict_rejects_only_that_line(influxd: Influxd) -> None:
    sink = v1_sink(influxd)
    assert sink.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]).outcome is (
        Outcome.OK
    )
    result = sink.write(
        [
            f"environment,device=pi-01 temperature_c=21.5 {T0_MS + 1}",
            f'environment,device=pi-01 temperature_c="warm" {T0_MS + 2}',
            f"environment,device=pi-02 temperature_c=22.5 {T0_MS + 3}",
        ]
    )

    assert result.outcome is Outcome.REJECTED
    assert "field type conflict" in result.reason
    assert '"temperature_c"' in result.reason
    assert result.rejected == ()  # 1.x does not say which line: the writer splits
    times = [row["time"] for row in influxd.query("SELECT * FROM environment", "sitewatch")]
    assert times == [T0_MS, T0_MS + 1, T0_MS + 3]


@integration
def test_influx_v1_sink_malformed_lines_rejected_by_index_rest_stored(influxd: Influxd) -> None:
    sink = v1_sink(influxd)
    lines = [
        f"environment,device=pi-01 temperature_c=20.5 {T0_MS}",
        f"environment,device=pi-01 temperature_c=21.5,humidity_pct= {T0_MS + 1}",
        f"environment,device=pi-01 temperature_c=22.5 {T0_MS + 2}",
        # A bad timestamp after a string holding the quote-colon that ends InfluxDB's quote.
        'environment,device=pi-01 note="it\': odd" soon',
        f"environment,device=pi-01 temperature_c=23.5 {T0_MS + 4}",
    ]
    result = sink.write(lines)

    assert result.outcome is Outcome.REJECTED
    assert result.rejected == (1, 3)
    assert "unable to parse" in result.reason
    assert "missing field value" in result.reason
    times = [row["time"] for row in influxd.query("SELECT * FROM environment", "sitewatch")]
    assert times == [T0_MS, T0_MS + 2, T0_MS + 4]


@integration
def test_influx_v1_sink_body_over_max_body_size_is_too_large(tmp_path: Path) -> None:
    server = Influxd(tmp_path / "influxd", max_body_size=4096)
    server.start()
    try:
        server.create_database("sitewatch")
        sink = v1_sink(server)
        lines = [f"environment,device=pi-01 temperature_c={i}.5 {T0_MS + i}" for i in range(200)]
        assert len("\n".join(lines)) > 4096

        result = sink.write(lines)
        assert result.outcome is Outcome.TOO_LARGE
        assert "Request Entity Too Large" in result.reason
        assert count(server) == 0
        assert sink.write(lines[:50]).outcome is Outcome.OK  # the writer's halves fit
        assert count(server) == 50
    finally:
        server.kill()


@integration
def test_influx_v1_sink_retries_while_influxd_is_down_then_writes_again(
    influxd: Influxd,
) -> None:
    sink = v1_sink(influxd, timeout_s=2.0)
    assert sink.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]).outcome is (
        Outcome.OK
    )
    influxd.kill()

    down = sink.write([f"environment,device=pi-01 temperature_c=21.5 {T0_MS + 1}"])
    assert down.outcome is Outcome.RETRY
    assert "no answer from" in down.reason
    assert influxd.url in down.reason

    influxd.start()  # same port, same data
    again = sink.write([f"environment,device=pi-01 temperature_c=21.5 {T0_MS + 1}"])
    assert again.outcome is Outcome.OK
    assert count(influxd) == 2


@integration
def test_influx_v1_sink_unknown_database_retries_with_reason(influxd: Influxd) -> None:
    sink = v1_sink(influxd, database="nosuchdb")
    result = sink.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"])

    assert result.outcome is Outcome.RETRY
    assert 'database not found: "nosuchdb"' in result.reason
    assert "influx.database" in result.reason
    influxd.create_database("nosuchdb")  # fixed without losing the batch
    assert sink.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]).outcome is (
        Outcome.OK
    )


@integration
def test_influx_v1_sink_writes_to_the_retention_policy(influxd: Influxd) -> None:
    influxd.query('CREATE RETENTION POLICY "raw" ON "sitewatch" DURATION 1000d REPLICATION 1')
    sink = v1_sink(influxd, retention_policy="raw")
    assert sink.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]).outcome is (
        Outcome.OK
    )
    assert count(influxd) == 0  # not in the default policy
    rows = influxd.query('SELECT temperature_c FROM "sitewatch"."raw"."environment"')
    assert rows == [{"time": T0_MS, "temperature_c": 20.5}]

    missing = v1_sink(influxd, retention_policy="nosuchrp")
    result = missing.write([f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"])
    assert result.outcome is Outcome.RETRY
    assert "retention policy not found: nosuchrp" in result.reason


@integration
def test_influx_v1_sink_authentication_failure_retries_with_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Influxd(tmp_path / "influxd", auth_enabled=True)
    server.start()
    try:
        server.create_admin("admin", "pa ss:w'ord")
        server.create_database("sitewatch")
        line = [f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]

        anonymous = v1_sink(server).write(line)
        monkeypatch.setenv("SITEWATCH_TEST_INFLUX_PASSWORD", "wrong")
        wrong = v1_sink(server, username="admin", password_env="SITEWATCH_TEST_INFLUX_PASSWORD")
        secret = tmp_path / "influx-password"
        secret.write_text("pa ss:w'ord\n")
        right = v1_sink(server, username="admin", password_file=str(secret))

        for result in (anonymous, wrong.write(line)):
            assert result.outcome is Outcome.RETRY
            assert "authentication failed (HTTP 401)" in result.reason
        assert "authorization failed" in wrong.write(line).reason
        assert right.write(line).outcome is Outcome.OK
        assert count(server) == 1
    finally:
        server.kill()


# --- Retry-After: a throttling proxy in front of the real influxd -------------------------


class ThrottlingProxy:
    """Answers the first ``len(answers)`` requests itself (status, headers), then forwards
    each request to ``upstream`` unchanged and relays the answer."""

    def __init__(self, upstream: str, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = list(answers)
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if proxy.answers:
                    status, headers = proxy.answers.pop(0)
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = urllib.request.Request(  # noqa: S310 (the loopback influxd)
                    upstream + self.path, data=body, method="POST", headers=dict(self.headers)
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                        status, data = response.status, response.read()
                except urllib.error.HTTPError as error:
                    status, data = error.code, error.read()
                proxy.forwarded += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(wall_s=T0_MS / 1000)


@integration
def test_influx_v1_sink_honours_retry_after_seconds_and_dates(
    influxd: Influxd, fake_clock: FakeClock
) -> None:
    date = email.utils.formatdate(fake_clock.time() + 90, usegmt=True)
    answers = [(429, {"Retry-After": "7"}), (503, {"Retry-After": date}), (500, {})]
    with ThrottlingProxy(influxd.url, answers) as proxy:
        sink = InfluxV1Sink(proxy.url, "sitewatch", clock=fake_clock)
        line = [f"environment,device=pi-01 temperature_c=20.5 {T0_MS}"]

        throttled, unavailable, broken = sink.write(line), sink.write(line), sink.write(line)
        assert (throttled.outcome, throttled.retry_after_s) == (Outcome.RETRY, 7.0)
        assert "rate limited (HTTP 429)" in throttled.reason
        assert (unavailable.outcome, unavailable.retry_after_s) == (Outcome.RETRY, 90.0)
        assert "server error (HTTP 503)" in unavailable.reason
        assert (broken.outcome, broken.retry_after_s) == (Outcome.RETRY, None)

        assert sink.write(line).outcome is Outcome.OK
        assert proxy.forwarded == 1
    assert count(influxd) == 1


# --- InfluxDB v2 write API: influxdb-client against VictoriaMetrics and influxd 1.6 ------


def v2_sink(url: str, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> Sink:
    monkeypatch.setenv("SITEWATCH_TEST_INFLUX_TOKEN", "test-token")
    settings: dict[str, object] = {
        "api": "v2",
        "url": url,
        "org": "plant-a",
        "bucket": "sitewatch",
        "token_env": "SITEWATCH_TEST_INFLUX_TOKEN",
    }
    settings.update(overrides)
    return build_sink(InfluxConfig.model_validate(settings))


@integration
@pytest.mark.parametrize("gzip", [True, False])
def test_influx_v2_sink_stores_lines_read_back_from_victoria_metrics(
    victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch, gzip: bool
) -> None:
    sink = v2_sink(victoria.url, monkeypatch, gzip=gzip)
    assert isinstance(sink, InfluxV2Sink)
    lines = [
        f"environment,device=pi-01,site=plant-a temperature_c=3.25,humidity_pct=81.5 {T0_MS}",
        f"environment,device=pi-01,site=plant-a temperature_c=3.5,humidity_pct=80 {T0_MS + 1}",
        f"equipment,device=pi-02,site=plant-a running=true {T0_MS}",
    ]
    try:
        assert sink.write(lines) == WriteResult.ok()
    finally:
        sink.close()
        sink.close()

    series = {item["metric"]["__name__"]: item for item in victoria.export('{site="plant-a"}')}
    assert sorted(series) == [
        "environment_humidity_pct",
        "environment_temperature_c",
        "equipment_running",
    ]
    temperature = series["environment_temperature_c"]
    assert temperature["metric"] == {
        "__name__": "environment_temperature_c",
        "device": "pi-01",
        "site": "plant-a",
    }
    assert temperature["timestamps"] == [T0_MS, T0_MS + 1]  # milliseconds kept
    assert temperature["values"] == [3.25, 3.5]
    assert series["equipment_running"]["values"] == [1]


@integration
def test_influx_v2_sink_malformed_batch_rejected(
    victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = v2_sink(victoria.url, monkeypatch)
    result = sink.write(
        [f"environment,device=pi-01 temperature_c=3.25 {T0_MS}", "environment,device=x garbage"]
    )

    assert result.outcome is Outcome.REJECTED
    assert "cannot process influx line protocol" in result.reason
    assert result.rejected == ()  # VictoriaMetrics does not quote single lines


@integration
def test_influx_v2_sink_retries_while_the_server_is_down_then_writes_again(
    victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = v2_sink(victoria.url, monkeypatch, timeout_s=2.0)
    line = [f"environment,device=pi-01 temperature_c=3.25 {T0_MS}"]
    victoria.kill()

    down = sink.write(line)
    assert down.outcome is Outcome.RETRY
    assert "no answer from" in down.reason
    assert victoria.url in down.reason

    victoria.start()
    assert sink.write(line).outcome is Outcome.OK
    assert victoria.export('{__name__="environment_temperature_c"}')[0]["values"] == [3.25]


@integration
def test_influx_v2_sink_against_influxdb_1_6_retries_and_says_use_v1(
    influxd: Influxd, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = v2_sink(influxd.url, monkeypatch).write(
        [f"environment,device=pi-01 temperature_c=3.25 {T0_MS}"]
    )

    assert result.outcome is Outcome.RETRY
    assert "404 page not found" in result.reason
    assert "influx.api v1" in result.reason


# --- classification, without a server -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (204, Outcome.OK),
        (400, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (413, Outcome.TOO_LARGE),
        (401, Outcome.RETRY),
        (403, Outcome.RETRY),
        (404, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (418, Outcome.RETRY),  # unknown: keep the data
        (302, Outcome.RETRY),
    ],
)
def test_sink_classify_status_decides_the_outcome(status: int, outcome: Outcome) -> None:
    result = classify_response(status, "said so", lines=["m v=1"], retry_after_s=3.0)
    assert result.outcome is outcome
    if outcome is Outcome.RETRY:
        assert result.retry_after_s == 3.0
        assert "said so" in result.reason
    if status in (401, 403):
        assert "authentication failed" in result.reason


def test_sink_classify_influxdb3_line_numbers_name_rejected_lines() -> None:
    body = (
        b'{"error":"partial write of line protocol occurred","data":['
        b'{"original_line":"m x","line_number":2,"error_message":"bad"},'
        b'{"original_line":"m y","line_number":9,"error_message":"out of range"}]}'
    )
    message = server_message(body, None)
    result = classify_response(400, message, lines=["m v=1", "m x", "m v=2"], body=body)

    assert result.reason == "partial write of line protocol occurred"
    assert result.rejected == (1,)


def test_sink_classify_quoted_duplicates_all_rejected() -> None:
    message = "unable to parse 'm x': invalid field format"
    assert rejected_lines(message, ["m x", "m v=1", "m x"]) == (0, 2)
    assert rejected_lines("field type conflict", ["m x"]) == ()


def test_sink_classify_message_falls_back_to_headers_and_clips() -> None:
    assert server_message(b"", {"X-Influxdb-Error": "timeout"}) == "timeout"
    assert server_message(b'{"code":"invalid","message":"bucket not found"}', None) == (
        "bucket not found"
    )
    clipped = server_message(b"x" * 10_000, None)
    assert len(clipped) < 4100
    assert clipped.endswith("(6000 more characters)")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("2.5", 2.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
        ("Mon, 23 Nov 2026 20:00:10 GMT", 10.0),
        ("Mon, 23 Nov 2026 19:00:00 GMT", 0.0),  # already past
        ("tomorrow", None),
    ],
)
def test_sink_retry_after_parses_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, now_s=T0_MS / 1000) == seconds


def test_sink_agent_side_never_imports_influxdb_client() -> None:
    code = (
        "import sys, sitewatch.wire, sitewatch.agent.cli, sitewatch.agent.service; "
        "print('influxdb_client' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"
