"""A registry that restarts serves its first gate from the snapshot it kept, never a stale one.

The mirror's encoded snapshot is kept in the database with its version (at
start when it was built from the rows, every so often while the version
moves, and at stop). A restart at that version loads it instead of reading
every ticket; any other version (a command while stopped, a kill -9 after the
version moved) or a put of tickets builds the mirror from the rows again.
"""

from __future__ import annotations

import asyncio
import time

from gated.registry.store import IncomingEvent, RegistryStore
from gated.validation import TicketRecord, TicketState
from gated.validation.cache import EntitlementCache
from tests.conftest import until
from tests.rpc_helpers import start_registry

# Registration numbers as a venue's system hands them out (10 digits).
TICKETS = [TicketRecord(ticket_id=5205320758 + i * 7919, category="guest", zones=("hall-a",)) for i in range(40)]
ABSENT = 5205320758 + 13


def _passage(seq: int, ticket_id: int) -> IncomingEvent:
    return IncomingEvent(f"gate-a:{seq}", seq, time.time(), "passage", "in-1", ticket_id, "ok",
                         f'{{"ticket_id":{ticket_id},"zone":"hall-a","direction":"in"}}')


def _mirror(data: bytes) -> EntitlementCache:
    cache = EntitlementCache()
    cache.load_snapshot(data)
    return cache


async def _restart(db):
    server = await start_registry(db, None, tickets=TICKETS)
    return server, await server.service.snapshot()


def test_a_restart_serves_the_snapshot_kept_at_stop_with_the_day_s_usage(registry_db):
    async def day():
        server, _ = await _restart(registry_db)
        # The first start built the mirror from the rows; it keeps it in the background.
        await until(lambda: server.service.kept_version is not None, 10, "the first snapshot kept")
        await asyncio.to_thread(server.store.store_events, "gate-a", [_passage(1, TICKETS[3].ticket_id)], time.time(), epoch=9)
        server.service.wake()
        await server.service._exclusive(server.service.load)  # the mirror reads the passage back, as a restart would
        moved = server.service.cache.version
        await server.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.kept_version() == moved == store.version

        again, (version, data) = await _restart(registry_db)
        try:
            assert again.service.kept_version == version == moved  # served from what was kept
            cache = _mirror(data)
            assert len(cache) == len(TICKETS) and cache.get(ABSENT) is None
            assert cache.get(TICKETS[3].ticket_id).entries_used == 1
            assert cache.get(TICKETS[3].ticket_id).inside == ("hall-a",)
        finally:
            await again.stop()

    asyncio.run(day())


def test_a_revocation_while_stopped_is_in_the_first_snapshot_after_restart(registry_db):
    async def day():
        server, _ = await _restart(registry_db)
        await server.stop()
        with RegistryStore(registry_db, create=False) as desk:
            kept = desk.kept_version()
            desk.revoke(TICKETS[5].ticket_id)
        again, (version, data) = await _restart(registry_db)
        if again.service.follower is not None:
            # PostgreSQL: a change made while every instance was stopped is published as a delta
            # after the start (an instance never takes another's pending change for applied); the
            # snapshot after it carries the revocation.
            again.service.wake()
            await until(lambda: again.service.cache.version > kept, 10, "the revocation published")
            version, data = await again.service.snapshot()
        try:
            assert version > kept
            if again.service.follower is None:
                assert again.service.kept_version != version  # built from the rows
            assert _mirror(data).get(TICKETS[5].ticket_id).state is TicketState.REVOKED
        finally:
            await again.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.kept_version() == store.version  # and kept again at stop

    asyncio.run(day())


def test_tickets_put_while_stopped_drop_the_kept_snapshot(registry_db):
    async def day():
        server, _ = await _restart(registry_db)
        await server.stop()
        late = TicketRecord(ticket_id=3_000_017, category="media", zones=("hall-a",))
        with RegistryStore(registry_db, create=False) as desk:
            desk.put_tickets([(late, "")], record_changes=False)
            assert desk.kept_snapshot() is None
        again, (_version, data) = await _restart(registry_db)
        try:
            assert _mirror(data).get(late.ticket_id).category == "media"
        finally:
            await again.stop()

    asyncio.run(day())


def test_after_a_kill_the_kept_snapshot_of_an_older_version_is_not_served(registry_db):
    """kill -9: no keeping at stop, the version moved since the last keep."""
    async def day():
        server, _ = await _restart(registry_db)
        await until(lambda: server.service.kept_version is not None, 10, "the first snapshot kept")
        kept = server.service.kept_version
        await asyncio.to_thread(server.store.store_events, "gate-a", [_passage(1, TICKETS[0].ticket_id)], time.time(), epoch=4)
        server.service.kept_version = server.service.cache.version  # the keeper believes it is kept: stop keeps nothing
        await server.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.kept_version() == kept < store.version
        again, (version, data) = await _restart(registry_db)
        try:
            assert version == again.store.version
            assert _mirror(data).get(TICKETS[0].ticket_id).entries_used == 1
        finally:
            await again.stop()

    asyncio.run(day())
