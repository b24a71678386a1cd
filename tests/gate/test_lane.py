"""One lane on its own: no Gate, no event-loop timers relied on, a fake monotonic clock.

A real Validator over a real cache, a real Journal on a SQLite file, relay,
light and buzzer on gpiozero's MockFactory pins read back; the lane is given
exactly its `LaneServices`, and time moves only when the test says so.
"""

from __future__ import annotations

import asyncio
import time

from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.clock import GateClock
from gated.config import load_config
from gated.drivers.base import Read
from gated.drivers.gpio import Buzzer, LaneLight, Relay
from gated.gate.control import policy_from_config
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.journal import Journal
from gated.validation import (
    EntitlementCache,
    KeyRing,
    TicketRecord,
    Validator,
    encode_snapshot,
)
from gated.validation.token import mint_dynamic
from tests.gatekit import KEY, make_gate_dir

SINGLE = 5205320758  # a 10-digit registration number, one entry
BLOCK = 1_000_000 * 3 + 17
RANDOM63 = 0x6B1D_22A0_9C47_3E05
ABSENT = 1_000_000 * 3 + 18  # next to a present id, never in the cache
RELAY, RED, GREEN, BLUE, BUZZER = 17, 22, 23, 24, 25


class FakeMonotonic:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def lane_alone(tmp_path, journal, monotonic, failures, records):
    config = load_config(make_gate_dir(tmp_path, passage=True, emergency=False, tickets=None), check_files=True)
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [
        TicketRecord(ticket_id=SINGLE, category="guest", zones=("hall",), max_entries=1),
        TicketRecord(ticket_id=BLOCK, category="media", zones=("hall",), max_entries=3),
        TicketRecord(ticket_id=RANDOM63, category="staff", zones=("hall",)),
    ]))
    validator = Validator(KeyRing({1: KEY}), cache, policy_from_config(config))
    factory = MockFactory(pin_class=MockPWMPin)
    outputs = LaneOutputs(
        relay=Relay(RELAY, pulse_s=0.3, pin_factory=factory),
        light=LaneLight(RED, GREEN, BLUE, pwm=True, pin_factory=factory),
        buzzer=Buzzer(BUZZER, pin_factory=factory),
    )
    tasks = []
    services = LaneServices(
        validator=validator, journal=journal, clock=GateClock(trust_local_clock=True), monotonic=monotonic,
        spawn=lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro)),
        on_journal_failure=failures.append, on_record=lambda: records.append(journal.tail(1)[-1].kind),
    )
    lane_config = next(lc for lc in config.lanes if lc.id == "in-1")  # a turnstile with a passage sensor, 1.0 s
    return LaneRunner(lane_config, services, outputs), factory, cache


def scan(lane, monotonic, ticket):
    return lane.handle_read(Read(source="in-1/serial0", text=mint_dynamic(KEY, 1, ticket, time.time()), at=monotonic()))


def test_a_lane_alone_admits_journals_opens_and_says_not_passed_when_the_window_runs_out(tmp_path):
    async def morning():
        monotonic, failures, records = FakeMonotonic(), [], []
        with Journal(tmp_path / "journal.db", "test-gate", checkpoint_every_s=None) as journal:
            lane, pins, cache = lane_alone(tmp_path, journal, monotonic, failures, records)
            try:
                first = await scan(lane, monotonic, SINGLE)
                assert first.admitted and str(first.reason) == "ok"
                [decided] = journal.tail(10)
                assert (decided.kind, decided.ticket_id, decided.reason) == ("decision", SINGLE, "ok")
                assert pins.pin(RELAY).state == 1  # the record was on disk first, then the relay
                assert lane.status()["pending_passages"] == 1

                # Nobody walks through: 0.9 s on the lane's clock is still in time...
                monotonic.now += 0.9
                await lane.expire_due()
                assert [r.kind for r in journal.tail(10)] == ["decision"]
                # ...1.1 s is not.
                monotonic.now += 0.2
                await lane.expire_due()
                not_passed = journal.tail(1)[0]
                assert (not_passed.kind, not_passed.ticket_id, not_passed.payload["decision_seq"]) == ("not_passed", SINGLE, decided.seq)
                assert cache.get(SINGLE).entries_used == 0 and lane.counters.not_passed == 1
                assert lane.status()["pending_passages"] == 0

                # The next one does walk through: the entry counts, named by its decision.
                monotonic.now += 5.0
                second = await scan(lane, monotonic, BLOCK)
                monotonic.now += 0.4
                await lane.handle_passage(monotonic())
                passage = journal.tail(1)[0]
                assert (passage.kind, passage.ticket_id, passage.payload["decision_seq"]) == ("passage", BLOCK, journal.tail(2)[0].seq)
                assert passage.payload["confirmed"] and cache.get(BLOCK).entries_used == 1 and second.admitted

                # A stranger and a ticket nobody issued: recorded, nothing opened for them.
                await lane.handle_passage(monotonic())
                denied = await scan(lane, monotonic, ABSENT)
                assert str(denied.reason) == "unknown_ticket"
                assert [r.kind for r in journal.tail(2)] == ["unexpected_passage", "decision"]
                assert records == ["decision", "not_passed", "decision", "passage", "unexpected_passage", "decision"]
                assert failures == []
            finally:
                lane.outputs.close()

    asyncio.run(morning())


def test_a_lane_alone_keeps_the_turnstile_shut_when_the_journal_cannot_be_written(tmp_path):
    async def scenario():
        monotonic, failures, records = FakeMonotonic(), [], []
        journal = Journal(tmp_path / "journal.db", "test-gate", checkpoint_every_s=None)
        lane, pins, cache = lane_alone(tmp_path, journal, monotonic, failures, records)
        journal.close()  # the SD card is gone
        try:
            decision = await scan(lane, monotonic, RANDOM63)
            assert decision.admitted  # decided, but never acted on: no record, no entry
            assert len(failures) == 1 and "closed" in str(failures[0])
            assert [s.state for s in pins.pin(RELAY).states] == [False]
            assert lane.status()["pending_passages"] == 0 and records == []
        finally:
            lane.outputs.close()

    asyncio.run(scenario())
