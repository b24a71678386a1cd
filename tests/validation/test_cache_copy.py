"""Saving the cache without holding the lanes: a copy taken in a worker while
the gate goes on admitting people and applying small deltas, then brought up
to date on the deciding thread, must load back as exactly the live cache.

The shapes a show brings: every id layout, local entries, exits and
redemptions between the copy and its finish (and during it, from another
thread), small deltas that rewrite existing tickets, a new zone; and the
cases where the copy must be given up (a snapshot or staged delta replaced
the table, or new tickets grew it) rather than saved half right.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gated.validation import Delta, EntitlementCache, SetZone, Upsert, encode_snapshot
from tests.validation.test_cache_layouts import (
    LAYOUTS,
    Model,
    absent_ids,
    assert_matches,
    commit_some,
    layout_ids,
    random_delta,
    record,
)


def venue(layout: str, n: int, rng: random.Random) -> tuple[EntitlementCache, Model]:
    records = {tid: record(tid, rng) for tid in layout_ids(layout, n, rng)}
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(3, records.values(), {"hall-a": 0, "hall-b": 0, "lounge": 40}))
    return cache, Model(records)


def existing_only(delta: Delta, model: Model) -> Delta:
    """The delta without upserts of new tickets (those grow the table: a copy is given up)."""
    ops = tuple(op for op in delta.ops if not (isinstance(op, Upsert) and op.record.ticket_id not in model.records))
    return Delta(delta.base_version, delta.version, ops)


def saved_and_loaded(cache: EntitlementCache, copy) -> EntitlementCache:
    loaded = EntitlementCache()
    loaded.load_snapshot(copy.snapshot())
    assert loaded.version == cache.version
    return loaded


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(LAYOUTS), n=st.integers(1, 300), seed=st.integers(0, 2**32),
       commits_before=st.integers(0, 30), deltas_after=st.integers(0, 3), commits_after=st.integers(0, 30))
def test_a_copy_finished_after_the_gate_went_on_loads_as_the_live_cache(layout, n, seed, commits_before, deltas_after, commits_after):
    rng = random.Random(seed)
    cache, model = venue(layout, n, rng)
    copy = cache.begin_copy()
    commit_some(cache, model, rng, commits_before)  # before the worker copies: in it anyway
    copy.build()
    commit_some(cache, model, rng, commits_after)   # after: only the noting brings them in
    for _ in range(deltas_after):
        delta = existing_only(random_delta(cache, model, layout, rng.randint(1, 40), rng, bad=False), model)
        if rng.random() < 0.3:
            delta = Delta(delta.base_version, delta.version, (*delta.ops, SetZone("vip-room", 12)))
        cache.apply(delta)
        model.apply(delta.ops)
    assert cache.finish_copy(copy)
    loaded = saved_and_loaded(cache, copy)
    assert_matches(loaded, model, absent_ids(set(model.records), rng))
    assert loaded.zone_capacity("lounge") == cache.zone_capacity("lounge")
    assert loaded.zone_capacity("vip-room") == cache.zone_capacity("vip-room")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_lanes_keep_committing_while_a_worker_copies(layout):
    rng = random.Random(11)
    cache, model = venue(layout, 50_000, rng)
    copy = cache.begin_copy()
    worker = threading.Thread(target=copy.build)
    worker.start()
    while worker.is_alive():  # the deciding thread goes on, interleaved with the copy
        commit_some(cache, model, rng, 5)
    worker.join()
    commit_some(cache, model, rng, 20)
    assert cache.finish_copy(copy)
    loaded = saved_and_loaded(cache, copy)
    for tid, rec in model.records.items():
        assert loaded.get(tid) == rec, tid
    for zone in ("hall-a", "hall-b", "lounge"):
        assert loaded.occupancy(zone) == cache.occupancy(zone)


def test_a_copy_is_given_up_when_the_table_was_replaced_or_grew():
    rng = random.Random(5)
    cache, model = venue("regno10", 200, rng)

    copy = cache.begin_copy()
    copy.build()
    cache.load_snapshot(cache.to_snapshot())  # a registry snapshot arrived meanwhile
    assert not cache.finish_copy(copy)

    copy = cache.begin_copy()
    copy.build()
    newcomer = record(5205320758, rng)
    cache.apply(Delta(cache.version, cache.version + 1, (Upsert(newcomer),)))  # a walk-in, in place
    assert not cache.finish_copy(copy)

    copy = cache.begin_copy()  # the next save takes it all
    copy.build()
    assert cache.finish_copy(copy)
    assert saved_and_loaded(cache, copy).get(5205320758) == newcomer
