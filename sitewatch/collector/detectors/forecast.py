"""Time-to-threshold forecast: when the recent trend will carry the value past a limit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sitewatch.collector.detectors import DetectorParams, register
from sitewatch.collector.detectors.threshold import describe_duration, describe_value, unit_of
from sitewatch.collector.protocols import JsonValue

__all__ = ["Forecast", "ForecastParams", "Prediction"]

_CI_Z = 2.0
"""Half-width of the crossing-time interval in standard errors (about 95 %)."""
_MIN_SPREAD = 0.5
"""The readings must cover at least half a window (weighted standard deviation of their
times ≥ 0.5 × ``window_s``) before a trend is fitted: right after a start or a long gap a
few minutes of a compressor cycle would look like a steep trend."""


class ForecastParams(DetectorParams):
    """``limit``: the level whose crossing is predicted (stream unit); ``direction``:
    ``above`` (default: rising past it) or ``below``; ``window_s``: time constant of the
    trend fit (seconds, default 2700); ``horizon_s``: predict crossings up to this far ahead
    (seconds, default 4 h); ``min_t``: the trend must be this many standard errors from flat
    (default 4); ``decorrelation_s``: residuals closer than this in time count as one piece
    of evidence (seconds, default 300); ``field``: the stream's field name, for the unit in
    messages (the rules engine fills it in)."""

    model_config = ConfigDict(allow_inf_nan=False)

    limit: float
    direction: Literal["above", "below"] = "above"
    window_s: Annotated[float, Field(ge=60, le=7 * 86400)] = 2700.0
    horizon_s: Annotated[float, Field(gt=0, le=365 * 86400)] = 4 * 3600.0
    min_t: Annotated[float, Field(gt=0, le=100)] = 4.0
    decorrelation_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    field: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _decorrelation_inside_window(self) -> ForecastParams:
        if self.decorrelation_s > self.window_s:
            raise ValueError(
                f"decorrelation_s ({self.decorrelation_s}) must not exceed window_s"
                f" ({self.window_s}): the window would hold less than one independent point"
            )
        return self


_SHORT_DIVISOR = 3.0
"""The crossing time comes from a second fit with a window this many times shorter: a fit
long enough to see through a compressor cycle lags a fresh trend, and would put the
crossing twice as far away as it is when it first becomes significant."""


@dataclass(frozen=True)
class Prediction:
    """The trend at ``now_s``: level (stream unit) and slope (unit per second) from the
    short fit, the long fit's t statistic, and when the limit is crossed (seconds from now;
    0 when already past, None when the trend does not lead there) with the interval's
    half-width (seconds)."""

    now_s: float
    level: float
    slope_per_s: float
    t_stat: float
    breach_in_s: float | None
    ci_s: float | None


@dataclass(frozen=True)
class _Line:
    level: float
    slope: float
    var_level: float
    var_slope: float
    cov_level_slope: float


class _Fit:
    """Exponentially weighted least-squares line through (time, value), in seven sums.

    x is a reading's time minus the newest reading's time, so sums shift rather than grow:
    Σw, Σwx, Σwx², Σwy, Σwxy, Σwy², Σw².
    """

    __slots__ = ("w", "ww", "wx", "wxx", "wxy", "wy", "wyy")

    def __init__(self) -> None:
        self.w = self.wx = self.wxx = self.wy = self.wxy = self.wyy = self.ww = 0.0

    def add(self, shift_s: float, keep: float, value: float) -> None:
        """Move the origin ``shift_s`` later, old weights times ``keep``; add ``value`` at 0.

        A ``shift_s`` of 0 or less (same time as the newest reading, or late data) adds the
        value at its own x without decaying anything.
        """
        if shift_s > 0.0:
            w, wx, wy = self.w, self.wx, self.wy
            self.wxx = keep * (self.wxx - 2.0 * shift_s * wx + shift_s * shift_s * w)
            self.wx = keep * (wx - shift_s * w)
            self.wxy = keep * (self.wxy - shift_s * wy)
            self.w = keep * w + 1.0
            self.wy = keep * wy + value
            self.wyy = keep * self.wyy + value * value
            self.ww = keep * keep * self.ww + 1.0
        else:
            x = shift_s
            self.w += 1.0
            self.wx += x
            self.wxx += x * x
            self.wy += value
            self.wxy += x * value
            self.wyy += value * value
            self.ww += 1.0

    def t_stat(self, sign: float, decorrelation_s: float, min_var_x: float) -> float:
        """The slope's t statistic, the cheap half of ``line``: 0 on too little data or for
        a slope whose sign is not ``sign`` (the check that ends most calls early)."""
        w = self.w
        if w < 3.0:
            return 0.0
        mean_x = self.wx / w
        mean_y = self.wy / w
        cov = self.wxy / w - mean_x * mean_y
        if cov * sign <= 0.0:
            return 0.0
        var_x = self.wxx / w - mean_x * mean_x
        if var_x < min_var_x:
            return 0.0
        n_eff = w * w / self.ww
        time_limit = 2.0 * math.sqrt(var_x) / decorrelation_s + 1.0
        n_eff = time_limit if time_limit < n_eff else n_eff
        if n_eff <= 4.0:
            return 0.0
        residual = self.wyy / w - mean_y * mean_y - cov * cov / var_x
        if residual <= 0.0:
            return math.copysign(math.inf, cov)
        # t = slope / se(slope), slope = cov / var_x, se² = residual / ((n_eff - 2) var_x)
        return cov / math.sqrt(residual * var_x / (n_eff - 2.0))

    def line(self, ahead_s: float, decorrelation_s: float, min_var_x: float) -> _Line | None:
        """The fitted line at ``ahead_s`` after the newest reading; None on too little data."""
        w = self.w
        if w < 3.0:
            return None
        mean_x = self.wx / w
        var_x = self.wxx / w - mean_x * mean_x
        if var_x < min_var_x:
            return None
        n_eff = min(w * w / self.ww, 2.0 * math.sqrt(var_x) / decorrelation_s + 1.0)
        if n_eff <= 4.0:
            return None
        mean_y = self.wy / w
        cov = self.wxy / w - mean_x * mean_y
        slope = cov / var_x
        residual = max(0.0, self.wyy / w - mean_y * mean_y - slope * cov)
        sigma2 = residual * n_eff / (n_eff - 2.0)
        var_slope = sigma2 / (n_eff * var_x)
        offset = mean_x - ahead_s  # the data's mean time, seen from the prediction time
        return _Line(
            level=mean_y - slope * offset,
            slope=slope,
            var_level=sigma2 * (1.0 / n_eff + offset * offset / (n_eff * var_x)),
            var_slope=var_slope,
            cov_level_slope=-sigma2 * offset / (n_eff * var_x),
        )

    def sums(self) -> list[float]:
        return [self.w, self.wx, self.wxx, self.wy, self.wxy, self.wyy, self.ww]

    def restore(self, sums: list[float]) -> None:
        if len(sums) != 7:
            raise ValueError("a forecast fit has 7 sums")
        self.w, self.wx, self.wxx, self.wy, self.wxy, self.wyy, self.ww = sums


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    long_sums: list[float]
    short_sums: list[float]
    last_ts_s: float | None


@register("forecast", ForecastParams)
class Forecast:
    """Predicted time at which ``limit`` is crossed, from exponentially weighted trends.

    Straight lines are fitted by weighted least squares to the recent readings, weights
    falling by e every ``window_s`` (the long fit) and every ``window_s / 3`` (the short
    fit); each fit keeps seven running sums, shifted and decayed at each reading, so memory
    is fixed. The trend counts only when the long fit's slope is at least ``min_t``
    standard errors from flat, the standard error taking neighbouring readings as one piece
    of evidence per ``decorrelation_s`` (a cold room's compressor cycle makes residuals that
    are anything but independent, so counting every 10 s reading would call each cycle a
    trend). The crossing time is where a fitted line meets ``limit``, from whichever fit
    gives the narrower interval (the short one while a trend is young and the long one still
    averages in the flat part before it); the interval comes from that fit's uncertainty in
    level and slope. The score is 1 when a significant trend crosses the limit within
    ``horizon_s``, its whole interval included (or is already past it and still going),
    else 0.

    Parameters
    ----------
    params : ForecastParams
        ``limit`` (stream unit), ``direction`` (``above`` or ``below``), ``window_s``
        (seconds, default 2700), ``horizon_s`` (seconds, default 14400), ``min_t`` (default
        4.0), ``decorrelation_s`` (seconds, default 300), ``field`` (for the unit in messages).

    Works on slow failures: a cold room at 3.5 °C whose cooling has failed is predicted to
    pass 8 °C about 4.5 h ahead when it warms 0.5 °C per hour, 2 h ahead at 1.5 °C/h and
    45 min ahead at 3 °C/h (simulated, readings every 10-60 s), while its compressor's
    ±1 °C sawtooth (20-60 minute cycles) and door openings (+2 °C for a few minutes) do not
    fire. Fails on fast events (from about 4 °C per hour the limit is crossed within half an
    hour of the trend becoming clear: the threshold and rate-of-change detectors see those),
    on curved approaches (a line overshoots an exponential approach to ambient, so it warns
    early), and needs about 1.5 × ``window_s`` of data after a start or a gap. For slow
    trends the first alert tends to come with a crossing time on the early side (it fires
    when the noise happens to steepen the line): the interval covers the fit's error, not
    that.

    Examples
    --------
    A cold room at 3.5 °C with a compressor cycle whose cooling fails after 12 hours
    (+1.5 °C per hour), read every 30 s:

    >>> import random
    >>> rng = random.Random(1)
    >>> detector = Forecast(ForecastParams(limit=8.0, field="temperature_c"))
    >>> first_alert = crossed = None
    >>> for step in range(16 * 120):
    ...     ts = step * 30.0
    ...     phase = (ts % 1200.0) / 1200.0
    ...     cycle = -1 + 2 * phase / 0.7 if phase < 0.7 else 1 - 2 * (phase - 0.7) / 0.3
    ...     failing = ts > 12 * 3600
    ...     value = 3.5 + (1.5 * (ts - 12 * 3600) / 3600 if failing else cycle)
    ...     value = round(value + rng.gauss(0, 0.1), 1)
    ...     if detector.score_one(ts, value) and first_alert is None:
    ...         first_alert, message = ts, detector.details()["message"]
    ...     if value > 8.0 and crossed is None:
    ...         crossed = ts
    ...     detector.learn_one(ts, value)
    >>> (first_alert - 12 * 3600) // 60, (crossed - first_alert) // 60
    (60.0, 116.0)
    >>> message
    'will pass 8 °C in 2 h 12 m ± 28 m (rising 1.37 °C/h)'
    """

    def __init__(self, params: ForecastParams) -> None:
        self.params = params
        self._limit = params.limit
        self._sign = 1.0 if params.direction == "above" else -1.0
        self._horizon_s = params.horizon_s
        self._min_t = params.min_t
        self._tau_s = params.window_s
        self._long = _Fit()
        self._short = _Fit()  # window_s / _SHORT_DIVISOR: its decay is the long one's cubed
        self._decorrelation_s = params.decorrelation_s
        self._min_var_x = (_MIN_SPREAD * params.window_s) ** 2
        self._long_gate = (self._decorrelation_s, self._min_var_x)
        self._short_gate = (
            params.decorrelation_s / _SHORT_DIVISOR,
            (_MIN_SPREAD * params.window_s / _SHORT_DIVISOR) ** 2,
        )
        self._t_stat = 0.0
        self._last_ts_s: float | None = None

    @classmethod
    def _test_params(cls) -> ForecastParams:
        return ForecastParams(limit=8.0, field="temperature_c")

    def learn_one(self, ts_s: float, value: float) -> None:
        last = self._last_ts_s
        shift = 0.0 if last is None else ts_s - last
        if last is None or shift > 0.0:
            self._last_ts_s = ts_s
        keep = math.exp(-shift / self._tau_s) if shift > 0.0 else 1.0
        self._long.add(shift, keep, value)
        self._short.add(shift, keep * keep * keep, value)
        # Significance is judged once per reading, here, so score_one is cheap when flat.
        self._t_stat = self._long.t_stat(self._sign, self._decorrelation_s, self._min_var_x)

    def predict(self, now_s: float) -> Prediction | None:
        """The trend and crossing as seen at ``now_s``; None while there is too little data.

        Both fits give a crossing time; the one with the narrower interval is reported: the
        short fit right after a trend starts (the long one still averages in the flat
        part), the long fit once the trend is old (the short one wanders with the noise).
        """
        last = self._last_ts_s
        if last is None:
            return None
        ahead = now_s - last
        short = self._crossing(now_s, self._short.line(ahead, *self._short_gate))
        if short is None or short.ci_s is None or not short.ci_s:
            return short
        long = self._crossing(now_s, self._long.line(ahead, *self._long_gate))
        if long is not None and long.ci_s is not None and long.ci_s < short.ci_s:
            return long
        return short

    def _crossing(self, now_s: float, line: _Line | None) -> Prediction | None:
        if line is None:
            return None
        level, slope, t_stat = line.level, line.slope, self._t_stat
        if (self._limit - level) * self._sign <= 0.0:
            return Prediction(now_s, level, slope, t_stat, 0.0, 0.0)
        if slope * self._sign <= 0.0:
            return Prediction(now_s, level, slope, t_stat, None, None)
        breach = (self._limit - level) / slope
        var_breach = (
            line.var_level + 2.0 * breach * line.cov_level_slope + breach * breach * line.var_slope
        ) / (slope * slope)
        return Prediction(
            now_s, level, slope, t_stat, breach, _CI_Z * math.sqrt(max(0.0, var_breach))
        )

    def _judge(self, prediction: Prediction | None) -> float:
        if prediction is None or prediction.breach_in_s is None:
            return 0.0
        if prediction.t_stat * self._sign < self._min_t:
            return 0.0
        # The whole interval must fall inside the horizon: a far, vague crossing is no alert.
        return 1.0 if prediction.breach_in_s + (prediction.ci_s or 0.0) <= self._horizon_s else 0.0

    def score_one(self, ts_s: float, value: float) -> float:
        if self._t_stat * self._sign < self._min_t:
            return 0.0
        return self._judge(self.predict(ts_s))

    def details(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"limit": self._limit, "horizon_s": self._horizon_s}
        last = self._last_ts_s
        prediction = None if last is None else self.predict(last)
        out["score"] = score = self._judge(prediction)
        if prediction is None:
            out["message"] = "not enough recent data for a trend"
            return out
        unit = unit_of(self.params.field)
        per_h = prediction.slope_per_s * 3600.0
        out["level"] = prediction.level
        out["slope_per_h"] = per_h
        out["trend_t"] = prediction.t_stat
        limit = f"{describe_value(self._limit)}{unit}"
        trend = f"{'rising' if per_h >= 0 else 'falling'} {describe_value(abs(per_h))}{unit}/h"
        breach, ci = prediction.breach_in_s, prediction.ci_s
        if breach is None or ci is None:
            out["message"] = f"{trend}: not heading for {limit}"
            return out
        out["predicted_breach_s"] = breach
        out["ci_s"] = ci
        if breach <= 0.0:
            state = "still" if score else "but not significantly"
            out["message"] = f"is past {limit}, {state} {trend}"
            return out
        when = f"in {describe_duration(breach)} ± {describe_duration(ci)}"
        if score:
            out["message"] = f"will pass {limit} {when} ({trend})"
        elif prediction.t_stat * self._sign < self._min_t:
            out["message"] = f"{trend}, not significant (t = {prediction.t_stat:.1f})"
        else:
            out["message"] = f"would pass {limit} {when}, beyond the horizon ({trend})"
        return out

    def get_state(self) -> dict[str, JsonValue]:
        return _State(
            long_sums=self._long.sums(),
            short_sums=self._short.sums(),
            last_ts_s=self._last_ts_s,
        ).model_dump()

    def set_state(self, state: dict[str, JsonValue]) -> None:
        restored = _State.model_validate(state)
        self._long.restore(restored.long_sums)
        self._short.restore(restored.short_sums)
        self._last_ts_s = restored.last_ts_s
        self._t_stat = self._long.t_stat(self._sign, self._decorrelation_s, self._min_var_x)
