"""A meal hall's check lane (`purpose = "check"`): staff scan badges to see them and
redeem lunches; nobody enters there, so nothing is counted as an entry.

Real lanes (`LaneRunner`, gpiozero MockFactory pins, a real journal) on a gate
whose uplink speaks real gRPC on loopback to a reference registry on a SQLite
file; the registry's report is read at the end. The screen's wording is
checked in Debian's headless Chromium.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.bench.screen import Pty, ThreadedGate, browser_missing, free_port, handheld_lane, wait_for
from gated.config import LaneConfig, RelayConfig, load_config
from gated.drivers.base import Read
from gated.drivers.gpio import LaneLight, Relay
from gated.errors import ConfigError
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.gate.outcomes import unknown_outcomes
from gated.registry.report import checkin_report, format_report
from gated.validation import Policy, TicketRecord, Validator
from tests.gate.conftest import text
from tests.gatekit import make_gate_dir
from tests.rpc_helpers import KEY, KID, Gate, badge_code, start_registry, until

pytestmark = pytest.mark.timeout(90)

REG_NO = 5205320758  # a 10-digit registration number
# single-entry day tickets, one per shape a show numbers them in
SINGLE = (100_001, REG_NO, 1_000_000 * 3 + 17, 0x6B1D_22A0_9C47_3E05)
ABSENT = REG_NO + 1  # next to a held id, never issued
TICKETS = tuple(
    TicketRecord(ticket_id=t, category="guest", zones=("hall-a",), max_entries=1, name=f"Guest {n}",
                 benefits=(("lunch_day1", 1),))
    for n, t in enumerate(SINGLE)
) + (TicketRecord(ticket_id=REG_NO + 2, category="staff", zones=("backstage",), name="Crew"),)
HALL = Policy(debounce_s=0.05, rate_burst=50, rate_per_s=50.0)


def lane(gate: Gate, lane_id: str, *, purpose: str = "entry", turnstile: bool = False):
    config = LaneConfig(id=lane_id, zone="hall-a", direction="in", mode="turnstile" if turnstile else "handheld",
                        categories=None, passage_timeout_s=None, scanners=(), camera=None,
                        relay=RelayConfig(17, True, 0.3, "locked") if turnstile else None, light=None, buzzer=None,
                        passage=None, offline_redemption="refuse", purpose=purpose)
    pins = MockFactory(pin_class=MockPWMPin)
    outputs = LaneOutputs(light=LaneLight(22, 23, 24, pwm=True, pin_factory=pins),
                          relay=Relay(17, pulse_s=0.3, pin_factory=pins) if turnstile else None)
    services = LaneServices(
        validator=gate.validator, journal=gate.journal, clock=gate.clock, monotonic=time.monotonic,
        spawn=asyncio.ensure_future, on_journal_failure=lambda exc: pytest.fail(f"journal failed: {exc}"),
        on_record=gate.uplink.wake, redeem=gate.uplink.redeem,
    )
    return LaneRunner(config, services, outputs), pins


async def scan(runner: LaneRunner, ticket_id: int, benefit: str | None = None):
    await asyncio.sleep(HALL.debounce_s * 2)  # a new read, not a repeat of the last
    return await runner.handle_read(Read(source=f"{runner.id}/serial0", text=badge_code(ticket_id), at=time.monotonic()),
                                     benefit=benefit)


def test_a_single_entry_ticket_checked_three_times_at_the_meal_hall_still_enters_at_the_turnstile(tmp_path):
    async def day():
        registry = await start_registry(tmp_path / "r.db", None, tickets=TICKETS)
        gate = Gate(tmp_path, "north", registry.port, None).start()
        gate.validator = Validator(gate.keyring, gate.cache, HALL)
        try:
            await until(lambda: len(gate.cache) == len(TICKETS) and gate.keyring.kids() and gate.uplink.status()["connected"],
                        what="gate synced")
            meal, meal_pins = lane(gate, "meal-1", purpose="check")
            door, door_pins = lane(gate, "in-1", turnstile=True)
            relay_pin = door_pins.pin(17)
            for ticket in SINGLE:
                for _ in range(3):
                    d = await scan(meal, ticket)
                    assert (str(d.reason), d.check) == ("ok", True), ticket
                record = gate.cache.get(ticket)
                assert (record.entries_used, record.inside) == (0, ()), ticket  # nothing counted, nobody inside
            assert meal_pins.pin(23).state > 0  # the light shows the guest colour: a valid badge

            # The check did not use up the single entry: the turnstile admits each one once.
            for ticket in SINGLE:
                relay_pin.clear_states()
                d = await scan(door, ticket)
                assert (str(d.reason), d.check) == ("ok", False), ticket
                assert any(state for _, state in relay_pin.states), "the turnstile's relay fired"
                assert gate.cache.get(ticket).entries_used == 1
                assert str((await scan(door, ticket)).reason) == "already_inside"

            # Back at the meal hall, inside and with no entry left: still a valid badge, and lunch is served.
            for ticket in SINGLE:
                d = await scan(meal, ticket)
                assert (str(d.reason), d.check) == ("ok", True)
                lunch = await scan(meal, ticket, "lunch_day1")
                assert (str(lunch.reason), lunch.check) == ("ok", False)
                assert str((await scan(meal, ticket, "lunch_day1")).reason) == "benefit_exhausted"
                record = gate.cache.get(ticket)
                assert (record.entries_used, record.inside, dict(record.benefits)["lunch_day1"]) == (1, ("hall-a",), 0)

            # What a check lane still refuses: an absent id, a forged code, another zone's badge.
            assert str((await scan(meal, ABSENT)).reason) == "unknown_ticket"
            assert str((await scan(meal, REG_NO + 2)).reason) == "wrong_zone"
            forged = badge_code(REG_NO)[:-4] + ("AAAA" if not badge_code(REG_NO).endswith("AAAA") else "BBBB")
            d = await meal.handle_read(Read(source="meal-1/serial0", text=forged, at=time.monotonic()))
            assert str(d.reason) in ("bad_signature", "bad_format") and d.check

            # The journal: the meal hall's decisions say "check" and no passage follows them;
            # its only outcomes are the lunches. Nothing waits for an outcome after a power cut.
            records = list(gate.journal.since(0))
            meal_decisions = [r for r in records if r.kind == "decision" and r.lane == "meal-1" and "benefit" not in r.payload]
            assert len(meal_decisions) == len(SINGLE) * 4 + 3
            assert all(r.payload["purpose"] == "check" for r in meal_decisions)
            assert not [r for r in records if r.kind == "passage" and r.lane == "meal-1"]
            assert len([r for r in records if r.kind == "passage" and r.lane == "in-1"]) == len(SINGLE)
            redeemed = [r for r in records if r.kind == "redemption" and r.lane == "meal-1"]
            assert sorted(r.ticket_id for r in redeemed) == sorted(SINGLE)
            assert unknown_outcomes(gate.journal, 0) == []

            # The registry counts the turnstile's entries only.
            await until(lambda: gate.journal.backlog() == 0, what="journal acknowledged")
            report = checkin_report(registry.store)
            assert {(h.lane, h.entries) for h in report.hours} == {("in-1", len(SINGLE))}
            assert report.unique_attendees == len(SINGLE)
            for ticket in SINGLE:
                held = registry.store.ticket(ticket)
                assert (held.entries_used, dict(held.benefits)["lunch_day1"]) == (1, 0)
            assert "meal-1" not in format_report(report)
        finally:
            await gate.stop()
            await registry.stop()

    asyncio.run(day())


def test_purpose_check_is_for_attended_lanes_and_says_so_in_one_line(tmp_path):
    config = make_gate_dir(tmp_path, extra_lane=handheld_lane("meal-1", "scanner-meal", '  listen = "127.0.0.1:8081"', (12, 13, 16))
                           .replace('mode = "handheld"', 'mode = "handheld"\npurpose = "check"'))
    assert load_config(config).lanes[-1].purpose == "check"
    assert load_config(config).lanes[0].purpose == "entry"
    turnstile = config.read_text().replace('mode = "turnstile"\n', 'mode = "turnstile"\n    purpose = "check"\n', 1)
    config.write_text(turnstile)
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    message = str(refused.value)
    assert "\n" not in message and "purpose" in message and 'mode = "handheld"' in message


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_meal_hall_screen_says_checked_and_redeems_the_lunch(tmp_path, browser):
    port = free_port()
    lanes = handheld_lane("meal-1", "scanner-meal-1", f'  listen = "127.0.0.1:{port}"', (12, 13, 16), zone="hall-a")
    lanes = lanes.replace('mode = "handheld"', 'mode = "handheld"\npurpose = "check"')
    config = make_gate_dir(tmp_path, extra_lane=lanes, tickets=list(TICKETS), rate_burst=50)
    config.write_text(config.read_text().replace('zone = "hall"', 'zone = "hall-a"'))
    ptys = {name: Pty(tmp_path / f"scanner-{name}") for name in ("in-1", "out-1", "meal-1")}
    try:
        with ThreadedGate(config) as threaded:
            browser.get(threaded.gate.screens["meal-1"].url)
            wait_for(lambda: text(browser, "online") != "…")
            ptys["meal-1"].send(badge_code(REG_NO))

            def drawn(reason="ok", after=0):
                d = browser.execute_script("const d = document.getElementById('decision').dataset;"
                                           "return [d.ticket, d.reason, +d.shown];")
                return d[2] if d[0] == str(REG_NO) and d[1] == reason and d[2] > after else None
            first = wait_for(drawn, timeout=5)
            assert text(browser, "words") == "Checked: valid"
            assert text(browser, "f-entries") == "0 / 1" and text(browser, "f-inside") != "inside"
            browser.find_element("css selector", '#benefits button[data-benefit="lunch_day1"]').click()
            wait_for(lambda: drawn(after=first), timeout=5)
            assert text(browser, "words") == "Redeemed: lunch_day1"
            assert text(browser, "f-entries") == "0 / 1"

            async def tail():
                return threaded.gate.journal.tail(1000)
            records = threaded.call(tail)
            assert [r.kind for r in records if r.lane == "meal-1" and r.kind != "decision"] == ["redemption"]
            assert threaded.gate.validator.cache.get(REG_NO).entries_used == 0
    finally:
        for pty in ptys.values():
            pty.close()
