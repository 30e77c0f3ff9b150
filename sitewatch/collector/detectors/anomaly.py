"""General-purpose streaming anomaly score: how far a reading goes beyond the stream's history.

The detector looks at each stream through four views and keeps, for each view, an envelope
of what the stream has done before. A reading is anomalous when it takes a view further
than anything seen there recently; the score grows with how far beyond, measured in widths
of that view's own envelope, so it needs no per-stream scale or tuning:

- **value**: the reading itself (a cold room warmer than it has been for weeks);
- **seasonal**: the reading minus its usual value at this hour of the day, or of the week
  when a weekly profile explains the stream better (a night that looks like a day);
- **mean**: the mean of the last ``mean_s`` seconds (a burst of small spikes, a slow ramp);
- **volatility**: the mean absolute step between readings over ``volatility_s`` seconds
  (a stream that starts to oscillate or chatter).

Each envelope is a high and a low mark that jump to a new extreme at once and close in on
each other slowly (``range_memory_s``), so a value last seen months ago is no longer
"normal". The excess is measured from a *reference* that follows each mark with a lag of
``shift_accept_s``: a new extreme stays news for a few hours, so a slow ramp keeps adding
evidence as it goes, while a level shift that persists becomes the new normal instead of
alarming for ever. The excess ``e`` (beyond the reference, in widths of the envelope) of the
view that goes furthest becomes ``e / (1 + e)``.

Only new evidence is reported: a score is returned when it exceeds ``repeat_margin`` times
the last score returned, which itself relaxes over ``suppress_s``; other readings score 0.
One event therefore raises one alarm rather than one per reading. On healthy streams
(noise, a clean daily cycle) scores above 0.1 (11 % beyond anything seen before) come about
once per stream and month and above 0.2 practically never, so an alarm policy can start at
0.2; on NAB's corpus the best single threshold is about 0.09.

All time scales are wall-clock seconds taken from the readings' timestamps, so the same
parameters suit a sensor read every 2.5 s and a metric sampled every hour, regular or not:
gaps count as elapsed time, and a step across a gap is scaled as for a random walk. Each view
warms up on its own; the seasonal one starts once the stream is two days old. Memory is
fixed: 4 envelopes, 24 hourly and 168 weekly profile bins, a dozen scalars. There is no
randomness: the same readings always give the same scores.

Parameters
----------
grace_readings, grace_s
    Warm-up (default 150 readings and two days, both needed): the score is 0 until then,
    while the envelopes and profiles learn.
range_memory_s
    How long an extreme stays in an envelope (default 120 days: the envelope narrows around
    its middle by a factor e over that time).
shift_accept_s
    Time constant with which the references follow the marks (default 8 h): the time over
    which a persisting shift stops being news.
mean_s, volatility_s
    Time constants of the mean view (default 2.5 h) and the volatility view (4 h).
season_cycles
    Memory of the hourly profiles, in days (daily profile) or weeks (weekly) (default 5).
    Profiles learn once per hour, from the hour's mean.
weekly_ratio
    The weekly profile is used when its mean absolute residual is below this fraction of
    the daily profile's (default 0.8).
suppress_s, repeat_margin
    How a reported score keeps the next ones quiet (defaults 14 h and 1.5).

Works well on: spikes and dips beyond the usual range, level shifts, ramps and drifts that
leave the range, changes of the daily or weekly pattern, bursts of activity, onsets of
oscillation. Works poorly on: anomalies that stay inside the range the stream has already
visited (a spike no higher than last month's), changes in the order of values with the same
range and rhythm, and anything during the warm-up. A first excursion in a young stream (its
first warm day) scores high: the detector only knows what it has seen.

Examples
--------
A noisy daily cycle sampled every 5 minutes for a week, with a 10-unit spike on day 5:

>>> import math, random
>>> rng = random.Random(7)
>>> detector = AnomalyDetector(AnomalyParams())
>>> spike = 5 * 288 + 100
>>> scores = []
>>> for k in range(7 * 288):
...     ts_s = 1_700_000_000.0 + 300.0 * k
...     value = 20.0 + 5.0 * math.sin(2 * math.pi * k / 288) + rng.gauss(0.0, 0.5)
...     value += 10.0 if k == spike else 0.0
...     scores.append(detector.score_one(ts_s, value))
...     if k == spike:
...         why = detector.details()
...     detector.learn_one(ts_s, value)
>>> max(scores[: 2 * 288])  # warming up for two days
0.0
>>> [k for k, score in enumerate(scores) if score > 0.1] == [spike]
True
>>> round(scores[spike], 2)
0.68
>>> why["view"], round(why["excess"], 1)  # 2.2 widths beyond the usual residuals
('seasonal', 2.2)
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import Annotated, Final

from pydantic import Field

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.protocols import JsonValue

__all__ = ["AnomalyDetector", "AnomalyParams"]

_DAY_S: Final = 86400.0
_BIN_S: Final = 3600.0
_DAILY_BINS: Final = 24
_WEEKLY_BINS: Final = 168
# The Unix epoch was a Thursday: shifting by 3 days starts weekly bin 0 on Monday 00:00 UTC.
_WEEK_SHIFT_H: Final = 72
# A profile bin is used once it holds this many bin-widths of data (a visit and a half).
_BIN_READY_S: Final = 1.5 * _BIN_S
# The seasonal view starts once the daily profile has seen every hour twice, so that its
# envelope learns the residuals of every hour, not only of the hours that filled first.
_SEASONAL_START_S: Final = 2 * _DAY_S
# Time constant of the profiles' residual scales, which choose daily vs weekly and clip updates.
_PROFILE_ERROR_S: Final = 2 * _DAY_S
# Profile updates are clipped to this many residual scales, so one odd day barely moves them.
_PROFILE_CLIP: Final = 4.0
# Excess is capped so that e / (1 + e) stays below 1 and finite.
_MAX_EXCESS: Final = 1e9

_VIEWS: Final = ("value", "seasonal", "mean", "volatility")
_STATE_VERSION: Final = 1

# Memory layout. With thousands of streams, every object a reading touches is likely a cache
# miss, so each detector keeps its numbers in two flat arrays rather than in lists of floats.
# The views' array: first the four views' envelopes, view k's at 4 * k: its high and low
# marks, and the references that lag them (reference high, reference low); then when each
# view had its first signal (at _SINCE_S + k), and at which reading (at _SINCE_N + k), for
# its own warm-up. The envelopes are read all at once (one call, into locals).
_ENVELOPES: Final = struct.Struct(f"{4 * len(_VIEWS)}d")
_SEASONAL_AT: Final = 4
_MEAN_AT: Final = 8
_VOLATILITY_AT: Final = 12
_SINCE_S: Final = 4 * len(_VIEWS)
_SINCE_N: Final = _SINCE_S + len(_VIEWS)
# Bit k of the ``_started`` and ``_ready`` masks is view k. Per mask: its bits as booleans
# (Python 3.11 runs tuple lookups faster than bit operations), and the views it lacks.
_ALL_READY: Final = (1 << len(_VIEWS)) - 1
_VIEW_FLAGS: Final = tuple(
    tuple(bool(mask >> k & 1) for k in range(len(_VIEWS))) for mask in range(_ALL_READY + 1)
)
_NOT_READY: Final = tuple(
    tuple(k for k in range(len(_VIEWS)) if not mask >> k & 1) for mask in range(_ALL_READY + 1)
)
# A reading count never reached (and still a small int, which compares fastest).
_NEVER: Final = (1 << 30) - 1
# The profiles' array: per bin, its mean and then the seconds of data it has seen; the
# daily profile's 24 bins, then the weekly profile's 168.
_WEEKLY_AT: Final = 2 * _DAILY_BINS

class AnomalyParams(DetectorParams):
    """Parameters of the ``anomaly`` detector (see the module docstring); defaults suit most."""

    grace_readings: Annotated[int, Field(ge=2)] = 150
    grace_s: Annotated[float, Field(ge=0)] = 2 * _DAY_S
    range_memory_s: Annotated[float, Field(gt=0)] = 120 * _DAY_S
    shift_accept_s: Annotated[float, Field(gt=0)] = 8 * 3600.0
    mean_s: Annotated[float, Field(gt=0)] = 9000.0
    volatility_s: Annotated[float, Field(gt=0)] = 4 * 3600.0
    season_cycles: Annotated[float, Field(gt=0)] = 5.0
    weekly_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    suppress_s: Annotated[float, Field(gt=0)] = 14 * 3600.0
    repeat_margin: Annotated[float, Field(ge=1)] = 1.5


@register("anomaly", AnomalyParams)
class AnomalyDetector:
    """Streaming anomaly score in [0, 1]; see the module docstring."""

    __slots__ = (
        "_accept_s",
        "_aged_ts",
        "_bin_end_s",
        "_bin_start_s",
        "_bins",
        "_daily_err",
        "_first_ts",
        "_grace_n",
        "_grace_s",
        "_interval_s",
        "_last_excess",
        "_last_score",
        "_last_ts",
        "_last_view",
        "_margin",
        "_mean",
        "_mean_s",
        "_memory_s",
        "_n",
        "_prev",
        "_profile",
        "_ready",
        "_ready_check_n",
        "_season_cycles",
        "_started",
        "_suppress",
        "_suppress_s",
        "_views",
        "_visit_dev_d",
        "_visit_dev_w",
        "_visit_hour",
        "_visit_n",
        "_visit_s",
        "_visit_sum",
        "_vol",
        "_vol_s",
        "_warm",
        "_weekly_err",
        "_weekly_ratio",
    )

    def __init__(self, params: AnomalyParams) -> None:
        # Copied out of the model: read on every reading.
        self._grace_n = params.grace_readings
        self._grace_s = params.grace_s
        self._memory_s = params.range_memory_s
        self._accept_s = params.shift_accept_s
        self._mean_s = params.mean_s
        self._vol_s = params.volatility_s
        self._season_cycles = params.season_cycles
        self._weekly_ratio = params.weekly_ratio
        self._suppress_s = params.suppress_s
        self._margin = params.repeat_margin
        # State (get_state/set_state).
        self._n = 0
        self._first_ts = 0.0
        self._last_ts = 0.0
        self._interval_s = 0.0
        self._prev = 0.0
        self._mean = 0.0
        self._vol = 0.0
        # The views' envelopes and warm-ups (see _ENVELOPES); bit k of _started: view k has
        # had a signal (its envelope is set; until then it is 0 and not read).
        self._views = array("d", bytes(8 * (_SINCE_N + len(_VIEWS))))
        self._started = 0
        self._aged_ts = 0.0  # when the envelopes last aged
        self._profile = array("d", bytes(8 * 2 * (_DAILY_BINS + _WEEKLY_BINS)))
        self._daily_err = 0.0
        self._weekly_err = 0.0
        self._suppress = 0.0
        # The hour being accumulated for the profiles: readings, sum, seconds covered, and
        # absolute residuals from the daily and the weekly profile.
        self._visit_hour = 0
        self._visit_n = 0
        self._visit_sum = self._visit_s = self._visit_dev_d = self._visit_dev_w = 0.0
        # Derived from the state on demand (warm-ups only ever complete); bit k: view k.
        self._warm = False
        self._ready = 0
        self._ready_check_n = _NEVER  # see _first_ready_n()
        # The hour of the latest reading, [start, end) in seconds, and its (hour, daily bin,
        # weekly bin): readings of the same hour reuse them.
        self._bin_start_s = self._bin_end_s = 0.0
        self._bins = (0, 0, 0)
        # The latest score's outputs, for details().
        self._last_score = 0.0
        self._last_excess = 0.0
        self._last_view = -1

    # -- the Detector and Updating protocols ---------------------------------------------

    def score_one(self, ts_s: float, value: float) -> float:
        return self._evaluate(ts_s, value, False)

    def learn_one(self, ts_s: float, value: float) -> None:
        # Works the score out again: learning needs all of it. The live path calls
        # update_one, which does both at once.
        self._evaluate(ts_s, value, True)

    def _evaluate(self, ts_s: float, value: float, learn: bool = True) -> float:
        """The score of a reading; with ``learn``, then learn it (``update_one``).

        The hot path of the detector, written out in one function: locals rather than
        attributes, no helper calls but, once an hour, the profiles' fold."""
        if value - value or ts_s - ts_s:  # NaN or ±inf (x - x is 0.0 only when finite)
            return 0.0  # nothing to say about a missing value, nothing to learn from it
        n = self._n
        if self._bin_start_s <= ts_s < self._bin_end_s:
            hour, daily_at, weekly_at = self._bins
        else:
            hour = int(ts_s // _BIN_S)
            daily_at = 2 * (hour % _DAILY_BINS)  # this hour's bins in the profiles' array
            weekly_at = _WEEKLY_AT + 2 * ((hour + _WEEK_SHIFT_H) % _WEEKLY_BINS)
            self._bins = (hour, daily_at, weekly_at)
            self._bin_start_s = hour * _BIN_S
            self._bin_end_s = self._bin_start_s + _BIN_S
        profile = self._profile
        # The views' signals for this reading.
        if n == 0:
            gap_s = 0.0
            season = False
            sig_season = 0.0
            sig_mean = value
            sig_vol = 0.0
        else:
            gap_s = ts_s - self._last_ts
            if gap_s < 0.0:
                gap_s = 0.0  # out of order, or the clock stepped back: no time has passed
            # Seasonal residual: from the weekly profile when it is ready and clearly better.
            season = True
            sig_season = 0.0
            if ts_s - self._first_ts < _SEASONAL_START_S:
                season = False
            elif (
                profile[weekly_at + 1] >= _BIN_READY_S
                and self._weekly_err < self._weekly_ratio * self._daily_err
            ):
                sig_season = value - profile[weekly_at]
            elif profile[daily_at + 1] >= _BIN_READY_S:
                sig_season = value - profile[daily_at]
            else:
                season = False
            mean = self._mean
            sig_mean = mean + gap_s / (self._mean_s + gap_s) * (value - mean)
            step = value - self._prev
            if step < 0.0:
                step = -step
            interval = self._interval_s
            if gap_s > 1.5 * interval > 0.0:
                # A random walk's step grows as the square root of the time between readings.
                step /= math.sqrt(gap_s / interval)
            vol = self._vol
            sig_vol = vol + gap_s / (self._vol_s + gap_s) * (step - vol)
        # The score: how far the view that goes furthest is beyond its reference range, in
        # widths of that range (most readings are within every range).
        views = self._views
        (
            value_hi, value_lo, value_ref_hi, value_ref_lo,
            season_hi, season_lo, season_ref_hi, season_ref_lo,
            mean_hi, mean_lo, mean_ref_hi, mean_ref_lo,
            vol_hi, vol_lo, vol_ref_hi, vol_ref_lo,
        ) = _ENVELOPES.unpack_from(views)  # fmt: skip
        score = best = 0.0
        view = -1
        if self._warm or (n >= self._grace_n and ts_s - self._first_ts >= self._grace_s):
            self._warm = True
            ready = self._ready
            if ready != _ALL_READY and n >= self._ready_check_n:
                # The views' own warm-ups (a view then stays warm).
                started = _VIEW_FLAGS[self._started]
                for k in _NOT_READY[ready]:
                    if (
                        (k == 1 and not season)
                        or not started[k]
                        or n - views[_SINCE_N + k] < self._grace_n
                        or ts_s - views[_SINCE_S + k] < self._grace_s
                    ):
                        continue
                    ready |= 1 << k
                self._ready = ready
                self._ready_check_n = self._first_ready_n()
            value_ready, season_ready, mean_ready, vol_ready = _VIEW_FLAGS[ready]
            if value_ready and (value > value_ref_hi or value < value_ref_lo):
                excess = _excess(value, value_ref_hi, value_ref_lo, value_hi, value_lo)
                if excess > best:
                    best, view = excess, 0
            if (
                season_ready
                and season
                and (sig_season > season_ref_hi or sig_season < season_ref_lo)
            ):
                excess = _excess(sig_season, season_ref_hi, season_ref_lo, value_hi, value_lo)
                if excess > best:
                    best, view = excess, 1
            if mean_ready and (sig_mean > mean_ref_hi or sig_mean < mean_ref_lo):
                excess = _excess(sig_mean, mean_ref_hi, mean_ref_lo, value_hi, value_lo)
                if excess > best:
                    best, view = excess, 2
            if vol_ready and (sig_vol > vol_ref_hi or sig_vol < vol_ref_lo):
                excess = _excess(sig_vol, vol_ref_hi, vol_ref_lo, value_hi, value_lo)
                if excess > best:
                    best, view = excess, 3
            if view >= 0:
                if best > _MAX_EXCESS:
                    best = _MAX_EXCESS
                score = best / (1.0 + best)
                if score <= self._suppress * self._margin:
                    score = 0.0  # no news: quieted by what was reported before
        self._last_view = view
        self._last_excess = best
        self._last_score = score
        if not learn:
            return score

        # Learning the reading.
        if n == 0:
            self._first_ts = ts_s
        # What was just reported quiets what follows, less and less as time passes (while
        # nothing has been reported, as for most readings, there is nothing to fade).
        suppress = self._suppress
        if suppress:
            suppress = suppress * self._suppress_s / (self._suppress_s + gap_s)
            self._suppress = score if score > suppress else suppress
        elif score:
            self._suppress = score
        # Profiles learn and envelopes age once an hour (at the first reading of an hour).
        if hour != self._visit_hour:
            self._start_visit(ts_s, hour)
            (
                value_hi, value_lo, _, _,
                season_hi, season_lo, _, _,
                mean_hi, mean_lo, _, _,
                vol_hi, vol_lo, _, _,
            ) = _ENVELOPES.unpack_from(views)  # as aged  # fmt: skip
        # The envelopes' marks jump to any new extreme at once.
        if n == 0:
            self._aged_ts = ts_s
            self._start_view(0, value, ts_s)
            self._start_view(2, value, ts_s)
            self._start_view(3, 0.0, ts_s)
        else:
            if value > value_hi:
                views[0] = value
            elif value < value_lo:
                views[1] = value
            if sig_mean > mean_hi:
                views[_MEAN_AT] = sig_mean
            elif sig_mean < mean_lo:
                views[_MEAN_AT + 1] = sig_mean
            if sig_vol > vol_hi:
                views[_VOLATILITY_AT] = sig_vol
            elif sig_vol < vol_lo:
                views[_VOLATILITY_AT + 1] = sig_vol
        if season:
            if not _VIEW_FLAGS[self._started][1]:
                self._start_view(1, sig_season, ts_s)
            elif sig_season > season_hi:
                views[_SEASONAL_AT] = sig_season
            elif sig_season < season_lo:
                views[_SEASONAL_AT + 1] = sig_season
        covered_s = gap_s if gap_s < _BIN_S else _BIN_S
        if covered_s == 0.0:  # the first reading, or a repeated timestamp
            covered_s = self._interval_s if 0.0 < self._interval_s < _BIN_S else 1.0
        self._visit_n += 1
        self._visit_sum += value
        self._visit_s += covered_s
        self._visit_dev_d += abs(value - profile[daily_at])
        self._visit_dev_w += abs(value - profile[weekly_at])
        self._mean = sig_mean
        self._vol = sig_vol
        if gap_s > 0.0:
            interval = self._interval_s
            if interval == 0.0:
                self._interval_s = gap_s
            else:
                if gap_s > 4.0 * interval:
                    gap_s = 4.0 * interval
                self._interval_s = interval + 0.05 * (gap_s - interval)
        self._prev = value
        self._last_ts = ts_s
        self._n = n + 1
        return score

    # score_one then learn_one, in one call (the live path's, for every reading).
    update_one = _evaluate

    # -- the Explaining and Checkpointable protocols -------------------------------------

    def details(self) -> dict[str, float | str]:
        """The latest score, the view that went furthest, its excess and its reference range."""
        view = self._last_view
        out: dict[str, float | str] = {"score": self._last_score, "excess": self._last_excess}
        if view < 0:
            out["view"] = ""
            out["message"] = "within its usual range" if self._n else "no data yet"
            return out
        ref_hi, ref_lo = self._views[4 * view + 2], self._views[4 * view + 3]
        name = _VIEWS[view]
        out.update(view=name, reference_low=ref_lo, reference_high=ref_hi)
        out["message"] = (
            f"{name} beyond its recent range [{ref_lo:.4g}, {ref_hi:.4g}] by "
            f"{100.0 * self._last_excess:.0f} % of its width"
        )
        return out

    def get_state(self) -> dict[str, JsonValue]:
        views, profile = self._views, self._profile
        env: list[JsonValue] = [
            list(views[4 * k : 4 * k + 4]) if self._started >> k & 1 else []
            for k in range(len(_VIEWS))
        ]
        return {
            "version": _STATE_VERSION,
            "n": self._n,
            "first_ts": self._first_ts,
            "last_ts": self._last_ts,
            "interval_s": self._interval_s,
            "prev": self._prev,
            "mean": self._mean,
            "vol": self._vol,
            "env": env,
            "since": list(views[_SINCE_S:_SINCE_N]),
            "since_n": [int(count) for count in views[_SINCE_N:]],
            "aged_ts": self._aged_ts,
            "daily": list(profile[0:_WEEKLY_AT:2]),
            "daily_s": list(profile[1:_WEEKLY_AT:2]),
            "weekly": list(profile[_WEEKLY_AT::2]),
            "weekly_s": list(profile[_WEEKLY_AT + 1 :: 2]),
            "daily_err": self._daily_err,
            "weekly_err": self._weekly_err,
            "suppress": self._suppress,
            "visit": [
                self._visit_hour,
                self._visit_n,
                self._visit_sum,
                self._visit_s,
                self._visit_dev_d,
                self._visit_dev_w,
            ],
        }

    def set_state(self, state: dict[str, JsonValue]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"anomaly state version {state.get('version')!r} is not supported")
        try:
            n = _count(state["n"])
            scalars = {
                key: _as_float(state[key])
                for key in (
                    "first_ts",
                    "last_ts",
                    "interval_s",
                    "prev",
                    "mean",
                    "vol",
                    "daily_err",
                    "weekly_err",
                    "suppress",
                )
            }
            env = [_floats(marks, 4 if marks else 0) for marks in _list(state["env"], len(_VIEWS))]
            since = _floats(state["since"], len(_VIEWS))
            visit = _list(state["visit"], 6)
            visit_hour = visit[0]
            if isinstance(visit_hour, bool) or not isinstance(visit_hour, int):
                raise ValueError(f"expected an integer hour, got {visit_hour!r}")
            visit_n = _count(visit[1])
            visit_floats = [_as_float(item) for item in visit[2:]]
            since_n = [_count(item) for item in _list(state["since_n"], len(_VIEWS))]
            aged_ts = _as_float(state["aged_ts"])
            profile = array("d", bytes(8 * 2 * (_DAILY_BINS + _WEEKLY_BINS)))
            profile[0:_WEEKLY_AT:2] = array("d", _floats(state["daily"], _DAILY_BINS))
            profile[1:_WEEKLY_AT:2] = array("d", _floats(state["daily_s"], _DAILY_BINS))
            profile[_WEEKLY_AT::2] = array("d", _floats(state["weekly"], _WEEKLY_BINS))
            profile[_WEEKLY_AT + 1 :: 2] = array("d", _floats(state["weekly_s"], _WEEKLY_BINS))
        except KeyError as missing:
            raise ValueError(f"anomaly state lacks {missing}") from None
        self._n = n
        self._first_ts = scalars["first_ts"]
        self._last_ts = scalars["last_ts"]
        self._interval_s = scalars["interval_s"]
        self._prev = scalars["prev"]
        self._mean = scalars["mean"]
        self._vol = scalars["vol"]
        self._daily_err = scalars["daily_err"]
        self._weekly_err = scalars["weekly_err"]
        self._suppress = scalars["suppress"]
        self._visit_hour = visit_hour
        self._visit_n = visit_n
        (self._visit_sum, self._visit_s, self._visit_dev_d, self._visit_dev_w) = visit_floats
        views = array("d", bytes(8 * (_SINCE_N + len(_VIEWS))))
        self._started = 0
        for k, marks in enumerate(env):
            if marks:
                views[4 * k : 4 * k + 4] = array("d", marks)
                self._started |= 1 << k
            views[_SINCE_S + k] = since[k]
            views[_SINCE_N + k] = since_n[k]
        self._views = views
        self._aged_ts = aged_ts
        self._profile = profile
        self._warm = False
        self._ready = 0
        self._ready_check_n = self._first_ready_n()
        self._last_score = self._last_excess = 0.0
        self._last_view = -1

    # -- internals -----------------------------------------------------------------------

    def _start_view(self, k: int, signal: float, ts_s: float) -> None:
        views = self._views
        views[4 * k : 4 * k + 4] = array("d", (signal, signal, signal, signal))
        views[_SINCE_S + k] = ts_s
        views[_SINCE_N + k] = self._n
        self._started |= 1 << k
        self._ready_check_n = self._first_ready_n()

    def _first_ready_n(self) -> int:
        """The reading count before which no view that is warming up can be warm: each needs
        ``grace_readings`` since its first signal (a view yet to start: later than that)."""
        first = _NEVER
        started = _VIEW_FLAGS[self._started]
        for k in _NOT_READY[self._ready]:
            if started[k]:
                first = min(first, int(self._views[_SINCE_N + k]) + self._grace_n)
        return first

    def _age_envelopes(self, ts_s: float) -> None:
        """Let the time since the last call act on the envelopes (done once an hour): the
        marks close in on each other, the references move towards the marks."""
        elapsed_s = ts_s - self._aged_ts
        self._aged_ts = ts_s
        if elapsed_s <= 0.0:
            return
        relax = 0.5 * elapsed_s / self._memory_s
        if relax > 0.5:
            relax = 0.5
        # The references follow the marks slowly: a new extreme is news until it has been
        # part of the envelope for a while, however the view wanders meanwhile.
        accept = elapsed_s / (self._accept_s + elapsed_s)
        # All four envelopes at once, written out: one that has not started is 0 and stays
        # so (and is set in full when it starts).
        (
            value_hi, value_lo, value_ref_hi, value_ref_lo,
            season_hi, season_lo, season_ref_hi, season_ref_lo,
            mean_hi, mean_lo, mean_ref_hi, mean_ref_lo,
            vol_hi, vol_lo, vol_ref_hi, vol_ref_lo,
        ) = _ENVELOPES.unpack_from(self._views)  # fmt: skip
        shrink = relax * (value_hi - value_lo)
        value_hi -= shrink
        value_lo += shrink
        shrink = relax * (season_hi - season_lo)
        season_hi -= shrink
        season_lo += shrink
        shrink = relax * (mean_hi - mean_lo)
        mean_hi -= shrink
        mean_lo += shrink
        shrink = relax * (vol_hi - vol_lo)
        vol_hi -= shrink
        vol_lo += shrink
        _ENVELOPES.pack_into(
            self._views, 0,
            value_hi, value_lo,
            value_ref_hi + accept * (value_hi - value_ref_hi),
            value_ref_lo + accept * (value_lo - value_ref_lo),
            season_hi, season_lo,
            season_ref_hi + accept * (season_hi - season_ref_hi),
            season_ref_lo + accept * (season_lo - season_ref_lo),
            mean_hi, mean_lo,
            mean_ref_hi + accept * (mean_hi - mean_ref_hi),
            mean_ref_lo + accept * (mean_lo - mean_ref_lo),
            vol_hi, vol_lo,
            vol_ref_hi + accept * (vol_hi - vol_ref_hi),
            vol_ref_lo + accept * (vol_lo - vol_ref_lo),
        )  # fmt: skip

    def _start_visit(self, ts_s: float, hour: int) -> None:
        """Fold the hour that ended into the profiles, age the envelopes, and start
        accumulating the new hour."""
        if self._visit_n:
            self._fold_visit()
            self._age_envelopes(ts_s)
        self._visit_hour = hour
        self._visit_n = 0
        self._visit_sum = self._visit_s = self._visit_dev_d = self._visit_dev_w = 0.0

    def _fold_visit(self) -> None:
        """Fold a finished hour into its daily and weekly bins and their residual scales.

        A bin takes the plain mean of its first visits, then averages over
        ``season_cycles`` visits, each step clipped to a few residual scales so that one odd
        day barely moves the profile while a lasting change is still learned."""
        hour = self._visit_hour
        n = self._visit_n
        mean = self._visit_sum / n
        covered_s = self._visit_s
        err_a = covered_s / (_PROFILE_ERROR_S + covered_s)
        cycle_a = covered_s / (self._season_cycles * _BIN_S + covered_s)
        profile = self._profile
        # The daily bin, then the weekly bin, whose residual scale starts level with the
        # daily profile's. A scale learns from visits to bins that are ready.
        at = 2 * (hour % _DAILY_BINS)
        have_s = profile[at + 1]
        err = self._daily_err
        if have_s >= _BIN_READY_S:
            err = self._daily_err = err + err_a * (self._visit_dev_d / n - err)
        _fold_bin(profile, at, have_s, mean, covered_s, cycle_a, err)
        at = _WEEKLY_AT + 2 * ((hour + _WEEK_SHIFT_H) % _WEEKLY_BINS)
        have_s = profile[at + 1]
        err = self._weekly_err
        if have_s >= _BIN_READY_S:
            if err == 0.0:
                err = self._daily_err  # start level with the daily profile
            err = self._weekly_err = err + err_a * (self._visit_dev_w / n - err)
        _fold_bin(profile, at, have_s, mean, covered_s, cycle_a, err)


def _fold_bin(
    profile: array[float],
    at: int,
    have_s: float,
    mean: float,
    covered_s: float,
    cycle_a: float,
    err: float,
) -> None:
    """Fold an hour's ``mean`` over ``covered_s`` seconds into the profile bin at ``at``,
    which holds ``have_s`` seconds of data so far; ``err`` is the profile's residual scale."""
    if have_s == 0.0:
        profile[at] = mean
        profile[at + 1] = covered_s
        return
    weight = covered_s / (have_s + covered_s)
    if weight < cycle_a:
        weight = cycle_a
    delta = mean - profile[at]
    if err > 0.0:
        limit = _PROFILE_CLIP * err
        if delta > limit:
            delta = limit
        elif delta < -limit:
            delta = -limit
    profile[at] += weight * delta
    if have_s < 1e12:
        profile[at + 1] = have_s + covered_s


def _excess(signal: float, ref_hi: float, ref_lo: float, value_hi: float, value_lo: float) -> float:
    """How far ``signal`` (outside the reference range) is beyond it, in widths of it; the
    width has a floor relative to the value view's marks, so that it is never 0."""
    floor = 1e-12 * (abs(value_hi) + abs(value_lo)) + 1e-300
    if signal > ref_hi:
        return (signal - ref_hi) / (ref_hi - ref_lo + floor)
    return (ref_lo - signal) / (ref_hi - ref_lo + floor)


def _count(value: JsonValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _as_float(value: JsonValue) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _list(value: JsonValue, length: int) -> list[JsonValue]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"expected a list of {length}, got {value!r:.80}")
    return value


def _floats(value: JsonValue, length: int) -> list[float]:
    return [_as_float(item) for item in _list(value, length)]
