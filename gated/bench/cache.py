"""The cache index per id layout: load, lookups of present and absent ids beside a plain dict, a staged delta."""

from __future__ import annotations

import gc
import statistics
import time

from gated.bench.common import ID_LAYOUTS, absent_near, fresh_ids, interleaved, layout_ids, layout_records
from gated.validation import EntitlementCache, encode_snapshot


def bench_cache_layouts(tickets: int, quick: bool, delta_tickets: int = 10_000) -> dict:
    """Per id layout, on `tickets` tickets: snapshot load (median of three), lookups of present and
    absent ids (interleaved with the same lookups in a plain dict: the
    baseline), and a delta of `delta_tickets` new tickets built on a copy
    and swapped in (stage + build + swap, as the uplink does it)."""
    from gated.validation import Delta, Upsert

    out: dict = {}
    lookups = 500 if quick else 5000
    for layout in ID_LAYOUTS:
        ids = layout_ids(layout, tickets)
        snapshot = encode_snapshot(1, layout_records(ids))
        loads = []
        for _ in range(1 if quick else 3):  # the median of three: one load is at the mercy of a busy machine
            cache = EntitlementCache()
            gc.collect()
            t0 = time.perf_counter()
            cache.load_snapshot(snapshot)
            loads.append(time.perf_counter() - t0)
        load_s = statistics.median(loads)
        del snapshot
        import random

        present = random.Random(1).sample(ids, lookups)
        absent = absent_near(ids, lookups)
        plain = dict.fromkeys(ids, 0)
        row_of, get = cache.table.row_of, plain.get
        timed = interleaved(
            {
                "present": lambda i: row_of(present[i]),
                "absent": lambda i: row_of(absent[i]),
                "dict_present": lambda i: get(present[i]),
                "dict_absent": lambda i: get(absent[i]),
            },
            list(range(lookups)),
            rounds=4 if quick else 10,
            per_round=lookups // (4 if quick else 10),
        )
        assert all(row_of(t) >= 0 for t in present[:100]) and all(row_of(t) < 0 for t in absent[:100])
        del plain
        fresh = fresh_ids(layout, ids, delta_tickets)
        delta = Delta(cache.version, cache.version + 1, tuple(Upsert(r) for r in layout_records(fresh)))
        t0 = time.perf_counter()
        staging = cache.stage(delta)
        t1 = time.perf_counter()
        staging.build()
        t2 = time.perf_counter()
        cache.swap(staging)
        t3 = time.perf_counter()
        assert len(cache) == tickets + delta_tickets and cache.row_of(fresh[-1]) >= 0
        out[layout] = {
            "tickets": tickets,
            "load_s": round(load_s, 3),
            "lookup": timed,
            "delta": {"new_tickets": delta_tickets, "total_s": round(t3 - t0, 3), "build_s": round(t2 - t1, 3),
                      "on_loop_ms": round((t1 - t0 + t3 - t2) * 1000, 2)},
        }
        del cache, staging
        gc.collect()
    return out
