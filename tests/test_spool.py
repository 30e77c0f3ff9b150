"""The collector's spool on a real SQLite file: order, partial batches, caps, restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sitewatch.clock import FakeClock
from sitewatch.collector.spool import Spool


def _lines(batch: int, count: int) -> list[str]:
    return [f"environment,sensor=s{batch} temperature_c={i}.5 {1000 + i}" for i in range(count)]


def test_spool_keeps_batches_in_order_until_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", clock=FakeClock())
    assert spool.head() is None
    ids = [spool.append(_lines(b, 3), readings=3) for b in range(4)]
    for batch, batch_id in enumerate(ids):
        head = spool.head()
        assert head is not None and head.id == batch_id and head.lines == _lines(batch, 3)
        spool.delete(batch_id)
        spool.delete(batch_id)  # a second delete is harmless
    assert spool.head() is None
    stats = spool.stats()
    assert (stats.batches, stats.lines, stats.bytes, stats.dropped_lines) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        spool.append([], readings=0)
    spool.close()


def test_spool_replace_keeps_the_rest_of_a_batch_at_the_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", clock=FakeClock())
    first = spool.append(_lines(0, 10), readings=10)
    spool.append(_lines(1, 2), readings=2)
    spool.replace(first, _lines(0, 10)[6:])
    head = spool.head()
    assert head is not None and head.id == first and head.lines == _lines(0, 10)[6:]
    assert head.readings == 4
    stats = spool.stats()
    body_bytes = len("\n".join(_lines(0, 10)[6:])) + len("\n".join(_lines(1, 2)))
    assert (stats.batches, stats.lines, stats.bytes) == (2, 6, body_bytes)
    spool.replace(first, [])  # nothing left: the batch is gone
    assert spool.stats().batches == 1
    spool.close()


def test_spool_byte_cap_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    one_batch = len("\n".join(_lines(0, 100)).encode())
    spool = Spool(tmp_path / "spool.db", max_bytes=one_batch * 3, clock=FakeClock())
    ids = [spool.append(_lines(b % 10, 100), readings=100) for b in range(5)]
    stats = spool.stats()
    assert stats.batches == 3 and stats.bytes <= one_batch * 3
    assert (stats.dropped_batches, stats.dropped_lines, stats.dropped_readings) == (2, 200, 200)
    head = spool.head()
    assert head is not None and head.id == ids[2]  # the newest stay
    # a single batch larger than the whole cap cannot be kept either; it is counted too
    spool.append(_lines(9, 400), readings=400)
    stats = spool.stats()
    assert stats.dropped_lines == 200 + 300 + 400 and stats.batches == 0
    spool.close()


def test_spool_age_cap_drops_old_batches_by_wall_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool.db", max_age_s=3600, clock=clock)
    spool.append(_lines(0, 5), readings=5)
    clock.advance(1800)
    young = spool.append(_lines(1, 7), readings=7)
    clock.advance(1800.5)  # the first batch is now older than an hour, the second is not
    head = spool.head()
    assert head is not None and head.id == young
    stats = spool.stats()
    assert (stats.batches, stats.dropped_batches, stats.dropped_lines) == (1, 1, 5)
    spool.close()


def test_spool_survives_reopen_with_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    one_batch = len("\n".join(_lines(0, 100)).encode())
    spool = Spool(path, max_bytes=one_batch * 2, clock=FakeClock())
    ids = [spool.append(_lines(b, 100), readings=100) for b in range(3)]
    spool.close()
    again = Spool(path, max_bytes=one_batch * 2, clock=FakeClock())
    stats = again.stats()
    assert (stats.batches, stats.lines, stats.dropped_lines) == (2, 200, 100)
    head = again.head()
    assert head is not None and head.id == ids[1] and head.lines == _lines(1, 100)
    assert again.append(["m v=1.0 1"], readings=1) > ids[2]  # ids never go back
    again.close()


def test_spool_keeps_what_was_committed_when_the_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from sitewatch.collector.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]))\n"
        "for b in range(20):\n"
        "    spool.append([f'm,b={b} v={i}.0 {i}' for i in range(50)], readings=50)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert result.returncode == -9
    spool = Spool(path)
    assert spool.stats().batches == 20 and spool.stats().lines == 1000
    head = spool.head()
    assert head is not None and head.lines[0] == "m,b=0 v=0.0 0"
    spool.close()


def test_spool_round_trips_any_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", clock=FakeClock())
    lines = ['events,sensor=k\\ ü detail="a \\"b\\" ☃ \\\\" 1', "m,t=\x00 v=1.0 2"]
    spool.append(lines, readings=2)
    head = spool.head()
    assert head is not None and head.lines == lines
    spool.close()


def test_spool_counts_what_its_caps_drop_per_device(tmp_path: Path) -> None:
    # Per device, readings produced = stored + dropped must add up: a dropped batch mixes
    # devices, readings, events and points that are neither.
    from sitewatch.collector.dropcount import points_by_device

    def batch(ts: int) -> list[str]:
        return [
            f'environment,site=a,device=pi-01,sensor=s temperature_c=1.0,quality="ok" {ts}',
            f'equipment,site=a,device=pi\\,02,sensor=door open=true,quality="ok" {ts}',
            f"equipment,site=a,device=pi\\,02,sensor=door open=false {ts + 1}",
            f'events,site=a,device=pi\\,02,sensor=door,type=state_change field="open" {ts + 1}',
            f"device_health,site=a,device=pi-01 uptime_s=1.0 {ts}",
        ]

    one_batch = len("\n".join(batch(1000)))
    path = tmp_path / "spool.db"
    spool = Spool(path, max_bytes=one_batch * 2, clock=FakeClock(), count_points=points_by_device)
    for ts in range(1000, 1005):
        spool.append(batch(ts), readings=5)
    expected = {("a", "pi-01", "readings"): 3, ("a", "pi,02", "readings"): 3,
                ("a", "pi,02", "events"): 3}
    assert spool.stats().dropped_batches == 3
    assert spool.dropped_by_device() == expected
    spool.close()
    again = Spool(path, max_bytes=one_batch * 2, clock=FakeClock(), count_points=points_by_device)
    assert again.dropped_by_device() == expected
    again.append(batch(2000), readings=5)
    assert again.dropped_by_device()[("a", "pi-01", "readings")] == 4
    again.close()
