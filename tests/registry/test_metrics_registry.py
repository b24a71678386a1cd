"""The registry's /metrics on its pages: a scraper's token, and figures checked against what was sent.

Real gRPC over loopback: a gate's uplink watching, and a raw event stream
that sends a batch, sends it again (each (gate, epoch, seq) stored once: the
resend is counted as duplicates), then sends other content under a stored
seq (refused, counted as an event conflict); Redeem granted once, its retry
replayed (not counted again), the next one refused.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gated.registry.accounts import Accounts
from gated.registry.http import RegistryWeb
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.web import WebSettings
from tests.rpc_helpers import ALICE, BOB, Gate, phone_code, start_registry, until

pytestmark = pytest.mark.timeout(60)

EPOCH = 0x5EED_0000_0000_0014


def batch(gate_id: str, seqs, after: int, *, reason: str = "ok") -> pb.StreamEventsRequest:
    return pb.StreamEventsRequest(after_seq=after, journal_epoch=EPOCH, events=[
        pb.Event(event_id=f"{gate_id}:{seq}", seq=seq, at=1_760_000_000.0 + seq, kind=pb.EVENT_KIND_DECISION, lane="in-1",
                 ticket_id=BOB.ticket_id, reason=reason) for seq in seqs])


async def send(stub, gate_id: str, batch_: pb.StreamEventsRequest) -> list[int]:
    call = stub.StreamEvents(metadata=(("gated-gate-id", gate_id),))
    await call.write(batch_)
    ack = await call.read()
    await call.done_writing()
    return [ack.up_to_seq]


def parse(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_registry_pages_serve_metrics_to_a_token_and_count_what_gates_sent(tmp_path):
    async def day():
        registry = await start_registry(tmp_path / "registry.db", None)
        token = Accounts(registry.store).add_token("prometheus", "viewer", time.time())
        web = RegistryWeb(registry, WebSettings("127.0.0.1", 0, title="registry"))
        await web.start()
        watching = Gate(tmp_path, "hall-2", registry.port, None).start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
        stub = pb_grpc.RegistryServiceStub(channel)
        try:
            async with aiohttp.ClientSession(base_url=web.url) as http:
                async with http.get("/metrics") as anonymous:
                    assert anonymous.status == 401 and "sign in" in (await anonymous.json())["error"]  # a program gets no page

                async def scrape() -> dict:
                    async with http.get("/metrics", headers={"Authorization": f"Bearer {token}"}) as response:
                        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
                        return parse(await response.text())

                await until(lambda: len(watching.cache) == 3, 10, "the watching gate in sync")
                assert (await scrape())[("gated_registry_connected_gates", ())] == 1

                assert await send(stub, "raw-1", batch("raw-1", range(1, 6), 0)) == [5]
                assert await send(stub, "raw-1", batch("raw-1", range(1, 6), 0)) == [5]  # a resend: stored once
                with pytest.raises(grpc.aio.AioRpcError) as refused:  # other content under seq 3
                    await send(stub, "raw-1", batch("raw-1", range(3, 4), 2, reason="revoked"))
                assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
                await watching.pass_through(phone_code(BOB.ticket_id))  # a decision and a passage: a usage delta
                await until(lambda: watching.uplink.journal_acked_seq >= 2, 10, "the gate's records acknowledged")

                ask = pb.RedeemRequest(redemption_id="ab" * 16, ticket_id=ALICE.ticket_id, benefit="lunch_day1", lane="desk-1", at=time.time())
                meta = (("gated-gate-id", "desk-unit"),)
                assert (await stub.Redeem(ask, metadata=meta)).outcome == pb.REDEEM_OUTCOME_OK
                assert (await stub.Redeem(ask, metadata=meta)).replayed  # a retry: the first answer, nothing taken
                again = pb.RedeemRequest(redemption_id="cd" * 16, ticket_id=ALICE.ticket_id, benefit="lunch_day1", lane="desk-1", at=time.time())
                assert (await stub.Redeem(again, metadata=meta)).outcome == pb.REDEEM_OUTCOME_BENEFIT_EXHAUSTED

                m = await scrape()
                assert m[("gated_registry_events_stored_total", ())] == 5 + 2 == registry.store.event_count()
                assert m[("gated_registry_duplicates_dropped_total", ())] == 5
                assert m[("gated_registry_event_conflicts_total", ())] == 1
                assert m[("gated_registry_redeem_total", (("outcome", "ok"),))] == 1
                assert m[("gated_registry_redeem_total", (("outcome", "benefit_exhausted"),))] == 1
                assert m[("gated_registry_fanout_seconds_count", ())] >= 1  # the passage's delta and the grant's
                assert m[("gated_registry_entitlement_version", ())] == registry.service.cache.version
                assert m[("gated_registry_tickets", ())] == 3
                assert m[("gated_registry_connected_gates", ())] == 1
                kinds = {dict(k[1])["kind"] for k in m if k[0] == "gated_registry_conflicts_total"}
                assert kinds == set(registry.store.conflict_counts())  # every kind, 0 included
        finally:
            await channel.close()
            await watching.stop()
            await web.stop()
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 50))
