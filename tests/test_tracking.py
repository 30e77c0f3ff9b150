"""Delivery tracking by (device, boot_id, seq), and device states."""

from __future__ import annotations

from typing import Literal

from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.tracking import MAX_BOOTS_PER_DEVICE, SeqTracker, Verdict
from sitewatch.wire import (
    Event,
    EventMessage,
    EventType,
    Quality,
    Reading,
    StatusMessage,
    TelemetryMessage,
)


def _observe(tracker: SeqTracker, boot: str, *seqs: int) -> list[Verdict]:
    return [tracker.observe("s", "d", boot, seq) for seq in seqs]


def test_tracking_in_order_stream_has_no_gaps_or_duplicates() -> None:
    tracker = SeqTracker()
    assert set(_observe(tracker, "b1", *range(1, 101))) == {Verdict.NEW}
    counters = tracker.counters("s", "d")
    assert (counters.gaps, counters.late, counters.duplicates) == (0, 0, 0)


def test_tracking_counts_gaps_late_and_duplicates() -> None:
    tracker = SeqTracker()
    verdicts = _observe(tracker, "b1", 1, 2, 5, 3, 3, 6, 4, 2)
    assert verdicts == [Verdict.NEW, Verdict.NEW, Verdict.NEW, Verdict.LATE, Verdict.DUPLICATE,
                        Verdict.NEW, Verdict.LATE, Verdict.DUPLICATE]
    counters = tracker.counters("s", "d")
    assert (counters.gaps, counters.late, counters.duplicates) == (2, 2, 2)


def test_tracking_new_boot_of_known_device_counts_from_one() -> None:
    tracker = SeqTracker()
    _observe(tracker, "b1", 1, 2, 3)
    _observe(tracker, "b2", 3)  # 1 and 2 of the new boot are missing
    assert tracker.counters("s", "d").gaps == 2
    # the previous boot's backlog replayed after the restart is recognised as already seen
    assert _observe(tracker, "b1", 2) == [Verdict.DUPLICATE]


def test_tracking_first_sight_of_a_device_is_not_a_gap() -> None:
    tracker = SeqTracker()
    _observe(tracker, "b1", 5000, 5001)
    assert tracker.counters("s", "d").gaps == 0


def test_tracking_forgets_old_boots_beyond_the_limit() -> None:
    tracker = SeqTracker()
    for boot in range(MAX_BOOTS_PER_DEVICE + 1):
        _observe(tracker, f"b{boot}", 1)
    assert _observe(tracker, "b0", 1) == [Verdict.NEW]  # b0 was forgotten
    assert _observe(tracker, f"b{MAX_BOOTS_PER_DEVICE}", 1) == [Verdict.DUPLICATE]


def test_tracking_checkpoint_round_trip_keeps_state_and_counters() -> None:
    tracker = SeqTracker()
    _observe(tracker, "b1", 1, 2, 4)
    restored = SeqTracker.from_json(tracker.to_json())
    assert _observe(restored, "b1", 2, 3) == [Verdict.DUPLICATE, Verdict.LATE]
    assert restored.counters("s", "d").gaps == 1


def _status(state: Literal["online", "offline"]) -> StatusMessage:
    return StatusMessage(site="s", device="d", boot_id="abcdef12", seq=0, state=state, ts=1)


def _telemetry(quality: Quality, historical: bool = False) -> TelemetryMessage:
    temperature_c = 4.0 if quality is Quality.OK else None
    return TelemetryMessage(
        site="s", device="d", boot_id="abcdef12", seq=1, historical=historical,
        readings=[Reading(sensor="dht", ts=1, quality=quality, temperature_c=temperature_c)],
    )


def test_devices_state_follows_status_data_and_silence() -> None:
    states = DeviceStates(stale_after_s=60)
    assert states.state("s", "d", 0) == "unknown"
    states.observe(_status("online"), 0)
    assert states.state("s", "d", 1_000) == "online"
    states.observe(_telemetry(Quality.FAULT), 10_000)
    assert states.state("s", "d", 10_000) == "sensor-fault"
    states.observe(_telemetry(Quality.OK), 20_000)
    assert states.state("s", "d", 20_000) == "online"
    assert states.state("s", "d", 81_000) == "stale"
    states.observe(_telemetry(Quality.OK, historical=True), 81_000)  # a replay is not news
    assert states.state("s", "d", 81_000) == "stale"
    states.observe(_status("offline"), 82_000)
    assert states.state("s", "d", 82_000) == "offline"


def test_devices_sensor_fault_events_set_and_clear() -> None:
    states = DeviceStates(stale_after_s=60)
    states.observe(_status("online"), 0)

    def event(kind: EventType) -> EventMessage:
        return EventMessage(site="s", device="d", boot_id="abcdef12", seq=2,
                            events=[Event(sensor="dht", ts=1, type=kind)])

    states.observe(event(EventType.SENSOR_FAULT), 1_000)
    assert states.snapshot(1_000)[0]["faulted_sensors"] == ["dht"]
    states.observe(event(EventType.SENSOR_RECOVERED), 2_000)
    assert states.state("s", "d", 2_000) == "online"
