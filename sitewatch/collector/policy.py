"""Deciding: a stream of scores becomes ``fire`` and ``resolve`` decisions.

Detectors score; this decides; the alert engine owns what happens next. One ``AlertPolicy``
per (stream, rule, detector) applies the rule's ``PolicyConfig``: N-of-M hits to fire,
M consecutive clear scores to resolve, and a cooldown after resolving. Its state is a few
numbers, checkpointed with the detector's.

>>> from sitewatch.collector.rules import PolicyConfig
>>> policy = AlertPolicy(PolicyConfig(hits=2, window=3, clear_after=2, cooldown_s=60))
>>> [policy.update(t, s) for t, s in enumerate([0.9, 0.1, 0.8, 0.9, 0.2, 0.1, 0.0])]
[None, None, 'fire', None, None, 'resolve', None]
>>> policy.update(30.0, 1.0), policy.update(31.0, 1.0)  # within the cooldown
(None, None)
"""

from __future__ import annotations

from typing import Literal

from sitewatch.collector.protocols import JsonValue
from sitewatch.collector.rules import PolicyConfig

__all__ = ["AlertPolicy", "Verdict"]

Verdict = Literal["fire", "resolve"]


class AlertPolicy:
    """Hysteresis, N-of-M and cooldown over one stream of scores; see the module docstring."""

    __slots__ = ("_clear_run", "_cooldown_until_s", "_recent", "config", "firing")

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.firing = False
        self._recent = 0  # bit i set: the score i steps ago was a hit (newest in bit 0)
        self._clear_run = 0
        self._cooldown_until_s = float("-inf")

    def update(self, ts_s: float, score: float) -> Verdict | None:
        """Take one score at ``ts_s`` (seconds); say whether the alert fires or resolves now."""
        config = self.config
        if self.firing:
            if score < config.clear_at:
                self._clear_run += 1
                if self._clear_run >= config.clear_after:
                    self.firing = False
                    self._recent = 0
                    self._cooldown_until_s = ts_s + config.cooldown_s
                    return "resolve"
            else:
                self._clear_run = 0
            return None
        self._recent = ((self._recent << 1) | (score >= config.fire_at)) & (
            (1 << config.window) - 1
        )
        if self._recent.bit_count() >= config.hits and ts_s >= self._cooldown_until_s:
            self.firing = True
            self._clear_run = 0
            return "fire"
        return None

    def get_state(self) -> dict[str, JsonValue]:
        cooldown = self._cooldown_until_s
        return {
            "firing": self.firing,
            "recent": self._recent,
            "clear_run": self._clear_run,
            "cooldown_until_s": None if cooldown == float("-inf") else cooldown,
        }

    def set_state(self, state: dict[str, JsonValue]) -> None:
        self.firing = bool(state["firing"])
        recent, clear_run, cooldown = state["recent"], state["clear_run"], state["cooldown_until_s"]
        self._recent = recent if isinstance(recent, int) else 0
        self._clear_run = clear_run if isinstance(clear_run, int) else 0
        self._cooldown_until_s = (
            float(cooldown) if isinstance(cooldown, (int, float)) else float("-inf")
        )
