"""End-to-end confirmation, piece by piece: the wire messages, the collector's bookkeeping
and the agent's policy (on a real outbox file, with a FakeClock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sitewatch.agent.config import parse_config
from sitewatch.agent.confirm import MAX_RESEND_WAIT_S, Confirmations
from sitewatch.agent.delivery import Delivery
from sitewatch.agent.errors import ConfigError
from sitewatch.agent.outbox import Outbox
from sitewatch.clock import FakeClock
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.confirm import MAX_BOOTS_PER_DEVICE, ConfirmStore, data_identity
from sitewatch.collector.confirm import Confirmations as CollectorConfirmations
from sitewatch.collector.deadletter import DeadLetters
from sitewatch.collector.devices import DeviceStates
from sitewatch.collector.ingest import Ingest
from sitewatch.collector.mqtt import Received
from sitewatch.collector.tracking import SeqTracker
from sitewatch.wire import (
    DEVICE_KINDS,
    MAX_ACK_RANGES,
    AckMessage,
    Kind,
    Quality,
    Reading,
    SkipMessage,
    TelemetryMessage,
    WireError,
    encode,
    parse_message,
    parse_topic,
    subscription,
    topic,
    topic_for,
)

BOOT = "0badc0de"
OLD_BOOT = "5eed5eed"
NOW_MS = 1_795_464_000_000


def ack(durable_seq: int, boot: str = BOOT, device: str = "pi-01") -> bytes:
    return encode(AckMessage(site="plant-a", device=device, boot_id=boot,
                             durable_seq=durable_seq, ts=NOW_MS))


# -- wire ------------------------------------------------------------------------------------


def test_confirm_ack_topic_puts_the_kind_before_the_device() -> None:
    message = AckMessage(site="plant-a", device="pi-01", boot_id=BOOT, durable_seq=3, ts=NOW_MS)
    assert topic_for(message) == "sitewatch/v1/plant-a/ack/pi-01"
    assert parse_message(topic_for(message), encode(message)) == message
    assert parse_topic("sitewatch/v1/plant-a/ack/pi-01").device == "pi-01"
    assert subscription("plant-a", Kind.ACK) == "sitewatch/v1/plant-a/ack/+"
    with pytest.raises(WireError, match="confirmations go to"):
        parse_topic("sitewatch/v1/plant-a/pi-01/ack")
    # An ack for another device than its topic names is refused like any other mismatch.
    with pytest.raises(WireError, match="payload names"):
        parse_message("sitewatch/v1/plant-a/ack/pi-02", encode(message))
    assert Kind.ACK not in DEVICE_KINDS and Kind.SKIP in DEVICE_KINDS


def test_confirm_skip_message_is_a_device_topic() -> None:
    skip = SkipMessage(site="plant-a", device="pi-01", boot_id=BOOT, held_from=9, ts=NOW_MS)
    assert topic_for(skip) == topic("plant-a", "pi-01", Kind.SKIP) == (
        "sitewatch/v1/plant-a/pi-01/skip")
    # Its ts only says when it was sent: an agent with a clock far ahead is not refused.
    assert parse_message(topic_for(skip), encode(skip), now_ms=NOW_MS - 86_400_000) == skip


def test_confirm_device_id_ack_is_reserved(tmp_path: Path) -> None:
    config = {"site": "plant-a", "device": "ack", "mqtt": {"host": "localhost"},
              "outbox": {"path": str(tmp_path / "o.db")},
              "sensors": [{"id": "s", "driver": "simulated", "model": "cold_room"}]}
    with pytest.raises(ConfigError, match="device: 'ack' is reserved"):
        parse_config(config)
    assert parse_config({**config, "device": "pi-01"}).delivery.confirm == "end_to_end"


# -- the collector's bookkeeping ----------------------------------------------------------


def test_confirm_collector_confirms_only_the_contiguous_prefix() -> None:
    confirms = CollectorConfirmations(interval_s=1.0)
    for seq in (1, 2, 3, 5, 6):
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    [first] = confirms.due(now_s=0.0, now_ms=NOW_MS)
    assert (first.boot_id, first.durable_seq) == (BOOT, 3)  # 4 is missing
    confirms.durable("plant-a", "pi-01", BOOT, 4)  # the hole filled: 5 and 6 follow
    [second] = confirms.due(now_s=1.0, now_ms=NOW_MS)
    assert second.durable_seq == 6
    assert confirms.due(now_s=2.0, now_ms=NOW_MS) == []  # nothing new, nothing published
    assert confirms.published == 2


def test_confirm_collector_names_the_durable_seqs_past_the_hole() -> None:
    confirms = CollectorConfirmations()
    for seq in (1, 2, 4, 5, 7):
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    [first] = confirms.due(now_s=0.0, now_ms=NOW_MS)
    assert (first.durable_seq, first.above, first.highest_seq()) == (2, [(4, 5), (7, 7)], 7)
    assert parse_message(topic_for(first), encode(first)) == first
    for seq in range(10, 10 + 2 * (MAX_ACK_RANGES + 5), 2):  # more runs than one ack names
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    [second] = confirms.due(now_s=1.0, now_ms=NOW_MS)
    assert second.above is not None and len(second.above) == MAX_ACK_RANGES
    assert second.above[:3] == [(4, 5), (7, 7), (10, 10)]  # the lowest: those matter first
    confirms.durable("plant-a", "pi-01", BOOT, 3)
    [third] = confirms.due(now_s=2.0, now_ms=NOW_MS)
    assert (third.durable_seq, third.above[0]) == (5, (7, 7))  # type: ignore[index]


def test_confirm_ack_ranges_must_lie_past_the_hole_and_ascend() -> None:
    good = json.loads(ack(3))
    for above in ([[4, 6]], [[5, 4]], [[5, 6], [7, 8]], [[8, 9], [5, 6]]):
        payload = json.dumps({**good, "above": above}).encode()
        with pytest.raises(WireError, match="above"):
            parse_message("sitewatch/v1/plant-a/ack/pi-01", payload)


def test_confirm_collector_assumes_nothing_before_a_boots_first_seq() -> None:
    confirms = CollectorConfirmations()
    confirms.durable("plant-a", "pi-01", BOOT, 40)
    [first] = confirms.due(now_s=0.0, now_ms=NOW_MS)
    assert first.durable_seq == 0  # 1..39 may have been lost between broker and collector
    confirms.skip("plant-a", "pi-01", BOOT, held_from=40)  # the agent holds nothing below 40
    [second] = confirms.due(now_s=1.0, now_ms=NOW_MS)
    assert second.durable_seq == 40
    confirms.skip("plant-a", "pi-01", BOOT, held_from=12)  # an older skip never moves it back
    [third] = confirms.due(now_s=2.0, now_ms=NOW_MS)
    assert third.durable_seq == 40


def test_confirm_collector_rounds_coalesce_and_end_with_the_newest_boot() -> None:
    confirms = CollectorConfirmations(interval_s=0.5)
    for seq in range(1, 101):
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    confirms.durable("plant-a", "pi-01", OLD_BOOT, 7)  # a replayed earlier boot
    confirms.durable("plant-a", "pi-02", BOOT, 1)
    confirms.durable("plant-a", "pi-01", BOOT, 101)  # pi-01's current boot, again
    acks = confirms.due(now_s=5.0, now_ms=NOW_MS)
    assert [(a.device, a.boot_id, a.durable_seq) for a in acks] == [
        ("pi-01", OLD_BOOT, 0), ("pi-02", BOOT, 1), ("pi-01", BOOT, 101)]
    confirms.durable("plant-a", "pi-01", BOOT, 102)
    assert confirms.due(now_s=5.4, now_ms=NOW_MS) == []  # within interval_s
    assert [a.durable_seq for a in confirms.due(now_s=5.5, now_ms=NOW_MS)] == [102]


def test_confirm_collector_remembers_a_bounded_number_of_boots() -> None:
    confirms = CollectorConfirmations()
    boots = [f"{n:08x}" for n in range(MAX_BOOTS_PER_DEVICE + 2)]
    for boot in boots:
        confirms.durable("plant-a", "pi-01", boot, 1)
    assert confirms.durable_seq("plant-a", "pi-01", boots[0]) is None
    assert confirms.durable_seq("plant-a", "pi-01", boots[-1]) == 1
    # The dirty entries of forgotten boots are skipped, not published with a made-up seq.
    assert len(confirms.due(now_s=0.0, now_ms=NOW_MS)) == MAX_BOOTS_PER_DEVICE


def test_confirm_collector_checkpoint_round_trip(tmp_path: Path) -> None:
    store = ConfirmStore(tmp_path / "confirm.db")
    confirms = CollectorConfirmations()
    for seq in (1, 2, 4):
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    confirms.durable("plant-b", "pi-09", OLD_BOOT, 1)
    store.save(confirms)
    boots = [f"{n:08x}" for n in range(MAX_BOOTS_PER_DEVICE)]
    for boot in boots:  # pushes BOOT, the oldest of pi-01's boots, out
        confirms.durable("plant-a", "pi-01", boot, 1)
    store.save(confirms)
    store.save(confirms)  # nothing changed: nothing written
    store.close()

    again = ConfirmStore(tmp_path / "confirm.db")
    restored = again.load(1.0)
    assert sorted(restored.rows()) == sorted(confirms.rows())
    assert restored.durable_seq("plant-a", "pi-01", BOOT) is None
    assert restored.durable_seq("plant-a", "pi-01", boots[-1]) == 1
    # A collector that no longer owns plant-b (a partition change) leaves it out.
    mine = again.load(1.0, keep=lambda site, device: site == "plant-a")
    assert mine.durable_seq("plant-b", "pi-09", OLD_BOOT) is None
    again.close()

    store = ConfirmStore(tmp_path / "other.db")
    confirms = CollectorConfirmations()
    for seq in (1, 2, 4):
        confirms.durable("plant-a", "pi-01", BOOT, seq)
    store.save(confirms)
    restored = store.load(1.0)
    restored.durable("plant-a", "pi-01", BOOT, 3)  # the seq above the hole was kept too
    assert restored.durable_seq("plant-a", "pi-01", BOOT) == 4
    store.close()


def test_confirm_dead_lettered_data_keeps_its_identity() -> None:
    future = {"v": 1, "site": "plant-a", "device": "pi-01", "boot_id": BOOT, "seq": 7,
              "readings": [{"sensor": "s", "ts": NOW_MS + 10**9, "quality": "ok",
                            "temperature_c": 4.0}]}
    payload = json.dumps(future).encode()
    with pytest.raises(WireError):  # refused: the reading is far in the future
        parse_message("sitewatch/v1/plant-a/pi-01/telemetry", payload, now_ms=NOW_MS)
    assert data_identity("sitewatch/v1/plant-a/pi-01/telemetry", payload) == (
        "plant-a", "pi-01", BOOT, 7)
    # Nothing is confirmed on the word of a message that contradicts its topic or is garbage.
    assert data_identity("sitewatch/v1/plant-a/pi-02/telemetry", payload) is None
    assert data_identity("sitewatch/v1/plant-a/pi-01/status", payload) is None
    assert data_identity("sitewatch/v1/plant-a/pi-01/event", b"{not json") is None
    for bad in ({"seq": True}, {"seq": "7"}, {"seq": 0}, {"boot_id": "XYZ"}):
        assert data_identity("sitewatch/v1/plant-a/pi-01/telemetry",
                             json.dumps({**future, **bad}).encode()) is None


# -- the agent's policy -----------------------------------------------------------------------


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db")


def commit(box: Outbox, boot: str, seqs: range | list[int]) -> list[int]:
    return [box.add("telemetry", "t", b"{}", readings=1, created_ms=NOW_MS, boot_id=boot,
                    seq=seq) for seq in seqs]


def policy(box: Outbox, clock: FakeClock, **kwargs: object) -> Confirmations:
    confirms = Confirmations(box, clock, site="plant-a", device="pi-01", timeout_s=60.0,
                             **kwargs)  # type: ignore[arg-type]
    confirms.on_connected()
    return confirms


def test_confirm_agent_deletes_what_the_collector_confirms(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    outbox.hold(commit(outbox, BOOT, range(1, 6)), at_ms=NOW_MS)
    assert confirms.on_ack(ack(3)) is None
    assert [r.seq for r in outbox.fetch(0, 10)] == [4, 5]
    confirms.on_ack(ack(99, device="pi-02"))  # another device's: not ours to apply
    confirms.on_ack(b'{"v": 1, "garbage": true}')
    assert outbox.stats().pending == 2
    assert outbox.stats().confirmed == 3


def test_confirm_agent_says_which_seqs_it_no_longer_holds(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    commit(outbox, BOOT, range(5, 9))  # 1-4 were dropped for the outbox's cap
    skip = confirms.on_ack(ack(2))
    assert skip is not None
    skip_topic, payload = skip
    assert skip_topic == "sitewatch/v1/plant-a/pi-01/skip"
    message = parse_message(skip_topic, payload)
    assert isinstance(message, SkipMessage)
    assert (message.boot_id, message.held_from) == (BOOT, 5)
    assert confirms.on_ack(ack(2)) is None  # not again while the collector reads it
    clock.advance(5.0)
    assert confirms.on_ack(ack(2)) is not None
    assert confirms.on_ack(ack(4)) is None  # no hole any more: 5 is held
    assert confirms.on_ack(ack(0, boot=OLD_BOOT)) is None  # nothing held of that boot


def test_confirm_agent_resends_only_while_the_collector_confirms_others(
    outbox: Outbox,
) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    confirms.on_ack(ack(0, boot=OLD_BOOT))  # the retained confirmation, at connect
    clock.advance(1.0)
    ids = commit(outbox, BOOT, range(1, 4))
    outbox.hold(ids, at_ms=int(clock.time() * 1000))
    clock.advance(600.0)
    # Nothing heard since the PUBACKs, but a confirmation was heard on this connection, so
    # no fallback: the collector is away and the broker holds the messages. No resend either.
    assert confirms.due() == []
    assert outbox.stats().unconfirmed == 3 and confirms.holding

    outbox.hold(commit(outbox, BOOT, [4]), at_ms=int(clock.time() * 1000))
    clock.advance(1.0)
    confirms.on_ack(ack(0))  # the collector is back: it stores seq 4 and waits for seq 1
    clock.advance(30.0)
    confirms.on_ack(ack(0))
    assert confirms.due() == []  # waiting for seq 1 for 30 s only: it may still come
    clock.advance(31.0)
    confirms.on_ack(ack(0))
    [boot] = confirms.due()  # 61 s without progress: seq 1-3 were lost on the way
    assert (boot.boot_id, boot.first_id, boot.messages) == (BOOT, ids[0], 4)
    clock.advance(61.0)
    confirms.on_ack(ack(0))
    assert confirms.due() == []  # the wait doubled: 120 s now
    clock.advance(60.0)
    confirms.on_ack(ack(0))
    assert [b.boot_id for b in confirms.due()] == [BOOT]
    confirms.on_ack(ack(2))  # progress: the wait starts over at 60 s
    clock.advance(59.0)
    assert confirms.due() == []
    clock.advance(2.0)
    confirms.on_ack(ack(2))
    assert [b.boot_id for b in confirms.due()] == [BOOT]


def test_confirm_agent_gives_up_stubs_the_collector_lacks_below_a_seq_it_holds(
    tmp_path: Path,
) -> None:
    """The cap evicted the payload of rows the broker acknowledged (stubs); a broker crash
    then lost some of them. The collector's ranges tell which: those are confirmed, the ones
    below its highest seq that it lacks are counted lost, and the hole is skipped."""
    box = Outbox(tmp_path / "o.db", max_bytes=8 * 200)
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(box, clock)
    for seq in range(1, 11):
        row = box.add("telemetry", "t", b"x" * 200, readings=2, created_ms=NOW_MS,
                      boot_id=BOOT, seq=seq)
        box.hold([row], at_ms=int(clock.time() * 1000))
    assert box.stats().stubbed == 6  # seqs 1-3 have no payload left
    clock.advance(1.0)
    # The collector has 1 and, past the hole at 2, seq 3 and seq 9.
    sack = encode(AckMessage(site="plant-a", device="pi-01", boot_id=BOOT, durable_seq=1,
                             above=[(3, 3), (9, 9)], ts=NOW_MS))
    assert confirms.on_ack(sack) is None  # seq 2 is still held (as a stub)
    assert [r.seq for r in box.fetch(0, 20)] == [4, 5, 6, 7, 8, 10]
    assert box.stats().confirmed == 6
    clock.advance(61.0)
    confirms.on_ack(sack)
    [boot] = confirms.due()  # seq 2 lost; 4-8 (and 10) sent again
    assert boot.boot_id == BOOT
    stats = box.stats()
    assert (stats.dropped_unconfirmed, stats.stubbed, box.held_from(BOOT)) == (2, 0, 4)
    skip = confirms.on_ack(sack)
    assert skip is not None
    message = parse_message(*skip)
    assert isinstance(message, SkipMessage) and message.held_from == 4
    assert stats.produced == stats.acked + stats.pending + stats.dropped


def test_confirm_agent_no_resend_when_the_collector_just_went_away(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    outbox.hold(commit(outbox, BOOT, range(1, 4)), at_ms=int(clock.time() * 1000))
    clock.advance(0.5)
    confirms.on_ack(ack(0))  # its last round, after the PUBACKs; then it stops
    for _ in range(100):
        clock.advance(10.0)
        assert confirms.due() == []
    assert confirms.holding and outbox.stats().unconfirmed == 3


def test_confirm_agent_resend_wait_is_capped(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    outbox.hold(commit(outbox, BOOT, [1]), at_ms=int(clock.time() * 1000))
    resends = 0
    for _ in range(3000):  # 50 hours of a collector that never stores seq 1
        clock.advance(60.0)
        confirms.on_ack(ack(0))
        resends += len(confirms.due())
    # 60, 120, ... 3600 s, then hourly: a few dozen, not one per minute.
    assert 50 <= resends <= 60
    assert MAX_RESEND_WAIT_S == 3600.0


def test_confirm_agent_no_timeout_resend_right_after_a_connect(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    outbox.hold(commit(outbox, BOOT, [1, 2]), at_ms=int(clock.time() * 1000))
    clock.advance(600.0)
    confirms.on_connected()  # the connect replays the backlog: that is this resend
    confirms.on_ack(ack(0))
    clock.advance(30.0)
    assert confirms.due() == []
    clock.advance(31.0)
    confirms.on_ack(ack(0))
    assert len(confirms.due()) == 1


def test_confirm_agent_falls_back_when_no_collector_confirms(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    outbox.hold(commit(outbox, BOOT, range(1, 4)), at_ms=int(clock.time() * 1000))
    clock.advance(59.0)
    assert confirms.due() == [] and confirms.holding
    clock.advance(2.0)
    assert confirms.due() == []
    assert not confirms.holding  # PUBACKs delete rows from now on
    stats = outbox.stats()
    assert (stats.pending, stats.acked, stats.confirmed, stats.broker_fallback) == (0, 3, 0, True)

    confirms.on_connected()  # a reconnect does not undo the fallback
    assert not confirms.holding
    confirms.on_ack(ack(0))  # a confirmation arrives: the collector confirms again
    assert confirms.holding and not outbox.stats().broker_fallback


def test_confirm_agent_falls_back_at_once_when_confirmations_are_withdrawn(
    outbox: Outbox,
) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    confirms.on_ack(ack(0))
    outbox.hold(commit(outbox, BOOT, [1]), at_ms=NOW_MS)
    confirms.on_ack(b"")  # the collector cleared its retained confirmation
    assert not confirms.holding
    assert outbox.stats().pending == 0 and outbox.stats().acked == 1


def test_confirm_agent_in_broker_mode_ignores_confirmations(outbox: Outbox) -> None:
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock, end_to_end=False)
    commit(outbox, BOOT, [1])
    assert not confirms.holding
    assert confirms.on_ack(ack(5)) is None and confirms.on_ack(b"") is None
    clock.advance(1000.0)
    assert confirms.due() == []
    assert outbox.stats().pending == 1  # only a PUBACK removes it (Delivery calls ack)


def test_confirm_agent_new_process_expects_confirmations_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    first = Outbox(path)
    first.set_fallback(True)
    first.close()
    box = Outbox(path)
    confirms = Confirmations(box, FakeClock(), site="plant-a", device="pi-01")
    assert confirms.holding and not box.stats().broker_fallback
    box.close()


def test_confirm_agent_once_confirmed_waits_instead_of_falling_back(tmp_path: Path) -> None:
    """A broker crash loses the retained confirmation too; the collector may be down as well.
    An agent that has been confirmed before keeps its rows: only the broker would hold them."""
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_s=NOW_MS / 1000)
    first = Outbox(path)
    policy(first, clock).on_ack(ack(0))
    first.close()
    box = Outbox(path)  # a restart: a new process, a new connection, no retained message
    confirms = policy(box, clock)
    box.hold(commit(box, BOOT, [1, 2]), at_ms=NOW_MS)
    clock.advance(3600.0)
    assert confirms.due() == [] and confirms.holding
    assert box.stats().unconfirmed == 2
    # Once the collector withdraws its confirmations, even a new process falls back.
    confirms.on_ack(b"")
    box.hold(commit(box, BOOT, [3]), at_ms=NOW_MS)
    box.close()
    again = Outbox(path)
    confirms = policy(again, clock)
    assert confirms.holding
    again.hold(commit(again, BOOT, [4]), at_ms=int(clock.time() * 1000))
    clock.advance(61.0)
    confirms.due()
    assert not confirms.holding and again.stats().pending == 0
    again.close()


# -- the collector's ingest: what it confirms, and when ----------------------------------------


def test_confirm_ingest_checkpoints_confirmations_before_any_puback(tmp_path: Path) -> None:
    confirms = CollectorConfirmations()
    submitted: list[object] = []
    ingest = Ingest(
        lambda lines, token: submitted.append(token),
        clock=FakeClock(wall_s=NOW_MS / 1000),
        catalog=SensorCatalog(),
        tracker=SeqTracker(),
        devices=DeviceStates(300.0),
        dead_letters=DeadLetters(tmp_path / "deadletter.jsonl"),
        max_future_ms=300_000,
        confirmations=confirms,
    )
    topic_name = "sitewatch/v1/plant-a/pi-01/telemetry"
    for seq in (1, 2, 3):
        message = TelemetryMessage(site="plant-a", device="pi-01", boot_id=BOOT, seq=seq,
                                   readings=[Reading(sensor="s", ts=NOW_MS + seq,
                                                     quality=Quality.OK, temperature_c=4.0)])
        ingest.handle(Received(topic_name, encode(message), seq, 1, False, 1))
    # seq 4 is refused (a reading an hour ahead): dead-lettered, and confirmed all the same.
    future = {"v": 1, "site": "plant-a", "device": "pi-01", "boot_id": BOOT, "seq": 4,
              "readings": [{"sensor": "s", "ts": NOW_MS + 3_600_000, "quality": "ok",
                            "temperature_c": 4.0}]}
    ingest.handle(Received(topic_name, json.dumps(future).encode(), 4, 1, False, 1))
    # The collector's own confirmation comes back on its subscription: passed over.
    echo = AckMessage(site="plant-a", device="pi-01", boot_id=BOOT, durable_seq=0, ts=NOW_MS)
    ingest.handle(Received(topic_for(echo), encode(echo), 5, 1, True, 1))
    assert ingest.invalid_messages == 1

    acked: list[int] = []
    at_checkpoint: list[tuple[int | None, int]] = []

    def checkpoint() -> None:
        at_checkpoint.append((confirms.durable_seq("plant-a", "pi-01", BOOT), len(acked)))

    assert ingest.release_acks(lambda r: acked.append(r.mid), checkpoint) == 0  # none durable
    ingest.mark_durable(submitted[:2])  # the writer stored seq 1 and 2
    assert ingest.release_acks(lambda r: acked.append(r.mid), checkpoint) == 2
    assert at_checkpoint == [(2, 0)] and acked == [1, 2]  # checkpoint first, then PUBACKs
    ingest.mark_durable(submitted[2:])
    assert ingest.release_acks(lambda r: acked.append(r.mid), checkpoint) == 3
    assert acked == [1, 2, 3, 4, 5]
    assert confirms.durable_seq("plant-a", "pi-01", BOOT) == 4

    # A skip moves past seqs the agent will never send.
    skip = SkipMessage(site="plant-a", device="pi-01", boot_id=BOOT, held_from=9, ts=NOW_MS)
    ingest.handle(Received(topic_for(skip), encode(skip), 6, 1, False, 1))
    assert confirms.durable_seq("plant-a", "pi-01", BOOT) == 8


def test_confirm_ingest_passes_over_a_cleared_confirmation(tmp_path: Path) -> None:
    """With confirmations off the collector clears the retained ones (an empty message),
    which its own subscription brings back: not a dead letter."""
    dead = DeadLetters(tmp_path / "deadletter.jsonl")
    ingest = Ingest(lambda lines, token: None, clock=FakeClock(), catalog=SensorCatalog(),
                    tracker=SeqTracker(), devices=DeviceStates(300.0), dead_letters=dead,
                    max_future_ms=300_000)
    ingest.handle(Received("sitewatch/v1/plant-a/ack/pi-01", b"", 1, 1, False, 1))
    ingest.handle(Received("sitewatch/v1/plant-a/pi-01/telemetry", b"", 2, 1, False, 1))
    assert (ingest.invalid_messages, dead.count) == (1, 1)  # only the empty telemetry
    acked: list[int] = []
    ingest.release_acks(lambda r: acked.append(r.mid))
    assert acked == [1, 2]


class RecordingLink:
    """Stands in for the MQTT link: records what is published and hands out message ids."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        self.published.append((topic, payload))
        return len(self.published)


def test_confirm_agent_resend_skips_rows_still_waiting_for_their_puback(outbox: Outbox) -> None:
    """A timeout resend while some rows are still in flight sends only the acknowledged ones
    again: the others are on their way, and a second copy would be an uncounted duplicate."""
    clock = FakeClock(wall_s=NOW_MS / 1000)
    confirms = policy(outbox, clock)
    delivery = Delivery(outbox, clock, birth=lambda: ("birth", b"{}"), confirmations=confirms,
                        drain_rate_per_s=1000)
    link = RecordingLink()
    delivery.on_connected(link)  # type: ignore[arg-type]
    confirms.on_connected()
    for seq in (1, 2, 3):
        outbox.add("telemetry", f"t/{seq}", b"{}", readings=1, created_ms=NOW_MS, boot_id=BOOT,
                   seq=seq)
    delivery.notify()
    delivery.on_tick(link)  # type: ignore[arg-type]
    assert [t for t, _ in link.published] == ["birth", "t/1", "t/2", "t/3"]
    delivery.on_published(2)  # PUBACKs for seqs 1 and 2; seq 3's has not come
    delivery.on_published(3)
    clock.advance(1.0)
    delivery.on_tick(link)  # type: ignore[arg-type]
    assert outbox.stats().unconfirmed_messages == 2
    for wait_s in (1.0, 61.0, 0.5):  # the collector keeps confirming, stuck before seq 1
        clock.advance(wait_s)
        delivery.on_message(link, confirms.ack_topic, ack(0))  # type: ignore[arg-type]
    delivery.on_tick(link)  # type: ignore[arg-type]
    assert [t for t, _ in link.published[4:]] == ["t/1", "t/2"]  # not seq 3
    assert outbox.stats().resent == 0  # counted when their PUBACKs are applied
    delivery.on_published(5)
    delivery.on_published(6)
    delivery.on_tick(link)  # type: ignore[arg-type]
    assert outbox.stats().resent == 2
