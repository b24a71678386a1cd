"""Lunch at the meal hall: handheld units redeem through the registry, over real gRPC on loopback.

Real registries on SQLite files, real gates (journal, cache, uplink), real
handheld lanes (`LaneRunner` with a light on gpiozero's MockFactory pins);
only the scanner is replaced by the `Read` it would hand over.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import LaneConfig
from gated.drivers.base import Read
from gated.drivers.gpio import LaneLight
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.redeem import REDEEM_DEADLINE_S
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import EntitlementCache, Policy, TicketRecord, Validator, encode_snapshot
from gated.registry import redeem as registry_redeem
from tests.rpc_helpers import KEY, KID, Gate, badge_code, start_registry, until

pytestmark = pytest.mark.timeout(90)

REG_NO = 5205320758  # a 10-digit registration number
BLOCK = 1_000_000 * 3 + 17
RANDOM63 = 0x6B1D_22A0_9C47_3E05
ABSENT = BLOCK + 1  # next to a held id, never issued
# The shapes a show numbers tickets in: consecutive, 10-digit, blocks of 1,000,000, random 63-bit.
LAST_LUNCH = [100_001 + i for i in range(4)] + [REG_NO + i for i in range(4)] + \
             [1_000_000 * k + 5 for k in range(1, 5)] + [RANDOM63 ^ ((i + 1) << 7) for i in range(4)]
TICKETS = tuple(
    [TicketRecord(ticket_id=t, category="guest", zones=("hall-a",), benefits=(("lunch_day2", 1), ("dinner", 1)),
                  name=f"Guest {n}") for n, t in enumerate(LAST_LUNCH)]
    + [TicketRecord(ticket_id=BLOCK, category="media", zones=("hall-a",), benefits=(("dinner", 2),), name="Li Wei"),
       TicketRecord(ticket_id=RANDOM63, category="staff", zones=("hall-a",), name="No Benefits")]
)
RED, GREEN, BLUE = 22, 23, 24
MEAL_HALL = Policy(rate_burst=50, rate_per_s=50.0)


def handheld(gate: Gate, lane_id: str, offline_redemption: str = "refuse", redeem="uplink"):
    """A handheld lane on `gate`, asking the registry through the gate's uplink."""
    config = LaneConfig(id=lane_id, zone="hall-a", direction="in", mode="handheld", categories=None,
                        passage_timeout_s=None, scanners=(), camera=None, relay=None, light=None, buzzer=None,
                        passage=None, offline_redemption=offline_redemption)
    if gate.validator.policy.rate_burst < MEAL_HALL.rate_burst:  # a meal hall scans faster than a turnstile
        gate.validator = Validator(gate.keyring, gate.cache, MEAL_HALL)
    pins = MockFactory(pin_class=MockPWMPin)
    outputs = LaneOutputs(light=LaneLight(RED, GREEN, BLUE, pwm=True, pin_factory=pins))
    services = LaneServices(
        validator=gate.validator, journal=gate.journal, clock=gate.clock, monotonic=time.monotonic,
        spawn=asyncio.ensure_future, on_journal_failure=lambda exc: pytest.fail(f"journal failed: {exc}"),
        on_record=gate.uplink.wake, redeem=gate.uplink.redeem if redeem == "uplink" else redeem,
    )
    return LaneRunner(config, services, outputs), pins


def scan(lane: LaneRunner, ticket_id: int, benefit: str):
    return lane.handle_read(Read(source=f"{lane.id}/serial0", text=badge_code(ticket_id), at=time.monotonic()), benefit=benefit)


def remaining(gate_or_store, ticket_id: int, benefit: str) -> int | None:
    rec = gate_or_store.cache.get(ticket_id) if isinstance(gate_or_store, Gate) else gate_or_store.ticket(ticket_id)
    return None if rec is None else dict(rec.benefits).get(benefit)


def records(gate: Gate, kind: str) -> list:
    return [r for r in gate.journal.since(0) if r.kind == kind]


def offline_gate(tmp_path, gate_id: str, dead_port: int) -> Gate:
    """A unit that cannot reach the registry, holding the day's list from its last sync."""
    gate = Gate(tmp_path, gate_id, dead_port, None)
    gate.cache.load_snapshot(encode_snapshot(1, TICKETS))
    gate.keyring.replace({KID: KEY})
    return gate


async def connected(tmp_path, registry, *gate_ids: str) -> list[Gate]:
    gates = [Gate(tmp_path, g, registry.port, None).start() for g in gate_ids]
    for gate in gates:
        await until(lambda g=gate: len(g.cache) == len(TICKETS) and g.keyring.kids() and g.uplink.status()["connected"],
                    what=f"{gate.gate_id} synced")
    return gates


async def all_acked(gate: Gate) -> None:
    await until(lambda: gate.journal.backlog() == 0, what=f"{gate.gate_id}'s journal acknowledged")


def test_two_units_redeeming_the_last_lunch_at_the_same_moment_exactly_one_is_ok(tmp_path, registry_db):
    async def lunch():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        north, south = await connected(tmp_path, registry, "desk-north", "desk-south")
        try:
            lane_n, _ = handheld(north, "meal-n")
            lane_s, _ = handheld(south, "meal-s")
            for ticket in LAST_LUNCH:  # the same attendee's badge at both units, the same moment
                a, b = await asyncio.gather(scan(lane_n, ticket, "lunch_day2"), scan(lane_s, ticket, "lunch_day2"))
                assert sorted([str(a.reason), str(b.reason)]) == ["benefit_exhausted", "ok"], ticket
            for gate in (north, south):
                await until(lambda g=gate: all(remaining(g, t, "lunch_day2") == 0 for t in LAST_LUNCH),
                            what=f"{gate.gate_id} sees every lunch taken")
                await all_acked(gate)
            # The journal records reached the registry afterwards: nothing taken twice, nothing overdrawn.
            store = registry.store
            assert all(remaining(store, t, "lunch_day2") == 0 and remaining(store, t, "dinner") == 1 for t in LAST_LUNCH)
            assert store.conflict_counts()["over_redemption"] == 0
            assert registry_redeem.unpaired_grants(store) == []
            oks = [r for g in (north, south) for r in records(g, "redemption")]
            assert len(oks) == len(LAST_LUNCH) and all(r.payload["authority"] == "registry" for r in oks)
            refused = [r for g in (north, south) for r in records(g, "decision") if r.reason == "benefit_exhausted"]
            assert len(refused) == len(LAST_LUNCH) and all(r.payload["authority"] == "registry" for r in refused)
        finally:
            for gate in (north, south):
                await gate.stop()
            await registry.stop()

    asyncio.run(lunch())


def test_a_retry_of_the_same_redeem_is_a_no_op_and_every_answer_is_kept(tmp_path, registry_db):
    async def desk():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                stub = pb_grpc.RegistryServiceStub(channel)

                async def redeem(rid, ticket, benefit="dinner", gate="desk-1"):
                    return await stub.Redeem(pb.RedeemRequest(redemption_id=rid, ticket_id=ticket, benefit=benefit,
                                                              lane="meal", at=time.time()),
                                             metadata=(("gated-gate-id", gate),), timeout=5)

                version = registry.store.version
                first = await redeem("r-1", BLOCK)
                assert (first.outcome, first.remaining, first.replayed) == (pb.REDEEM_OUTCOME_OK, 1, False)
                again = await redeem("r-1", BLOCK)  # the reply was lost: the unit asks again
                assert (again.outcome, again.remaining, again.replayed) == (pb.REDEEM_OUTCOME_OK, 1, True)
                assert remaining(registry.store, BLOCK, "dinner") == 1 and registry.store.version == version + 1
                assert (await redeem("r-1", BLOCK, gate="desk-2")).replayed is False  # ids are per gate: a new one
                last = await redeem("r-2", BLOCK)
                assert (last.outcome, last.remaining) == (pb.REDEEM_OUTCOME_BENEFIT_EXHAUSTED, 0)
                assert (await redeem("r-2", BLOCK)).replayed  # a refusal is kept too
                assert (await redeem("r-3", RANDOM63)).outcome == pb.REDEEM_OUTCOME_NO_BENEFIT
                assert (await redeem("r-4", ABSENT)).outcome == pb.REDEEM_OUTCOME_UNKNOWN_TICKET
                for rid, ticket, benefit, code in (("r-1", BLOCK, "lunch_day2", grpc.StatusCode.ALREADY_EXISTS),
                                                   ("r-1", REG_NO, "dinner", grpc.StatusCode.ALREADY_EXISTS),
                                                   ("", BLOCK, "dinner", grpc.StatusCode.INVALID_ARGUMENT),
                                                   ("x" * 129, BLOCK, "dinner", grpc.StatusCode.INVALID_ARGUMENT)):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await redeem(rid, ticket, benefit)
                    assert refused.value.code() is code
                with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                    await stub.Redeem(pb.RedeemRequest(redemption_id="r-9", ticket_id=BLOCK, benefit="dinner"), timeout=5)
                assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert remaining(registry.store, BLOCK, "dinner") == 0 and remaining(registry.store, REG_NO, "dinner") == 1
                assert [a[4] for a in registry_redeem.answers(registry.store, BLOCK)] == ["ok", "ok", "benefit_exhausted"]
        finally:
            await registry.stop()

    asyncio.run(desk())


def test_a_unit_offline_under_the_strict_policy_refuses_to_redeem_and_says_why(tmp_path, registry_db):
    async def outage():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        dead_port = registry.port
        await registry.stop()  # the registry is gone: nothing listens there
        unit = offline_gate(tmp_path, "desk-east", dead_port).start()
        try:
            lane, pins = handheld(unit, "meal-e", offline_redemption="refuse")
            started = time.monotonic()
            refused = await scan(lane, REG_NO, "lunch_day2")
            assert time.monotonic() - started < REDEEM_DEADLINE_S  # known offline: no wait at the desk
            assert str(refused.reason) == "registry_unreachable" and not refused.admitted
            assert refused.attendee.name == "Guest 4"  # the operator still sees who it is
            [decided] = records(unit, "decision")
            assert (decided.reason, decided.payload["benefit"], decided.payload["authority"]) == \
                ("registry_unreachable", "lunch_day2", "none")
            assert records(unit, "redemption") == []
            assert remaining(unit, REG_NO, "lunch_day2") == 1  # nothing taken
            assert pins.pin(RED).state == 1 and pins.pin(GREEN).state == 0  # the deny colour
            # The same badge again a moment later: still refused, still nothing taken.
            assert str((await scan(lane, REG_NO, "lunch_day2")).reason) == "registry_unreachable"
        finally:
            await unit.stop()

    asyncio.run(outage())


def test_offline_under_the_lenient_policy_redeems_locally_and_the_registry_reports_the_overdraw_after_heal(tmp_path, registry_db):
    async def partition():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        [online] = await connected(tmp_path, registry, "desk-north")
        apart = offline_gate(tmp_path, "desk-annex", registry.port)  # its uplink not started: cut off
        try:
            lane_on, _ = handheld(online, "meal-n")
            lane_apart, _ = handheld(apart, "meal-annex", offline_redemption="local", redeem=apart.uplink.redeem)
            assert (await scan(lane_on, REG_NO, "lunch_day2")).admitted
            local = await scan(lane_apart, REG_NO, "lunch_day2")
            assert local.admitted and remaining(apart, REG_NO, "lunch_day2") == 0
            [taken] = records(apart, "redemption")
            assert taken.payload["authority"] == "local"
            # Heal: the annex's records go up, and the registry shows what happened.
            apart.start()
            await until(lambda: registry.store.conflict_counts()["over_redemption"] == 1, what="the overdraw reported")
            [conflict] = registry.store.conflicts("over_redemption")
            assert (conflict.ticket_id, conflict.benefit) == (REG_NO, "lunch_day2")
            assert (conflict.first.gate_id, conflict.first.lane) == ("desk-north", "meal-n")
            assert (conflict.then.gate_id, conflict.then.lane, conflict.then.event_id) == \
                ("desk-annex", "meal-annex", taken.event_id)
            assert remaining(registry.store, REG_NO, "lunch_day2") == 0
            await until(lambda: remaining(apart, REG_NO, "lunch_day2") == 0 and apart.journal.backlog() == 0)
        finally:
            await apart.stop()
            await online.stop()
            await registry.stop()

    asyncio.run(partition())


def test_the_journal_record_arriving_later_does_not_take_the_lunch_twice(tmp_path, registry_db):
    async def later():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        [unit] = await connected(tmp_path, registry, "desk-west")
        try:
            lane, _ = handheld(unit, "meal-w")
            # The registry is asked first and answers; the journal records follow on the event stream.
            assert (await scan(lane, BLOCK, "dinner")).admitted
            assert remaining(registry.store, BLOCK, "dinner") == 1
            await all_acked(unit)
            assert remaining(registry.store, BLOCK, "dinner") == 1  # the record paired with the grant
            [granted] = registry_redeem.answers(registry.store, BLOCK)
            [record] = records(unit, "redemption")
            assert record.payload["redemption_id"] == granted[1] and record.payload["benefit_remaining"] == 1
            assert registry_redeem.unpaired_grants(registry.store) == []
            # The registry granted but its answer came too late: the unit (lenient) redeemed locally under
            # the same id, and its record pairs with the grant: one dinner taken, not two.
            async def answer_after_the_deadline(ask):
                await unit.uplink.redeem(ask)
                await asyncio.sleep(REDEEM_DEADLINE_S * 2)
            slow, _ = handheld(unit, "meal-w2", offline_redemption="local", redeem=answer_after_the_deadline)
            late = await scan(slow, BLOCK, "dinner")
            assert late.admitted and records(unit, "redemption")[-1].payload["authority"] == "local"
            await all_acked(unit)
            assert remaining(registry.store, BLOCK, "dinner") == 0
            assert registry.store.conflict_counts()["over_redemption"] == 0
            assert registry_redeem.unpaired_grants(registry.store) == []
            # Nothing left, here as at the registry.
            await until(lambda: remaining(unit, BLOCK, "dinner") == 0, what="the registry's count at the unit")
            next_desk, _ = handheld(unit, "meal-w3")
            assert str((await scan(next_desk, BLOCK, "dinner")).reason) == "benefit_exhausted"
        finally:
            await unit.stop()
            await registry.stop()

    asyncio.run(later())


def test_offline_redemption_is_read_per_handheld_lane_with_its_default_from_the_offline_policy(tmp_path):
    from gated.config import load_config
    from gated.errors import ConfigError
    from tests.gatekit import make_gate_dir

    desk = '''
    [[lane]]
    id = "meal-1"
    zone = "hall"
    direction = "in"
    mode = "handheld"
      [[lane.scanner]]
      kind = "serial"
      port = "scanner-meal-1"
      [lane.buzzer]
      pin = 26
    '''
    strict = load_config(make_gate_dir(tmp_path, extra_lane=desk, tickets=None))
    assert strict.gate.offline_policy == "strict" and strict.lanes[-1].offline_redemption == "refuse"
    path = tmp_path / "gate.toml"
    path.write_text(path.read_text().replace('trust_local_clock = true', 'trust_local_clock = true\noffline_policy = "lenient"'))
    assert load_config(path).lanes[-1].offline_redemption == "local"
    path.write_text(path.read_text().replace('mode = "handheld"', 'mode = "handheld"\noffline_redemption = "refuse"'))
    assert load_config(path).lanes[-1].offline_redemption == "refuse"
    path.write_text(path.read_text().replace('offline_redemption = "refuse"', 'offline_redemption = "maybe"'))
    with pytest.raises(ConfigError, match=r'offline_redemption.*one of "refuse", "local"'):
        load_config(path)
    path.write_text(path.read_text().replace('mode = "turnstile"\n', 'mode = "turnstile"\noffline_redemption = "local"\n', 1))
    with pytest.raises(ConfigError, match="only handheld lanes redeem benefits"):
        load_config(path)


def test_a_grant_whose_record_a_power_cut_lost_is_counted_once_when_the_unit_settles_it_at_boot(tmp_path, registry_db):
    """The registry granted, the unit journaled its decision, then the power went before the redemption
    record: at the next start the unit journals it with "outcome": "unknown" and the same redemption_id,
    and the registry pairs it with the grant instead of taking a second dinner."""
    from gated.gate.outcomes import settle_unknown_outcomes
    from gated.journal import Journal
    from gated.registry.store import IncomingEvent, RegistryStore

    async def reboot():
        with RegistryStore(registry_db) as store:
            store.put_tickets([(t, "") for t in TICKETS], record_changes=False)
            granted = registry_redeem.redeem(store, "desk-west", registry_redeem.RedeemRequest("rid-7", BLOCK, "dinner", "meal-w", 1e9))
            assert (granted.outcome, granted.remaining, granted.delta.ops[0].remaining) == ("ok", 1, 1)
            with Journal(tmp_path / "journal.db", "desk-west", checkpoint_every_s=None) as journal:
                await journal.append_async("decision", at=1e9, lane="meal-w", ticket_id=BLOCK, reason="ok",
                                           payload={"benefit": "dinner", "zone": "hall-a", "direction": "in",
                                                    "mode": "handheld", "redemption_id": "rid-7", "authority": "registry"})
            # kill -9 here; the next boot:
            with Journal(tmp_path / "journal.db", "desk-west", checkpoint_every_s=None) as journal:
                cache = EntitlementCache()
                cache.load_snapshot(encode_snapshot(1, TICKETS))
                [settled] = await settle_unknown_outcomes(journal, cache, 1e9 + 60)
                assert (settled.kind, settled.payload["outcome"], settled.payload["redemption_id"]) == ("redemption", "unknown", "rid-7")
                sent = [IncomingEvent(f"desk-west:{r.seq}", r.seq, r.at, r.kind, r.lane, r.ticket_id, r.reason, json.dumps(r.payload))
                        for r in journal.since(0)]
            store.store_events("desk-west", sent, time.time(), epoch=3)
            assert remaining(store, BLOCK, "dinner") == 1  # one taken, by the grant
            assert registry_redeem.unpaired_grants(store) == [] and store.conflicts() == []
            # A unit that redeemed offline (no grant to pair with) is counted as before.
            other = IncomingEvent("desk-annex:1", 1, 1e9 + 5, "redemption", "meal-a", BLOCK, "ok",
                                  json.dumps({"ticket_id": BLOCK, "benefit": "dinner", "redemption_id": "rid-7"}))
            store.store_events("desk-annex", [other], time.time(), epoch=9)
            assert remaining(store, BLOCK, "dinner") == 0

    asyncio.run(reboot())
