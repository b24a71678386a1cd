"""A gate's stream at the registry: each batch is queued for storing behind the one being stored as soon
as it is read and checked, and answered once stored, in order. A batch refused as a conflict ends the
call, and no batch of that stream queued after it is stored (the gate moves those records to a new
epoch and sends them again: stored here as well, they would be there twice)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gated.registry.store import RegistryStore
from gated.rpc.uplink import CONFLICT_SEQ_TRAILER
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from tests.rpc_helpers import start_registry, until

pytestmark = pytest.mark.timeout(60)

REG_NO = 5205320758  # a 10-digit registration number
EPOCH = 2**64 - 77  # above 2^63: kept as a negative i64 by SQLite


def decision(seq: int, ticket_id: int, reason: str = "ok") -> pb.Event:
    return pb.Event(event_id=f"door:{seq}", seq=seq, at=1_764_230_400.0 + seq, kind=pb.EVENT_KIND_DECISION,
                    lane="in-1", ticket_id=ticket_id, reason=reason, extra_json='{"code":"static"}')


def batch(after: int, *events: pb.Event) -> pb.StreamEventsRequest:
    return pb.StreamEventsRequest(after_seq=after, journal_epoch=EPOCH, events=list(events))


async def opened(channel: grpc.aio.Channel):
    return pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=(("gated-gate-id", "door"),))


def test_batches_queued_behind_the_one_being_stored_are_each_stored_once_and_answered_in_order(registry_db):
    async def day():
        registry = await start_registry(registry_db, None)
        service = registry.service
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                call = await opened(channel)
                await call.write(batch(0, decision(1, REG_NO)))
                assert (await call.read()).up_to_seq == 1  # the stream's first batch is checked against the store
                await service._lock.acquire()  # no group commit starts: what follows waits, queued
                try:
                    for k in range(6):  # a gate's window: ids in blocks, random 63-bit, absent
                        await call.write(batch(1 + 3 * k, *(decision(2 + 3 * k + i, (1_000_000 * (k + 1) + i, 2**63 - 5 - k, 0)[i])
                                                            for i in range(3))))
                    await call.write(batch(19))  # no events: answered in its place
                    await until(lambda: len(service._pending) == 2, 10, "the stream's batches queued")
                finally:
                    service._lock.release()
                acks = [(await call.read()).up_to_seq for _ in range(7)]
                await call.done_writing()
                assert await call.read() is grpc.aio.EOF
            assert acks == [4, 7, 10, 13, 16, 19, 19]
        finally:
            await registry.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.event_ids("door", EPOCH) == [f"door:{seq}" for seq in range(1, 20)]

    asyncio.run(asyncio.wait_for(day(), 45))


def test_a_batch_refused_as_a_conflict_ends_its_stream_and_none_queued_behind_it_is_stored(registry_db):
    """Two streams of one gate and epoch (a gate that reconnected while its old call lived on): the
    first stores seq 2 with its content, the second's seq 2 differs (a conflict) and its seq 3 waits
    queued behind it. The second call ends ALREADY_EXISTS naming seq 2, and seq 3 is never stored."""
    async def day():
        registry = await start_registry(registry_db, None)
        service = registry.service
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                first, second = await opened(channel), await opened(channel)
                for call in (first, second):  # each stream's first batch: seq 1, the same content (a resend)
                    await call.write(batch(0, decision(1, REG_NO)))
                    assert (await call.read()).up_to_seq == 1
                await service._lock.acquire()
                try:
                    await first.write(batch(1, decision(2, REG_NO + 7)))
                    await until(lambda: len(service._pending) == 1, 10, "the first stream's batch queued")
                    await second.write(batch(1, decision(2, REG_NO + 14, reason="unknown_ticket")))
                    await second.write(batch(2, decision(3, REG_NO + 21)))
                    await until(lambda: len(service._pending) == 3, 10, "the second stream's batches queued")
                finally:
                    service._lock.release()
                assert (await first.read()).up_to_seq == 2
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await second.read()
                assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
                assert dict(refused.value.trailing_metadata())[CONFLICT_SEQ_TRAILER] == "2"
                await until(lambda: not service._pending, 10, "nothing left queued")
                await first.done_writing()
        finally:
            await registry.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.event_ids("door", EPOCH) == ["door:1", "door:2"]  # never seq 3
            assert store.event_count("door") == 2

    asyncio.run(asyncio.wait_for(day(), 45))
