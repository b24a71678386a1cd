"""Group commit: batches from many gates stored in one transaction, their usage out as one delta.

A batch that holds a conflicting (gate, epoch, seq) is refused alone; a batch
whose usage the mirror refuses is stored without it; the others commit
together. Over real gRPC, gates streaming at once are each acknowledged for
exactly their own records, and every usage reaches every watching gate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random

import pytest

from gated.registry.store import EventBatch, EventConflict, IncomingEvent, RegistryStore
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import SetUsage, TicketRecord
from tests.rpc_helpers import start_registry, until

pytestmark = pytest.mark.timeout(90)

# The shapes a show brings: consecutive ids, 10-digit registration numbers, blocks, random 63-bit ids.
_rng = random.Random(14)
TICKETS = ([100_001 + i for i in range(10)] + [5205320758 + i for i in range(10)]
           + [1_000_000 * k + 7 for k in range(1, 11)] + [_rng.getrandbits(63) for _ in range(10)])


def passage(gate: str, seq: int, ticket_id: int) -> IncomingEvent:
    payload = {"ticket_id": ticket_id, "zone": "hall-a", "direction": "in", "entries_used": 1, "inside": ["hall-a"],
               "benefit": None, "benefit_remaining": None}
    return IncomingEvent(f"{gate}:{seq}", seq, 1.0, "passage", "in-1", ticket_id, "", json.dumps(payload))


def decision(gate: str, seq: int, ticket_id: int) -> IncomingEvent:
    return IncomingEvent(f"{gate}:{seq}", seq, 1.0, "decision", "in-1", ticket_id, "ok", "{}")


def put(store: RegistryStore, unlimited_from: int | None = None) -> None:
    """Every ticket single-entry (or, from `unlimited_from` on, unlimited)."""
    store.put_tickets([(TicketRecord(tid, "guest", zones=("hall-a",),
                                     max_entries=0 if unlimited_from is not None and i >= unlimited_from else 1), "")
                       for i, tid in enumerate(TICKETS)], record_changes=False)


def test_one_transaction_one_version_and_a_conflicting_batch_refused_alone(registry_db):
    with RegistryStore(registry_db) as store:
        put(store)
        store.store_events("b", [decision("b", 1, TICKETS[0])], 1.0, epoch=5)  # gate b's seq 1, as stored before
        before = store.version
        batches = [
            EventBatch("a", 7, [passage("a", s, tid) for s, tid in enumerate(TICKETS[:10], 1)]),
            EventBatch("b", 5, [decision("b", 1, TICKETS[1]), passage("b", 2, TICKETS[10])]),  # seq 1 with another ticket
            EventBatch("c", 9, [passage("c", s, tid) for s, tid in enumerate(TICKETS[20:40], 1)]),
            EventBatch("d", 3, [passage("d", 1, TICKETS[0])]),  # the ticket gate a admitted: a second entry
        ]
        results, delta = store.store_event_batches(batches, 2.0)
        a, b, c, d = results
        assert isinstance(b, EventConflict) and b.seq == 1 and b.gate_id == "b"
        assert [(r.acked_seq, r.new_events) for r in (a, c, d)] == [(10, 10), (20, 20), (1, 1)]
        # one version for every batch's usage, in the order the batches came
        assert store.version == before + 1 and (delta.base_version, delta.version) == (before, before + 1)
        used = [op.ticket_id for op in delta.ops if isinstance(op, SetUsage)]
        assert used == TICKETS[:10] + TICKETS[20:40] + [TICKETS[0]]
        assert delta.ops[-1].entries_used == 2  # counted all the same, and recorded as a conflict
        assert store.conflict_counts().get("over_entry") == 1
        # gate b: nothing of the refused batch, not even its new seq 2
        assert store.event_count("b") == 1 and store.acked_seq("b", 5) == 1
        assert store.event_count("a") == 10 and store.event_count("c") == 20 and store.event_count("d") == 1
        again, delta = store.store_event_batches([EventBatch("a", 7, batches[0].events)], 3.0)  # a lost ack: resent
        assert (again[0].new_events, again[0].acked_seq, delta) == (0, 10, None)


def test_a_batch_whose_usage_the_mirror_refuses_is_stored_without_it_and_the_others_keep_theirs(registry_db):
    refused_ticket = TICKETS[15]

    def check(ops):
        if any(getattr(op, "ticket_id", None) == refused_ticket for op in ops):
            raise ValueError(f"ticket {refused_ticket} is not in the cache")

    with RegistryStore(registry_db) as store:
        put(store)
        results, delta = store.store_event_batches([
            EventBatch("a", 1, [passage("a", 1, TICKETS[11])]),
            EventBatch("b", 1, [passage("b", 1, refused_ticket), passage("b", 2, TICKETS[12])]),
            EventBatch("c", 1, [passage("c", 1, TICKETS[13])]),
        ], 1.0, check=check)
        assert results[1].usage_refused and results[1].new_events == 2  # stored, usage not counted
        assert results[0].usage_refused is None and results[2].usage_refused is None
        assert [op.ticket_id for op in delta.ops] == [TICKETS[11], TICKETS[13]]
        assert store.ticket(TICKETS[12]).entries_used == 0 and store.ticket(TICKETS[13]).entries_used == 1


def test_batches_waiting_together_are_one_group_commit_and_one_delta(tmp_path, registry_db):
    """What waits while the store is busy goes in the next transaction: gathered here before the writer runs."""

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=1) for tid in TICKETS])
        service = registry.service
        before = service.store.version
        try:
            results = await asyncio.gather(*(
                service._queue_batch(f"gate-{n}", [passage(f"gate-{n}", 1, tid)], 11, 0.0)
                for n, tid in enumerate(TICKETS)))
            assert [(r.acked_seq, r.new_events) for r in results] == [(1, 1)] * len(TICKETS)
            assert service.store.version == before + 1  # forty gates, one version
            assert all(service.cache.get(tid).entries_used == 1 for tid in TICKETS)
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))


def test_group_commits_back_to_back_still_let_another_store_user_in_between(tmp_path, registry_db):
    """Batches arriving all the time keep the group commits chained, each starting as the one
    before is stored; a snapshot asked for meanwhile runs between two of them, not after the
    stream of batches ends."""

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=0) for tid in TICKETS])
        service = registry.service
        sent = dict.fromkeys(range(len(TICKETS)), 0)
        batches: list[asyncio.Future] = []
        stop = asyncio.Event()

        async def gates() -> None:  # a batch at every turn of the loop, from each gate in turn (at most 400 waiting)
            n = 0
            while not stop.is_set():
                if len(batches) - stored() >= 400:
                    await asyncio.sleep(0.001)
                    continue
                sent[n] += 1
                gate = f"gate-{n}"
                batches.append(service._queue_batch(gate, [passage(gate, sent[n], TICKETS[n])], 11, 0.0))
                n = (n + 1) % len(TICKETS)
                await asyncio.sleep(0)

        def stored() -> int:
            return sum(t.done() for t in batches)

        try:
            feeding = asyncio.create_task(gates())
            await until(lambda: stored() >= 200, 30, "the gates' batches flowing")
            for _ in range(5):
                before = stored()
                version, _data = await asyncio.wait_for(service.snapshot(), 10)
                assert len(batches) - stored() > 0, "no batch was waiting: the snapshot did not have to cut in"
                assert version == service.cache.version
                await until(lambda: stored() >= before + 100, 10, "batches stored after the snapshot")
            stop.set()
            await feeding
            results = await asyncio.gather(*batches)
            assert all(r.new_events == 1 for r in results)
            assert all(service.cache.get(tid).entries_used == sent[n] for n, tid in enumerate(TICKETS))
            with RegistryStore(registry_db, create=False) as store:
                assert [store.event_count(f"gate-{n}") for n in range(len(TICKETS))] == list(sent.values())
        finally:
            stop.set()
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 80))


def test_store_users_back_to_back_do_not_keep_a_batch_waiting(tmp_path, registry_db):
    """Redeems, first batches and polls that keep asking for the store one after another: each
    time the chain gets the lock it stores a group before letting the next of them in."""
    import time

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=0) for tid in TICKETS])
        service = registry.service
        stop = asyncio.Event()
        calls = 0

        async def busy() -> None:
            nonlocal calls
            while not stop.is_set():
                await service._exclusive(time.sleep, 0.002)
                calls += 1

        users = [asyncio.create_task(busy()) for _ in range(2)]
        try:
            await asyncio.sleep(0.05)
            for seq in range(1, 6):
                result = await asyncio.wait_for(service._queue_batch("door", [passage("door", seq, TICKETS[seq])], 3, 0.0), 5)
                assert (result.acked_seq, result.new_events) == (seq, 1)
            assert calls > 0  # they were served meanwhile too
        finally:
            stop.set()
            await asyncio.gather(*users)
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))


def test_many_gates_streaming_at_once_each_acked_for_its_own_records_and_every_usage_at_every_gate(tmp_path, registry_db):
    gates = 24

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=3) for tid in TICKETS])
        import grpc

        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                stub = pb_grpc.RegistryServiceStub(channel)
                watcher = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=0),
                                                 metadata=(("gated-gate-id", "watcher"),))
                seen: dict[int, int] = {}

                async def watch():
                    async for update in watcher:
                        if update.WhichOneof("update") == "delta":
                            for op in update.delta.ops:
                                if op.WhichOneof("op") == "set_usage":
                                    seen[op.set_usage.ticket_id] = op.set_usage.entries_used

                watching = asyncio.create_task(watch())

                async def gate(n: int) -> list[int]:
                    call = stub.StreamEvents(metadata=(("gated-gate-id", f"gate-{n}"),))
                    acks, after = [], 0
                    for round_ in range(3):  # three batches in turn, each waiting for its ack
                        seqs = range(after + 1, after + 4)
                        events = [pb.Event(event_id=f"gate-{n}:{s}", seq=s, at=1.0, kind=pb.EVENT_KIND_DECISION,
                                           lane="in-1", reason="ok") for s in seqs]
                        tid = TICKETS[(n + round_ * gates) % len(TICKETS)]
                        events.append(pb.Event(event_id=f"gate-{n}:{after + 4}", seq=after + 4, at=1.0, kind=pb.EVENT_KIND_PASSAGE,
                                               lane="in-1", ticket_id=tid,
                                               passage=pb.Passage(ticket_id=tid, zone="hall-a", direction="in")))
                        await call.write(pb.StreamEventsRequest(after_seq=after, journal_epoch=100 + n, events=events))
                        acks.append((await call.read()).up_to_seq)
                        after += 4
                    await call.done_writing()
                    return acks

                acks = await asyncio.gather(*(gate(n) for n in range(gates)))
                assert acks == [[4, 8, 12]] * gates
                counts: dict[int, int] = {}
                for n in range(gates):
                    for round_ in range(3):
                        tid = TICKETS[(n + round_ * gates) % len(TICKETS)]
                        counts[tid] = counts.get(tid, 0) + 1
                await until(lambda: seen == counts, 30, "every usage at the watching gate")
                watching.cancel()
            with RegistryStore(registry_db, create=False) as store:
                assert sum(store.event_count(f"gate-{n}") for n in range(gates)) == gates * 12
                assert {tid: store.ticket(tid).entries_used for tid in counts} == counts
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 80))


def test_a_watcher_behind_gets_the_queued_deltas_merged_and_a_gate_applies_them(tmp_path, registry_db):
    """Eighty deltas handed out while the watchers could not run: one message of eighty versions."""
    from tests.rpc_helpers import Gate

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=3) for tid in TICKETS])
        service = registry.service
        import grpc

        gate = Gate(tmp_path, "gate-w", registry.port, None).start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                stub = pb_grpc.RegistryServiceStub(channel)
                watch = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=service.store.version),
                                               metadata=(("gated-gate-id", "raw"),))
                await until(lambda: len(service.watching_gates()) == 2 and gate.cache.version == service.store.version,
                            20, "both watching")
                start = service.store.version
                # On the loop, no await: every delta is queued before any watcher runs.
                for n, tid in enumerate(TICKETS * 2):  # every ticket twice
                    _results, published = service._store_group([EventBatch(f"door-{n}", 1, [passage(f"door-{n}", 1, tid)])])
                    service._hand_out(published)
                end = service.store.version
                assert end - start == 80
                update = await watch.read()
                assert (update.delta.base_version, update.delta.version, len(update.delta.ops)) == (start, end, 80)
                await until(lambda: gate.cache.version == end, 20, "the gate at the merged delta's version")
                assert all(gate.cache.get(tid).entries_used == 2 for tid in TICKETS)
                watch.cancel()
        finally:
            await gate.stop()
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))


def _state(store: RegistryStore) -> tuple:
    conn = store.conn
    return (
        conn.execute("SELECT gate_id, epoch, seq, event_id, kind, ticket_id, payload FROM events ORDER BY gate_id, epoch, seq").fetchall(),
        conn.execute("SELECT ticket_id, entries_used, inside, benefits FROM tickets ORDER BY ticket_id").fetchall(),
        conn.execute("SELECT gate_id, epoch, acked_seq FROM gates ORDER BY gate_id, epoch").fetchall(),
        sorted((c.kind, c.ticket_id) for c in store.conflicts()),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_group_stores_exactly_what_its_batches_stored_one_by_one_would(tmp_path, registry_db, seed):
    """The set-wise path (the common case) and the batch-by-batch one (resends, conflicts, a gate
    with two batches, a new epoch closing an old one) leave the same rows, usage and conflicts."""
    rng = random.Random(seed)
    other = tmp_path / "one-by-one.db"
    tickets = TICKETS[:40]
    stores = [RegistryStore(registry_db), RegistryStore(other)]
    try:
        for store in stores:
            put(store, unlimited_from=4)  # over-entries on four tickets only: most groups go set-wise
        seqs: dict[str, int] = {}
        epochs: dict[str, int] = {}
        sent: list[EventBatch] = []
        for round_ in range(30):
            group = []
            for gate in rng.sample([f"g{n}" for n in range(12)], rng.randint(1, 8)):
                if gate not in epochs or rng.random() < 0.05:
                    epochs[gate] = rng.getrandbits(64) or 1  # a boot: a new random 64-bit epoch, as gates take them
                    seqs[gate] = 0
                epoch = epochs[gate]
                if sent and rng.random() < 0.1:
                    group.append(rng.choice(sent))  # a resend after a lost ack
                    continue
                events = []
                for _ in range(rng.randint(1, 4)):
                    seqs[gate] = seqs.get(gate, 0) + 1
                    tid = rng.choice(tickets)
                    events.append(decision(gate, seqs[gate], tid) if rng.random() < 0.4 else passage(gate, seqs[gate], tid))
                    events[-1] = dataclasses.replace(events[-1], event_id=f"{gate}:{epoch}:{seqs[gate]}")
                group.append(EventBatch(gate, epoch, events))
            sent += group
            grouped, _delta = stores[0].store_event_batches(group, float(round_))
            for batch, result in zip(group, grouped):
                try:
                    alone = stores[1].store_events(batch.gate_id, batch.events, float(round_), epoch=batch.epoch)
                except EventConflict as conflict:
                    alone = conflict
                assert type(alone) is type(result)
                if not isinstance(alone, EventConflict):
                    assert (alone.acked_seq, alone.new_events) == (result.acked_seq, result.new_events)
        assert _state(stores[0]) == _state(stores[1])
    finally:
        for store in stores:
            store.close()


def test_the_mirror_applies_a_batch_on_its_one_check_exactly_as_checking_it_again(tmp_path, registry_db):
    """A group of one batch is applied to the mirror on the check made before its commit (not
    checked again); a group of several is checked again. Either way the mirror ends where a
    cache applying every published delta the checking way does, and the deltas are the usage."""
    from gated.rpc.convert import delta_from_proto
    from gated.validation import EntitlementCache

    redemption = {"ticket_id": TICKETS[5], "benefit": "lunch", "zone": "hall-a", "direction": "in"}

    async def day():
        registry = await start_registry(registry_db, None, tickets=[
            TicketRecord(tid, "guest", zones=("hall-a",), max_entries=1, benefits=(("lunch", 1),)) for tid in TICKETS])
        service = registry.service
        reference = EntitlementCache()
        reference.load_snapshot(service.cache.to_snapshot())
        on_check = []
        apply_checked = service.cache.apply_checked
        service.cache.apply_checked = lambda delta, checked: (on_check.append(delta.version), apply_checked(delta, checked))
        try:
            one = [passage("a", s, tid) for s, tid in enumerate(TICKETS[:12], 1)]
            one.append(passage("a", 13, TICKETS[0]))  # a second entry: an over_entry, counted all the same
            one.append(passage("a", 14, 7_777_777_777))  # no such ticket: stored, nothing counted
            one.append(IncomingEvent("a:15", 15, 2.0, "redemption", "desk-1", TICKETS[5], "ok", json.dumps(redemption)))
            one.append(IncomingEvent("a:16", 16, 2.0, "redemption", "desk-1", TICKETS[5], "ok", json.dumps(redemption)))
            await service._queue_batch("a", one, 11, 0.0)
            await service._queue_batch("a", one[:4], 11, 0.0)  # a resend: nothing new, no delta
            await asyncio.gather(*(service._queue_batch(f"g{n}", [passage(f"g{n}", 1, tid)], 3, 0.0)
                                   for n, tid in enumerate(TICKETS[12:30])))  # one group of several: checked again
            await service._queue_batch("a", [passage("a", 17, TICKETS[-1]), decision("a", 18, TICKETS[1])], 11, 0.0)
            published = [update for _base, _version, update, _size in service._log]
            for update in published:
                reference.apply(delta_from_proto(update.delta))
            assert len(published) >= 3 and on_check and len(on_check) < len(published)
            assert reference.version == service.cache.version
            assert reference.to_snapshot() == service.cache.to_snapshot()
            assert service.cache.get(TICKETS[0]).entries_used == 2
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))
