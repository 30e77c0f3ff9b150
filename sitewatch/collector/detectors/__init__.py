"""Streaming detectors, registered by name; a rule's ``detectors:`` map picks them.

Each detector lives in its own module with its parameters class beside it (a frozen pydantic
model: units in field names, defaults that suit most streams) and registers itself with
``@register``. A detector object scores one stream, keyed by (device, sensor, field), and
keeps O(1) state; see ``sitewatch.collector.protocols`` for the protocols it implements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from sitewatch.collector.protocols import Detector, Updating

__all__ = [
    "REGISTRY",
    "DetectorParams",
    "DetectorType",
    "ScoreThenLearn",
    "build_detector",
    "register",
    "updating",
]


class DetectorParams(BaseModel):
    """Base of every detector's parameters: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class DetectorType:
    """A registered detector: its name, its parameters class and its class."""

    name: str
    params: type[DetectorParams]
    build: Callable[[Any], Detector]


REGISTRY: dict[str, DetectorType] = {}

_D = TypeVar("_D")


def register(name: str, params: type[DetectorParams]) -> Callable[[_D], _D]:
    """Register a detector class (constructed as ``cls(params)``) under ``name``."""

    def decorate(cls: _D) -> _D:
        if name in REGISTRY:
            raise ValueError(f"detector {name!r} registered twice")
        REGISTRY[name] = DetectorType(name, params, cls)  # type: ignore[arg-type]
        return cls

    return decorate


def build_detector(name: str, params: DetectorParams | None = None) -> Detector:
    """A fresh detector ``name`` with ``params`` (default: the detector's defaults)."""
    kind = REGISTRY[name]
    return kind.build(params if params is not None else kind.params())


class ScoreThenLearn:
    """``update_one`` for a detector that lacks it: ``score_one`` then ``learn_one``."""

    __slots__ = ("detector",)

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def update_one(self, ts_s: float, value: float) -> float:
        score = self.detector.score_one(ts_s, value)
        self.detector.learn_one(ts_s, value)
        return score


def updating(detector: Detector) -> Updating:
    """The detector itself where it scores and learns in one call (``Updating``), else it
    wrapped in ``ScoreThenLearn``: an object whose ``update_one`` does both."""
    return cast(Updating, detector) if _updates(type(detector)) else ScoreThenLearn(detector)


@functools.cache
def _updates(cls: type) -> bool:
    # Once per class: a runtime protocol check is slow, and the live path makes a watch per
    # stream and detector.
    return callable(getattr(cls, "update_one", None))


def _load_all() -> None:
    """Import every detector module so that each registers itself."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_all()
