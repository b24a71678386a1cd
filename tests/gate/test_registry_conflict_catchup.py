"""A running gate learns from the registry that its journal went back: it catches up before it admits again.

The gate started cleanly, so nothing was held at boot. Then the registry
refuses a batch: it holds another record under the gate's next seq of its
current epoch (`ALREADY_EXISTS`, `gated-conflict-seq`), an admission of a
single-entry ticket the gate's card lost along with its passage. Only the
registry knows that ticket was used, and it counts the use once the gate's
records come back under a new epoch (the old one closes). The ticket's holder
scans again right then: the gate holds the admission until its cache holds
what the registry counted, then refuses it; it is not let in twice.

Before a conflict started a catch-up, both days below let that holder in a
second time (every run, on both engines): the clean start had left the lanes
without the hold, and the catch-up of a start after a power cut took the
session the conflict ended for an unreachable registry and stopped holding.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from structlog.testing import capture_logs

from gated.journal import Journal
from gated.registry.store import IncomingEvent, RegistryStore
from gated.validation import TicketRecord
from tests.conftest import until
from tests.gate.test_daemon import Door, phone
from tests.gatekit import make_gate_dir
from tests.rpc_helpers import start_registry

pytestmark = pytest.mark.timeout(60)

GATE = "test-gate"  # make_gate_dir's gate id
USED_ELSEWHERE = 5205320758  # single entry; its admission only the registry still holds
NEVER_USED = 5205320759  # single entry, nobody came with it yet
DAY_PASSES = [1_000_000 * k + 7 for k in (2, 3, 4)]  # unlimited entries, ids in blocks
ABSENT = 0x3C1F_0000_0000_0042  # a random 63-bit id no registration has
TICKETS = [TicketRecord(ticket_id=t, category="guest", zones=("hall",), max_entries=1) for t in (USED_ELSEWHERE, NEVER_USED)] + [
    TicketRecord(ticket_id=t, category="guest", zones=("hall",)) for t in DAY_PASSES]


def the_lost_admission(seq: int) -> IncomingEvent:
    """What the registry holds under (epoch, seq): USED_ELSEWHERE admitted at in-1, its passage never sent."""
    payload = {"code_kind": "dynamic", "category": "guest", "zone": "hall", "direction": "in", "mode": "turnstile",
               "source": "in-1/serial0"}
    return IncomingEvent(f"{GATE}:{seq}", seq, time.time() - 60, "decision", "in-1", USED_ELSEWHERE, "ok", json.dumps(payload))


@pytest.mark.parametrize("own_record", ["denial", "admission"])
def test_a_conflict_at_the_registry_holds_single_entry_admissions_until_the_gate_has_caught_up(tmp_path, registry_db, own_record):
    """`own_record`: what the gate itself journaled under the conflicting seq. An admission's
    passage names that seq in the new epoch; it must not pass for the outcome of the
    registry's other record under the same seq (then the lost use would go uncounted)."""
    own_ticket = ABSENT if own_record == "denial" else DAY_PASSES[2]

    async def day():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        uplink = f'target = "127.0.0.1:{registry.port}"\nplaintext = true\nreconnect_max_s = 1\ncatchup_wait_s = 10'
        try:
            # The first day of a fresh journal, stopped cleanly.
            async with Door(tmp_path, tickets=None, passage=False, emergency=False, rate_burst=1000, uplink=uplink) as door:
                await until(lambda: (door.gate.catchup is None or door.gate.catchup.done)
                            and door.gate.validator.cache.get(USED_ELSEWHERE) is not None,
                            timeout=10, what="the registry's tickets")

            async with Door(tmp_path, reboot=True) as door:
                gate = door.gate
                assert gate.catchup is None  # a clean start: nothing held at boot
                door.scan_in.send(phone(DAY_PASSES[0]))
                await until(lambda: len(door.records("passage")) == 1 and gate.journal.backlog() == 0, timeout=10,
                            what="a first admission acknowledged in this boot's epoch")
                epoch, seq = gate.journal.epoch, gate.journal.high_water + 1
                with RegistryStore(registry_db, create=False) as store:  # the registry holds the card's lost record
                    store.store_events(GATE, [the_lost_admission(seq)], time.time(), epoch=epoch)

                with capture_logs() as logs:
                    door.scan_in.send(phone(own_ticket))  # the gate's own record under that seq: refused at the registry
                    await until(lambda: gate.journal.epoch_span(seq)[0] != epoch, timeout=10, step=0.001,
                                what="the records moved to a new epoch")
                    # Right then the holder of the used ticket comes back, with others behind.
                    for ticket in (USED_ELSEWHERE, NEVER_USED, DAY_PASSES[1]):
                        door.scan_in.send(phone(ticket))
                    await until(lambda: {USED_ELSEWHERE, NEVER_USED, DAY_PASSES[1]} <= {r.ticket_id for r in door.records("decision")},
                                timeout=15, what="the three decided")
                    await until(lambda: gate.journal.backlog() == 0, timeout=10, what="everything acknowledged")

                decisions = {r.ticket_id: r for r in door.records("decision")}
                assert decisions[USED_ELSEWHERE].reason in {"entries_exhausted", "already_inside"}, \
                    {t: r.reason for t, r in decisions.items()}
                assert (decisions[NEVER_USED].reason, decisions[DAY_PASSES[1]].reason, decisions[own_ticket].reason) == \
                    ("ok", "ok", "unknown_ticket" if own_record == "denial" else "ok")
                assert decisions[own_ticket].seq == seq
                # The day pass went through at once; both single-entry tickets waited for the catch-up.
                assert decisions[DAY_PASSES[1]].seq < decisions[NEVER_USED].seq
                catchup = gate.catchup
                assert (catchup.reason, catchup.outcome, catchup.held) == ("registry_conflict", "caught_up", 2)
                boot = door.records("boot")[-1]
                assert boot.seq == catchup.boot_seq and boot.payload["after"] == "registry_conflict"
                assert gate.journal.epoch_span(boot.seq)[0] == gate.journal.epoch_span(seq)[0] != epoch
                assert gate.validator.cache.get(USED_ELSEWHERE).entries_used == 1

            started = [e for e in logs if e["event"] == "catchup_started"]
            done = [e for e in logs if e["event"] == "catchup_done"]
            assert [(e["after"], e["from_seq"]) for e in started] == [("registry_conflict", seq)]
            assert [(e["after"], e["outcome"]) for e in done] == [("registry_conflict", "caught_up")]
            with RegistryStore(registry_db, create=False) as store:
                assert store.ticket(USED_ELSEWHERE).entries_used == 1  # counted once: the lost admission
                assert store.ticket(NEVER_USED).entries_used == 1
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 50))


def test_a_conflict_in_the_first_session_after_a_power_cut_keeps_the_boot_catch_up_holding(tmp_path, registry_db):
    """The boot's catch-up is still running when the registry refuses the older epoch's records: the
    session the conflict ends is not an unreachable registry, and the boot record (moved along) covers them."""
    async def day():
        registry = await start_registry(registry_db, None, tickets=TICKETS)
        uplink = f'target = "127.0.0.1:{registry.port}"\nplaintext = true\nreconnect_max_s = 1\ncatchup_wait_s = 10'
        make_gate_dir(tmp_path, tickets=TICKETS, passage=False, emergency=False, rate_burst=1000, uplink=uplink)
        # Yesterday's epoch, as the card kept it: three denials never sent, and no clean stop.
        with Journal(tmp_path / "state" / "journal.db", GATE) as yesterday:
            for n in range(3):
                yesterday.append("decision", at=time.time() - 3600, lane="in-1", ticket_id=ABSENT + n, reason="unknown_ticket",
                                 payload={"code_kind": "dynamic", "zone": "hall", "direction": "in", "mode": "turnstile"})
            old_epoch = yesterday.epoch
        with RegistryStore(registry_db, create=False) as store:  # under its first seq the registry holds an admission
            store.store_events(GATE, [the_lost_admission(1)], time.time(), epoch=old_epoch)

        try:
            with capture_logs() as logs:
                async with Door(tmp_path, reboot=True) as door:
                    gate = door.gate
                    assert gate.catchup.reason == "unclean_stop"
                    await until(lambda: gate.journal.epoch_span(1)[0] != old_epoch, timeout=10, step=0.001,
                                what="yesterday's records moved to a new epoch")
                    door.scan_in.send(phone(USED_ELSEWHERE))
                    await until(lambda: USED_ELSEWHERE in {r.ticket_id for r in door.records("decision")}, timeout=15,
                                what="the used ticket decided")
                    assert door.records("decision")[-1].reason in {"entries_exhausted", "already_inside"}
                    assert (gate.catchup.reason, gate.catchup.outcome, gate.catchup.held) == ("unclean_stop", "caught_up", 1)
                    assert gate.journal.epoch_span(gate.catchup.boot_seq)[0] != old_epoch
            assert door.on_disk_when_relay_opened == []  # the relay never opened
            assert [e for e in logs if e["event"] == "catchup_started"] == []  # the boot's catch-up covered the moved records
            with RegistryStore(registry_db, create=False) as store:
                assert store.ticket(USED_ELSEWHERE).entries_used == 1
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 50))
