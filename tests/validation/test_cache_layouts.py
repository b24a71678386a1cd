"""The cache answers like a dict for every way a show numbers its tickets.

Ids come in the layouts a real show brings: consecutive (100001, 100002,
...), 10-digit registration numbers (5205320758), blocks per day or ticket
type (1_000_000*k + n) and random 63-bit ids. For each, a plain dict of
records is the model: after a snapshot, after a round trip through
`to_snapshot`, after deltas applied in place or staged on a copy (with this
gate's own admissions committed between `stage` and `swap`), and after
deltas refused whole, `get()` answers exactly as the dict does, for ids
present and absent alike, and each zone's occupancy is the number of
tickets inside it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gated.errors import DeltaRefused
from gated.validation import (
    Delta,
    EntitlementCache,
    Reissue,
    SetBenefit,
    SetState,
    SetUsage,
    SetZone,
    TicketRecord,
    TicketState,
    Upsert,
    encode_snapshot,
)
from gated.validation.cache import IN_PLACE_MAX_OPS

ZONES = ("hall-a", "hall-b", "lounge")  # declared in this order: `inside` reads back in it
LAYOUTS = ("consecutive", "regno10", "blocks", "random63")


def layout_ids(layout: str, n: int, rng: random.Random) -> list[int]:
    if layout == "consecutive":
        first = rng.choice((1, 100001, 9_000_000_000))
        return list(range(first, first + n))
    if layout == "regno10":
        return rng.sample(range(1_000_000_000, 10_000_000_000), n)
    if layout == "blocks":
        per_block = max(1, n // 4)
        return [1_000_000 * k + m for k in range(1, 5) for m in range(per_block)][:n]
    return list({rng.getrandbits(63) for _ in range(n)})


def absent_ids(present: set[int], rng: random.Random) -> list[int]:
    """Neighbours of present ids (the end of a run), ids between blocks, random ones."""
    near = [t + d for t in rng.sample(sorted(present), min(len(present), 200)) for d in (-1, 1, 2, 1_000_000)]
    wide = [rng.getrandbits(63) for _ in range(100)] + [rng.randrange(10**9, 10**10) for _ in range(100)] + [0, 2**64 - 1]
    return [t for t in near + wide if t not in present and 0 <= t < 2**64]


def record(tid: int, rng: random.Random) -> TicketRecord:
    zones = tuple(sorted(rng.sample(ZONES, rng.randint(1, 3))))
    benefits = (("lunch", rng.randint(0, 2)), ("dinner", rng.randint(0, 1))) if rng.random() < 0.4 else ()
    inside = tuple(z for z in ZONES if z in zones and rng.random() < 0.2)
    return TicketRecord(
        ticket_id=tid, category=rng.choice(("guest", "media", "staff")), zones=zones, max_entries=rng.choice((0, 1, 3)),
        entries_used=len(inside), inside=inside, benefits=benefits, badge_serial=rng.randint(0, 3),
        name=rng.choice(("", "Li Wei", "Ana Souza")), company=rng.choice(("", "Acme")), phone_last4=rng.choice(("", "0420")),
    )


class Model:
    """The dict the cache must match, and the same changes applied to it."""

    def __init__(self, records: dict[int, TicketRecord]):
        self.records = dict(records)

    def apply(self, ops) -> None:
        r = self.records
        for op in ops:
            if isinstance(op, Upsert):
                r[op.record.ticket_id] = op.record
            elif isinstance(op, SetState):
                r[op.ticket_id] = dataclasses.replace(r[op.ticket_id], state=op.state)
            elif isinstance(op, Reissue):
                r[op.ticket_id] = dataclasses.replace(r[op.ticket_id], badge_serial=op.badge_serial)
            elif isinstance(op, SetUsage):
                r[op.ticket_id] = dataclasses.replace(r[op.ticket_id], entries_used=op.entries_used, inside=tuple(z for z in ZONES if z in op.inside))
            elif isinstance(op, SetBenefit):
                rec = r[op.ticket_id]
                r[op.ticket_id] = dataclasses.replace(rec, benefits=tuple((n, op.remaining if n == op.name else c) for n, c in rec.benefits))

    def entry(self, tid: int, zone: str) -> None:
        rec = self.records[tid]
        self.records[tid] = dataclasses.replace(rec, entries_used=rec.entries_used + 1, inside=tuple(z for z in ZONES if z in rec.inside or z == zone))

    def exit(self, tid: int, zone: str) -> None:
        rec = self.records[tid]
        self.records[tid] = dataclasses.replace(rec, inside=tuple(z for z in rec.inside if z != zone))

    def redeem(self, tid: int, benefit: str) -> int | None:
        rec = self.records[tid]
        counts = dict(rec.benefits)
        if not counts.get(benefit):
            return None
        self.records[tid] = dataclasses.replace(rec, benefits=tuple((n, c - 1 if n == benefit else c) for n, c in rec.benefits))
        return counts[benefit] - 1


def assert_matches(cache: EntitlementCache, model: Model, absent: list[int]) -> None:
    for tid, rec in model.records.items():
        assert cache.get(tid) == rec, tid
    for tid in absent:
        if tid not in model.records:
            assert cache.get(tid) is None and cache.row_of(tid) == -1, tid
    assert len(cache) == len(model.records)
    for zone in ZONES:
        assert cache.occupancy(zone) == sum(zone in r.inside for r in model.records.values()), zone


def random_delta(cache: EntitlementCache, model: Model, layout: str, size: int, rng: random.Random, bad: bool) -> Delta:
    existing = list(model.records)
    fresh = [t for t in layout_ids(layout, size, rng) if t not in model.records] if layout != "consecutive" else \
        list(range(max(existing, default=0) + 1, max(existing, default=0) + 1 + size))
    ops: list = []
    for _ in range(size):
        kind = rng.random()
        if fresh and (kind < 0.5 or not existing):
            ops.append(Upsert(record(fresh.pop(), rng)))
            continue
        if not existing:
            continue
        tid = rng.choice(existing)
        if kind < 0.6:
            ops.append(Upsert(record(tid, rng)))
        elif kind < 0.7:
            ops.append(SetState(tid, rng.choice((TicketState.ACTIVE, TicketState.REVOKED))))
        elif kind < 0.8:
            ops.append(Reissue(tid, rng.randint(0, 9)))
        elif kind < 0.9:
            ops.append(SetUsage(tid, rng.randint(0, 5), tuple(rng.sample(ZONES, rng.randint(0, 2)))))
        else:
            # the benefit as the ticket will have it when this op runs (an earlier op may re-upsert it)
            rec = next((op.record for op in reversed(ops) if isinstance(op, Upsert) and op.record.ticket_id == tid), model.records[tid])
            if rec.benefits:
                ops.append(SetBenefit(tid, rng.choice(rec.benefits)[0], rng.randint(0, 5)))
    if rng.random() < 0.1:
        ops.append(SetZone("lounge", rng.randint(0, 100)))
    if bad:
        ops.insert(rng.randrange(len(ops) + 1), rng.choice((
            SetState(_absent_one(model), TicketState.REVOKED),
            Reissue(rng.choice(existing or [1]), 70_000),
            Upsert(TicketRecord(ticket_id=_absent_one(model), category="")),
            SetUsage(rng.choice(existing or [1]), -1, ()),
        )))
    return Delta(cache.version, cache.version + 1, tuple(ops))


def _absent_one(model: Model) -> int:
    tid = 7
    while tid in model.records:
        tid = tid * 31 + 1
    return tid


def commit_some(cache: EntitlementCache, model: Model, rng: random.Random, n: int) -> None:
    """This gate's own admissions, exits and redemptions (what a lane commits)."""
    for tid in rng.sample(list(model.records), min(n, len(model.records))):
        row = cache.row_of(tid)
        what = rng.random()
        if what < 0.5:
            zone = rng.choice(ZONES)
            cache.count_entry(row, zone)
            model.entry(tid, zone)
        elif what < 0.75:
            zone = rng.choice(ZONES)
            cache.count_exit(row, zone)
            model.exit(tid, zone)
        else:
            assert cache.redeem(row, "lunch") == model.redeem(tid, "lunch")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(LAYOUTS), n=st.integers(0, 400), seed=st.integers(0, 2**32), plan=st.lists(
    st.tuples(st.sampled_from(("in_place", "staged", "staged_commits", "refused", "refused_staged")), st.integers(1, 300)),
    max_size=5,
))
def test_cache_answers_like_a_dict(layout, n, seed, plan):
    rng = random.Random(seed)
    model = Model({t: record(t, rng) for t in layout_ids(layout, n, rng)})
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, model.records.values(), dict.fromkeys(ZONES, 0)))
    absent = absent_ids(set(model.records), rng) if model.records else [1, 2, 2**63]
    assert_matches(cache, model, absent)

    again = EntitlementCache()
    again.load_snapshot(cache.to_snapshot())
    assert_matches(again, model, absent)

    for how, size in plan:
        delta = random_delta(cache, model, layout, size, rng, bad=how.startswith("refused"))
        before = cache.to_snapshot()
        if how == "in_place":
            cache.apply(delta)
            model.apply(delta.ops)
        elif how == "refused":
            with pytest.raises(DeltaRefused):
                cache.apply(delta)
            assert cache.to_snapshot() == before
        elif how == "refused_staged":
            staging = cache.stage(delta)
            with pytest.raises(DeltaRefused):
                staging.build()
            cache.discard(staging)
            with pytest.raises(DeltaRefused):
                cache.swap(staging)
            assert cache.to_snapshot() == before
        else:
            staging = cache.stage(delta)
            if how == "staged_commits":
                commit_some(cache, model, rng, 5)  # before the copy is taken
            staging.build()
            if how == "staged_commits":
                commit_some(cache, model, rng, 5)  # after: only the live table has them
            cache.swap(staging)
            model.apply(delta.ops)  # as if applied at the swap, after the local usage
        assert_matches(cache, model, absent)
        fresh_ids = [op.record.ticket_id for op in delta.ops if isinstance(op, Upsert)]
        absent = [t for t in absent if t not in fresh_ids]

    reloaded = EntitlementCache()
    reloaded.load_snapshot(cache.to_snapshot())
    assert_matches(reloaded, model, absent)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_absent_ids_stop_after_a_few_probes_in_every_layout(layout):
    """The old index (`id % size`) made consecutive ids one long run an absent id walked to its end."""
    rng = random.Random(8)
    ids = layout_ids(layout, 200_000, rng)
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, (TicketRecord(ticket_id=t, category="guest") for t in ids)))
    table = cache.table
    probes = sorted(table.probe_length(t) for t in absent_ids(set(ids), rng))
    assert probes[-1] <= 200 and probes[len(probes) // 2] <= 8, (probes[len(probes) // 2], probes[-1])
    assert all(cache.row_of(t) >= 0 for t in rng.sample(ids, 2000))


def test_a_stale_staging_is_refused_and_the_cache_kept():
    rng = random.Random(3)
    model = Model({t: record(t, rng) for t in range(100001, 100501)})
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, model.records.values(), dict.fromkeys(ZONES, 0)))
    big = Delta(3, 4, tuple(Upsert(record(t, rng)) for t in range(200001, 200001 + IN_PLACE_MAX_OPS + 1)))
    assert not cache.fits_in_place(big)
    staging = cache.stage(big)
    staging.build()
    cache.apply(Delta(3, 4, (SetState(100001, TicketState.REVOKED),)))  # another update got there first
    model.apply((SetState(100001, TicketState.REVOKED),))
    with pytest.raises(DeltaRefused, match="moved to version 4"):
        cache.swap(staging)
    assert cache.version == 4
    assert_matches(cache, model, [200001, 200002])
    newer = cache.stage(Delta(4, 5, big.ops))
    older = cache.stage(Delta(4, 5, big.ops))  # supersedes `newer`
    newer.build()
    with pytest.raises(DeltaRefused, match="not the current one"):
        cache.swap(newer)
    older.build()
    cache.swap(older)
    assert cache.version == 5 and cache.get(200001) == big.ops[0].record


def test_a_large_staged_delta_keeps_every_local_commit_made_while_it_was_built():
    """200,000 tickets, a 20,000-op delta built in a thread while the 'loop' admits people."""
    rng = random.Random(11)
    ids = list(range(100001, 300001))
    records = {t: TicketRecord(ticket_id=t, category="guest", zones=("hall-a",), benefits=(("lunch", 2),)) for t in ids}
    model = Model(records)
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, records.values(), dict.fromkeys(ZONES, 0)))
    new_ids = rng.sample(range(1_000_000_000, 10_000_000_000), 15_000)
    touched_by_both = ids[:50]  # the delta sets their usage; the lanes admit them too
    ops = tuple(Upsert(TicketRecord(ticket_id=t, category="media", zones=("hall-a", "lounge"))) for t in new_ids) + tuple(
        SetUsage(t, 7, ("lounge",)) for t in touched_by_both
    ) + tuple(SetBenefit(t, "lunch", 0) for t in ids[50:5000])
    delta = Delta(3, 4, ops)
    staging = cache.stage(delta)
    builder = threading.Thread(target=staging.build, args=(lambda: time.sleep(0),))
    builder.start()
    admitted = 0
    while builder.is_alive() or admitted < 200:
        tid = ids[admitted % 400] if admitted < 400 else rng.choice(ids)
        row = cache.row_of(tid)
        if model.records[tid].inside:
            cache.count_exit(row, "hall-a")
            model.exit(tid, "hall-a")
        else:
            cache.count_entry(row, "hall-a")
            model.entry(tid, "hall-a")
        assert cache.redeem(row, "lunch") == model.redeem(tid, "lunch")
        admitted += 1
    builder.join()
    assert cache.get(new_ids[0]) is None  # nothing of the delta is visible before the swap
    cache.swap(staging)
    model.apply(ops)
    assert cache.version == 4
    assert_matches(cache, model, absent_ids(set(model.records), rng))


def usage_ops(model: Model, rng: random.Random, n: int) -> tuple:
    """A backlog's usage coming back: entries and whereabouts set, benefits counted down, some
    tickets more than once (the later op wins, in order)."""
    ids = list(model.records)
    ops = []
    for _ in range(n):
        tid = rng.choice(ids)
        rec = model.records[tid]
        if rec.benefits and rng.random() < 0.3:
            name = rng.choice([b for b, _ in rec.benefits])
            ops.append(SetBenefit(tid, name, rng.randint(0, 2)))
        else:
            inside = tuple(z for z in rec.zones if rng.random() < 0.5)
            ops.append(SetUsage(tid, rng.randint(0, 5), inside))
    return tuple(ops)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_large_usage_delta_applied_in_steps_leaves_what_applied_whole_does(layout):
    """1,000 usage ops over 600 tickets: stepwise (with this gate's own admissions between the
    steps, on tickets the delta does not name) equals the model; the version moves with the
    last step only; and a delta cut off after two steps, then applied again in full, leaves
    what applying it once does."""
    rng = random.Random(hash(layout) & 0xFFFF)
    model = Model({t: record(t, rng) for t in layout_ids(layout, 600, rng)})
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, model.records.values(), dict.fromkeys(ZONES, 0)))
    ops = usage_ops(model, rng, 1000)
    named = {op.ticket_id for op in ops}
    free = [t for t in model.records if t not in named]
    steps = cache.apply_in_steps(Delta(3, 4, ops), ops_per_step=IN_PLACE_MAX_OPS)
    assert steps is not None
    applied = []
    for n in steps:
        applied.append(n)
        assert cache.version == 3  # not yet
        for tid in rng.sample(free, min(3, len(free))):  # the lanes decide between two steps
            zone = rng.choice(model.records[tid].zones)
            cache.count_entry(cache.row_of(tid), zone)
            model.entry(tid, zone)
    assert applied == [256, 512, 768]
    assert cache.version == 4
    model.apply(ops)
    assert_matches(cache, model, absent_ids(set(model.records), rng))

    again = usage_ops(model, rng, 700)
    cut = cache.apply_in_steps(Delta(4, 5, again), ops_per_step=100)
    next(cut), next(cut)  # two steps, then the watch ends: the version stays
    del cut
    assert cache.version == 4
    for n in cache.apply_in_steps(Delta(4, 5, again), ops_per_step=100):
        pass
    model.apply(again)
    assert cache.version == 5
    assert_matches(cache, model, [])


def test_apply_in_steps_takes_usage_only_and_refuses_a_bad_delta_whole():
    rng = random.Random(5)
    model = Model({t: record(t, rng) for t in range(5_205_320_758, 5_205_320_758 + 7 * 300, 7)})
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, model.records.values(), dict.fromkeys(ZONES, 0)))
    ops = usage_ops(model, rng, 400)
    mixed = ops + (SetState(next(iter(model.records)), TicketState.REVOKED),)
    assert cache.apply_in_steps(Delta(3, 4, mixed)) is None  # staged on a copy instead
    assert cache.apply_in_steps(Delta(3, 4, ())) is None
    absent = _absent_one(model)
    with pytest.raises(DeltaRefused, match="refused"):
        cache.apply_in_steps(Delta(3, 4, ops + (SetUsage(absent, 1, ("hall-a",)),)))
    with pytest.raises(DeltaRefused):
        cache.apply_in_steps(Delta(2, 4, ops))  # not on top of this version
    assert cache.version == 3
    assert_matches(cache, model, [absent])  # nothing of either applied


def test_a_delta_in_steps_stops_when_the_cache_moves_under_it():
    rng = random.Random(9)
    model = Model({t: record(t, rng) for t in range(100001, 100401)})
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, model.records.values(), dict.fromkeys(ZONES, 0)))
    steps = cache.apply_in_steps(Delta(3, 4, usage_ops(model, rng, 600)), ops_per_step=200)
    next(steps)
    cache.apply(Delta(3, 4, (SetState(100001, TicketState.REVOKED),)))  # another update got there first
    with pytest.raises(DeltaRefused, match="moved to version 4"):
        next(steps)
    assert cache.version == 4
    snapshot = encode_snapshot(9, model.records.values(), dict.fromkeys(ZONES, 0))
    steps = cache.apply_in_steps(Delta(4, 5, usage_ops(model, rng, 600)), ops_per_step=200)
    next(steps)
    cache.load_snapshot(snapshot)  # a snapshot replaced the table
    with pytest.raises(DeltaRefused):
        next(steps)
    assert cache.version == 9
    assert_matches(cache, model, [])
