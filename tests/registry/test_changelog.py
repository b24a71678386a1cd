"""Two registry instances in one process on one PostgreSQL: one version sequence, followed by both.

Each instance has its own connection, mirror, watchers and delta log; only
the database is shared, as between two hosts. Gates are real uplinks over
loopback gRPC.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from gated.config import UplinkSection
from gated.registry.server import RegistryServer
from gated.registry.store import RegistryStore
from gated.validation import Policy, TicketRecord, Validator
from tests.conftest import POSTGRES_ENV, fresh_postgres_db
from tests.rpc_helpers import KEY, KID, Gate, badge_code, until

pytestmark = pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                                reason=f"several registry instances need PostgreSQL: set {POSTGRES_ENV} (.ci/run does)")

# ids in blocks, as a venue that numbers each partner's list from 1_000_000*k
TICKETS = [TicketRecord(ticket_id=1_000_000 * k + n, category="guest", zones=("hall-a",), benefits=(("lunch", 5),))
           for k in (1, 2, 7) for n in range(1, 41)]


@pytest.fixture
def postgres_url():
    yield from fresh_postgres_db(os.environ[POSTGRES_ENV])


class Chain:
    """How many snapshots a gate's uplink loaded (every other update was a delta)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.snapshots = 0
        gate.uplink.on_cache_changed = self.changed

    def changed(self, snapshot: bool) -> None:
        if snapshot:
            self.snapshots += 1


def _gate(tmp_path, gate_id: str, ports: list[int]) -> Gate:
    gate = Gate(tmp_path, gate_id, ports[0], None, reconnect_base_s=0.05)
    gate.validator = Validator(gate.keyring, gate.cache, Policy(rate_burst=1000, rate_per_s=1000.0))  # a busy hall
    targets = tuple(f"127.0.0.1:{port}" for port in ports)
    gate.uplink.config = UplinkSection(targets[0], True, None, None, None, 1.0, targets=targets)
    return gate


async def _two_instances(url: str) -> tuple[RegistryServer, RegistryServer]:
    with RegistryStore(url) as store:
        store.put_tickets([(t, "") for t in TICKETS], record_changes=False)
        store.add_key(KID, KEY)
    a = RegistryServer(url, "127.0.0.1:0")
    b = RegistryServer(url, "127.0.0.1:0")
    await a.start()
    await b.start()
    return a, b


def _same_mirror(a: RegistryServer, b: RegistryServer) -> None:
    assert a.service.cache.version == b.service.cache.version
    for t in TICKETS:
        assert a.service.cache.get(t.ticket_id) == b.service.cache.get(t.ticket_id)


def test_writes_at_both_instances_make_one_sequence_that_both_follow(tmp_path, postgres_url):
    async def day():
        a, b = await _two_instances(postgres_url)
        g1, g2 = _gate(tmp_path, "gate-1", [a.port, b.port]), _gate(tmp_path, "gate-2", [b.port, a.port])
        chains = [Chain(g1), Chain(g2)]
        try:
            for gate in (g1, g2):
                gate.start()
                await until(lambda gate=gate: len(gate.cache) == len(TICKETS) and KID in gate.keyring, timeout=10, what="snapshot")
            snapshots = [c.snapshots for c in chains]

            async def crowd(gate: Gate, ids) -> None:
                for tid in ids:
                    assert (await gate.pass_through(badge_code(tid))).admitted

            revoked = TICKETS[-1].ticket_id
            with RegistryStore(postgres_url, create=False) as desk:
                # Both instances write at once, and a command's change lands in between.
                await asyncio.gather(crowd(g1, [t.ticket_id for t in TICKETS[:50]]),
                                     crowd(g2, [t.ticket_id for t in TICKETS[50:100]]),
                                     asyncio.to_thread(desk.revoke, revoked))
                for gate in (g1, g2):
                    await until(lambda gate=gate: gate.journal.backlog() == 0, timeout=10, what="backlog drained")
                version = desk.version
                await until(lambda: g1.cache.version == g2.cache.version == version, timeout=5, what="gates at the version")
                _same_mirror(a, b)
                for t in TICKETS[:100]:
                    assert desk.ticket(t.ticket_id).entries_used == 1
                    assert g1.cache.get(t.ticket_id).entries_used == 1 == g2.cache.get(t.ticket_id).entries_used
                assert g1.cache.get(revoked).state == 1 == g2.cache.get(revoked).state
                rows = desk.conn.execute("SELECT base_version, version FROM change_log WHERE delta IS NOT NULL "
                                         "ORDER BY id").fetchall()
                assert [base for base, _ in rows[1:]] == [version for _, version in rows[:-1]]  # one chain
                assert rows[-1][1] == version
            assert a.service.follower.followed > 0 and b.service.follower.followed > 0
            assert [c.snapshots for c in chains] == snapshots  # deltas only: nobody needed a snapshot

            # Instance A goes; gate 1 moves to B with its version and gets deltas, not a snapshot.
            await a.stop()
            await until(lambda: g1.uplink.connected and g1.uplink.status()["target"] == f"127.0.0.1:{b.port}",
                        timeout=10, what="gate 1 on instance B")
            await crowd(g2, [TICKETS[100].ticket_id])
            await until(lambda: g1.cache.get(TICKETS[100].ticket_id).entries_used == 1, what="B's usage at gate 1")
            assert [c.snapshots for c in chains] == snapshots
        finally:
            for gate in (g1, g2):
                await gate.stop()
            for server in (a, b):
                if server._server is not None:
                    await server.stop()

    asyncio.run(day())


def test_an_instance_that_fell_behind_the_pruned_log_reloads_and_sends_snapshots(tmp_path, postgres_url):
    async def day():
        a, b = await _two_instances(postgres_url)
        g1, g2 = _gate(tmp_path, "gate-1", [a.port]), _gate(tmp_path, "gate-2", [b.port])
        chain = Chain(g2)
        try:
            for gate in (g1, g2):
                gate.start()
                await until(lambda gate=gate: len(gate.cache) == len(TICKETS) and KID in gate.keyring, timeout=10, what="snapshot")
            before = chain.snapshots
            await b.service.follower.stop()  # B stops following (a stalled host) ...
            for t in TICKETS[:20]:
                assert (await g1.pass_through(badge_code(t.ticket_id))).admitted
            await until(lambda: g1.journal.backlog() == 0, timeout=10, what="backlog drained")
            with RegistryStore(postgres_url, create=False) as desk:
                desk.conn.execute("DELETE FROM change_log")  # ... and the log it missed is pruned
                version = desk.version
            assert g2.cache.get(TICKETS[0].ticket_id).entries_used == 0
            b.service.follower.start()
            await until(lambda: g2.cache.version == version, timeout=10, what="gate 2 at the version")
            assert chain.snapshots == before + 1
            assert b.service.follower.reloads == 1
            _same_mirror(a, b)
            for t in TICKETS[:20]:
                assert g2.cache.get(t.ticket_id).entries_used == 1
        finally:
            for gate in (g1, g2):
                await gate.stop()
            for server in (a, b):
                await server.stop()

    asyncio.run(day())
