"""A gate back from an outage replays its backlog; every gate gets the usage back.

Real parts: the reference registry in its own process (mTLS on loopback), two gates' real
uplinks and journals. Gate B's backlog of 1,200 passages (tickets in the four id shapes a
show brings) is stored as one batch, and the registry sends its usage as one delta of 1,200
`SetUsage` ops: over `IN_PLACE_MAX_OPS`. Gate A, deciding meanwhile, applies it in place a
step at a time (`EntitlementCache.apply_in_steps`), never on a copy of its table: the table
it decides on is the same object before and after, and holds every count.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from gated.bench.replay import venue_tickets
from gated.bench.rpc import _registry_process
from gated.registry.store import RegistryStore
from gated.rpc.certs import make_venue_certs
from gated.validation import Policy, Reason, Validator
from gated.validation.cache import IN_PLACE_MAX_OPS
from tests.rpc_helpers import KEY, KID, Gate, phone_code, until

pytestmark = pytest.mark.timeout(120)

PER_SHAPE = 600


def test_a_backlogs_usage_reaches_a_deciding_gate_in_place(tmp_path):
    tickets = venue_tickets(PER_SHAPE)  # consecutive, 10-digit registration numbers, blocks, random 63-bit
    ids = [t.ticket_id for t in tickets]
    certs = make_venue_certs(tmp_path / "certs", ["gate-a", "gate-b"])
    with RegistryStore(tmp_path / "registry.db") as store:
        store.put_tickets(((t, "") for t in tickets), record_changes=False)
        store.add_key(KID, KEY)
    rng = random.Random(5)
    replayed = rng.sample(ids, 1200)  # every shape, absent from gate A's own admissions
    own = [t for t in ids if t not in set(replayed)][:40]
    assert len(replayed) > IN_PLACE_MAX_OPS

    async def day(port: int) -> dict:
        gate_a = Gate(tmp_path, "gate-a", port, certs)
        gate_a.validator = Validator(gate_a.keyring, gate_a.cache, Policy(rate_burst=10**6, rate_per_s=1e6))
        gate_a.start()
        await until(lambda: len(gate_a.cache) == len(ids) and KID in gate_a.keyring, timeout=30, what="gate A's snapshot")
        table, version = gate_a.cache.table, gate_a.cache.version
        # Gate B's backlog, journaled while it was cut off: one batch when its uplink starts.
        gate_b = Gate(tmp_path, "gate-b", port, certs)
        at = time.time() - 3600
        for n, tid in enumerate(replayed):
            gate_b.journal.append("passage", at=at + n, lane="in-1", ticket_id=tid, reason="ok",
                                  payload={"zone": "hall-a", "direction": "in", "ticket_id": tid})
        decisions = []

        async def lane() -> None:  # gate A's turnstile decides on through the replay
            for tid in own:
                decisions.append((await gate_a.pass_through(phone_code(tid))).reason)
                await asyncio.sleep(0.005)

        turnstile = asyncio.create_task(lane())
        gate_b.start()
        await until(lambda: all(gate_a.cache.get(t).entries_used == 1 for t in replayed), timeout=60,
                    what="the backlog's usage at gate A")
        await turnstile
        result = {
            "same_table": gate_a.cache.table is table, "moved": gate_a.cache.version > version,
            "inside": [gate_a.cache.get(t).inside for t in replayed[::97]],
            "decisions": decisions, "occupancy": gate_a.cache.occupancy("hall-a"),
            "again": gate_a.decide(phone_code(replayed[0])).reason,
        }
        await gate_b.stop()
        await gate_a.stop()
        return result

    with _registry_process(tmp_path / "registry.db", certs) as port:
        r = asyncio.run(asyncio.wait_for(day(port), 100))

    assert r["moved"]
    assert r["same_table"]  # applied in place: a staged delta swaps a copy in
    assert all(inside == ("hall-a",) for inside in r["inside"])
    assert r["decisions"] == [Reason.OK] * len(own)
    assert r["occupancy"] == len(replayed) + len(own)
    assert r["again"] is not Reason.OK  # inside already: anti-passback, on the count replayed from gate B
