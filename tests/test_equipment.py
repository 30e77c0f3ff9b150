"""Equipment logic without GPIO: state confirmation, counters and their persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sitewatch.agent.equipment import EquipmentCounters, StateConfirmer, Transition
from sitewatch.agent.equipment_store import CounterStore
from sitewatch.clock import FakeClock

WALL0 = 1_795_464_000.0


def _observe(confirmer: StateConfirmer, level: bool, t: float) -> list[Transition]:
    return confirmer.observe(level, t, WALL0 + t)


def test_confirmer_bouncing_contact_gives_one_change() -> None:
    confirmer = StateConfirmer(confirm_active_s=2.0, confirm_inactive_s=2.0)
    confirmer.start(False, 0.0, WALL0)
    changes = []
    for level, t in [
        (True, 10.0),
        (False, 10.002),
        (True, 10.004),
        (False, 10.006),
        (True, 10.009),
    ]:
        changes += _observe(confirmer, level, t)
    changes += confirmer.advance(12.0)  # 1.991 s after the last bounce: not yet
    assert changes == []
    assert confirmer.deadline() == pytest.approx(12.009)
    changes += confirmer.advance(12.009)
    changes += confirmer.advance(20.0)
    assert changes == [Transition(True, 10.009, WALL0 + 10.009, None)]
    assert confirmer.state is True


def test_confirmer_short_pulse_is_never_confirmed() -> None:
    confirmer = StateConfirmer(confirm_active_s=1.0, confirm_inactive_s=1.0)
    confirmer.start(False, 0.0, WALL0)
    assert _observe(confirmer, True, 5.0) == []
    assert _observe(confirmer, False, 5.6) == []
    assert confirmer.advance(100.0) == []
    assert confirmer.deadline() is None
    assert confirmer.state is False


def test_confirmer_asymmetric_times_for_a_vibration_switch() -> None:
    confirmer = StateConfirmer(confirm_active_s=0.0, confirm_inactive_s=5.0)
    confirmer.start(False, 0.0, WALL0)
    on = _observe(confirmer, True, 10.0)
    assert [(c.state, c.monotonic_s) for c in on] == [(True, 10.0)]
    # Chatter while running: quiet gaps shorter than 5 s do not stop it.
    assert _observe(confirmer, False, 11.0) == []
    assert _observe(confirmer, True, 14.0) == []
    assert _observe(confirmer, False, 20.0) == []
    assert confirmer.advance(24.99) == []
    off = confirmer.advance(25.0)
    assert [(c.state, c.monotonic_s, c.previous_duration_s) for c in off] == [(False, 20.0, 10.0)]


def test_confirmer_settles_pending_change_before_a_later_edge() -> None:
    confirmer = StateConfirmer(confirm_active_s=2.0, confirm_inactive_s=2.0)
    confirmer.start(False, 0.0, WALL0)
    _observe(confirmer, True, 10.0)
    # Nobody called advance() in between: the next edge must still settle the first run.
    changes = _observe(confirmer, False, 40.0) + confirmer.advance(42.0)
    assert [(c.state, c.monotonic_s, c.previous_duration_s) for c in changes] == [
        (True, 10.0, None),
        (False, 40.0, 30.0),
    ]
    assert changes[1].wall_s == WALL0 + 40.0


def test_confirmer_needs_start() -> None:
    with pytest.raises(RuntimeError, match="start"):
        StateConfirmer(1.0, 1.0).observe(True, 0.0, WALL0)


def _scripted(counters: EquipmentCounters) -> None:
    counters.record(False, 0.0)
    for state, t in [
        (True, 600.0),
        (False, 1200.0),
        (True, 1800.0),
        (False, 2100.0),
        (True, 3000.0),
    ]:
        counters.record(state, t)


def test_counters_duty_starts_and_runtime_for_a_scripted_pattern() -> None:
    counters = EquipmentCounters()
    _scripted(counters)
    # At 3600 s: on 600-1200, 1800-2100 and 3000-3600 = 1500 s of 3600 s.
    assert counters.duty_cycle_pct(3600.0) == pytest.approx(100 * 1500 / 3600)
    assert counters.starts_last_hour(3600.0) == 3
    assert counters.runtime_s(3600.0) == pytest.approx(1500.0)
    # At 4500 s the window is 900-4500: on 900-1200, 1800-2100, 3000-4500 = 2100 s.
    assert counters.duty_cycle_pct(4500.0) == pytest.approx(100 * 2100 / 3600)
    assert counters.starts_last_hour(4500.0) == 2  # the start at 600 s left the hour
    assert counters.runtime_s(4500.0) == pytest.approx(2400.0)
    assert counters.snapshot(4500.0) == {
        "duty_cycle_pct": pytest.approx(58.33, abs=0.01),
        "starts_per_h": 2.0,
        "runtime_h": pytest.approx(2400 / 3600, abs=1e-4),
    }


def test_counters_duty_over_the_known_span_only() -> None:
    counters = EquipmentCounters()
    counters.record(False, 1000.0)
    counters.record(True, 1300.0)
    # Known for 600 s, on for 300 s: 50 %, not 300/3600.
    assert counters.duty_cycle_pct(1600.0) == pytest.approx(50.0)
    # The state found at start is not a start; only the off→on change is.
    assert counters.starts_last_hour(1600.0) == 1
    fresh = EquipmentCounters()
    fresh.record(True, 0.0)
    assert fresh.starts_last_hour(10.0) == 0
    assert fresh.duty_cycle_pct(0.0) == 100.0


def test_counters_memory_stays_bounded() -> None:
    counters = EquipmentCounters(max_segments=2000)
    for index in range(20_000):
        counters.record(index % 2 == 1, index * 0.01)  # chatter: 100 changes a second
    assert counters.segment_count <= 2000
    assert 0.0 < counters.duty_cycle_pct(200.0) <= 100.0
    # Runtime is accumulated, not recomputed from the bounded history.
    assert counters.runtime_s(200.0) == pytest.approx(10_000 * 0.01, rel=1e-6)


def test_counters_prune_history_older_than_the_hour() -> None:
    counters = EquipmentCounters()
    for hour in range(48):
        counters.record(True, hour * 3600.0)
        counters.record(False, hour * 3600.0 + 1800.0)
    now_s = 47 * 3600.0 + 1800.0  # the last stop; the hour before holds one start
    assert counters.segment_count <= 4
    assert counters.starts_last_hour(now_s) == 1
    assert counters.duty_cycle_pct(now_s) == pytest.approx(50.0)
    assert counters.runtime_s(now_s) == pytest.approx(48 * 1800.0)


def test_counter_store_restores_runtime_and_history_after_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "equipment-compressor.json"
    clock = FakeClock(wall_s=WALL0, monotonic_s=100.0)
    store = CounterStore(path, clock)
    store.record(False, 100.0)
    store.record(True, 400.0)  # on at wall WALL0 + 300
    clock.advance(1200.0)
    store.save()  # at wall WALL0 + 1200, still running: 900 s so far

    # Reboot: monotonic time restarts, wall time moved on 300 s.
    rebooted = FakeClock(wall_s=WALL0 + 1500.0, monotonic_s=7.0)
    again = CounterStore(path, rebooted)
    counters = again.counters
    assert counters.runtime_s(7.0) == pytest.approx(900.0)
    assert counters.state is None  # unknown until the input is read
    again.record(True, 7.0)
    rebooted.advance(300.0)
    now = rebooted.monotonic()
    # Known: off 0-300, on 300-1200, (gap 1200-1500 unknown), on 1500-1800 → 1200 of 1500 s.
    assert counters.duty_cycle_pct(now) == pytest.approx(100 * 1200 / 1500)
    assert counters.starts_last_hour(now) == 1  # the start before the reboot; not the gap
    assert counters.runtime_s(now) == pytest.approx(1200.0)


def test_counter_store_saves_on_change_and_every_minute(tmp_path: Path) -> None:
    path = tmp_path / "state" / "equipment-fan.json"
    clock = FakeClock(wall_s=WALL0)
    store = CounterStore(path, clock)
    store.maybe_save()  # nothing changed and no minute passed
    assert not path.exists()
    store.record(True, 0.0)
    store.maybe_save()
    first = json.loads(path.read_text())
    assert first["segments"] == [[WALL0, True]]
    clock.advance(59.0)
    store.maybe_save()
    assert json.loads(path.read_text()) == first
    clock.advance(1.0)
    store.maybe_save()
    assert json.loads(path.read_text())["runtime_s"] == pytest.approx(60.0)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_counter_store_sets_a_corrupt_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "equipment-pump.json"
    path.write_text('{"version": 1, "runtime_s": "lots"')
    store = CounterStore(path, FakeClock())
    assert store.counters.runtime_s(0.0) == 0.0
    assert (tmp_path / "equipment-pump.json.corrupt").exists()
    assert not path.exists()


def test_counter_store_clamps_times_from_a_clock_set_back(tmp_path: Path) -> None:
    path = tmp_path / "equipment-pump.json"
    clock = FakeClock(wall_s=WALL0)
    store = CounterStore(path, clock)
    store.record(False, 0.0)
    store.record(True, 100.0)
    clock.advance(200.0)
    store.save()
    # After the restart the wall clock reads an hour earlier (no RTC, NTP not yet synced).
    early = FakeClock(wall_s=WALL0 - 3600.0, monotonic_s=0.0)
    counters = CounterStore(path, early).counters
    assert counters.runtime_s(0.0) == pytest.approx(100.0)
    assert counters.duty_cycle_pct(0.0) >= 0.0
    assert counters.starts_last_hour(0.0) == 1
