"""Late grants: the registry granted a lunch, but its answer reached the strict unit after the
1 s deadline and the unit refused. Over real gRPC on loopback: the registry's SQLite file
is held locked by another writer (a long import, a busy disk) so the Redeem call outlives
the unit's deadline, while the registry still takes the lunch once the lock goes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import pytest

from gated.redeem import REDEEM_DEADLINE_S
from gated.registry import dashdata
from gated.registry import redeem as registry_redeem
from gated.registry.report import checkin_report, format_report
from tests.registry.test_redeem import TICKETS, all_acked, connected, handheld, records, remaining, scan
from tests.rpc_helpers import until

pytestmark = pytest.mark.timeout(90)

REG_NO = 5205320758 + 1  # a 10-digit registration number among TICKETS (lunch_day2 = 1)
RANDOM63 = 0x6B1D_22A0_9C47_3E05 ^ (1 << 7)


class SlowDisk:
    """Another writer holds the registry file's write lock for `seconds` (started at once)."""

    def __init__(self, db, seconds: float):
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(db, seconds), daemon=True)
        self.thread.start()
        self.locked.wait(5)

    def _hold(self, db, seconds: float) -> None:
        conn = sqlite3.connect(str(db), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        self.locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    async def gone(self) -> None:
        await asyncio.to_thread(self.thread.join)


def test_a_grant_answered_after_the_strict_units_deadline_is_given_back_when_its_refusal_arrives(tmp_path):
    async def lunch():
        registry = await start(tmp_path)
        [unit] = await connected(tmp_path, registry, "desk-east")
        try:
            lane, _ = handheld(unit, "meal-e")  # strict: no answer, no lunch
            for ticket in (REG_NO, RANDOM63):
                disk = SlowDisk(tmp_path / "r.db", REDEEM_DEADLINE_S * 1.6)
                refused = await scan(lane, ticket, "lunch_day2")  # the unit waits its deadline, then refuses
                assert str(refused.reason) == "registry_unreachable"
                await disk.gone()
                # The registry took it all the same, once the lock went; the unit's refusal then arrives.
                await until(lambda t=ticket: len(registry_redeem.answers(registry.store, t)) == 1, what="the late grant")
                assert registry_redeem.answers(registry.store, ticket)[0][4] == "ok"
                await all_acked(unit)
                assert remaining(registry.store, ticket, "lunch_day2") == 1, "the lunch given back"
                await until(lambda t=ticket: remaining(unit, t, "lunch_day2") == 1, what="the unit has it back")
                # The attendee asks again at the next unit, the registry answers in time: one lunch, served once.
                again, _ = handheld(unit, f"meal-e-{ticket}")
                assert (await scan(again, ticket, "lunch_day2")).admitted
                await all_acked(unit)
                assert remaining(registry.store, ticket, "lunch_day2") == 0
                last, _ = handheld(unit, f"meal-e-{ticket}-last")
                assert str((await scan(last, ticket, "lunch_day2")).reason) == "benefit_exhausted"

            assert registry_redeem.unpaired_grants(registry.store) == []
            released = registry.store.conflicts(registry_redeem.RELEASED_KIND)
            assert [(c.ticket_id, c.benefit) for c in released] == [(REG_NO, "lunch_day2"), (RANDOM63, "lunch_day2")]
            refusals = [r for r in records(unit, "decision") if r.reason == "registry_unreachable"]
            for conflict, refusal in zip(released, refusals):
                assert conflict.first.event_id.startswith("desk-east:redeem:") and conflict.first.lane == "meal-e"
                assert conflict.first.event_id.endswith(refusal.payload["redemption_id"])
                assert conflict.then.gate_id == "desk-east" and conflict.then.at == refusal.at
            assert registry.store.conflict_counts()["over_redemption"] == 0
            text = format_report(checkin_report(registry.store))
            assert "late_grant_released" in text and "Redeem grants not yet reported by their unit: none" in text
        finally:
            await unit.stop()
            await registry.stop()

    asyncio.run(lunch())


def test_a_grant_no_record_ever_names_is_listed_and_then_given_back_once_the_units_later_records_arrive(tmp_path, monkeypatch):
    """The unit got the answer, then lost power before journaling the decision: the operator saw
    nothing, nobody ate. The grant is listed (report, dashboard data) until the unit's records from
    after it show it was never journaled; then it is given back."""
    monkeypatch.setattr(registry_redeem, "LATE_GRANT_RELEASE_S", 0.5)

    async def power_cut():
        registry = await start(tmp_path)
        [unit] = await connected(tmp_path, registry, "desk-south")
        try:
            lane, _ = handheld(unit, "meal-s")
            # The unit's journal never gets the decision: the answer arrives, the write never happens.
            answer = await unit.uplink.redeem(registry_redeem_ask(REG_NO, "meal-s"))
            assert str(answer.reason) == "ok" and remaining(registry.store, REG_NO, "lunch_day2") == 0

            report = checkin_report(registry.store)
            [grant] = report.unpaired_grants
            assert (grant.ticket_id, grant.benefit, grant.gate_id, grant.lane) == (REG_NO, "lunch_day2", "desk-south", "meal-s")
            text = format_report(report)
            assert "Redeem grants not yet reported by their unit: 1" in text
            assert f"ticket {REG_NO} (lunch_day2): desk-south meal-s at " in text
            dashdata.install(registry.store.conn)  # as `gated registry serve` does for its pages
            data = dashdata.dashboard(registry.store.conn)
            assert data["unpaired_grants"]["count"] == 1
            assert data["unpaired_grants"]["oldest"][0] == {"ticket": str(REG_NO), "benefit": "lunch_day2", "gate": "desk-south",
                                                            "lane": "meal-s", "at": grant.at}
            json.dumps(data)

            # Records journaled before the release time do not release it...
            assert str((await scan(lane, REG_NO, "dinner")).reason) == "ok"
            await all_acked(unit)
            assert remaining(registry.store, REG_NO, "lunch_day2") == 0 and registry_redeem.unpaired_grants(registry.store)
            # ...the unit's later ones do.
            await asyncio.sleep(0.6)
            other, _ = handheld(unit, "meal-s2")
            assert str((await scan(other, REG_NO, "lunch_day2")).reason) == "benefit_exhausted"
            await all_acked(unit)
            assert remaining(registry.store, REG_NO, "lunch_day2") == 1
            assert registry_redeem.unpaired_grants(registry.store) == []
            [released] = registry.store.conflicts(registry_redeem.RELEASED_KIND)
            assert released.ticket_id == REG_NO and released.then.gate_id == "desk-south"
            await until(lambda: remaining(unit, REG_NO, "lunch_day2") == 1, what="the unit has it back")
            third, _ = handheld(unit, "meal-s3")
            assert (await scan(third, REG_NO, "lunch_day2")).admitted
        finally:
            await unit.stop()
            await registry.stop()

    asyncio.run(power_cut())


def test_a_granted_decision_on_record_is_never_given_back(tmp_path):
    """The unit journaled the granted decision (the operator saw "Redeemed") and lost its
    redemption record: however late its next records, that grant stays taken (the unit's next
    start journals the outcome). A grant no record named is given back by the same records."""
    from gated.registry.store import IncomingEvent, RegistryStore

    def event(seq: int, at: float, kind: str, reason: str = "ok", **payload) -> IncomingEvent:
        return IncomingEvent(f"desk-west:{seq}", seq, at, kind, "meal-w", REG_NO, reason, json.dumps(payload))

    with RegistryStore(tmp_path / "r.db") as store:
        store.put_tickets([(t, "") for t in TICKETS], record_changes=False)
        ask = registry_redeem.RedeemRequest
        seen = registry_redeem.redeem(store, "desk-west", ask("rid-seen", REG_NO, "lunch_day2", "meal-w", 1e9))
        lost = registry_redeem.redeem(store, "desk-west", ask("rid-lost", REG_NO, "dinner", "meal-w", 1e9 + 1))
        assert (seen.outcome, lost.outcome) == ("ok", "ok")
        batch = store.store_events("desk-west", [event(1, 1e9, "decision", benefit="lunch_day2", redemption_id="rid-seen")],
                                   time.time() + 3600, epoch=1)
        assert batch.delta is None
        later = store.store_events("desk-west", [event(2, 1e9 + 3600, "decision", "no_benefit", benefit="hotel")],
                                   time.time() + 3600, epoch=1)
        assert later.delta.ops == (registry_redeem.SetBenefit(REG_NO, "dinner", 1),)
        assert remaining(store, REG_NO, "lunch_day2") == 0 and remaining(store, REG_NO, "dinner") == 1
        [waiting] = registry_redeem.unpaired_grants(store)
        assert waiting.redemption_id == "rid-seen"
        [released] = store.conflicts(registry_redeem.RELEASED_KIND)
        assert (released.benefit, released.first.event_id, released.then.event_id) == ("dinner", "desk-west:redeem:rid-lost", "desk-west:2")


def registry_redeem_ask(ticket_id: int, lane: str):
    from gated.redeem import RedeemAsk, new_redemption_id

    return RedeemAsk(new_redemption_id(), ticket_id, "lunch_day2", lane, time.time())


async def start(tmp_path):
    from tests.rpc_helpers import start_registry

    return await start_registry(tmp_path / "r.db", None, tickets=TICKETS)
