"""End-to-end confirmation on the agent: what the collector has stored, what to send again,
and what to do when no collector confirms.

Why: mosquitto sends PUBACK before a message is on disk, so a broker crash can lose
messages the agent already considers delivered. With ``delivery.confirm: end_to_end`` (the
default) a PUBACK only marks an outbox row *unconfirmed*; the row leaves the outbox when the
collector's confirmation for its boot (``wire.AckMessage``, retained on
``sitewatch/v1/<site>/ack/<device>``) reaches its seq. Rules, all on the MQTT network thread:

- **Confirm.** Every confirmation deletes the rows of its boot up to ``durable_seq``, and
  those in its ``above`` ranges (durable past a hole).
- **Resend after a reconnect.** Unconfirmed rows stay in the outbox, so the backlog replayed
  at each connect includes them (the retained confirmation, which arrives first, removes
  what was stored meanwhile). Each such republish is counted as ``resent``.
- **Resend after a timeout.** When the collector keeps confirming this device (a
  confirmation arrived after the row's PUBACK, and one within the last half
  ``confirm_timeout_s``: the collector confirms about every second while data arrives) but a
  boot's confirmation has not moved for ``confirm_timeout_s`` while rows of it waited that
  long, something between broker and collector lost them (a broker queue limit, an expired
  session, a broker crash before the collector had subscribed again): the boot's unconfirmed
  rows are sent again. The wait doubles after each such resend without progress (up to an hour)
  and starts over once the boot's confirmation moves, so a stuck collector is not flooded.
  While the collector is silent (stopped, or catching up), nothing is resent: the broker
  holds those messages in its session, and a broker restart means a reconnect, which resends.
- **Lost stubs.** When the outbox's cap evicted the payload of an unconfirmed row, a stub
  remains (``sitewatch.agent.outbox``). When a resend is due, the stubs below the highest
  seq the collector holds cannot be sent, and the collector does not have them: the broker
  lost them. They are counted as dropped (``dropped_unconfirmed``), which opens a hole.
- **Holes.** A confirmation may wait for a seq the agent no longer holds (dropped for the
  outbox's caps, lost as stubs, released to the broker, or never committed). The agent then
  tells the collector where its rows of that boot start (``wire.SkipMessage``), so
  confirmations can move past the hole.
- **Fallback.** If this outbox has never had a confirmation and none arrives within
  ``confirm_timeout_s`` of a connect while unconfirmed rows wait (an older collector, an ACL
  that hides the ack topic, or a new device whose collector is down), or when the retained
  confirmation is cleared (a collector with confirmations turned off does that, and the
  outbox then forgets it ever had one), the agent falls back to the broker's PUBACK: it
  releases the unconfirmed rows (counted as acked and released, not confirmed) and deletes
  rows on PUBACK from then on, so the outbox does not fill and nothing is resent forever. The
  first confirmation that arrives ends the fallback. A device that a confirming collector
  has served does not fall back when confirmations pause (the collector is down, or a broker
  crash lost the retained confirmation): its rows wait, within the outbox's caps, since that
  is exactly when the broker alone holds them.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from sitewatch.agent.outbox import Outbox, UnconfirmedBoot
from sitewatch.clock import Clock
from sitewatch.wire import AckMessage, Kind, SkipMessage, encode, topic

__all__ = ["MAX_RESEND_WAIT_S", "Confirmations"]

log = logging.getLogger(__name__)

MAX_RESEND_WAIT_S = 3600.0
"""Longest wait (seconds) between two resends of a boot whose confirmation does not move."""

_CHECK_INTERVAL_S = 1.0
"""How often (seconds, at most) the unconfirmed rows are looked at for resends or fallback."""


class Confirmations:
    """The confirmation policy for one device (see the module docstring).

    ``end_to_end=False`` (``delivery.confirm: broker``) turns it off: rows leave on PUBACK
    and confirmations are ignored. ``timeout_s`` is ``delivery.confirm_timeout_s``.
    """

    def __init__(
        self,
        outbox: Outbox,
        clock: Clock,
        *,
        site: str,
        device: str,
        end_to_end: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.site = site
        self.device = device
        self.end_to_end = end_to_end
        self.timeout_s = timeout_s
        self.fallback = False
        self.ack_topic = topic(site, device, Kind.ACK)
        self._skip_topic = topic(site, device, Kind.SKIP)
        self._heard = False  # a confirmation on the current connection (retained counts)
        stats = outbox.stats()
        self._confirmed_before = stats.last_confirmation_ms is not None  # ever, this outbox
        self._connected_at = 0.0
        self._last_ack_ms: int | None = None
        self._moved: dict[str, tuple[int, float]] = {}  # boot → (durable_seq, when it moved)
        self._wait_s: dict[str, float] = {}  # boot → current resend wait
        self._skipped: dict[str, tuple[int, float]] = {}  # boot → (held_from sent, when)
        self._highest: dict[str, int] = {}  # boot → the highest seq the collector holds
        self._next_check = 0.0
        self._bad_logged = False
        if end_to_end and stats.broker_fallback:
            outbox.set_fallback(False)  # a new process starts by expecting confirmations

    @property
    def holding(self) -> bool:
        """Whether a PUBACK keeps the row (waiting for the collector) rather than delete it."""
        return self.end_to_end and not self.fallback

    def on_connected(self) -> None:
        self._heard = False
        self._connected_at = self.clock.monotonic()
        self._next_check = 0.0

    def on_ack(self, payload: bytes) -> tuple[str, bytes] | None:
        """Apply a confirmation; returns a skip message (topic, payload) to publish, if the
        collector waits for seqs this agent no longer holds."""
        if not self.end_to_end:
            return None
        if not payload:  # the retained confirmation was cleared: confirmations are off
            self._heard = False
            self._confirmed_before = False
            self.outbox.forget_confirmations()
            if not self.fallback:
                self._fall_back("the collector withdrew its confirmations")
            return None
        try:
            ack = AckMessage.model_validate_json(payload)
        except ValidationError as error:
            if not self._bad_logged:
                log.warning("ignoring an invalid confirmation on %s: %s", self.ack_topic, error)
                self._bad_logged = True
            return None
        if ack.site != self.site or ack.device != self.device:
            return None
        now = self.clock.monotonic()
        now_ms = int(self.clock.time() * 1000)
        self._heard = True
        self._confirmed_before = True
        self._last_ack_ms = now_ms
        if self.fallback:
            self.fallback = False
            self.outbox.set_fallback(False)
            log.info("the collector confirms again: keeping messages until it has stored them")
        self.outbox.confirm(ack.boot_id, ack.durable_seq, at_ms=now_ms, above=ack.above or ())
        self._highest[ack.boot_id] = ack.highest_seq()
        moved = self._moved.get(ack.boot_id)
        if moved is None or ack.durable_seq > moved[0]:
            self._moved[ack.boot_id] = (ack.durable_seq, now)
            self._wait_s.pop(ack.boot_id, None)
        held_from = self.outbox.held_from(ack.boot_id)
        if held_from is None or held_from <= ack.durable_seq + 1:
            return None
        sent = self._skipped.get(ack.boot_id)
        if sent is not None and sent[0] == held_from and now - sent[1] < min(5.0, self.timeout_s):
            return None  # the collector may not have read the last one yet
        self._skipped[ack.boot_id] = (held_from, now)
        log.info(
            "the collector waits for seq %d of boot %s, which this agent no longer holds;"
            " its rows start at %d", ack.durable_seq + 1, ack.boot_id, held_from,
        )
        skip = SkipMessage(
            site=self.site, device=self.device, boot_id=ack.boot_id, held_from=held_from,
            ts=now_ms,
        )
        return self._skip_topic, encode(skip)

    def due(self) -> list[UnconfirmedBoot]:
        """Called often while connected: the boots whose unconfirmed rows must be sent again
        now. Falls back to the broker's PUBACK when no collector confirms."""
        if not self.holding:
            return []
        now = self.clock.monotonic()
        if now < self._next_check:
            return []
        self._next_check = now + min(_CHECK_INTERVAL_S, self.timeout_s / 4)
        if now - self._connected_at < self.timeout_s:
            return []  # what the connect replayed is this connection's resend
        boots = self.outbox.unconfirmed_boots()
        self._forget_except({b.boot_id for b in boots})
        if not boots:
            return []
        if not self._heard and not self._confirmed_before:
            self._fall_back(f"no confirmation from a collector within {self.timeout_s:.0f} s")
            return []
        now_ms = int(self.clock.time() * 1000)
        if self._last_ack_ms is None or now_ms - self._last_ack_ms > self.timeout_s * 500:
            return []  # the collector is not confirming now: away, the broker holds them
        resend = []
        for boot in boots:
            if self._last_ack_ms <= boot.oldest_pubacked_ms:
                continue  # nothing confirmed since their PUBACK
            wait_s = self._wait_s.get(boot.boot_id, self.timeout_s)
            if now_ms - boot.oldest_pubacked_ms < wait_s * 1000:
                continue
            moved = self._moved.get(boot.boot_id)
            if moved is not None and now - moved[1] < wait_s:
                continue
            resend.append(boot)
            self._moved[boot.boot_id] = (moved[0] if moved else 0, now)
            self._wait_s[boot.boot_id] = min(wait_s * 2, MAX_RESEND_WAIT_S)
            log.info(
                "%d messages of boot %s unconfirmed for %.0f s: sending them again",
                boot.messages, boot.boot_id, wait_s,
            )
            lost = self.outbox.give_up_stubs(
                boot.boot_id, below_seq=self._highest.get(boot.boot_id, 0)
            )
            if lost.messages:
                log.warning(
                    "%d messages of boot %s (seq %d to %d: %d readings, %d events) never"
                    " reached the collector although the broker acknowledged them, and the"
                    " outbox, full, no longer held their payload: counted as dropped",
                    lost.messages, boot.boot_id, lost.first_seq, lost.last_seq, lost.readings,
                    lost.events,
                )
        return resend

    def _fall_back(self, why: str) -> None:
        self.fallback = True
        self.outbox.set_fallback(True)
        released = self.outbox.release_unconfirmed()
        log.warning(
            "%s: relying on the broker's acknowledgement (%d messages released) until a"
            " confirmation arrives", why, released,
        )

    def _forget_except(self, boots: set[str]) -> None:
        """Bound the per-boot state: keep what boots with unconfirmed rows need."""
        for boot in [b for b in self._wait_s if b not in boots]:
            del self._wait_s[boot]
        for state in (self._moved, self._skipped, self._highest):
            if len(state) > 16:
                for boot in [b for b in state if b not in boots]:
                    del state[boot]
