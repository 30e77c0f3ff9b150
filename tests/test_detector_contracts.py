"""Contracts every registered detector keeps, whoever wrote it (STYLE.md, synthesis 11).

Parametrised over ``REGISTRY``, so a detector added later is held to them too: scoring before
any learning works; scores stay in [0, 1]; the same stream gives the same scores; a state
taken through JSON text continues exactly as the original; the state stops growing once
warmed up; ``update_one``, where a detector has it, is exactly ``score_one`` then
``learn_one``; the parameters build from defaults (or from ``_test_params()`` when a detector
has no sensible defaults, such as a threshold's limit) and refuse nonsense.
"""

from __future__ import annotations

import json
import math
import random
from functools import cache
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sitewatch.collector.detectors import REGISTRY, DetectorType
from sitewatch.collector.protocols import Checkpointable, Explaining, Ticking, Updating

T0_S = 1_795_464_000.0
NAMES = sorted(REGISTRY)
UPDATING = [name for name in NAMES if callable(getattr(REGISTRY[name].build, "update_one", None))]


def params_for(kind: DetectorType) -> BaseModel:
    """The detector's ``_test_params()`` when it has one, else its defaults."""
    make = getattr(kind.build, "_test_params", None)
    return make() if make is not None else kind.params()


def build(name: str) -> Any:
    kind = REGISTRY[name]
    return kind.build(params_for(kind))


@cache
def contract_stream(count: int, seed: int = 7) -> tuple[tuple[float, float], ...]:
    """A stream that visits what real streams do, in turns of 50-400 readings: noise around
    a level, ramps, a 0/1 contact switching, a stuck value, large and negative values, a
    counter, duplicated timestamps, and gaps from a minute to a few hours."""
    rng = random.Random(seed)
    points: list[tuple[float, float]] = []
    ts, level = T0_S, 4.0
    kinds = ("noise", "ramp", "contact", "stuck", "large", "negative", "counter")
    while len(points) < count:
        kind = kinds[rng.randrange(len(kinds))]
        length = rng.randint(50, 400)
        step_s = rng.choice((10.0, 30.0, 60.0))
        slope = rng.uniform(-0.05, 0.05)
        for i in range(length):
            if kind == "noise":
                value = level + rng.gauss(0, 0.3)
            elif kind == "ramp":
                value = level + slope * i + rng.gauss(0, 0.1)
            elif kind == "contact":
                value = 1.0 if (i // rng.randint(3, 12)) % 2 else 0.0
            elif kind == "stuck":
                value = round(level, 1)
            elif kind == "large":
                value = 50.0 + rng.gauss(0, 10)
            elif kind == "negative":
                value = -20.0 + rng.gauss(0, 1)
            else:
                value = 1000.0 + 0.01 * (len(points) + i)
            ts += 0.0 if rng.random() < 0.01 else step_s
            points.append((ts, round(value, 3)))
        if rng.random() < 0.2:
            ts += rng.choice((120.0, 3600.0, 4 * 3600.0))
        level = rng.uniform(-5.0, 30.0)
    return tuple(points[:count])


def run(
    detector: Any, points: tuple[tuple[float, float], ...] | list[tuple[float, float]]
) -> list[float]:
    """Scores (and, for ticking detectors, a check between readings) over ``points``."""
    ticking = isinstance(detector, Ticking)
    out = []
    for ts, value in points:
        out.append(detector.score_one(ts, value))
        detector.learn_one(ts, value)
        if ticking:
            out.append(detector.check(ts + 250.0))
    return out


def assert_details(details: object) -> None:
    assert isinstance(details, dict)
    assert isinstance(details.get("message"), str) and details["message"]
    for key, value in details.items():
        assert isinstance(key, str)
        assert isinstance(value, float | str), (key, value)
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)


@pytest.mark.parametrize("name", NAMES)
def test_contract_params_build(name: str) -> None:
    kind = REGISTRY[name]
    params = params_for(kind)
    assert isinstance(params, kind.params)
    if not hasattr(kind.build, "_test_params"):
        kind.params()  # a detector without _test_params must build from its defaults
    detector = kind.build(params)
    assert callable(detector.score_one) and callable(detector.learn_one)


@pytest.mark.parametrize("name", NAMES)
def test_contract_scores_before_learning(name: str) -> None:
    detector = build(name)
    score = detector.score_one(T0_S, 4.0)
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    if isinstance(detector, Ticking):
        assert 0.0 <= detector.check(T0_S + 3600.0) <= 1.0
    if isinstance(detector, Explaining):
        assert_details(detector.details())


@pytest.mark.parametrize("name", NAMES)
def test_contract_scores_in_unit_interval_and_details_well_formed(name: str) -> None:
    detector = build(name)
    explaining = isinstance(detector, Explaining)
    for index, (ts, value) in enumerate(contract_stream(6000)):
        score = detector.score_one(ts, value)
        assert isinstance(score, float) and 0.0 <= score <= 1.0, (index, ts, value, score)
        detector.learn_one(ts, value)
        if explaining and index % 97 == 0:
            assert_details(detector.details())


@pytest.mark.parametrize("name", NAMES)
def test_contract_deterministic(name: str) -> None:
    points = contract_stream(6000)
    assert run(build(name), points) == run(build(name), points)


@pytest.mark.parametrize("name", NAMES)
def test_contract_checkpoint_round_trip_continues_identically(name: str) -> None:
    points = contract_stream(6000)
    original = build(name)
    # (issubclass: isinstance would narrow the detector to the protocol for mypy)
    assert issubclass(type(original), Checkpointable), "detectors must survive a restart"
    run(original, points[:3000])
    text = json.dumps(original.get_state(), allow_nan=False)  # strict JSON: no NaN/inf
    clone = build(name)
    clone.set_state(json.loads(text))
    assert json.dumps(clone.get_state(), allow_nan=False) == text
    for ts, value in points[3000:]:
        assert clone.score_one(ts, value) == original.score_one(ts, value), ts
        clone.learn_one(ts, value)
        original.learn_one(ts, value)
        if isinstance(original, Ticking):
            assert clone.check(ts + 250.0) == original.check(ts + 250.0)
    if isinstance(original, Explaining):
        assert clone.details() == original.details()


@pytest.mark.parametrize("name", UPDATING)
def test_contract_update_one_is_score_one_then_learn_one(name: str) -> None:
    # The live path calls update_one; the score CLI and NAB call score_one and learn_one.
    # They must agree on every score and leave the same state, non-finite values included.
    points = [
        (ts, (math.nan, math.inf, -math.inf)[index // 499 % 3] if index % 499 == 0 else value)
        for index, (ts, value) in enumerate(contract_stream(20_000))
    ]
    fused, paired = build(name), build(name)
    assert issubclass(type(fused), Updating)
    ticking, explaining = isinstance(fused, Ticking), isinstance(fused, Explaining)
    for index, (ts, value) in enumerate(points):
        expected = paired.score_one(ts, value)
        paired.learn_one(ts, value)
        assert fused.update_one(ts, value) == expected, (index, ts, value)
        if ticking:
            assert fused.check(ts + 250.0) == paired.check(ts + 250.0), (index, ts)
        if index % 97 == 0:
            assert json.dumps(fused.get_state()) == json.dumps(paired.get_state()), index
            if explaining:
                assert repr(fused.details()) == repr(paired.details()), index
    assert json.dumps(fused.get_state()) == json.dumps(paired.get_state())


@pytest.mark.parametrize("name", NAMES)
def test_contract_checkpoint_of_a_fresh_detector(name: str) -> None:
    detector = build(name)
    clone = build(name)
    clone.set_state(json.loads(json.dumps(detector.get_state(), allow_nan=False)))
    points = contract_stream(500)
    assert run(clone, points) == run(detector, points)


@pytest.mark.parametrize("name", NAMES)
def test_contract_state_size_bounded_after_warm_up(name: str) -> None:
    points = contract_stream(50_000)
    detector = build(name)
    run(detector, points[:10_000])
    early = len(json.dumps(detector.get_state()))
    run(detector, points[10_000:])
    late = len(json.dumps(detector.get_state()))
    assert late <= early * 1.5 + 200, (early, late)


@pytest.mark.parametrize("name", NAMES)
def test_contract_bad_params_rejected(name: str) -> None:
    kind = REGISTRY[name]
    good = params_for(kind).model_dump()
    with pytest.raises(ValidationError):
        kind.params.model_validate({**good, "no_such_parameter": 1})
    for field_name in kind.params.model_fields:
        with pytest.raises(ValidationError):
            kind.params.model_validate({**good, field_name: {"not": "a value"}})
        if field_name.endswith(("_s", "_h")):  # a duration or hour count below zero
            with pytest.raises(ValidationError):
                kind.params.model_validate({**good, field_name: -1.0})
    params = kind.params.model_validate(good)
    with pytest.raises(ValidationError):
        params.__setattr__(next(iter(kind.params.model_fields)), good[next(iter(good))])
