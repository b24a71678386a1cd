"""A registry that sends bad updates: the gate refuses them whole and keeps its last good cache."""

from __future__ import annotations

import asyncio
import zlib

import grpc
import pytest

from gated.rpc import convert
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import Delta, SetState, SetUsage, TicketState, encode_snapshot
from tests.rpc_helpers import ALICE, BOB, TICKETS, Gate, until

pytestmark = pytest.mark.timeout(60)

GOOD = encode_snapshot(7, TICKETS)


def delta_update(base, version, *ops) -> pb.WatchEntitlementsResponse:
    return pb.WatchEntitlementsResponse(delta=convert.delta_to_proto(Delta(base, version, ops)))


class ScriptedRegistry(pb_grpc.RegistryServiceServicer):
    """Sends a good snapshot on the first watch, then whatever the test scripted for later watches."""

    def __init__(self, script: list[list[pb.WatchEntitlementsResponse]]) -> None:
        self.script = script
        self.watches = 0

    async def WatchEntitlements(self, request, context):
        self.watches += 1
        if self.watches == 1:
            for update in convert.snapshot_updates(7, GOOD, chunk_bytes=64):
                yield update
        for update in self.script.pop(0) if self.script else ():
            yield update
        await asyncio.Event().wait()  # then silence, as a quiet registry would

    async def WatchKeys(self, request, context):
        await asyncio.Event().wait()
        yield pb.WatchKeysResponse()  # pragma: no cover - never reached

    async def StreamEvents(self, request_iterator, context):
        async for batch in request_iterator:
            if batch.events:
                yield pb.StreamEventsResponse(up_to_seq=batch.events[-1].seq)

    async def GetTime(self, request, context):
        import time

        return pb.GetTimeResponse(unix_nanos=time.time_ns())


def damaged_snapshot() -> bytes:
    data = bytearray(encode_snapshot(9, TICKETS[:1]))
    data[20] ^= 0x40  # one flipped bit, e.g. on the SD card or the wire
    return bytes(data)


def bad_crc_but_good_framing() -> bytes:
    data = encode_snapshot(9, TICKETS[:1])
    return data[:-4] + (zlib.crc32(data[:-4]) ^ 1).to_bytes(4, "little")


BAD_UPDATES = {
    "delta on the wrong version": [delta_update(6, 8, SetState(BOB.ticket_id, TicketState.REVOKED))],
    "delta whose version goes backwards": [pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=7, version=7))],
    "an op from the future (no known field)": [
        pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=7, version=8, ops=[
            convert.op_to_proto(SetState(BOB.ticket_id, TicketState.REVOKED)), pb.DeltaOp()]))],
    "an unknown ticket state": [
        pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=7, version=8, ops=[
            pb.DeltaOp(set_state=pb.SetState(ticket_id=BOB.ticket_id, state=5))]))],
    "a state change that omits the state (UNSPECIFIED)": [
        pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=7, version=8, ops=[
            pb.DeltaOp(set_state=pb.SetState(ticket_id=BOB.ticket_id))]))],
    "a usage change for a ticket the gate does not have": [
        delta_update(7, 8, SetUsage(ALICE.ticket_id, 1, ("hall-a",)), SetUsage(999, 1, ("hall-a",)))],
    "a damaged snapshot": list(convert.snapshot_updates(9, damaged_snapshot())),
    "a snapshot with a wrong checksum": list(convert.snapshot_updates(9, bad_crc_but_good_framing())),
    "snapshot chunks out of order": list(convert.snapshot_updates(9, encode_snapshot(9, TICKETS[:1]), chunk_bytes=32))[::-1],
    "a delta in the middle of a snapshot": [
        *list(convert.snapshot_updates(9, encode_snapshot(9, TICKETS[:1]), chunk_bytes=32))[:2],
        delta_update(7, 8, SetState(BOB.ticket_id, TicketState.REVOKED))],
    "an empty update": [pb.WatchEntitlementsResponse()],
}


@pytest.mark.parametrize("what", list(BAD_UPDATES))
def test_a_bad_update_leaves_the_cache_at_its_last_good_version(tmp_path, what):
    async def day():
        registry = ScriptedRegistry([BAD_UPDATES[what], [delta_update(7, 8, SetState(BOB.ticket_id, TicketState.REVOKED))]])
        server = grpc.aio.server()
        pb_grpc.add_RegistryServiceServicer_to_server(registry, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        gate = Gate(tmp_path, "gate-a", port, None).start()
        try:
            await until(lambda: gate.cache.version == 7, what="good snapshot")
            good = list(gate.cache.records())
            await until(lambda: gate.uplink.status()["refused_updates"] == 1, what="refusal")
            assert gate.cache.version == 7 and list(gate.cache.records()) == good
            # the gate asks again with the version it kept, and takes the next good delta
            await until(lambda: gate.cache.version == 8, what="good delta after the refusal")
            assert gate.cache.get(BOB.ticket_id).state is TicketState.REVOKED
            assert registry.watches == 2
        finally:
            await gate.stop()
            await server.stop(None)

    asyncio.run(asyncio.wait_for(day(), 30))


def test_malformed_key_updates_are_refused_whole():
    with pytest.raises(convert.MalformedUpdate):
        convert.key_change_from_proto(pb.WatchKeysResponse(add=[pb.EventKey(kid=1, key=b"short")]))
    with pytest.raises(convert.MalformedUpdate):
        convert.key_change_from_proto(pb.WatchKeysResponse(add=[pb.EventKey(kid=300, key=bytes(32))]))
    change = convert.key_change_from_proto(pb.WatchKeysResponse(add=[pb.EventKey(kid=4, key=bytes(range(32)))]))
    assert change.add == ((4, bytes(range(32))),) and "000102" not in repr(change)


def test_every_cache_op_survives_the_wire():
    from gated.validation import Reissue, SetBenefit, SetZone, Upsert

    ops = (Upsert(ALICE), SetState(BOB.ticket_id, TicketState.REVOKED), Reissue(BOB.ticket_id, 3),
           SetUsage(ALICE.ticket_id, 2, ("hall-a",)), SetBenefit(ALICE.ticket_id, "lunch_day1", 0), SetZone("hall-a", 500))
    wire = convert.delta_to_proto(Delta(3, 4, ops)).SerializeToString()
    assert convert.delta_from_proto(pb.Delta.FromString(wire)) == Delta(3, 4, ops)


def test_a_ticket_state_left_out_is_refused_not_read_as_active():
    # A peer that omits the state sends the zero value: it must never turn a revoked ticket active.
    revoked = convert.ticket_to_proto(BOB.__class__(**{**{f: getattr(BOB, f) for f in BOB.__slots__}, "state": TicketState.REVOKED}))
    assert revoked.state == pb.TICKET_STATE_REVOKED and pb.TICKET_STATE_UNSPECIFIED == 0
    assert convert.ticket_from_proto(revoked).state is TicketState.REVOKED
    revoked.ClearField("state")
    with pytest.raises(convert.MalformedUpdate, match="state missing"):
        convert.ticket_from_proto(revoked)
    with pytest.raises(convert.MalformedUpdate, match="state missing"):
        convert.delta_from_proto(pb.Delta(base_version=1, version=2, ops=[
            pb.DeltaOp(set_state=pb.SetState(ticket_id=BOB.ticket_id))]))
    assert convert.op_to_proto(SetState(BOB.ticket_id, TicketState.ACTIVE)).set_state.state == pb.TICKET_STATE_ACTIVE


class KeyScriptedRegistry(ScriptedRegistry):
    """The first key watch sends a malformed update, then a retirement; later watches the complete ring."""

    def __init__(self) -> None:
        super().__init__([])
        self.key_watches = 0

    async def WatchKeys(self, request, context):
        self.key_watches += 1
        if self.key_watches == 1:
            yield pb.WatchKeysResponse(complete=True, add=[pb.EventKey(kid=1, key=bytes(32)), pb.EventKey(kid=2, key=bytes(32))])
            yield pb.WatchKeysResponse(add=[pb.EventKey(kid=3, key=b"short")])  # malformed
            yield pb.WatchKeysResponse(add=[pb.EventKey(kid=4, key=bytes(32))])  # must not be read after a refusal
        else:
            yield pb.WatchKeysResponse(complete=True, add=[pb.EventKey(kid=1, key=bytes(32)), pb.EventKey(kid=5, key=bytes(32))])
        await asyncio.Event().wait()


def test_a_malformed_key_update_reopens_the_key_watch_for_the_complete_ring(tmp_path):
    async def day():
        registry = KeyScriptedRegistry()
        server = grpc.aio.server()
        pb_grpc.add_RegistryServiceServicer_to_server(registry, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        gate = Gate(tmp_path, "gate-a", port, None).start()
        try:
            await until(lambda: gate.keyring.kids() == [1, 5], what="the complete ring from a reopened watch")
            assert registry.key_watches == 2 and gate.uplink.status()["refused_updates"] == 1
        finally:
            await gate.stop()
            await server.stop(None)

    asyncio.run(asyncio.wait_for(day(), 30))
