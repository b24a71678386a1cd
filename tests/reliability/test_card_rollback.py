"""An SD card that lost the journal's WAL tail after a power cut: the admissions it dropped still count.

The registry received an admitted decision, the power went before its
passage record, and the card came back without either: the gate no longer
knows it let someone in. Once the gate's next epoch reaches the registry,
that admission is counted as used there, exactly once, and the gate hears it
like any usage (and refuses the second entry).
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from gated.validation import TicketRecord
from tests.rpc_helpers import Gate, badge_code, start_registry, until

pytestmark = pytest.mark.timeout(60)

GATE = "gate-a"
LOST = 5205320758  # a 10-digit registration number: admitted, the card dropped the record
LATE = 1_000_000 * 3 + 17  # a block id: admitted, its unknown outcome journaled after the epoch closed
ROAMING = 0x5A5A_1234_9876_0001  # a random 63-bit id, unlimited entries: its open admission changes nothing
FRESH = 100001  # consecutive ids: the first one walked through before the cut
TICKETS = (
    TicketRecord(LOST, "guest", zones=("hall-a",), max_entries=1),
    TicketRecord(LATE, "guest", zones=("hall-a",), max_entries=1),
    TicketRecord(ROAMING, "guest", zones=("hall-a",), max_entries=0),
    *(TicketRecord(FRESH + i, "guest", zones=("hall-a",), max_entries=1) for i in range(3)),
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def admit(gate: Gate, ticket_id: int) -> int:
    record = await gate.journal.append_async("decision", at=time.time(), lane="in-1", ticket_id=ticket_id, reason="ok",
                                             payload={"zone": "hall-a", "direction": "in"})
    gate.uplink.wake()
    return record.seq


def used(registry, ticket_id: int) -> int:
    return registry.store.ticket(ticket_id).entries_used


def test_an_admission_only_the_registry_holds_counts_once_when_the_next_epoch_arrives(tmp_path):
    journal_path = tmp_path / f"journal-{GATE}.db"
    card = tmp_path / "what-the-card-kept"
    card.mkdir()

    async def day():
        registry = await start_registry(tmp_path / "r.db", None, tickets=TICKETS)
        gate = Gate(tmp_path, GATE, registry.port, None).start()  # checkpoints off: the records live in the WAL
        await until(lambda: len(gate.cache) == len(TICKETS), what="the first snapshot")
        seq = await admit(gate, FRESH)  # the first holder walks through: decision and passage
        await gate.journal.append_async("passage", at=time.time(), lane="in-1", ticket_id=FRESH, reason="ok", payload={
            "ticket_id": FRESH, "zone": "hall-a", "direction": "in", "entries_used": 1, "decision_seq": seq})
        gate.uplink.wake()
        await until(lambda: gate.journal.backlog() == 0, what="the first entry acked")
        shutil.copyfile(journal_path, card / journal_path.name)
        shutil.copyfile(f"{journal_path}-wal", card / f"{journal_path.name}-wal")
        # Admitted, sent, stored, acked; the power goes before any passage record.
        await admit(gate, LOST)
        late_seq = await admit(gate, LATE)
        await admit(gate, ROAMING)
        await until(lambda: gate.journal.backlog() == 0, what="the admissions acked")
        await gate.stop()
        assert [used(registry, t) for t in (FRESH, LOST, LATE, ROAMING)] == [1, 0, 0, 0]  # decisions only: not counted yet

        # The card comes back with what it had flushed before those admissions.
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"{journal_path.name}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(card / journal_path.name, journal_path)
        shutil.copyfile(card / f"{journal_path.name}-wal", f"{journal_path}-wal")

        gate = Gate(tmp_path, GATE, registry.port, None).start()
        assert all(r.ticket_id not in (LOST, LATE) for r in gate.journal.tail(100))  # the gate forgot them
        await until(lambda: len(gate.cache) == len(TICKETS), what="the cache back")
        # Its first record of the new epoch closes the old one at the registry.
        await gate.journal.append_async("boot", at=time.time(), payload={"clean_stop": False})
        gate.uplink.wake()
        await until(lambda: used(registry, LOST) == 1, what="the lost admission counted at the registry")
        assert used(registry, LATE) == 1 and used(registry, ROAMING) == 0
        # ...and reaches the gate as any usage does: the holder is refused the second entry.
        await until(lambda: gate.cache.get(LOST).entries_used == 1, what="the count at the gate")
        assert str(gate.decide(badge_code(LOST)).reason) == "already_inside"  # counted in, as a passage would
        assert str(gate.decide(badge_code(FRESH + 1)).reason) == "ok"

        # A gate that did keep LATE's decision journals its outcome as unknown at a later start:
        # stored, counted nothing more.
        await gate.journal.append_async("passage", at=time.time(), lane="in-1", ticket_id=LATE, reason="ok", payload={
            "ticket_id": LATE, "zone": "hall-a", "direction": "in", "outcome": "unknown", "decision_seq": late_seq})
        gate.uplink.wake()
        await until(lambda: gate.journal.backlog() == 0, what="the late outcome acked")
        assert used(registry, LATE) == 1
        closed = registry.store.conn.execute("SELECT counted FROM closed_epochs WHERE gate_id = ?", (GATE,)).fetchall()
        assert sorted(c for (c,) in closed) == [2]  # one epoch closed, two admissions counted on closing

        # A third epoch closes the second: nothing in it waits for an outcome, nothing more counts.
        await gate.stop()
        gate = Gate(tmp_path, GATE, registry.port, None).start()
        await gate.journal.append_async("boot", at=time.time(), payload={"clean_stop": True})
        gate.uplink.wake()
        await until(lambda: gate.journal.backlog() == 0, what="the third epoch acked")
        assert [used(registry, t) for t in (LOST, LATE, ROAMING, FRESH, FRESH + 1)] == [1, 1, 0, 1, 0]
        await gate.stop()
        await registry.stop()

    run(day())
