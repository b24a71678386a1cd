"""A bulk put (an import, an API batch) leaves the same rows and change order on either path.

On PostgreSQL, 1,000 tickets or more go through COPY into a temporary table
and one INSERT ... SELECT; fewer, or a list naming an id twice, row by row.
Both must leave exactly what the row-by-row statement leaves on SQLite.
"""

from __future__ import annotations

import random

from gated.registry.store import RegistryStore
from gated.validation import TicketRecord

_rng = random.Random(12)
IDS = ([100_001 + i for i in range(400)] + [5205320758 + 7 * i for i in range(400)]
       + [1_000_000 * k + n for k in (3, 4) for n in range(200)] + [_rng.getrandbits(63) for _ in range(400)])


def records(version: int) -> list[tuple[TicketRecord, str]]:
    return [(TicketRecord(tid, ("guest", "vip", "press")[(i + version) % 3], zones=("hall-a", "hall-b")[: 1 + (i + version) % 2],
                          max_entries=(i + version) % 3, name=f"Attendee {i} v{version}", company="ACME" if i % 2 else "",
                          benefits=(("lunch", 1 + version),) if i % 5 == 0 else ()),
             f"+86 138 {i:08d}") for i, tid in enumerate(IDS)]


def state(store: RegistryStore) -> tuple:
    return (store.conn.execute("SELECT * FROM tickets ORDER BY ticket_id").fetchall(),
            [r[0] for r in store.conn.execute("SELECT ticket_id FROM changes WHERE kind = 'ticket' ORDER BY id")])


def test_a_bulk_put_leaves_what_row_by_row_leaves(tmp_path, registry_db):
    reference = RegistryStore(tmp_path / "row-by-row.db")
    store = RegistryStore(registry_db)
    try:
        for version in range(3):  # new tickets, then the same tickets changed, then again
            batch = records(version)
            for s in (reference, store):
                s.put_tickets(batch, actor=f"api:v{version}")
        store.revoke(IDS[5])
        reference.revoke(IDS[5])
        twice = records(7)[:600] + records(8)[:600]  # ids given twice: the last one wins
        for s in (reference, store):
            s.put_tickets(twice)
            assert s.upsert_attendees(records(9), "api:crm") == (0, len(IDS), 0)
        assert state(store) == state(reference)
        assert store.ticket(IDS[5]).state == reference.ticket(IDS[5]).state  # a put keeps a revocation
    finally:
        reference.close()
        store.close()
