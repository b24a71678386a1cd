"""A day at the venue over real gRPC on loopback, mTLS, both ends real."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gated.registry.store import RegistryStore
from gated.rpc.certs import make_venue_certs
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import Reason
from tests.rpc_helpers import (
    ALICE,
    BOB,
    CAROL,
    HALL_IN,
    HALL_OUT,
    KEY,
    KID,
    Gate,
    Venue,
    badge_code,
    phone_code,
    start_registry,
    until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_venue_certs(tmp_path_factory.mktemp("certs"), ["gate-a", "gate-b"])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def venue(tmp_path, certs, n_gates=1, **gate_kwargs) -> Venue:
    registry = await start_registry(tmp_path / "registry.db", certs)
    gates = [Gate(tmp_path, gid, registry.port, certs, **gate_kwargs).start() for gid in ("gate-a", "gate-b")[:n_gates]]
    for gate in gates:
        await until(lambda g=gate: g.uplink.status()["connected"] and len(g.cache) == 3 and KID in g.keyring, what="sync")
    return Venue(registry, gates)


def test_a_gate_offline_for_a_while_replays_its_backlog_and_the_registry_holds_each_event_once(tmp_path, certs):
    async def day():
        registry = await start_registry(tmp_path / "registry.db", certs)
        port = registry.port
        await registry.stop()  # the network is down at opening time
        gate = Gate(tmp_path, "gate-a", port, certs, batch_size=250).start()
        for i in range(3000):
            await gate.journal.append_async("decision", at=time.time(), lane="in-1", ticket_id=1001, reason="ok",
                                            payload={"i": i})
            if i % 500 == 0:
                gate.uplink.wake()
        await asyncio.sleep(0.3)
        assert gate.journal.backlog() == 3000 and not gate.uplink.status()["connected"]

        registry = await start_registry(tmp_path / "registry.db", certs, port=port)
        # the registry goes away again mid-replay, and comes back: acks may be lost, events resent
        await until(lambda: registry.store.event_count() > 0, what="first events")
        await registry.stop()
        registry = await start_registry(tmp_path / "registry.db", certs, port=port)
        await until(lambda: gate.journal.backlog() == 0, timeout=20, what="backlog drained")

        ids = registry.store.event_ids("gate-a")
        assert ids == [f"gate-a:{seq}" for seq in range(1, 3001)]  # every event, once, in order
        assert gate.uplink.status()["last_acked_seq"] == 3000
        await gate.stop()
        await registry.stop()

    run(day())


def test_resending_a_batch_stores_nothing_twice(tmp_path, certs):
    async def day():
        v = await venue(tmp_path, certs)
        gate = v.gates[0]
        await gate.pass_through(phone_code(ALICE.ticket_id))
        await until(lambda: gate.journal.backlog() == 0, what="acked")
        records = gate.journal.tail(10)
        before = v.registry.store.event_count()
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.gates["gate-a"].key.read_bytes(),
                                             certs.gates["gate-a"].cert.read_bytes())
        from gated.rpc.convert import event_batch

        async with grpc.aio.secure_channel(f"127.0.0.1:{v.registry.port}", creds) as channel:
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents()
            await call.write(event_batch(0, records, gate.journal.epoch))
            ack = await call.read()
            await call.done_writing()
        assert ack.up_to_seq == records[-1].seq
        assert v.registry.store.event_count() == before
        assert v.registry.store.ticket(ALICE.ticket_id).entries_used == 1  # the passage counted once
        await v.close()

    run(day())


def test_one_gate_admits_and_the_other_says_already_inside_within_a_second(tmp_path, certs):
    async def day():
        v = await venue(tmp_path, certs, n_gates=2)
        a, b = v.gates
        assert (await a.pass_through(phone_code(ALICE.ticket_id))).reason is Reason.OK
        took = await until(lambda: b.cache.get(ALICE.ticket_id).inside == ("hall-a",), timeout=1.0, what="delta at B")
        assert b.decide(phone_code(ALICE.ticket_id)).reason is Reason.ALREADY_INSIDE
        assert took < 1.0
        # Alice leaves through gate A; gate B lets her in again once it hears of it
        assert (await a.pass_through(phone_code(ALICE.ticket_id), HALL_OUT)).reason is Reason.OK
        await until(lambda: b.cache.get(ALICE.ticket_id).inside == (), timeout=1.0, what="exit at B")
        assert b.decide(badge_code(ALICE.ticket_id), HALL_IN).reason is Reason.OK
        assert b.cache.get(ALICE.ticket_id).entries_used == 1
        await v.close()

    run(day())


def test_revocation_reissue_and_key_retirement_at_the_registry_reach_the_gate(tmp_path, certs):
    async def day():
        v = await venue(tmp_path, certs)
        gate = v.gates[0]
        assert gate.decide(phone_code(BOB.ticket_id)).reason is Reason.OK
        # the registration desk works on the registry's database, as `gated registry ...` does
        with RegistryStore(tmp_path / "registry.db", create=False) as desk:
            desk.revoke(BOB.ticket_id)
            desk.reissue(CAROL.ticket_id)
        await until(lambda: gate.cache.get(CAROL.ticket_id).badge_serial == 1, timeout=2, what="reissue")
        assert gate.decide(phone_code(BOB.ticket_id), HALL_OUT).reason is Reason.OK  # leaving is never refused
        assert gate.decide(badge_code(BOB.ticket_id), HALL_IN).reason is Reason.REVOKED
        assert gate.decide(badge_code(CAROL.ticket_id, serial=0)).reason is Reason.SUPERSEDED_BADGE
        assert gate.decide(badge_code(CAROL.ticket_id, serial=1), HALL_OUT).reason is Reason.OK

        other_key = bytes(range(100, 132))
        with RegistryStore(tmp_path / "registry.db", create=False) as desk:
            desk.add_key(2, other_key)
        await until(lambda: 2 in gate.keyring, timeout=2, what="new key")
        assert gate.decide(badge_code(ALICE.ticket_id, kid=2, key=other_key)).reason is Reason.OK
        with RegistryStore(tmp_path / "registry.db", create=False) as desk:
            desk.retire_key(KID)
        await until(lambda: KID not in gate.keyring, timeout=2, what="retired key")
        assert gate.decide(badge_code(ALICE.ticket_id), HALL_OUT).reason is Reason.UNKNOWN_KEY
        await v.close()

    run(day())


def test_the_clock_is_trusted_once_measured_against_the_registry(tmp_path, certs):
    async def day():
        registry = await start_registry(tmp_path / "registry.db", certs)
        gate = Gate(tmp_path, "gate-a", registry.port, certs)
        gate.keyring.add(KID, KEY)  # the key ring persisted from yesterday
        assert not gate.clock.trusted()  # no RTC, no measurement: dynamic codes say clock_unsynced
        assert gate.validator.decide(phone_code(ALICE.ticket_id), HALL_IN, time.time(),
                                     clock_trusted=gate.clock.trusted()).reason is Reason.CLOCK_UNSYNCED
        gate.start()
        await until(lambda: gate.clock.trusted(), what="clock sync")
        status = gate.uplink.status()
        assert abs(status["clock"]["offset_s"]) < 0.05 and status["clock"]["rtt_s"] < 0.5
        await Venue(registry, [gate]).close()

    run(day())


def test_a_client_without_a_certificate_is_refused(tmp_path, certs):
    async def day():
        registry = await start_registry(tmp_path / "registry.db", certs)
        target = f"127.0.0.1:{registry.port}"
        no_cert = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        async with grpc.aio.secure_channel(target, no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.RegistryServiceStub(channel).GetTime(pb.GetTimeRequest(), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.RegistryServiceStub(channel).GetTime(pb.GetTimeRequest(), timeout=5,
                                                           metadata=(("gated-gate-id", "gate-a"),))
        await registry.stop()

    run(day())


def test_a_gate_cannot_send_another_gates_events(tmp_path, certs):
    async def day():
        registry = await start_registry(tmp_path / "registry.db", certs)
        b = certs.gates["gate-b"]
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), b.key.read_bytes(), b.cert.read_bytes())
        forged = pb.StreamEventsRequest(after_seq=0, events=[pb.Event(event_id="gate-a:1", seq=1, at=time.time(), kind=pb.EVENT_KIND_DECISION)])
        async with grpc.aio.secure_channel(f"127.0.0.1:{registry.port}", creds) as channel:
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=(("gated-gate-id", "gate-a"),))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                # Refused on the call's metadata, before any event is read: the refusal may end the
                # call while the forged batch is still being written, or answer it.
                await call.write(forged)
                await call.read()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert registry.store.event_count() == 0
        await registry.stop()

    run(day())
