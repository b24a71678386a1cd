"""No event is lost between a gate's journal and the registry: journal epochs, honest after_seq, bounded acks."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import grpc
import pytest

from gated.registry.store import IncomingEvent, RegistryStore
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.journal import Journal
from tests.rpc_helpers import Gate, start_registry, until

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def append(gate: Gate, n: int, **payload) -> None:
    for i in range(n):
        await gate.journal.append_async("decision", at=time.time(), lane="in-1", ticket_id=1001, reason="ok",
                                        payload={**payload, "i": i})
    gate.uplink.wake()


def decision(gate_id, seq):
    return IncomingEvent(f"{gate_id}:{seq}", seq, 1.0, "decision", "in-1", 1001, "ok", "{}")


def test_a_replaced_journal_starts_at_seq_1_again_and_none_of_its_events_is_taken_for_a_duplicate(tmp_path, registry_db):
    """The reviewer's a_reset.py: 30 new events after an SD card swap were acked and dropped as duplicates."""
    async def day():
        registry = await start_registry(registry_db, None)
        old = Gate(tmp_path, "gate-a", registry.port, None).start()
        await append(old, 100, old=True)
        await until(lambda: old.journal.backlog() == 0, what="old journal drained")
        old_epoch = old.journal.epoch
        await old.stop()
        for p in tmp_path.glob("journal-gate-a.db*"):
            p.unlink()  # the controller's SD card is replaced: a new journal, seqs from 1
        new = Gate(tmp_path, "gate-a", registry.port, None).start()
        assert new.journal.epoch != old_epoch
        await append(new, 30, new=True)
        await until(lambda: new.journal.backlog() == 0, what="new journal drained")
        store = registry.store
        assert store.event_count("gate-a") == 130
        assert store.event_ids("gate-a", new.journal.epoch) == [f"gate-a:{s}" for s in range(1, 31)]
        assert store.event_ids("gate-a", old_epoch) == [f"gate-a:{s}" for s in range(1, 101)]
        assert store.acked_seq("gate-a", new.journal.epoch) == 30 and store.acked_seq("gate-a", old_epoch) == 100
        assert sorted(store.gate_epochs("gate-a")) == sorted([old_epoch, new.journal.epoch])
        await new.stop()
        await registry.stop()

    run(day())


def test_the_registry_acknowledges_only_up_to_the_batch_it_stored(tmp_path, registry_db):
    with RegistryStore(registry_db) as store:
        assert store.store_events("g", [decision("g", s) for s in range(1, 6)], 1.0, epoch=7).acked_seq == 5
        resent = store.store_events("g", [decision("g", 1), decision("g", 2)], 2.0, epoch=7)
        assert resent.acked_seq == 2 and resent.new_events == 0
        assert store.acked_seq("g", 7) == 5  # what it holds does not go backwards
        # the same seqs from another journal epoch are other events
        assert store.store_events("g", [decision("g", 1)], 3.0, epoch=2**64 - 1).new_events == 1
        assert store.acked_seq("g", 2**64 - 1) == 1 and store.acked_seq("g") == 0


class LyingRegistry(pb_grpc.RegistryServiceServicer):
    """Acknowledges far more than it was sent on the first stream; honest afterwards."""

    def __init__(self) -> None:
        self.streams = 0

    async def StreamEvents(self, request_iterator, context):
        self.streams += 1
        lie = self.streams == 1
        async for batch in request_iterator:
            if batch.events:
                yield pb.StreamEventsResponse(up_to_seq=batch.events[-1].seq + (1000 if lie else 0))

    async def WatchEntitlements(self, request, context):
        await asyncio.Event().wait()
        yield pb.WatchEntitlementsResponse()  # pragma: no cover

    async def WatchKeys(self, request, context):
        await asyncio.Event().wait()
        yield pb.WatchKeysResponse()  # pragma: no cover

    async def GetTime(self, request, context):
        return pb.GetTimeResponse(unix_nanos=time.time_ns())


def test_an_ack_beyond_what_the_gate_sent_is_a_protocol_error_and_marks_nothing(tmp_path):
    async def day():
        registry = LyingRegistry()
        server = grpc.aio.server()
        pb_grpc.add_RegistryServiceServicer_to_server(registry, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        gate = Gate(tmp_path, "gate-a", port, None)
        await append(gate, 5)
        gate.start()
        try:
            await until(lambda: registry.streams >= 2, what="the gate ends the lying stream and reconnects")
            # The uplink notes what it marked once the journal's write returned: wait for both.
            await until(lambda: gate.journal.backlog() == 0 and gate.uplink.journal_acked_seq == 5,
                        what="acked by the honest stream")
            assert gate.uplink.status()["last_acked_seq"] == 5
            await append(gate, 3)  # seqs 6..8: inside the lie's range, and still sent and acked
            await until(lambda: gate.journal.backlog() == 0, what="later records acked")
            assert gate.uplink.status()["last_acked_seq"] == 8
        finally:
            await gate.stop()
            await server.stop(None)

    run(day())


def test_a_first_batch_after_more_than_the_registry_holds_is_refused_with_what_it_holds(tmp_path, registry_db):
    """The reviewer's b_gap.py: after_seq=50 on an empty registry was acknowledged, leaving 1..50 a hole."""
    async def day():
        registry = await start_registry(registry_db, None)
        md = (("gated-gate-id", "gate-a"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=md)
            await call.write(pb.StreamEventsRequest(after_seq=50, journal_epoch=9, events=[
                pb.Event(event_id=f"gate-a:{s}", seq=s, at=1.0, kind=pb.EVENT_KIND_DECISION) for s in (51, 52)]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert ("gated-acked-seq", "0") in tuple(refused.value.trailing_metadata())
        assert registry.store.event_count() == 0
        await registry.stop()

    run(day())


def test_a_registry_that_lost_acknowledged_events_gets_them_again(tmp_path, registry_db):
    """The registry's database is restored from an older copy: the gate resends from what it really holds."""
    async def day():
        registry = await start_registry(registry_db, None)
        port = registry.port
        gate = Gate(tmp_path, "gate-a", port, None).start()
        await append(gate, 50)
        await until(lambda: gate.journal.backlog() == 0, what="drained")
        await registry.stop()
        with RegistryStore(registry_db, create=False) as restored, restored.transaction():  # the restored copy holds only 1..20
            restored.conn.execute("DELETE FROM events WHERE seq > 20")
            restored.conn.execute("UPDATE gates SET acked_seq = 20")
        await append(gate, 10)  # 51..60, while the registry is away
        registry = await start_registry(registry_db, None, port=port)
        await until(lambda: gate.journal.backlog() == 0 and registry.store.event_count() == 60, what="everything resent")
        assert registry.store.event_ids("gate-a", gate.journal.epoch) == [f"gate-a:{s}" for s in range(1, 61)]
        await gate.stop()
        await registry.stop()

    run(day())


def test_after_seq_is_the_journals_real_previous_record_when_seqs_were_skipped(tmp_path, registry_db):
    """Seqs 4..10 were never written (failed commits): the next stream must say it follows 3, not 10."""
    async def day():
        registry = await start_registry(registry_db, None)
        port = registry.port
        gate = Gate(tmp_path, "gate-a", port, None).start()
        await append(gate, 3)
        await until(lambda: gate.journal.backlog() == 0, what="1..3 acked")
        await registry.stop()
        gate.journal._call(lambda conn: conn.execute("UPDATE meta SET value = 10 WHERE key = 'last_seq'"))
        await append(gate, 2)
        assert [r.seq for r in gate.journal.tail(5)] == [1, 2, 3, 11, 12]
        registry = await start_registry(registry_db, None, port=port)
        await until(lambda: gate.journal.backlog() == 0, what="11, 12 acked")
        assert registry.store.event_ids("gate-a", gate.journal.epoch) == ["gate-a:1", "gate-a:2", "gate-a:3", "gate-a:11", "gate-a:12"]
        await gate.stop()
        await registry.stop()

    run(day())


_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE tickets (ticket_id INTEGER PRIMARY KEY, category TEXT NOT NULL, ticket_type TEXT NOT NULL, zones TEXT NOT NULL,
    windows TEXT NOT NULL, max_entries INTEGER NOT NULL, entries_used INTEGER NOT NULL DEFAULT 0, inside TEXT NOT NULL DEFAULT '[]',
    badge_serial INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL DEFAULT 0, benefits TEXT NOT NULL, name TEXT NOT NULL,
    company TEXT NOT NULL, phone TEXT NOT NULL);
CREATE TABLE events (event_id TEXT PRIMARY KEY, gate_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
    lane TEXT NOT NULL, ticket_id INTEGER, reason TEXT NOT NULL, payload TEXT NOT NULL, received_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX events_kind_at ON events(kind, at);
CREATE TABLE gates (gate_id TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE keys (kid INTEGER PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, ticket_id INTEGER, kid INTEGER);
INSERT INTO meta VALUES ('schema', 1), ('version', 4), ('applied_change', 0), ('keys_managed', 0);
INSERT INTO events VALUES ('g:1', 'g', 1, 1.0, 'decision', 'in-1', NULL, 'ok', '{}', 2.0),
                          ('g:2', 'g', 2, 1.0, 'decision', 'in-1', NULL, 'ok', '{}', 2.0);
INSERT INTO gates VALUES ('g', 2);
PRAGMA application_id = 1734440018;
"""


def test_a_version_1_registry_database_is_migrated_with_its_events_under_epoch_0(tmp_path):
    db = tmp_path / "r.db"
    conn = sqlite3.connect(db)
    conn.executescript(_V1_SCHEMA)
    conn.close()
    with RegistryStore(db, create=False) as store:
        assert store.version == 4 and store.event_ids("g", 0) == ["g:1", "g:2"] and store.acked_seq("g", 0) == 2
        legacy_2 = IncomingEvent("g:2", 2, 1.0, "decision", "in-1", None, "ok", "{}")  # as the v1 file holds it
        assert store.store_events("g", [legacy_2, decision("g", 3)], 3.0).new_events == 1  # a legacy gate resends
        assert store.store_events("g", [decision("g", 1)], 3.0, epoch=5).new_events == 1  # its new journal
        assert store.event_count("g") == 4
    with RegistryStore(db, create=False) as store:  # reopening migrates nothing twice
        assert store.event_count("g") == 4 and store.acked_seq("g", 0) == 3


def test_records_of_a_boot_that_starts_while_the_last_boots_records_go_up_travel_under_their_own_epoch(tmp_path, registry_db):
    """A power cut left the last boot's tail unacknowledged; the gate comes back with the registry up and
    its uplink starts sending that tail before the new boot records anything. The new boot's records
    (5205320758 scanned after the restart) must reach the registry under the new boot's epoch, not the old one."""
    async def day():
        registry = await start_registry(registry_db, None)
        with Journal(tmp_path / "journal-gate-a.db", "gate-a", checkpoint_every_s=None) as before_cut:
            for i in range(3):
                before_cut.append("decision", at=time.time(), lane="in-1", ticket_id=5205320758 + i, reason="ok")
            old_epoch = before_cut.epoch
        gate = Gate(tmp_path, "gate-a", registry.port, None).start()
        store = registry.store
        await until(lambda: store.event_count("gate-a") == 3, what="the last boot's tail stored")
        await append(gate, 4, after_restart=True)
        await until(lambda: gate.journal.backlog() == 0, what="the new boot's records acknowledged")
        new_epoch = gate.journal.epoch
        new_seqs = [r.seq for r in gate.journal.tail(4)]
        assert store.event_ids("gate-a", old_epoch) == [f"gate-a:{s}" for s in (1, 2, 3)]
        assert store.event_ids("gate-a", new_epoch) == [f"gate-a:{s}" for s in new_seqs]
        assert store.acked_seq("gate-a", old_epoch) == 3 and store.acked_seq("gate-a", new_epoch) == new_seqs[-1]
        await gate.stop()
        await registry.stop()

    run(day())


def test_a_finished_epochs_stream_ends_cleanly_and_its_acks_are_kept(tmp_path, registry_db):
    """The last boot's tail goes up on its own stream, which the gate closes once it is acknowledged.
    The registry then ends the stream with OK: that is not a disconnection (it once was, a TypeError on
    every finished epoch, and a gate could go round reconnecting without ever marking the tail acked)."""
    from structlog.testing import capture_logs

    async def day():
        registry = await start_registry(registry_db, None)
        with Journal(tmp_path / "journal-gate-a.db", "gate-a", checkpoint_every_s=None) as before_cut:
            for i in range(16):
                before_cut.append("decision", at=time.time(), lane="in-1", ticket_id=1_000_000 * (i % 4 + 1) + i, reason="ok")
        with capture_logs() as logs:
            gate = Gate(tmp_path, "gate-a", registry.port, None).start()
            await append(gate, 6, after_restart=True)
            await until(lambda: gate.journal.backlog() == 0, what="both epochs acknowledged and marked")
            await gate.stop()
        stored = registry.store.event_count("gate-a")
        await registry.stop()
        assert [e for e in logs if e.get("event") == "uplink_disconnected"] == []
        assert stored == 22

    run(day())
