"""The registry's mirror checks a delta once and applies what it checked.

`EntitlementCache.check(ops)` refuses a delta the way `apply` would (a
ValueError naming the op) and otherwise returns a token; `apply_checked`
applies it without checking again. An import's delta (upserts only, each
ticket once) is packed into columns by the check and merged in whole-array
steps. Whatever the path, the cache ends exactly as `apply` leaves a twin,
for every id layout a show brings, ids present and absent; a token is good
once, for the cache and version it was made on, and a refused check leaves
the cache as it was.
"""

from __future__ import annotations

import random

import pytest

from gated.errors import DeltaRefused
from gated.validation import Delta, EntitlementCache, Reissue, SetBenefit, SetState, SetUsage, TicketRecord, TicketState, Upsert, encode_snapshot

LAYOUTS = {
    "consecutive": lambda rng, n: list(range(100_001, 100_001 + n)),
    "registration numbers": lambda rng, n: rng.sample(range(1_000_000_000, 10_000_000_000), n),
    "blocks": lambda rng, n: [1_000_000 * k + i for k in range(1, n // 500 + 2) for i in range(1, 501)][:n],
    "random 63-bit": lambda rng, n: [rng.getrandbits(63) for _ in range(n)],
}
CATEGORIES = ("guest", "media", "staff", "exhibitor", "vip")


def ticket(tid: int, n: int, **changes) -> TicketRecord:
    rec = TicketRecord(ticket_id=tid, category=CATEGORIES[n % 5], ticket_type="3-day",
                       zones=("hall-a",) if n % 7 else ("hall-a", "press"), windows=((1_748_736_000, 1_748_966_400),),
                       benefits=(("lunch_day1", 1), ("dinner", n % 3)), name=f"Delegate {n}", company=f"Company {n % 97}",
                       phone_last4=f"{n % 10000:04d}", entries_used=n % 2, inside=("hall-a",) if n % 4 == 0 else ())
    return TicketRecord(**{**{f: getattr(rec, f) for f in rec.__slots__}, **changes})


def twins(held: list[TicketRecord]) -> tuple[EntitlementCache, EntitlementCache]:
    snapshot = encode_snapshot(7, held)
    a, b = EntitlementCache(), EntitlementCache()
    a.load_snapshot(snapshot)
    b.load_snapshot(snapshot)
    return a, b


def same(a: EntitlementCache, b: EntitlementCache, probe: list[int]) -> None:
    assert (a.version, len(a)) == (b.version, len(b))
    for tid in probe:
        assert a.get(tid) == b.get(tid), tid
    for zone in a.table.zone_names:
        assert a.occupancy(zone) == b.occupancy(zone) == sum(1 for r in a.records() if zone in r.inside)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_import_checked_once_lands_exactly_as_applied_op_by_op(layout):
    rng = random.Random(5205320758)
    ids = list(dict.fromkeys(LAYOUTS[layout](rng, 6000)))
    held, new, absent = ids[:3000], ids[3000:5000], ids[5000:]
    mirror, twin = twins([ticket(tid, n) for n, tid in enumerate(held)])
    # An API batch: 2,000 new tickets, 1,000 held ones changed (a new zone among them), none twice.
    ops = tuple([Upsert(ticket(tid, n + 1, name=f"New {n}")) for n, tid in enumerate(new)]
                + [Upsert(ticket(tid, n + 3, zones=("hall-b",) if n % 2 else ("hall-a",), inside=())) for n, tid in enumerate(held[:1000])])
    checked = mirror.check(ops)
    assert checked.bulk is not None  # the whole-array path
    mirror.apply_checked(Delta(7, 8, ops), checked)
    twin.apply(Delta(7, 8, ops))
    same(mirror, twin, held + new + absent)
    assert all(mirror.get(tid) is None for tid in absent)
    # Then a mixed delta (revoke, reprint, usage, a benefit taken, a ticket changed): the op-by-op path, checked once.
    mixed = (SetState(held[1], TicketState.REVOKED), Reissue(new[0], 3), SetUsage(held[2], 4, ("hall-a",)),
             SetBenefit(new[1], "dinner", 0), Upsert(ticket(held[5], 9)), Upsert(ticket(held[5], 10)))
    checked = mirror.check(mixed)
    assert checked.bulk is None
    mirror.apply_checked(Delta(8, 9, mixed), checked)
    twin.apply(Delta(8, 9, mixed))
    same(mirror, twin, held + new + absent)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_bad_delta_is_refused_by_the_check_and_changes_nothing(layout):
    rng = random.Random(63)
    ids = list(dict.fromkeys(LAYOUTS[layout](rng, 400)))
    held = [ticket(tid, n) for n, tid in enumerate(ids[:200])]
    mirror, twin = twins(held)
    good = [Upsert(ticket(tid, n)) for n, tid in enumerate(ids[200:])]
    bad_serial = good[:150] + [Upsert(ticket(ids[399], 1, badge_serial=70_000))] + good[150:]
    with pytest.raises(ValueError, match=rf"op 150: ticket {ids[399]}: badge_serial"):
        mirror.check(tuple(bad_serial))
    too_many_zones = tuple(Upsert(ticket(tid, n, zones=(f"z{n}",))) for n, tid in enumerate(ids[200:270]))
    with pytest.raises(ValueError, match="more than 64 zones"):
        mirror.check(too_many_zones)
    with pytest.raises(ValueError, match="not in the cache"):
        mirror.check((SetState(ids[250], TicketState.REVOKED),))  # an absent id
    same(mirror, twin, ids)


def test_a_token_is_good_once_for_the_cache_and_version_it_was_checked_on():
    ids = [5_205_320_758 + 17 * n for n in range(300)]
    mirror, twin = twins([ticket(tid, n) for n, tid in enumerate(ids[:100])])
    ops = tuple(Upsert(ticket(tid, n)) for n, tid in enumerate(ids[100:200]))
    checked = mirror.check(ops)
    with pytest.raises(DeltaRefused):  # not the operations checked
        mirror.apply_checked(Delta(7, 8, ops[:50]), checked)
    moved = tuple(Upsert(ticket(tid, n)) for n, tid in enumerate(ids[200:]))
    mirror.apply(Delta(7, 8, moved))
    twin.apply(Delta(7, 8, moved))
    with pytest.raises(DeltaRefused):  # the cache moved since the check
        mirror.apply_checked(Delta(8, 9, ops), checked)
    same(mirror, twin, ids)
    checked = mirror.check(ops)
    mirror.apply_checked(Delta(8, 9, ops), checked)
    with pytest.raises(DeltaRefused):  # once
        mirror.apply_checked(Delta(9, 10, ops), checked)
    twin.apply(Delta(8, 9, ops))
    same(mirror, twin, ids)
