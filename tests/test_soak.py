"""The short soak (issue 7): the same code as bench/soak.py, for 45 s at 500 readings/s.

Twenty simulated devices publish through a real mosquitto to ``sitewatch-collector run``
(detection on) and a real influxd. The test asserts what must hold at any speed: every
reading stored exactly once, and the collector's memory flat after warm-up (a loose bound,
so only a real leak fails it). Lag and throughput are printed, never asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sitewatch.localrun import have_influxd, have_mosquitto
from sitewatch.localrun.soak import SoakSettings, run_soak

pytestmark = pytest.mark.integration


def test_soak_short_run_stores_every_reading_once_with_flat_memory(
    tmp_path: Path, summary: Callable[[str], None]
) -> None:
    if not (have_mosquitto() and have_influxd()):
        pytest.fail("mosquitto and influxd must be installed; the README's test command does")
    settings = SoakSettings(
        duration_s=45.0, devices=20, rate=500.0, publishers=1, warmup_s=20.0,
        print_every_s=15.0,
    )  # fmt: skip
    result = run_soak(settings, tmp_path, print)
    summary("\n".join(result.summary()))

    assert result.published >= 0.9 * settings.rate * settings.duration_s
    assert set(result.published_by_device) == {f"dev-{k:03d}" for k in range(20)}
    assert result.loss_failures() == []
    assert result.stored_by_device == result.published_by_device
    assert result.collector_status["duplicates"] == 0
    assert result.collector_status["received"] == result.published
    # Detection was on and saw every reading (both climate fields of each at least).
    assert result.collector_status["detection"]["scored_values"] >= 2 * result.published
    # Memory: bounded growth after warm-up, loose enough that only a leak fails it.
    assert result.failures(max_rss_growth_pct=25.0) == []
    rss = result.rss_figures()
    assert rss["warm_mib"] > 0 and rss["end_mib"] > 0
