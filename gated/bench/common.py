"""What every benchmark shares: the synthetic venue, the id layouts a show brings, timing statistics."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

from gated.validation import TicketRecord, encode_snapshot


BENCH_NOW = 1_760_000_000


FIRST_TICKET = 9_000_000_000


CATEGORIES = ("guest", "guest", "guest", "exhibitor", "media", "staff", "vip")


def synthetic_records(n: int, first: int = FIRST_TICKET):
    """A realistic venue: 3 days, 2 halls, names, companies, a few benefits."""
    day = 86_400
    windows = ((BENCH_NOW - day, BENCH_NOW + 2 * day),)
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        yield TicketRecord(
            ticket_id=first + i * 7919,
            category=category,
            ticket_type="3-day" if i % 3 else "1-day",
            zones=("hall-a", "hall-b") if category != "staff" else ("hall-a", "hall-b", "backstage"),
            windows=windows,
            max_entries=0 if i % 3 else 1,
            benefits=(("lunch_day1", 1), ("dinner", 1)) if category in ("vip", "media") else (),
            name=f"Attendee Number {i}",
            company=f"Company {i % 5000} Ltd",
            phone_last4=f"{(i * 37) % 10000:04d}",
        )


def stats(samples_ns: list[int]) -> dict:
    samples = sorted(samples_ns)
    return {
        "median_us": round(statistics.median(samples) / 1000, 3),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000, 3),
        "n": len(samples),
    }


def interleaved(ops: dict[str, Callable[[int], object]], args: list, rounds: int, per_round: int) -> dict[str, dict]:
    """Time each op per call, round-robin in blocks, so all share the machine's state."""
    samples: dict[str, list[int]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    n_args = len(args)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, op in ops.items():
                out = samples[name]
                base = r * per_round
                for i in range(base, base + per_round):
                    arg = args[i % n_args]
                    t0 = clock()
                    op(arg)
                    out.append(clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    return {name: stats(s) for name, s in samples.items()}


def build_snapshot(tickets: int) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    snapshot = encode_snapshot(1, synthetic_records(tickets))
    return snapshot, time.perf_counter() - t0


ID_LAYOUTS = ("consecutive", "regno10", "blocks", "random63")


def layout_ids(layout: str, n: int, seed: int = 8) -> list[int]:
    """Ticket ids as shows number them: 100001..; 10-digit registration numbers
    (5205320758); blocks per day or ticket type 1_000_000*k + n; random 63-bit."""
    import random

    rng = random.Random(seed)
    if layout == "consecutive":
        return list(range(100_001, 100_001 + n))
    if layout == "regno10":
        return rng.sample(range(1_000_000_000, 10_000_000_000), n)
    if layout == "blocks":
        per_block = -(-n // 4)
        return [1_000_000 * k + m for k in range(1, 5) for m in range(per_block)][:n]
    ids: set[int] = set()
    while len(ids) < n:
        ids.add(rng.getrandbits(63))
    return list(ids)


def fresh_ids(layout: str, taken: list[int], n: int) -> list[int]:
    """`n` ids not yet taken, continuing the layout (the next walk-ins, the next block)."""
    import random

    rng = random.Random(len(taken))
    if layout == "consecutive":
        return list(range(max(taken) + 1, max(taken) + 1 + n))
    if layout == "blocks":
        top = max(taken) // 1_000_000 + 1
        return [1_000_000 * top + m for m in range(n)]
    have, out = set(taken), []
    while len(out) < n:
        tid = rng.randrange(1_000_000_000, 10_000_000_000) if layout == "regno10" else rng.getrandbits(63)
        if tid not in have:
            have.add(tid)
            out.append(tid)
    return out


def layout_records(ids: list[int]):
    """`synthetic_records`' tickets (names, companies, benefits) under other ids."""
    import dataclasses

    for tid, rec in zip(ids, synthetic_records(len(ids))):
        yield dataclasses.replace(rec, ticket_id=tid)


def absent_near(ids: list[int], n: int, seed: int = 9) -> list[int]:
    """Ids a gate is shown that it does not hold: next to held ones (the end of a run), and anywhere."""
    import random

    rng = random.Random(seed)
    have = set(ids)
    out: list[int] = []
    while len(out) < n:
        tid = rng.choice(ids) + rng.choice((1, 2, -1, 1_000_000)) if len(out) % 2 else rng.getrandbits(63)
        if tid not in have and 0 <= tid < 2**64:
            out.append(tid)
    return out
