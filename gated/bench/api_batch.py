"""A 50,000-attendee API batch through the registry, stage by stage (`gated bench --sections api_batch`).

The path of `PUT /api/v1/attendees` to a gate's cache, each stage timed on
the same batch, in this process, with no network: the API's parse and
checks (`api.parse_batch`), the store's one transaction with the dashboard's
triggers installed (`api.store_batch`), the publishing (`_changes_step` until
nothing is pending: changes read back, the mirror's check and apply, the
wire deltas), and a gate's side of each delta (the builder process's
`convert.bulk_upserts`, then `stage_bulk`, build, swap); then the same batch
sent again (nothing changes). CPU seconds of this process (what two CPUs
shared with other work cannot hide) and wall seconds, median over rounds.

The batch has the shapes a real show brings: 20,000 consecutive ids,
15,000 10-digit registration numbers, 10,000 ids in blocks 1,000,000*k+n
and 5,000 random 63-bit ids, on top of 4,000 tickets already registered.
The end-to-end figure (registry in its own process, two gates streaming
events over gRPC) is tests/registry/test_api_batch.py's, printed by it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

BASE = 4000  # consecutive ids 100001.. already registered: the people at the doors
BATCH = 50_000
STAGES = ("parse", "store", "publish", "gate", "sent_again")


def batch_ids() -> list[int]:
    """The shapes a real show brings: consecutive ids, 10-digit registration numbers, ids in
    blocks 1_000_000*k+n, random 63-bit ids; all distinct, none already registered."""
    rng = random.Random(5205320758)
    ids = list(range(7_000_001, 7_000_001 + 20_000))
    ids += rng.sample(range(1_000_000_000, 10_000_000_000), 15_000)
    ids += [1_000_000 * k + n for k in range(20, 30) for n in range(1, 1001)]
    ids += [rng.getrandbits(63) for _ in range(5_000)]
    assert len(set(ids)) == BATCH
    return ids


def attendees(ids: list[int]) -> list[dict]:
    """The JSON rows a CRM sends for `ids`."""
    categories = ("guest", "media", "exhibitor", "vip", "staff")
    return [{"ticket_id": str(tid), "name": f"Delegate {n}", "company": f"Company {n % 997}",
             "category": categories[n % 5], "ticket_type": "3-day", "zones": ["hall-a"] if n % 7 else ["hall-a", "press"],
             "validity": [["2025-06-01T08:00:00+08:00", "2025-06-03T18:00:00+08:00"]], "max_entries": 0,
             "benefits": {"lunch_day1": 1, "dinner": n % 3}, "phone": f"+86 138 {n % 10000:04d} {n % 7919:04d}"}
            for n, tid in enumerate(ids)]


class _Clock:
    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def lap(self) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = (cpu - self.cpu, wall - self.wall)
        self.cpu, self.wall = cpu, wall
        return out


def _round(body: bytes, tmp: Path) -> dict[str, tuple[float, float]]:
    from gated.registry import api, dashdata
    from gated.registry.server import RegistryService
    from gated.registry.store import RegistryStore
    from gated.rpc import convert
    from gated.validation.cache import EntitlementCache, TicketRecord, encode_snapshot

    db = tmp / "registry.db"
    with RegistryStore(db) as store:
        store.put_tickets(((TicketRecord(ticket_id=100_001 + i, category="guest", zones=("hall-a",)), "")
                           for i in range(BASE)), record_changes=False)
        dashdata.install(store.conn)
    service = RegistryService(RegistryStore(db), tls=False)
    service.load()
    gate = EntitlementCache()
    gate.load_snapshot(service.cache.to_snapshot())
    writes = RegistryStore(db)
    out: dict[str, tuple[float, float]] = {}
    try:
        clock = _Clock()
        batch = api.parse_batch(body)
        out["parse"] = clock.lap()
        counts = api.store_batch(writes, batch, "token:bench")
        out["store"] = clock.lap()
        assert counts == (BATCH, 0, 0), counts
        updates = []
        while True:
            published, more = service._changes_step()
            updates += [p.update for p in published if p.update is not None]
            if not more:
                break
        out["publish"] = clock.lap()
        for update in updates:
            delta = update.delta
            columns = convert.bulk_upserts(delta.SerializeToString())
            assert isinstance(columns, bytes), "not the gates' fast path"
            staging = gate.stage_bulk(delta.base_version, delta.version, columns)
            staging.build()
            gate.swap(staging)
        out["gate"] = clock.lap()
        assert len(gate) == BASE + BATCH and gate.version == service.cache.version
        assert api.store_batch(writes, api.parse_batch(body), "token:bench") == (0, 0, BATCH)
        out["sent_again"] = clock.lap()
        out["deltas"] = (len(updates), max(u.ByteSize() for u in updates))
    finally:
        writes.close()
        service.store.close()
    return out


def bench_api_batch(rounds: int = 5) -> dict:
    """Median CPU and wall seconds of each stage over `rounds` fresh registries."""
    import structlog

    previous = structlog.get_config()  # the caller's logging comes back (a test process keeps running)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        body = json.dumps({"attendees": attendees(batch_ids())}).encode()
        runs = []
        load = [os.getloadavg()[0]]
        for _ in range(rounds):
            with tempfile.TemporaryDirectory(prefix="gated-bench-api-") as tmp:
                runs.append(_round(body, Path(tmp)))
            load.append(os.getloadavg()[0])
    finally:
        structlog.configure(**previous)
    stages = {s: {"cpu_s": round(statistics.median(r[s][0] for r in runs), 3),
                  "wall_s": round(statistics.median(r[s][1] for r in runs), 3)} for s in STAGES}
    to_gate = ("parse", "store", "publish", "gate")
    return {"tickets_before": BASE, "batch": BATCH, "body_bytes": len(body), "rounds": rounds, "stages": stages,
            "to_one_gate_cpu_s": round(sum(stages[s]["cpu_s"] for s in to_gate), 3),
            "deltas": runs[0]["deltas"][0], "largest_delta_bytes": runs[0]["deltas"][1],
            "load_average": [round(min(load), 1), round(max(load), 1)], "cpus": os.cpu_count()}


def format_api_batch(r: dict) -> str:
    lines = [f"API batch of {r['batch']:,} attendees ({r['body_bytes'] / 1e6:.1f} MB of JSON) onto {r['tickets_before']:,} tickets, "
             f"dashboard triggers on, median of {r['rounds']} (load average {r['load_average'][0]}-{r['load_average'][1]} on {r['cpus']} CPUs)",
             f"  {'stage':<58} {'CPU s':>7} {'wall s':>7}"]
    names = {"parse": "parse and check (api.parse_batch)",
             "store": "store: one transaction (api.store_batch)",
             "publish": f"publish: {r['deltas']} deltas, the largest {r['largest_delta_bytes']:,} bytes",
             "gate": "one gate: builder's bulk_upserts, stage_bulk, build, swap",
             "sent_again": "the same batch again: parse, compare, nothing stored"}
    for stage, s in r["stages"].items():
        lines.append(f"  {names[stage]:<58} {s['cpu_s']:>7.3f} {s['wall_s']:>7.3f}")
    lines.append(f"  request to one gate's cache, CPU: {r['to_one_gate_cpu_s']:.2f} s")
    return "\n".join(lines)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gated.bench.api_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench_api_batch(args.rounds)
    print(json.dumps(result, indent=2) if args.json else format_api_batch(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
