"""Heartbeats over real gRPC: a watch quiet for the interval its gate asked hears `current_version`,
never more than once a second and at most a tick later than asked; a watch that gets deltas more
often than that hears none; a gate that did not ask hears none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import grpc
import pytest

from gated.registry.server import HEARTBEAT_TICK_S
from gated.registry.store import EventBatch, IncomingEvent
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import TicketRecord
from tests.rpc_helpers import start_registry

pytestmark = pytest.mark.timeout(60)

TICKETS = [5_205_320_758 + 7 * i for i in range(20)]  # 10-digit registration numbers


@contextlib.asynccontextmanager
async def _venue(registry_db):
    """A registry holding TICKETS (unlimited entries), and a stub on a channel to it."""
    registry = await start_registry(registry_db, None, tickets=[
        TicketRecord(tid, "guest", zones=("hall-a",), max_entries=0) for tid in TICKETS])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            yield registry.service, pb_grpc.RegistryServiceStub(channel)
    finally:
        await registry.stop()


def passage(gate: str, seq: int, ticket_id: int) -> IncomingEvent:
    payload = {"ticket_id": ticket_id, "zone": "hall-a", "direction": "in"}
    return IncomingEvent(f"{gate}:{seq}", seq, 1.0, "passage", "in-1", ticket_id, "ok", json.dumps(payload), payload)


async def _watch(stub, gate: str, every: float, version: int, until: float, out: list[tuple[str, int, float]]) -> None:
    call = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=version, current_every_s=every),
                                  metadata=(("gated-gate-id", gate),))
    try:
        while time.monotonic() < until:
            try:
                msg = await asyncio.wait_for(call.read(), max(0.01, until - time.monotonic()))
            except TimeoutError:
                break
            which = msg.WhichOneof("update")
            value = msg.current_version if which == "current_version" else msg.delta.version if which == "delta" else 0
            out.append((which, value, time.monotonic()))
    finally:
        call.cancel()


def test_quiet_watches_hear_heartbeats_as_asked_busy_ones_and_ones_that_did_not_ask_none(registry_db):
    async def day():
        async with _venue(registry_db) as (service, stub):
            version = service.store.version
            started = time.monotonic()
            until = started + 4.6
            quiet, silent = [], []
            watching = [asyncio.create_task(_watch(stub, "quiet", 1.0, version, until, quiet)),
                        asyncio.create_task(_watch(stub, "silent", 0.0, version, until, silent))]
            await asyncio.gather(*watching)
            # The quiet watch: current at once, then one heartbeat each 1 s of quiet (up to a tick late).
            assert quiet[0][:2] == ("current_version", version)
            beats = [at for which, value, at in quiet if which == "current_version" and value == version]
            assert len(beats) == len(quiet) >= 4, quiet
            gaps = [b - a for a, b in zip(beats, beats[1:])]
            # (timed where they are read: delivery jitter may bring two a little closer than sent)
            assert all(0.9 <= gap <= 1.0 + HEARTBEAT_TICK_S + 0.3 for gap in gaps), gaps
            assert silent == []  # it did not ask

            # Deltas every 0.3 s: the watch is never quiet for its second, so it hears no heartbeat.
            busy: list = []
            version = service.store.version
            until = time.monotonic() + 3.0
            watch = asyncio.create_task(_watch(stub, "busy", 1.0, version, until, busy))
            await asyncio.sleep(0.1)
            seq = 0
            while time.monotonic() < until - 0.3:
                seq += 1
                await service._queue_batch("door", [passage("door", seq, TICKETS[seq % len(TICKETS)])], 7, 0.0)
                await asyncio.sleep(0.3)
            await watch
            kinds = [which for which, _value, _at in busy]
            assert kinds[0] == "current_version" and kinds.count("delta") >= seq - 1, busy
            assert "current_version" not in kinds[1:], busy

    asyncio.run(asyncio.wait_for(day(), 50))


def test_a_heartbeat_due_with_an_update_queued_behind_it_is_not_sent(registry_db):
    """Quiet long enough, but a delta was handed out before the watch took its heartbeat: the gate
    does not hold everything yet, so it gets the delta and no `current_version`."""

    async def day():
        async with _venue(registry_db) as (service, stub):
            version = service.store.version
            call = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=version, current_every_s=1.0),
                                          metadata=(("gated-gate-id", "probe"),))
            first = await call.read()
            assert first.WhichOneof("update") == "current_version"
            watcher = next(w for w in service._watchers if w.gate_id == "probe")
            # On the loop, no await between: the heartbeat is queued (the watch counted as quiet
            # for 10 s), then a delta behind it, before the watch's coroutine runs.
            watcher.quiet_since -= 10
            service.offer_heartbeats(time.monotonic())
            assert watcher.beat_queued
            _results, published = service._store_group([EventBatch("door", 7, [passage("door", 1, TICKETS[3])])])
            service._hand_out(published)
            update = await asyncio.wait_for(call.read(), 5)
            assert update.WhichOneof("update") == "delta" and update.delta.version == version + 1
            assert not watcher.beat_queued
            # Quiet again: heartbeats resume, for the version it now holds.
            beat = await asyncio.wait_for(call.read(), 1.0 + HEARTBEAT_TICK_S + 2)
            assert (beat.WhichOneof("update"), beat.current_version) == ("current_version", version + 1)
            call.cancel()

    asyncio.run(asyncio.wait_for(day(), 30))
