"""An SD card that lied about a flush: the journal comes back without its WAL tail.

The registry already holds the lost records; whatever the gate writes next
must reach it as new records, never be acknowledged as copies of the lost
ones. And a registry sent other content under a (gate, epoch, seq) it holds
refuses it loudly instead of acknowledging it.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import grpc
import pytest

from gated.registry.store import EventConflict, IncomingEvent, RegistryStore
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from tests.rpc_helpers import Gate, start_registry, until

pytestmark = pytest.mark.timeout(60)

GATE = "gate-a"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def scan(gate: Gate, ticket_ids, **payload) -> None:
    for ticket_id in ticket_ids:
        await gate.journal.append_async("decision", at=time.time(), lane="in-1", ticket_id=ticket_id, reason="ok",
                                        payload={**payload, "ticket": ticket_id})
    gate.uplink.wake()


def stored_tickets(db, marker: str) -> list[int]:
    with RegistryStore(db, create=False) as store:
        rows = store.conn.execute("SELECT ticket_id FROM events WHERE payload LIKE ? ORDER BY ticket_id", (f'%"{marker}":true%',))
        return [r[0] for r in rows]


def test_records_written_after_a_lost_wal_tail_reach_the_registry_as_new_records(tmp_path, registry_db):
    """The issue's defect 2: seqs rolled back with the tail, the registry kept the old rows and acked the new ones."""
    journal_path = tmp_path / f"journal-{GATE}.db"
    card = tmp_path / "what-the-card-kept"
    card.mkdir()

    async def day():
        registry = await start_registry(registry_db, None)
        gate = Gate(tmp_path, GATE, registry.port, None).start()  # checkpoints off: the records live in the WAL
        await scan(gate, range(5205320700, 5205320710), before=True)
        await until(lambda: gate.journal.backlog() == 0, what="the first 10 acked")
        # The card's controller says these pages are flushed; only these survive the power cut.
        shutil.copyfile(journal_path, card / journal_path.name)
        shutil.copyfile(f"{journal_path}-wal", card / f"{journal_path.name}-wal")
        await scan(gate, range(5205320710, 5205320730), before=True)  # sent, stored, acked, then lost
        await until(lambda: gate.journal.backlog() == 0, what="the next 20 acked")
        lost_tail = [r.seq for r in gate.journal.tail(20)]
        await gate.stop()
        assert registry.store.event_count(GATE) == 30

        # Power cut: the card comes back with the earlier WAL, its last frame torn as well.
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"{journal_path.name}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(card / journal_path.name, journal_path)
        wal = (card / f"{journal_path.name}-wal").read_bytes()
        (tmp_path / f"{journal_path.name}-wal").write_bytes(wal[: len(wal) - 100])

        gate = Gate(tmp_path, GATE, registry.port, None).start()
        survivors = gate.journal.tail(100)
        assert len(survivors) < 30 and survivors[-1].seq < lost_tail[0]  # the tail is gone, seqs rolled back
        await scan(gate, range(1_000_000 * 3 + 1, 1_000_000 * 3 + 16), after=True)
        await until(lambda: gate.journal.backlog() == 0, what="the new records acked")
        new = [r for r in gate.journal.tail(15)]
        # every new record is at the registry, none taken for one of the lost ones
        assert stored_tickets(registry_db, "after") == list(range(3_000_001, 3_000_016))
        assert stored_tickets(registry_db, "before") == list(range(5205320700, 5205320730))
        assert registry.store.event_count(GATE) == 45
        # and no event id came back: the lost records' ids stay theirs
        assert not {f"{GATE}:{r.seq}" for r in new} & {f"{GATE}:{s}" for s in lost_tail}
        await gate.stop()
        await registry.stop()

    run(day())


def event(seq: int, payload: str = "{}", ticket_id: int = 1001) -> IncomingEvent:
    return IncomingEvent(f"g:{seq}", seq, 1.0, "decision", "in-1", ticket_id, "ok", payload)


def test_the_registry_refuses_a_known_seq_with_other_content_and_stores_none_of_the_batch(tmp_path, registry_db):
    with RegistryStore(registry_db) as store:
        store.store_events("g", [event(s) for s in range(1, 6)], 1.0, epoch=7)
        again = store.store_events("g", [event(4), event(5), event(6)], 2.0, epoch=7)  # a lost ack: same records
        assert (again.new_events, again.acked_seq) == (1, 6)
        with pytest.raises(EventConflict, match="seq 6: already stored with another ticket"):
            store.store_events("g", [event(6, ticket_id=2**63 + 5), event(7)], 3.0, epoch=7)
        with pytest.raises(EventConflict, match="seq 5: already stored with another payload"):
            store.store_events("g", [event(5, '{"i":1}')], 3.0, epoch=7)
        passage = IncomingEvent("g:6", 6, 1.0, "passage", "in-1", 1001, "ok", '{"zone":"hall-a","direction":"in"}')
        with pytest.raises(EventConflict, match="seq 6: already stored with another kind"):
            store.store_events("g", [passage], 3.0, epoch=7)
        assert store.event_count("g") == 6 and store.acked_seq("g", 7) == 6  # seq 7 was not half-stored


def test_over_grpc_a_conflict_is_an_error_status_and_the_gate_resends_under_a_new_epoch(tmp_path, registry_db):
    async def day():
        registry = await start_registry(registry_db, None)
        md = (("gated-gate-id", GATE),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=md)
            events = [pb.Event(event_id=f"{GATE}:{s}", seq=s, at=1.0, kind=pb.EVENT_KIND_DECISION) for s in (1, 2)]
            await call.write(pb.StreamEventsRequest(after_seq=0, journal_epoch=9, events=events))
            assert (await call.read()).up_to_seq == 2
            call.cancel()
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=md)
            await call.write(pb.StreamEventsRequest(after_seq=0, journal_epoch=9, events=[
                pb.Event(event_id=f"{GATE}:1", seq=1, at=1.0, kind=pb.EVENT_KIND_DECISION),
                pb.Event(event_id=f"{GATE}:2", seq=2, at=5.0, kind=pb.EVENT_KIND_DECISION)]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert ("gated-conflict-seq", "2") in tuple(refused.value.trailing_metadata())

        # A real gate whose records 3.. the registry holds with other content (a cloned card, a bug):
        gate = Gate(tmp_path, GATE, registry.port, None).start()
        await scan(gate, range(1, 6), n=True)
        await until(lambda: gate.journal.backlog() == 0, what="acked")
        seqs = [r.seq for r in gate.journal.tail(5)]
        epoch = gate.journal.epoch
        registry.store.conn.execute("UPDATE events SET payload = '{\"other\":1}' WHERE seq >= ? AND epoch != 9", (seqs[2],))
        gate.journal._call(lambda conn: conn.execute("UPDATE meta SET value = 0 WHERE key = 'acked_through'"))  # the acks were lost
        await gate.stop()
        gate = Gate(tmp_path, GATE, registry.port, None).start()
        await until(lambda: gate.journal.backlog() == 0, what="resent under a new epoch and acked")
        moved = gate.journal.epoch_span(seqs[2])[0]
        assert moved not in (epoch, 9) and gate.journal.epoch_span(seqs[1])[0] == epoch
        assert registry.store.event_ids(GATE, moved) == [f"{GATE}:{s}" for s in seqs[2:]]
        assert registry.store.event_count(GATE) == 2 + 5 + 3  # both versions kept
        await gate.stop()
        await registry.stop()

    run(day())
