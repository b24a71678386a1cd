"""The gate at work, in process: real ptys, real journal, MockFactory pins read back."""

import asyncio
import time

from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import load_config
from gated.gate.daemon import Gate
from gated.journal import Journal
from gated.validation.token import mint_dynamic, mint_static
from tests import conftest
from tests.gatekit import KEY, Pty, make_gate_dir

RELAY_IN, RELAY_OUT, RED, GREEN, BLUE, BUZZER, PASSAGE, EMERGENCY = 17, 27, 22, 23, 24, 25, 5, 6


async def until(predicate, timeout=3.0):
    return await conftest.until(predicate, timeout)


class Door:
    """A gate with its two scanner ptys and mock pins, started in this event loop."""

    def __init__(self, tmp_path, *, reboot=False, **kw):
        """`reboot=True`: start from what is on disk (no fresh keys, config or cache)."""
        self.dir = tmp_path
        self.config_path = tmp_path / "gate.toml" if reboot else make_gate_dir(tmp_path, **kw)
        self.scan_in = Pty(tmp_path / "scanner-in-1")
        self.scan_out = Pty(tmp_path / "scanner-out-1")
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.on_disk_when_relay_opened = []  # what the journal held at the instant each relay energized
        self.gate = Gate(load_config(self.config_path, check_files=True), pin_factory=self.factory, relay_observer=self._relay)

    def _relay(self, lane_id, energized, at):
        if energized:
            with Journal(self.gate.config.journal.path, self.gate.gate_id) as reader:
                self.on_disk_when_relay_opened.append([(r.kind, r.ticket_id) for r in reader.tail(5)])

    def pin(self, n):
        return self.factory.pin(n)

    async def __aenter__(self):
        await self.gate.start()
        await until(lambda: self.gate.inputs_connected())
        return self

    async def __aexit__(self, *exc):
        await self.gate.stop()
        self.scan_in.close()
        self.scan_out.close()

    def records(self, kind=None):
        return [r for r in self.gate.journal.tail(10_000) if kind is None or r.kind == kind]


def phone(ticket):
    return mint_dynamic(KEY, 1, ticket, time.time())


def test_admitted_scan_is_journaled_then_opens_the_relay_and_lights_the_category(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            relay = door.pin(RELAY_IN)
            assert relay.state == 0
            sent_at = time.monotonic()
            door.scan_in.send(phone(2))  # media: dark blue
            await until(lambda: relay.state == 1)
            assert time.monotonic() - sent_at < 0.2  # scan to relay, journal fsync included
            assert door.on_disk_when_relay_opened == [[("decision", 2)]]  # on disk before the relay moved
            assert (door.pin(RED).state, door.pin(GREEN).state, round(door.pin(BLUE).state, 2)) == (0, 0, round(0x8B / 255, 2))
            await until(lambda: relay.state == 0, timeout=1.0)  # 0.3 s pulse, then locked again
    asyncio.run(scenario())


def test_denied_scan_blinks_buzzes_and_keeps_the_relay_locked(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            door.scan_in.send("noise\x00\xff" * 3)
            door.scan_in.send(mint_dynamic(bytes(32), 1, 1, time.time()))
            await until(lambda: len(door.records("decision")) == 2)
            assert [r.reason for r in door.records("decision")] == ["bad_format", "bad_signature"]
            await until(lambda: sum(1 for s in door.pin(BUZZER).states if s.state) >= 3)  # the deny beeps
            assert [s.state for s in door.pin(RELAY_IN).states] == [False]  # the relay never moved
    asyncio.run(scenario())


def test_entry_counts_only_when_the_passage_sensor_sees_the_person(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            beam = door.pin(PASSAGE)
            beam.drive_high()  # pulled up: clear
            door.scan_in.send(phone(1))
            await until(lambda: door.pin(RELAY_IN).state == 1)
            beam.drive_low()  # person walks through
            await asyncio.sleep(0.05)
            beam.drive_high()
            await until(lambda: len(door.records("passage")) == 1)
            passage = door.records("passage")[0]
            assert passage.ticket_id == 1 and passage.payload["inside"] == ["hall"] and passage.payload["confirmed"]
            await asyncio.sleep(1.05)  # past the 1 s debounce: a new decision, not a repeat
            door.scan_in.send(phone(1))  # anti-passback: already inside
            await until(lambda: len(door.records("decision")) == 2)
            assert door.records("decision")[-1].reason == "already_inside"
            # admitted but never walked through: a not_passed record, and nothing counted
            door.scan_in.send(phone(3))
            await until(lambda: len(door.records("not_passed")) == 1, timeout=3)
            assert door.records("not_passed")[0].ticket_id == 3
            assert door.gate.validator.cache.get(3).entries_used == 0
            # a passage nobody was admitted for is recorded too
            beam.drive_low(); await asyncio.sleep(0.05); beam.drive_high()
            await until(lambda: len(door.records("unexpected_passage")) == 1)
    asyncio.run(scenario())


def test_a_second_scan_while_the_first_holder_is_still_in_the_turnstile_is_refused(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            door.pin(PASSAGE).drive_high()
            door.scan_in.send(mint_static(KEY, 1, 4, 0))  # single-entry badge
            await until(lambda: door.pin(RELAY_IN).state == 1)
            await asyncio.sleep(0.2)
            door.scan_in.send(phone(4))  # the same ticket on a phone (another code text: not a repeat), window still open
            await until(lambda: len(door.records("decision")) == 2)
            assert [r.reason for r in door.records("decision")] == ["ok", "already_inside"]
            assert [s.state for s in door.pin(RELAY_IN).states].count(True) == 1  # opened once
            # nobody walked through in time: recorded, and the ticket is free again
            await until(lambda: len(door.records("not_passed")) >= 1, timeout=3)
            assert door.gate.validator.cache.get(4).entries_used == 0
    asyncio.run(scenario())


def test_journal_failure_keeps_the_turnstile_shut_and_says_so(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            door.gate.journal.close()  # the journal refuses every write from now on
            door.scan_in.send(phone(1))
            await until(lambda: door.gate.fault is not None)
            await asyncio.sleep(0.1)
            assert [s.state for s in door.pin(RELAY_IN).states] == [False]
            assert door.gate.status()["fault"].startswith("journal")
            door.gate.journal = Journal(door.gate.config.journal.path, door.gate.gate_id)  # so stop() can close it
    asyncio.run(scenario())


def test_operator_opening_is_journaled_before_the_relay_moves(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            assert await door.gate.open_lane("in-1") is True
            assert door.on_disk_when_relay_opened == [[("manual_open", None)]]
            assert await door.gate.open_lane("nope") is False
    asyncio.run(scenario())


def test_exit_lane_without_sensor_counts_on_admit(tmp_path):
    async def scenario():
        async with Door(tmp_path, passage=False) as door:
            door.scan_in.send(phone(1))
            await until(lambda: len(door.records("passage")) == 1)
            door.scan_out.send(mint_static(KEY, 1, 1, 0))
            await until(lambda: door.pin(RELAY_OUT).state == 1)
            await until(lambda: len(door.records("passage")) == 2)
            assert door.records("passage")[-1].payload["inside"] == []
    asyncio.run(scenario())


def test_emergency_input_opens_every_lane_until_cleared(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            door.pin(EMERGENCY).drive_high()
            await until(lambda: door.pin(RELAY_IN).state == 1 and door.pin(RELAY_OUT).state == 1)
            await asyncio.sleep(0.5)  # held, not pulsed
            assert door.pin(RELAY_IN).state == 1 and door.pin(RELAY_OUT).state == 1
            await until(lambda: len(door.records("emergency")) == 1)
            # the admin service cannot clear an emergency the fire-alarm input still asserts
            await door.gate.set_emergency(False)
            await asyncio.sleep(0.2)
            assert door.pin(RELAY_IN).state == 1 and door.gate.status()["emergency"] is True
            door.pin(EMERGENCY).drive_low()
            await until(lambda: door.pin(RELAY_IN).state == 0 and door.pin(RELAY_OUT).state == 0)
            await until(lambda: [r.payload["active"] for r in door.records("emergency")] == [True, False])
    asyncio.run(scenario())


def test_stop_leaves_relays_locked_and_a_reboot_remembers_who_is_inside(tmp_path):
    async def first_day():
        async with Door(tmp_path, passage=False) as door:
            door.scan_in.send(phone(1))
            await until(lambda: len(door.records("passage")) == 1)
            door.scan_in.send(phone(4))  # max_entries 1
            await until(lambda: len(door.records("passage")) == 2)
            await until(lambda: door.pin(RELAY_IN).state == 0)
            door.scan_in.send(phone(2))
            await until(lambda: len(door.records("decision")) == 3 and door.pin(RELAY_IN).state == 1)
        assert door.gate.lanes["in-1"].outputs.relay.closed
        return door.factory

    factory = asyncio.run(first_day())
    assert factory.pin(RELAY_IN).state == 0  # stopped mid-pulse: locked

    async def after_reboot():
        async with Door(tmp_path, reboot=True) as door:
            assert door.gate.validator.cache.get(1).inside == ("hall",)
            door.scan_in.send(phone(1))
            await until(lambda: len(door.records("decision")) == 4)
            assert door.records("decision")[-1].reason == "already_inside"
    asyncio.run(after_reboot())


def test_usage_journaled_after_the_last_cache_save_is_replayed(tmp_path):
    config_path = make_gate_dir(tmp_path, passage=False)
    config = load_config(config_path)
    # the cache on disk is the seeded one (seq 0); the journal says ticket 1 went in later
    with Journal(config.journal.path, config.gate.id) as journal:
        journal.append("passage", at=time.time(), lane="in-1", ticket_id=1, reason="ok",
                       payload={"ticket_id": 1, "zone": "hall", "direction": "in", "entries_used": 1, "inside": ["hall"], "benefit": None, "benefit_remaining": None})

    async def scenario():
        async with Door(tmp_path, reboot=True) as door:
            assert door.gate.validator.cache.get(1).inside == ("hall",)
    asyncio.run(scenario())
