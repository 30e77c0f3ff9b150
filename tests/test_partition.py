"""Partitions of a fleet of collectors (``mqtt.partition``): configuration, ownership, the
pass-over in ingest, checkpoints after a partition changed, the fleet check, and the configs
``docs/scaling.md`` shows. Two collectors on real servers: ``tests/test_two_collectors.py``."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.clock import FakeClock
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.config import (
    CollectorConfig,
    CollectorConfigError,
    CollectorMqttConfig,
    parse_config,
)
from sitewatch.collector.confirm import Confirmations, ConfirmStore
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.ingest import Ingest
from sitewatch.collector.mqtt import Received
from sitewatch.collector.partition import (
    Partition,
    PartitionConfig,
    fleet_issues,
    main,
    owner,
)
from sitewatch.collector.service import Collector
from sitewatch.collector.tracking import SeqTracker
from sitewatch.wire import (
    DEVICE_KINDS,
    Kind,
    Quality,
    Reading,
    TelemetryMessage,
    encode,
    topic,
    topic_for,
)

SCALING_DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
NOW_MS = 1_795_464_000_000


def _config(tmp_path: Path, partition: dict[str, Any] | None = None,
            **mqtt: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"host": "127.0.0.1", "client_id": "collector-1", **mqtt}
    if partition is not None:
        section["partition"] = partition
    return {
        "mqtt": section,
        "influx": {"api": "v1", "url": "http://127.0.0.1:8086", "database": "sitewatch"},
        "state_dir": str(tmp_path / "state"),
        "metrics": {"enabled": False},
    }


def _issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(CollectorConfigError) as caught:
        parse_config(data)
    return [str(issue) for issue in caught.value.issues]


# -- configuration ------------------------------------------------------------------------


def test_partition_by_sites_subscribes_to_those_sites_only(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, {"sites": ["plant-a", "plant-b"]}))
    assert config.mqtt.topics == ["sitewatch/v1/plant-a/+/+", "sitewatch/v1/plant-b/+/+"]
    hashed = parse_config(_config(tmp_path, {"index": 1, "count": 3}))
    assert hashed.mqtt.topics == ["sitewatch/v1/+/+/+"]  # hashing needs every message


@pytest.mark.parametrize(
    ("partition", "mqtt", "expected"),
    [
        ({"sites": []}, {}, "mqtt.partition.sites: an empty list owns no device"),
        ({"sites": ["plant-a", "plant-a"]}, {}, "mqtt.partition.sites[1]: 'plant-a' is listed"),
        ({"sites": ["plant/a"]}, {}, "mqtt.partition.sites[0]: String should match pattern"),
        ({"index": 0}, {}, "mqtt.partition.count: give index and count together"),
        ({"count": 2}, {}, "mqtt.partition.index: give index and count together"),
        ({"index": 2, "count": 2}, {}, "mqtt.partition.index: 2 is not below count (2)"),
        ({}, {}, "mqtt.partition: give sites, or index and count"),
        ({"sites": ["plant-a"]}, {"topics": ["sitewatch/v1/+/+/+"]},
         "mqtt.topics: leave it out with mqtt.partition.sites"),
        (None, {"topics": ["$share/collectors/sitewatch/v1/+/+/+"]},
         "mqtt.topics[0]: a shared subscription hands each message to one collector"),
    ],
)
def test_partition_config_problem_names_its_field(
    tmp_path: Path, partition: dict[str, Any] | None, mqtt: dict[str, Any], expected: str
) -> None:
    issues = _issues(_config(tmp_path, partition, **mqtt))
    assert len(issues) == 1 and issues[0].startswith(expected), issues


# -- ownership ----------------------------------------------------------------------------


def test_partition_owner_is_pinned_across_releases() -> None:
    # Changing the hash would move devices between running collectors (and their detection
    # state with them): these values are part of the contract.
    assert [owner("plant-b", f"pi-0{n}", 2) for n in range(1, 9)] == [0, 1, 0, 1, 1, 0, 0, 0]
    assert [owner("plant-b", f"pi-0{n}", 3) for n in range(1, 9)] == [2, 1, 0, 1, 2, 0, 0, 2]
    assert owner("plant-b", "pi-01", 1) == 0


def test_partition_owner_spreads_evenly_and_growing_moves_devices_only_to_the_new_one() -> None:
    devices = [("site-" + str(n % 7), f"dev-{n}") for n in range(6000)]
    shares = Counter(owner(site, device, 3) for site, device in devices)
    assert all(1800 <= shares[index] <= 2200 for index in range(3)), shares
    moved = [(s, d) for s, d in devices if owner(s, d, 4) != owner(s, d, 3)]
    assert all(owner(s, d, 4) == 3 for s, d in moved)  # only to the new collector
    assert 1300 <= len(moved) <= 1700  # about a quarter


def test_partition_every_topic_is_handled_by_exactly_one_collector_of_a_hash_partition() -> None:
    partitions = [Partition(PartitionConfig(index=i, count=3)) for i in range(3)]
    topics = [topic(site, f"pi-{n:02}", kind) for site in ("plant-a", "plant-b")
              for n in range(30) for kind in (*DEVICE_KINDS, Kind.ACK)]
    topics += ["sitewatch/v1/plant-a/pi-01/bogus", "sitewatch/v1/x", "other/root/a/b/c"]
    for name in topics:
        assert sum(p.owns_topic(name) for p in partitions) == 1, name
    for n in range(30):  # a device's data and its confirmations have the same owner
        device = f"pi-{n:02}"
        owners = {i for i, p in enumerate(partitions) for kind in (*DEVICE_KINDS, Kind.ACK)
                  if p.owns_topic(topic("plant-a", device, kind))}
        assert owners == {owner("plant-a", device, 3)}


def test_partition_by_sites_and_hash_owns_only_its_share_of_its_sites() -> None:
    partition = Partition(PartitionConfig(sites=["plant-b"], index=0, count=2))
    assert partition.hashed and not partition.everything
    assert not partition.owns("plant-a", "pi-01")
    assert partition.owns("plant-b", "pi-01") and not partition.owns("plant-b", "pi-02")
    assert Partition(None).everything and not Partition(None).hashed


# -- ingest: the pass-over ----------------------------------------------------------------


def _telemetry(device: str, seq: int) -> TelemetryMessage:
    reading = Reading(sensor="cold-room", ts=NOW_MS + seq, temperature_c=4.0,
                      quality=Quality.OK)
    return TelemetryMessage(site="plant-b", device=device, boot_id="3f2a9c1d", seq=seq,
                            readings=[reading])


def test_partition_ingest_passes_over_other_collectors_devices_acked_in_order(
    tmp_path: Path,
) -> None:
    mine, theirs = "pi-01", "pi-02"  # index 0 and 1 of 2 (pinned above)
    partition = Partition(PartitionConfig(index=0, count=2))
    tracker, confirmations = SeqTracker(), Confirmations(interval_s=1.0)
    stored: list[str] = []

    def submit(lines: list[str], token: object) -> None:
        stored.extend(lines)
        ingest.mark_durable([token])

    ingest = Ingest(
        submit, clock=FakeClock(NOW_MS / 1000), catalog=SensorCatalog(), tracker=tracker,
        devices=DeviceStates(300), dead_letters=DeadLetters(tmp_path / "dead.jsonl"),
        max_future_ms=300_000, confirmations=confirmations, owns_topic=partition.owns_topic,
    )
    received = []
    for seq in range(1, 7):
        device = mine if seq % 2 else theirs
        message = _telemetry(device, seq)
        received.append(Received(topic_for(message), encode(message), mid=seq, qos=1,
                                  retain=False, generation=1))
    for delivery in received:
        ingest.handle(delivery)
    acked: list[int] = []
    assert ingest.release_acks(lambda m: acked.append(m.mid)) == 6
    assert acked == [1, 2, 3, 4, 5, 6]  # every message acknowledged, in receipt order
    assert ingest.passed_over == 3 and ingest.received_messages == 3
    assert tracker.devices() == [("plant-b", mine)]
    assert stored and all(f"device={mine}" in line for line in stored)
    acks = confirmations.due(now_s=10.0, now_ms=NOW_MS)
    assert [(a.device, a.durable_seq) for a in acks] == [(mine, 1)]  # 1, then 3 and 5 above


# -- checkpoints after a partition changed --------------------------------------------------


@pytest.mark.parametrize("process", [True, False], ids=["detection-worker", "inline"])
def test_partition_collector_forgets_other_collectors_devices_at_start(
    tmp_path: Path, process: bool
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    tracker, catalog, confirms = SeqTracker(), SensorCatalog(), Confirmations()
    for site, device in (("plant-a", "pi-01"), ("plant-b", "pi-09")):
        tracker.observe(site, device, "3f2a9c1d", 1)
        catalog.set_sensor(site, device, "cold-room", labels={}, fields=["temperature_c"])
        confirms.durable(site, device, "3f2a9c1d", 1)
    (state / "tracking.json").write_text(json.dumps(tracker.to_json()))
    (state / "catalog.json").write_text(json.dumps(catalog.to_json()))
    store = ConfirmStore(state / "confirm.db")  # the checkpoint (confirm.json is a view)
    store.save(confirms)
    store.close()
    (state / "detection.json").write_text(json.dumps({"version": 1, "streams": {
        f"{site}/{device}/cold-room/temperature_c": NOW_MS / 1000
        for site, device in (("plant-a", "pi-01"), ("plant-b", "pi-09"))}}))

    # Once the fleet's collector for all sites, it now owns plant-a only.
    data = _config(tmp_path, {"sites": ["plant-a"]})
    data["detection"] = {"process": process}
    collector = Collector(parse_config(data), clock=FakeClock(NOW_MS / 1000))
    try:
        assert collector.tracker.devices() == [("plant-a", "pi-01")]
        assert collector.catalog.get("plant-b", "pi-09", "cold-room") is None
        assert collector.catalog.get("plant-a", "pi-01", "cold-room") is not None
        assert collector.confirmations is not None
        assert collector.confirmations.durable_seq("plant-b", "pi-09", "3f2a9c1d") is None
        assert collector.confirmations.durable_seq("plant-a", "pi-01", "3f2a9c1d") == 1
        # The detection worker reads the file itself; inline detection was restored from it.
        streams = json.loads((state / "detection.json").read_text())["streams"]
        assert list(streams) == ["plant-a/pi-01/cold-room/temperature_c"]
        if not process:
            assert collector.detection is not None
            streams = collector.detection.to_json()["streams"]
            assert streams and all(key.startswith("plant-a/pi-01/") for key in streams)
        assert collector.ingest.owns_topic is None  # sites only: the broker filters
    finally:
        collector.spool.close()
        collector.sink.close()


# -- the fleet ----------------------------------------------------------------------------


def _mqtt(client_id: str, partition: dict[str, Any] | None = None,
          **extra: Any) -> CollectorMqttConfig:
    data: dict[str, Any] = {"host": "broker", "client_id": client_id, **extra}
    if partition is not None:
        data["partition"] = partition
    return CollectorMqttConfig.model_validate(data)


def test_partition_fleet_check_passes_disjoint_complete_partitions() -> None:
    fleet = [
        ("north", _mqtt("c-north", {"sites": ["plant-a", "plant-c"]})),
        ("south-0", _mqtt("c-south-0", {"sites": ["plant-b"], "index": 0, "count": 2})),
        ("south-1", _mqtt("c-south-1", {"sites": ["plant-b"], "index": 1, "count": 2})),
        ("old-style", _mqtt("c-d", topics=["sitewatch/v1/plant-d/+/+"])),
    ]
    assert fleet_issues(fleet) == []
    assert fleet_issues([("a", _mqtt("a", {"index": 0, "count": 2})),
                         ("b", _mqtt("b", {"index": 1, "count": 2}))]) == []


@pytest.mark.parametrize(
    ("fleet", "expected"),
    [
        ([("a", _mqtt("a")), ("b", _mqtt("b", {"sites": ["plant-a"]}))],
         ["b: mqtt.partition: owns (sites plant-a) devices that a owns too (all sites)"]),
        ([("a", _mqtt("a", {"sites": ["x", "y"]})), ("b", _mqtt("b", {"sites": ["y"]}))],
         ["b: mqtt.partition: owns (sites y) devices that a owns too (sites x, y)"]),
        ([("a", _mqtt("same", {"sites": ["x"]})), ("b", _mqtt("same", {"sites": ["y"]}))],
         ["b: mqtt.client_id: 'same' is also a's"]),
        ([("a", _mqtt("a", {"index": 0, "count": 2})), ("b", _mqtt("b", {"index": 0,
                                                                        "count": 2}))],
         ["b: mqtt.partition: owns (all sites, hash index 0 of 2)",
          "mqtt.partition.index: no collector runs index 1 of 2 for any site not named"]),
        ([("a", _mqtt("a", {"index": 0, "count": 2})), ("b", _mqtt("b", {"index": 1,
                                                                        "count": 3}))],
         ["b: mqtt.partition.count: 3, but a hashes the same site(s) over 2",
          "mqtt.partition.index: no collector runs index 1 of 2 for any site not named",
          "mqtt.partition.index: no collector runs index 0, 2 of 3 for any site not named"]),
        ([("a", _mqtt("a", {"sites": ["x"], "index": 0, "count": 2})),
          ("b", _mqtt("b", {"sites": ["x", "y"], "index": 1, "count": 2}))],
         ["mqtt.partition.index: no collector runs index 0 of 2 for site y"]),
        ([("a", _mqtt("a", topics=["sitewatch/v1/+/+/telemetry"])),
          ("b", _mqtt("b", topics=["sitewatch/v1/+/+/event"]))],  # a device's seqs split
         ["b: mqtt.partition: owns (all sites) devices that a owns too (all sites)"]),
    ],
)
def test_partition_fleet_check_finds_overlaps_gaps_and_shared_client_ids(
    fleet: list[tuple[str, CollectorMqttConfig]], expected: list[str]
) -> None:
    issues = [str(issue) for issue in fleet_issues(fleet)]
    assert len(issues) == len(expected), issues
    for issue, start in zip(issues, expected, strict=True):
        assert issue.startswith(start), issues


def test_partition_check_command_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for name, partition in (("a", {"sites": ["plant-a"]}), ("b", {"sites": ["plant-a", "x"]})):
        data = _config(tmp_path, partition)
        data["mqtt"]["client_id"] = f"collector-{name}"
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        paths.append(str(path))
    assert main(["check", paths[0]]) == 0
    assert "collector-a: sites plant-a" in capsys.readouterr().out
    assert main(["check", *paths]) == 1
    assert "devices that" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("mqtt: {}\n")
    assert main(["check", str(tmp_path / "bad.yaml")]) == 2
    assert main(["owner", "--count", "2", "plant-b/pi-01", "plant-b/pi-02"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "plant-b/pi-01: index 0 of 2", "plant-b/pi-02: index 1 of 2"]


# -- the documentation --------------------------------------------------------------------


def _doc_collector_configs() -> dict[str, dict[str, Any]]:
    """Every YAML block of docs/scaling.md that is a collector config, by the file name on
    the line before it (``# /etc/sitewatch/collector-north.yaml``)."""
    configs = {}
    for block in re.findall(r"```yaml\n(.*?)```", SCALING_DOC.read_text(), re.DOTALL):
        first = block.splitlines()[0]
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "mqtt" in data and "influx" in data:
            configs[first.lstrip("# ").strip()] = data
    return configs


def test_partition_scaling_doc_configs_load_and_form_one_fleet() -> None:
    configs = _doc_collector_configs()
    assert len(configs) >= 3
    # Schema and cross-field checks (not the secret files, which exist on the real hosts).
    models = {name: CollectorConfig.model_validate(data) for name, data in configs.items()}
    fleet = [(name, model.mqtt) for name, model in models.items()
             if model.mqtt.host == "emqx.example.net"]
    assert len(fleet) >= 3
    assert fleet_issues(fleet) == []
