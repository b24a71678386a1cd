"""An import mid-show, staged in bulk: the same cache as op by op, for every id layout.

`stage_bulk` takes a delta of upserts as columns (what the builder process
packs) and merges them in whole-array steps. Whatever the gate's ids, the
result answers `get()` and occupancy exactly as the same upserts applied op
by op, local admissions made during the build included; a refused bulk
delta leaves the cache as it was.
"""

from __future__ import annotations

import random

import pytest

from gated.errors import DeltaRefused
from gated.validation import Delta, EntitlementCache, TicketRecord, Upsert, encode_snapshot

LAYOUTS = {
    "consecutive": lambda rng, n: list(range(100_001, 100_001 + n)),
    "regno10": lambda rng, n: rng.sample(range(1_000_000_000, 10_000_000_000), n),
    "blocks": lambda rng, n: [1_000_000 * k + m for k in range(1, 5) for m in range(-(-n // 4))][:n],
    "random63": lambda rng, n: list({rng.getrandbits(63) for _ in range(n)}),
}
ZONES = ("hall-a", "hall-b", "vip-lounge", "backstage")


def _ticket(rng: random.Random, tid: int) -> TicketRecord:
    zones = tuple(rng.sample(ZONES, 2))
    return TicketRecord(ticket_id=tid, category=rng.choice(("guest", "media", "staff")), zones=zones,
                        inside=zones[:1] if tid % 3 == 0 else (), entries_used=tid % 4,
                        benefits=(("lunch_day1", 1),) if tid % 2 else (), name=f"Walk-in {tid}", company="Partner Ltd",
                        phone_last4=f"{tid % 10000:04d}")


def _two_caches(records):
    snap = encode_snapshot(7, records)
    caches = []
    for _ in range(2):
        cache = EntitlementCache()
        cache.load_snapshot(snap)
        caches.append(cache)
    return caches


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_bulk_import_lands_exactly_like_the_same_upserts_op_by_op(layout):
    rng = random.Random(5205320758)
    held = LAYOUTS[layout](rng, 3000)
    gate_records = [TicketRecord(ticket_id=t, category="guest", zones=("hall-a",)) for t in held]
    by_ops, bulk = _two_caches(gate_records)
    walk_ins = [t for t in rng.sample(range(1_000_000_000, 10_000_000_000), 4000) if t not in set(held)]
    # New tickets, and some the gate holds (reprinted with other zones and benefits): one upsert each.
    upserts = [_ticket(rng, t) for t in walk_ins] + [_ticket(rng, t) for t in held[::7]]
    rng.shuffle(upserts)
    admitted = [held[1], held[2], held[7]]  # admitted at this gate while the delta is built

    staging = by_ops.stage(Delta(7, 8, tuple(Upsert(r) for r in upserts)))
    staging.build()
    for tid in admitted:
        by_ops.count_entry(by_ops.row_of(tid), "hall-a")
    by_ops.swap(staging)

    staging = bulk.stage_bulk(7, 8, encode_snapshot(0, upserts))
    staging.build()
    for tid in admitted:
        bulk.count_entry(bulk.row_of(tid), "hall-a")
    assert bulk.get(walk_ins[0]) is None and bulk.version == 7  # nothing seen before the swap
    bulk.swap(staging)

    absent = [walk_ins[0] + 1, 2**63 + 5, held[-1] + 1_000_000_000]
    assert bulk.version == by_ops.version == 8 and len(bulk) == len(by_ops)
    for tid in held + walk_ins + absent:
        assert bulk.get(tid) == by_ops.get(tid), tid
    for zone in ZONES:
        assert bulk.occupancy(zone) == by_ops.occupancy(zone)
    again = EntitlementCache()
    again.load_snapshot(bulk.to_snapshot())  # what the periodic save writes reads back the same
    assert all(again.get(t) == bulk.get(t) for t in walk_ins[::50] + held[::50])


def test_a_bulk_delta_refused_leaves_the_cache_as_it_was():
    rng = random.Random(8)
    held = list(range(100_001, 102_001))
    cache, _ = _two_caches([TicketRecord(ticket_id=t, category="guest", zones=("hall-a",)) for t in held])
    before = cache.to_snapshot()
    too_many_zones = [TicketRecord(ticket_id=5_205_320_758 + n, category="guest", zones=(f"zone-{n}",)) for n in range(64)]  # 65 with hall-a
    for columns in (encode_snapshot(0, too_many_zones), encode_snapshot(0, [_ticket(rng, 5205320758)])[:-9] + b"damaged!!"):
        staging = cache.stage_bulk(7, 8, columns)
        with pytest.raises(DeltaRefused, match="delta 7->8 refused"):
            staging.build()
        with pytest.raises(DeltaRefused):
            cache.swap(staging)
        cache.discard(staging)
        assert cache.to_snapshot() == before and cache.version == 7
    with pytest.raises(DeltaRefused):
        cache.stage_bulk(6, 8, encode_snapshot(0, []))  # built on another version
