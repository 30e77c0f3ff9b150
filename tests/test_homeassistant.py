"""Home Assistant discovery: the payload builder, the bridge's state topics, and the running
collector announcing devices to a real mosquitto."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sitewatch.collector.alerting.model import Alert, AlertState
from sitewatch.collector.config import CollectorConfigError, HomeAssistantConfig, parse_config
from sitewatch.collector.homeassistant import (
    PROBLEM_INTERVAL_S,
    DeviceInfo,
    device_object_id,
    discovery_config,
    discovery_topic,
    filter_matches,
    problem_state,
)
from sitewatch.collector.homeassistant_bridge import HomeAssistantBridge
from sitewatch.localrun import Influxd, Mosquitto, free_port, wait_until
from sitewatch.wire import (
    Event,
    EventMessage,
    EventType,
    Quality,
    Reading,
    SensorInfo,
    StatusMessage,
    TelemetryMessage,
)
from tests.mqtt_probe import Probe
from tests.processes import collector_status, start_agent, start_collector

CONFIG = HomeAssistantConfig(enabled=True)
TEMPLATE = re.compile(r"^\{\{ value_json\.([a-z_]+) \}\}$")
OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]+$")

# Keys Home Assistant's MQTT integration documents for each part of a device-based discovery
# payload (full names; "dev", "o", "cmps" and "p" are its abbreviations). A key outside these
# would be silently ignored by Home Assistant: a typo here is a lost feature there.
ROOT_KEYS = {"dev", "o", "cmps", "availability"}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "suggested_area"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "value_template", "payload_available", "payload_not_available"}
COMMON_KEYS = {"p", "name", "unique_id", "state_topic", "value_template", "expire_after",
               "device_class", "entity_category", "json_attributes_topic"}
PLATFORM_KEYS = {
    "sensor": COMMON_KEYS | {"unit_of_measurement", "state_class"},
    "binary_sensor": COMMON_KEYS | {"payload_on", "payload_off"},
}


def sensor(sensor_id: str, fields: list[str], interval_s: float = 60.0,
           **labels: str) -> SensorInfo:
    return SensorInfo(id=sensor_id, driver="simulated", fields=fields, interval_s=interval_s,
                      labels=labels)


SENSORS = (
    sensor("cold-room", ["temperature_c", "humidity_pct"], 10.0, zone="kitchen"),
    sensor("door", ["open"], 60.0, zone="kitchen"),
    sensor("compressor", ["running", "duty_cycle_pct", "starts_per_h", "runtime_h"], 30.0,
           zone="plant room", equipment="walk-in"),
    sensor("fan", ["vibrating"]),
    sensor("alarm", ["active"]),
)


def info(site: str = "plant-a", device: str = "pi-01",
         sensors: tuple[SensorInfo, ...] = SENSORS) -> DeviceInfo:
    return DeviceInfo(site, device, "0.1.0", sensors)


def components(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = config["cmps"]
    return result


def by_field(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Components keyed by the value key their template selects (``problem`` included)."""
    found = {}
    for component in components(config).values():
        match = TEMPLATE.match(component["value_template"])
        assert match, component["value_template"]
        found[match.group(1)] = component
    return found


# -- the payload builder ---------------------------------------------------------------------
def test_homeassistant_discovery_carries_the_keys_home_assistant_requires() -> None:
    config = discovery_config(CONFIG, info())
    assert set(config) <= ROOT_KEYS and {"dev", "o", "cmps"} <= set(config)
    assert set(config["dev"]) <= DEVICE_KEYS and config["dev"]["identifiers"]
    assert config["dev"]["name"] == "plant-a pi-01" and config["dev"]["sw_version"] == "0.1.0"
    assert set(config["o"]) <= ORIGIN_KEYS and config["o"]["name"] == "sitewatch"
    [availability] = config["availability"]
    assert set(availability) == AVAILABILITY_KEYS
    assert availability["topic"] == "sitewatch/v1/plant-a/pi-01/status"
    assert TEMPLATE.match(availability["value_template"]).group(1) == "state"  # type: ignore[union-attr]
    # 2 climate + 1 door + 4 compressor + vibration + contact + problem
    assert len(components(config)) == 10
    for component_id, component in components(config).items():
        assert OBJECT_ID.match(component_id)
        platform = component["p"]
        assert set(component) <= PLATFORM_KEYS[platform], component_id
        assert {"unique_id", "state_topic", "value_template", "name"} <= set(component)
        assert TEMPLATE.match(component["value_template"])
        assert "+" not in component["state_topic"] and "#" not in component["state_topic"]
        if platform == "binary_sensor":
            assert (component["payload_on"], component["payload_off"]) == ("ON", "OFF")
        assert isinstance(component["expire_after"], int) and component["expire_after"] > 0


def test_homeassistant_device_classes_for_each_kind_of_sensor() -> None:
    fields = by_field(discovery_config(CONFIG, info()))
    kinds = {name: (c["p"], c.get("device_class"), c.get("unit_of_measurement"),
                    c.get("state_class")) for name, c in fields.items()}
    assert kinds["temperature_c"] == ("sensor", "temperature", "°C", "measurement")
    assert kinds["humidity_pct"] == ("sensor", "humidity", "%", "measurement")
    assert kinds["open"] == ("binary_sensor", "door", None, None)
    assert kinds["running"] == ("binary_sensor", "running", None, None)
    assert kinds["problem"] == ("binary_sensor", "problem", None, None)
    assert kinds["vibrating"] == ("binary_sensor", "vibration", None, None)
    assert kinds["runtime_h"] == ("sensor", "duration", "h", "total_increasing")
    assert fields["problem"]["entity_category"] == "diagnostic"
    assert fields["problem"]["json_attributes_topic"] == fields["problem"]["state_topic"]
    # a one-entity sensor is named by its id, the others by id and quantity
    assert fields["open"]["name"] == "door"
    assert fields["temperature_c"]["name"] == "cold-room temperature"


def test_homeassistant_expire_after_is_three_reporting_intervals() -> None:
    fields = by_field(discovery_config(CONFIG, info()))
    assert fields["temperature_c"]["expire_after"] == 30  # interval 10 s
    assert fields["open"]["expire_after"] == 180  # 60 s
    assert fields["duty_cycle_pct"]["expire_after"] == 90  # 30 s
    assert fields["problem"]["expire_after"] == 3 * PROBLEM_INTERVAL_S
    # readings travel in batches: a faster sensor is still only heard once per batch
    fast = info(sensors=(sensor("cold-room", ["temperature_c"], 0.5),))
    assert by_field(discovery_config(CONFIG, fast))["temperature_c"]["expire_after"] == 15
    slow_batches = HomeAssistantConfig(enabled=True, agent_batch_interval_s=20.0)
    assert by_field(discovery_config(slow_batches, fast))["temperature_c"]["expire_after"] == 60


def test_homeassistant_unique_ids_are_stable_and_distinct() -> None:
    # ids that a naive "_".join would merge: a_b/c vs a/b_c, and . vs _
    devices = [info("a_b", "c"), info("a", "b_c"), info("x", "y.z"), info("x", "y_z"),
               info("plant-a", "pi-01"), info("plant-b", "pi-01")]
    unique_ids: list[str] = []
    for device in devices:
        config = discovery_config(CONFIG, device)
        unique_ids += [c["unique_id"] for c in components(config).values()]
        # the same payload on every run: nothing random, nothing time-dependent
        rebuilt = discovery_config(HomeAssistantConfig(enabled=True), info(
            device.site, device.device, tuple(SensorInfo(**s.model_dump()) for s in SENSORS)))
        assert json.dumps(rebuilt, sort_keys=True) == json.dumps(config, sort_keys=True)
    assert len(unique_ids) == len(set(unique_ids)) == len(devices) * 10
    object_ids = [device_object_id(d.site, d.device) for d in devices]
    assert len(set(object_ids)) == len(devices) and all(OBJECT_ID.match(i) for i in object_ids)
    topics = {discovery_topic(CONFIG, d.site, d.device) for d in devices}
    assert len(topics) == len(devices)
    assert discovery_topic(CONFIG, "plant-a", "pi-01") == (
        "homeassistant/device/sitewatch__plant-a__pi-01/config")


def test_homeassistant_suggested_area_is_the_most_common_zone() -> None:
    assert discovery_config(CONFIG, info())["dev"]["suggested_area"] == "kitchen"
    unlabelled = info(sensors=(sensor("fan", ["vibrating"]),))
    assert "suggested_area" not in discovery_config(CONFIG, unlabelled)["dev"]
    no_area = HomeAssistantConfig(enabled=True, area_label=None)
    assert "suggested_area" not in discovery_config(no_area, info())["dev"]
    by_room = HomeAssistantConfig(enabled=True, area_label="equipment")
    assert discovery_config(by_room, info())["dev"]["suggested_area"] == "walk-in"


def test_homeassistant_problem_state_from_device_state_and_open_alerts() -> None:
    ok = {"state": "online", "faulted_sensors": []}
    assert problem_state(ok, [])["problem"] == "OFF"
    assert problem_state({"state": "sensor-fault", "faulted_sensors": ["door"]}, [])[
        "problem"] == "ON"
    assert problem_state({"state": "stale"}, [])["problem"] == "ON"
    assert problem_state(ok, [alert(AlertState.PENDING)])["problem"] == "OFF"  # unconfirmed
    state = problem_state(ok, [alert(AlertState.FIRING)])
    assert state["problem"] == "ON" and state["open_alerts"] == 1
    assert state["alerts"][0]["message"] == "above 8.0 for 10 min"


def test_homeassistant_filter_matches_like_the_broker() -> None:
    assert filter_matches("#", "homeassistant/device/+/config")
    assert filter_matches("sitewatch/+/+/+", "sitewatch/state/+/+")
    assert filter_matches("sitewatch/state/#", "sitewatch/state/+/+/+/+")
    assert filter_matches("sitewatch/state/plant-a/+", "sitewatch/state/+/+")
    assert not filter_matches("sitewatch/v1/+/+/+", "sitewatch/state/+/+/+/+")
    assert not filter_matches("sitewatch/+/+/+", "sitewatch/state/+/+/+/+")
    assert not filter_matches("homeassistant/status", "homeassistant/device/+/config")


def test_homeassistant_config_refuses_subscriptions_that_catch_its_own_topics(
    tmp_path: Path,
) -> None:
    data: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "client_id": "c1", "topics": ["sitewatch/#"]},
        "influx": {"api": "v1", "url": "http://127.0.0.1:8086", "database": "sitewatch"},
        "state_dir": str(tmp_path),
        "home_assistant": {"enabled": True},
    }
    with pytest.raises(CollectorConfigError) as caught:
        parse_config(data)
    assert {issue.path for issue in caught.value.issues} == {"home_assistant.state_prefix"}
    data["home_assistant"]["state_prefix"] = "facility/state"
    assert parse_config(data).home_assistant.state_prefix == "facility/state"
    data["home_assistant"] = {"enabled": False, "state_prefix": "sitewatch/state"}
    parse_config(data)  # off: nothing is published, nothing clashes
    data["home_assistant"] = {"enabled": True, "discovery_prefix": "home/+"}
    with pytest.raises(CollectorConfigError):
        parse_config(data)


# -- the bridge ------------------------------------------------------------------------------
class RetainingBroker:
    """What the bridge publishes, as a broker keeps it: every message, and per topic the
    retained one (an empty retained payload deletes it, as MQTT does)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.retained: dict[str, bytes] = {}

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        self.messages.append((topic, payload, qos, retain))
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _, _ in self.messages if t == topic]


class World:
    """A bridge fed with agent messages, its broker, and the device states and alerts it
    reads; ``tick`` advances a monotonic clock past the flush interval."""

    def __init__(self) -> None:
        self.broker = RetainingBroker()
        self.states: list[dict[str, Any]] = []
        self.alerts: list[Alert] = []
        self.bridge = HomeAssistantBridge(
            CONFIG, self.broker.publish, device_states=lambda: self.states,
            open_alerts=lambda: self.alerts,
        )
        self.now_s = 1000.0
        self.generation = 1
        self.seq = 0

    def tick(self, advance_s: float = 1.0) -> None:
        self.now_s += advance_s
        self.bridge.tick(self.now_s, self.generation, True)

    def birth(self, sensors: tuple[SensorInfo, ...] = SENSORS, version: str = "0.1.0") -> None:
        self.bridge.observe(StatusMessage(
            site="plant-a", device="pi-01", boot_id="0a1b2c3d", seq=0, state="online",
            ts=1_000, agent_version=version, sensors=list(sensors)))

    def readings(self, *readings: Reading, historical: bool = False) -> None:
        self.seq += 1
        self.bridge.observe(TelemetryMessage(
            site="plant-a", device="pi-01", boot_id="0a1b2c3d", seq=self.seq,
            historical=historical, readings=list(readings)))

    def event(self, sensor_id: str, field: str, value: bool, ts: int) -> None:
        self.seq += 1
        self.bridge.observe(EventMessage(
            site="plant-a", device="pi-01", boot_id="0a1b2c3d", seq=self.seq,
            events=[Event(sensor=sensor_id, ts=ts, type=EventType.STATE_CHANGE, field=field,
                          value=value)]))

    def value(self, component: dict[str, Any]) -> Any:
        """What Home Assistant would show: the retained state, through the value template."""
        payload = self.broker.retained.get(component["state_topic"])
        if payload is None:
            return None
        key = TEMPLATE.match(component["value_template"]).group(1)  # type: ignore[union-attr]
        return json.loads(payload)[key]


def alert(state: AlertState) -> Alert:
    return Alert(id="c0ffee", key="plant-a/pi-01/cold-room/cold-room", site="plant-a",
                 device="pi-01", sensor="cold-room", rule="cold-room", severity="critical",
                 audience="technician", labels={}, state=state, message="above 8.0 for 10 min",
                 value=8.4, limit=None, predicted_breach_s=None,
                 conditions=frozenset({"temperature_c/threshold"}), created_ms=1,
                 updated_ms=1)


def climate(ts: int, temperature_c: float, humidity_pct: float | None = 80.0,
            quality: Quality = Quality.OK) -> Reading:
    return Reading(sensor="cold-room", ts=ts, quality=quality, temperature_c=temperature_c,
                   humidity_pct=humidity_pct)


def door(ts: int, is_open: bool) -> Reading:
    return Reading(sensor="door", ts=ts, quality=Quality.OK, open=is_open)


@pytest.fixture
def world() -> World:
    world = World()
    world.birth()
    world.tick()
    return world


def announced(world: World) -> dict[str, dict[str, Any]]:
    payload = world.broker.retained[discovery_topic(CONFIG, "plant-a", "pi-01")]
    return by_field(json.loads(payload))


def test_homeassistant_bridge_announces_a_new_device_retained(world: World) -> None:
    topic = discovery_topic(CONFIG, "plant-a", "pi-01")
    [(_, payload, qos, retain)] = [m for m in world.broker.messages if m[0] == topic]
    assert retain and qos == 1
    assert json.loads(payload) == discovery_config(CONFIG, info())


def test_homeassistant_bridge_state_topics_carry_what_the_templates_select(world: World) -> None:
    fields = announced(world)
    world.readings(climate(2_000, 4.2, 81.0), door(2_000, True))
    assert world.value(fields["temperature_c"]) is None  # not before the next flush
    world.tick()
    assert world.value(fields["temperature_c"]) == 4.2
    assert world.value(fields["humidity_pct"]) == 81.0
    assert world.value(fields["open"]) == "ON"
    world.readings(climate(3_000, 4.4, None), door(3_000, False))
    world.tick()
    assert world.value(fields["temperature_c"]) == 4.4
    assert world.value(fields["open"]) == "OFF"
    # humidity was not measured: its topic is left alone, so it expires in Home Assistant
    assert json.loads(world.broker.retained[fields["humidity_pct"]["state_topic"]])["ts"] == 2_000
    assert len(world.broker.on(fields["humidity_pct"]["state_topic"])) == 1
    # nothing new: nothing sent (a republished old value would keep a dead sensor alive)
    sent = len(world.broker.messages)
    world.tick()
    world.tick()
    assert [m[0] for m in world.broker.messages[sent:]] == []
    world.readings(door(4_000, True))  # only the door has news
    world.tick()
    assert [m[0] for m in world.broker.messages[sent:]] == [fields["open"]["state_topic"]]


def test_homeassistant_bridge_sends_only_the_newest_reading_per_flush(world: World) -> None:
    fields = announced(world)
    world.readings(climate(3_000, 5.0), climate(2_000, 4.0))  # out of order
    world.readings(climate(2_500, 4.5))
    world.tick()
    assert world.value(fields["temperature_c"]) == 5.0
    assert len(world.broker.on(fields["temperature_c"]["state_topic"])) == 1


def test_homeassistant_bridge_skips_faulty_historical_and_unannounced_readings(
    world: World,
) -> None:
    fields = announced(world)
    world.readings(Reading(sensor="cold-room", ts=2_000, quality=Quality.FAULT))
    world.readings(climate(1_000, 3.0), Reading(sensor="door", ts=2_000, quality=Quality.BAD))
    world.tick()
    # a failed read stamped later does not hide the newest measured value
    assert world.value(fields["temperature_c"]) == 3.0
    assert world.value(fields["open"]) is None
    world.readings(Reading(sensor="cold-room", ts=3_000, quality=Quality.FAULT))
    world.readings(climate(9_000, 30.0), historical=True)
    world.readings(Reading(sensor="not-announced", ts=2_000, quality=Quality.OK,
                           temperature_c=1.0))
    world.tick()
    assert world.value(fields["temperature_c"]) == 3.0
    assert len(world.broker.on(fields["temperature_c"]["state_topic"])) == 1
    assert not [t for t in world.broker.retained if "not-announced" in t]


def test_homeassistant_bridge_a_door_event_is_shown_before_the_next_reading(
    world: World,
) -> None:
    fields = announced(world)
    world.readings(door(1_000, False))
    world.tick()
    world.event("door", "open", True, ts=2_000)
    world.tick()
    assert world.value(fields["open"]) == "ON"
    # a batch whose reading predates the event must not close the door again
    world.readings(door(1_500, False))
    world.tick()
    assert world.value(fields["open"]) == "ON"
    assert len(world.broker.on(fields["open"]["state_topic"])) == 2
    world.readings(door(3_000, False))  # newer than the event: the reading is right again
    world.tick()
    assert world.value(fields["open"]) == "OFF"


def test_homeassistant_bridge_announces_again_when_home_assistant_comes_online(
    world: World,
) -> None:
    topic = discovery_topic(CONFIG, "plant-a", "pi-01")
    world.bridge.on_status(b"offline")
    world.tick()
    assert len(world.broker.on(topic)) == 1
    world.bridge.on_status(b"online")
    world.tick()
    assert len(world.broker.on(topic)) == 2
    world.generation += 1  # a new broker connection: the broker may have lost them
    world.tick()
    assert len(world.broker.on(topic)) == 3


def test_homeassistant_bridge_announces_again_only_when_the_device_changes(
    world: World,
) -> None:
    topic = discovery_topic(CONFIG, "plant-a", "pi-01")
    world.birth()  # the same birth on every agent reconnect
    world.tick()
    assert len(world.broker.on(topic)) == 1
    world.birth(version="0.2.0")
    world.tick()
    assert json.loads(world.broker.retained[topic])["dev"]["sw_version"] == "0.2.0"
    world.birth(sensors=(*SENSORS[:1], sensor("freezer", ["temperature_c"], 10.0)))
    world.tick()
    fields = json.loads(world.broker.retained[topic])["cmps"]
    assert sorted(fields) == ["cold-room__humidity_pct", "cold-room__temperature_c",
                              "freezer__temperature_c", "problem"]
    # the fields that went away were first sent as bare components: Home Assistant removes them
    removal = json.loads(world.broker.on(topic)[-2])["cmps"]
    assert removal["door__open"] == {"p": "binary_sensor"}
    assert removal["compressor__runtime_h"] == {"p": "sensor"}
    assert removal["freezer__temperature_c"] == fields["freezer__temperature_c"]
    assert len(world.broker.on(topic)) == 4


def test_homeassistant_bridge_problem_follows_device_state_and_alerts(world: World) -> None:
    problem = announced(world)["problem"]
    world.states = [{"site": "plant-a", "device": "pi-01", "state": "online",
                     "faulted_sensors": []}]
    world.tick()
    assert world.value(problem) == "OFF"
    world.alerts = [alert(AlertState.PENDING)]  # not confirmed yet
    world.tick()
    assert world.value(problem) == "OFF"
    world.alerts = [alert(AlertState.ACKNOWLEDGED)]
    world.tick()
    assert world.value(problem) == "ON"
    attributes = json.loads(world.broker.retained[problem["json_attributes_topic"]])
    assert attributes["alerts"][0]["rule"] == "cold-room"
    world.alerts = []
    world.states[0] = {**world.states[0], "state": "sensor-fault", "faulted_sensors": ["door"]}
    world.tick()
    assert world.value(problem) == "ON"
    # unchanged: sent again only every PROBLEM_INTERVAL_S, so that it can expire
    sent = len(world.broker.on(problem["state_topic"]))
    world.tick(PROBLEM_INTERVAL_S / 2)
    assert len(world.broker.on(problem["state_topic"])) == sent
    world.tick(PROBLEM_INTERVAL_S / 2)
    assert len(world.broker.on(problem["state_topic"])) == sent + 1


def test_homeassistant_bridge_sends_nothing_while_disconnected() -> None:
    world = World()
    world.birth()
    world.bridge.tick(1.0, 1, False)
    assert world.broker.messages == []
    world.bridge.tick(2.0, 1, True)
    assert world.broker.messages


# -- against a real broker, with the running collector -------------------------------------
AGENT_SENSORS = [
    {"id": "cold-room", "driver": "simulated", "model": "cold_room", "interval_s": 0.1,
     "seed": 1, "labels": {"zone": "kitchen"}},
    {"id": "door", "driver": "simulated", "model": "door", "interval_s": 0.1, "seed": 2},
    {"id": "compressor", "driver": "simulated", "model": "compressor", "interval_s": 0.1,
     "seed": 3, "faults": [{"kind": "short_cycling", "start_s": 0}]},
]


def latest_json(probe: Probe, topic: str) -> dict[str, Any] | None:
    messages = [m for m in probe.snapshot() if m.topic == topic and m.payload]
    return json.loads(messages[-1].payload) if messages else None


@pytest.mark.integration
def test_homeassistant_collector_announces_devices_to_a_real_broker(
    mosquitto: Mosquitto, influxd: Influxd, write_agent_config: Callable[..., Path],
    procs: list[subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(yaml.safe_dump({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "collector-ha"},
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influxd.port}",
                   "database": "sitewatch", "flush_interval_s": 0.2},
        "state_dir": str(tmp_path / "collector-state"),
        "metrics": {"port": free_port()},
        "home_assistant": {"enabled": True},
    }))
    procs.append(start_collector(config, tmp_path / "collector.log"))
    states = Probe("127.0.0.1", mosquitto.port, "sitewatch/state/#")
    agent = write_agent_config(mosquitto.port, sensors=AGENT_SENSORS)
    procs.append(start_agent(agent, tmp_path / "agent.log"))

    topic = "homeassistant/device/sitewatch__plant-a__pi-01/config"
    wait_until(lambda: latest_json(states, "sitewatch/state/plant-a/pi-01/door/open"), 30,
               "the door's state")
    # A subscriber that comes later (Home Assistant starting) still finds the config: retained.
    discovery = Probe("127.0.0.1", mosquitto.port, "homeassistant/#")
    wait_until(lambda: discovery.on_topic_suffix("/config"), 10, "the retained config")
    [message] = discovery.on_topic_suffix("/config")
    assert message.topic == topic and message.retain
    payload = json.loads(message.payload)
    assert {"dev", "o", "cmps", "availability"} <= set(payload)
    assert payload["dev"]["identifiers"] == ["sitewatch__plant-a__pi-01"]
    assert payload["dev"]["suggested_area"] == "kitchen" and payload["o"]["name"] == "sitewatch"
    fields = by_field(payload)
    assert set(fields) == {"temperature_c", "humidity_pct", "open", "running", "duty_cycle_pct",
                           "starts_per_h", "runtime_h", "problem"}
    # every entity's state topic carries the key its template selects, of the right kind
    for key, component in fields.items():
        def shown(component: dict[str, Any] = component, key: str = key) -> Any:
            state = latest_json(states, component["state_topic"])
            return state.get(key) if state else None
        wait_until(lambda shown=shown: shown() is not None, 30, f"{key}'s state")  # type: ignore[misc]
        value = shown()
        if component["p"] == "binary_sensor":
            assert value in ("ON", "OFF"), (key, value)
        else:
            assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        if key != "problem":  # 3 × the agents' 5 s batches (the interval is 0.1 s)
            assert component["expire_after"] == 15
    # availability: the agent's retained birth, read through the availability template
    [availability] = payload["availability"]
    status = Probe("127.0.0.1", mosquitto.port, availability["topic"])
    wait_until(lambda: status.snapshot(), 10, "the agent's retained status")
    key = TEMPLATE.match(availability["value_template"]).group(1)  # type: ignore[union-attr]
    assert json.loads(status.snapshot()[0].payload)[key] == availability["payload_available"]

    # Home Assistant restarts: its birth on homeassistant/status brings every config again.
    before = len(discovery.on_topic_suffix("/config"))
    discovery.client.publish("homeassistant/status", b"online", qos=1)
    wait_until(lambda: len(discovery.on_topic_suffix("/config")) > before, 10,
               "the config announced again")
    again = discovery.on_topic_suffix("/config")[-1]
    assert json.loads(again.payload) == payload
    assert collector_status(config)["invalid_messages"] == 0  # its birth was not dead-lettered
    assert collector_status(config)["home_assistant"]["devices"] == 1
    for probe in (states, discovery, status):
        probe.close()
