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

End to end (`measure_end_to_end`, which tests/registry/test_api_batch.py
runs too): `gated registry serve` in its own process (gRPC and the HTTP API
on loopback), two gates connected over real gRPC, each with a lane admitting
people and its uplink streaming the journal; the CRM's `PUT
/api/v1/attendees`; the seconds from the request until both gates' caches
hold every attendee (issue 12's target: 5 s), and what was lost on the way.
On SQLite and, with `GATED_BENCH_POSTGRES` (or `GATED_TEST_POSTGRES`), on a
fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gated import eventloop

BASE = 4000  # consecutive ids 100001.. already registered: the people at the doors
BATCH = 50_000
STAGES = ("parse", "store", "publish", "gate", "sent_again")
TARGET_S = 5.0  # issue 12: the batch applied and at every connected gate
GATES = (("gate-a", "in-1", 100_001), ("gate-b", "in-2", 102_001))  # gate, its lane, the first ticket it scans
KID = 1


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
    from gated.validation.cache import EntitlementCache, TicketRecord

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


# ------------------------------------------------------------ end to end


def seed_registry(db: Path | str) -> str:
    """The venue before the batch: BASE tickets (consecutive from 100001), the event key; returns the
    API token of the registration system (the desk role)."""
    from gated.bench.rpc import _KEY
    from gated.registry.accounts import Accounts
    from gated.registry.store import RegistryStore
    from gated.validation import TicketRecord

    with RegistryStore(db) as store:
        store.put_tickets(((TicketRecord(ticket_id=100_001 + i, category="guest", zones=("hall-a",)), "")
                           for i in range(BASE)), record_changes=False)
        store.add_key(KID, _KEY)
        return Accounts(store).add_token("crm", "desk", time.time())


def measure_end_to_end(db: Path | str, tmp: Path, timeout_s: float = 200.0) -> dict[str, Any]:
    """The batch through a running registry to two streaming gates (the module's docstring); `db` an
    empty SQLite path or PostgreSQL URL, `tmp` a directory for the gates' journals and the log."""
    from gated.bench.rpc import registry_serve
    from gated.registry.store import RegistryStore

    token = seed_registry(db)
    ids = batch_ids()
    rows = attendees(ids)
    body = json.dumps({"attendees": rows}).encode()
    with registry_serve(db, ("--plaintext", "--http", "127.0.0.1:0"), tmp / "registry.log", 120.0) as served:
        r = eventloop.run(asyncio.wait_for(_day(served.port, served.pages, tmp, token, body, ids, rows), timeout_s))
    with RegistryStore(db, create=False) as store:
        r["stored_seqs"] = {gate_id: [int(e.rpartition(":")[2]) for e in store.event_ids(gate_id)] for gate_id, _, _ in GATES}
    r["lost"] = sum(len(set(range(1, last + 1)) - set(r["stored_seqs"][g])) for (g, _, _), last in zip(GATES, r["last"]))
    r["duplicated"] = sum(len(seqs) - len(set(seqs)) for seqs in r["stored_seqs"].values())
    r["complete"] = (r["held"] == [BATCH] * len(GATES) and r["lost"] == 0 and r["duplicated"] == 0
                     and r["answer"] == {"received": BATCH, "created": BATCH, "updated": 0, "unchanged": 0})
    r["engine"] = "postgres" if str(db).startswith(("postgresql:", "postgres:")) else "sqlite"
    r["load_average"] = round(os.getloadavg()[0], 1)
    return r


async def _day(port: int, pages: str, tmp: Path, token: str, body: bytes, ids: list[int], rows: list[dict]) -> dict[str, Any]:
    import aiohttp

    from gated.bench.rpc import _KEY, BenchGate, _until
    from gated.config import UplinkSection
    from gated.validation import Lane, Policy, Reason
    from gated.validation.token import mint_dynamic

    gates = [BenchGate(tmp / f"journal-{gate_id}.db", gate_id, UplinkSection(f"127.0.0.1:{port}", True, None, None, None, 0.5),
                       Policy(rate_burst=10**6, rate_per_s=1e6)).start() for gate_id, _, _ in GATES]
    streaming = True
    lanes: list[asyncio.Task] = []
    try:
        await _until(lambda: all(len(g.cache) == BASE and KID in g.keyring for g in gates), 30, "the gates in sync")
        acks: list[list[tuple[float, int, int]]] = [[] for _ in gates]  # per gate: (time, journal's last seq, registry's ack)

        async def scanning(gate: BenchGate, first: int, lane: Lane) -> int:
            admitted, n = 0, 0
            while streaming:
                decision = await gate.pass_through(mint_dynamic(_KEY, KID, first + n, time.time()), lane)
                admitted += decision.reason is Reason.OK
                n += 1
                await asyncio.sleep(0.01)
            return admitted

        async def watch_acks() -> None:
            while streaming:
                now = time.monotonic()
                for i, gate in enumerate(gates):
                    acks[i].append((now, gate.journal.stats()["last_seq"], gate.uplink.status()["last_acked_seq"]))
                await asyncio.sleep(0.02)

        lanes = [asyncio.create_task(scanning(gate, first, Lane(lane_id, "hall-a"))) for gate, (_, lane_id, first) in zip(gates, GATES)]
        watcher = asyncio.create_task(watch_acks())
        lanes.append(watcher)
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession(base_url=pages, headers={"Authorization": f"Bearer {token}"}) as crm:
            started = time.monotonic()
            async with crm.put("/api/v1/attendees", data=body, headers={"Content-Type": "application/json"}) as response:
                answer = await response.json()
            applied = time.monotonic() - started
            if response.status != 200:
                raise RuntimeError(f"the batch was refused: {response.status} {answer}")
            first: list[float] = []
            everywhere: list[float] = []

            def arrived() -> bool:
                if not first and any(len(g.cache) > BASE for g in gates):
                    first.append(time.monotonic() - started)
                if all(len(g.cache) == BASE + BATCH for g in gates):
                    everywhere.append(time.monotonic() - started)
                return bool(everywhere)

            await _until(arrived, 60, "the batch at both gates")
            await asyncio.sleep(1.0)  # the lanes keep going a little after
            streaming = False
            *admitted, _ = await asyncio.gather(*lanes)
            last = [g.journal.stats()["last_seq"] for g in gates]
            await _until(lambda: all(g.uplink.status()["last_acked_seq"] == s for g, s in zip(gates, last)), 30, "every event acknowledged")
            again = time.monotonic()
            async with crm.put("/api/v1/attendees", data=body, headers={"Content-Type": "application/json"}) as response:
                answer_again = await response.json()
            again = time.monotonic() - again
            checkins, cursor = [], 0
            while True:
                async with crm.get("/api/v1/checkins", params={"after": cursor, "limit": 10_000}) as response:
                    page = await response.json()
                if not page["checkins"]:
                    break
                checkins += page["checkins"]
                cursor = page["next"]
        sent = dict(zip(ids, rows))
        held = [sum(1 for tid in ids if (rec := g.cache.get(tid)) is not None and rec.name == sent[tid]["name"]
                    and rec.category == sent[tid]["category"] and rec.benefits == tuple(sent[tid]["benefits"].items()))
                for g in gates]
    finally:
        streaming = False  # a day cut short: its lanes stop before their gates close
        await asyncio.gather(*lanes, return_exceptions=True)
        for gate in gates:
            await gate.stop()
    return {"answer": answer, "answer_again": answer_again, "applied_s": round(applied, 3), "everywhere_s": round(everywhere[0], 3),
            "first_s": round(first[0] if first else everywhere[0], 3), "again_s": round(again, 3), "admitted": admitted,
            "last": last, "checkins": checkins, "held": held, "longest_ack_wait_s": round(_longest_ack_wait(acks), 3)}


def _longest_ack_wait(acks: list[list[tuple[float, int, int]]]) -> float:
    """The longest time a gate had events waiting and no new acknowledgement."""
    stalls = []
    for samples in acks:
        since = None
        for at, last_seq, acked in samples:
            if acked >= last_seq:
                since = None
            elif since is None or acked > since[1]:
                since = (at, acked)
            else:
                stalls.append(at - since[0])
    return max(stalls, default=0.0)


def format_end_to_end(r: dict[str, Any]) -> str:
    return (f"{r['engine']}: applied (HTTP answer) {r['applied_s']:.2f} s, first delta at a gate {r['first_s']:.2f} s, "
            f"at both gates {r['everywhere_s']:.2f} s (target {TARGET_S:.0f} s; load average {r['load_average']} on {os.cpu_count()} CPUs); "
            f"sent again: {r['again_s']:.2f} s ({r['answer_again']['unchanged']:,} unchanged); {sum(r['admitted'])} admissions meanwhile, "
            f"longest ack wait {r['longest_ack_wait_s']:.2f} s; every attendee at both gates: {r['held'] == [BATCH] * len(GATES)}, "
            f"events lost {r['lost']}, duplicated {r['duplicated']}")


# ------------------------------------------------------------ the section


def _engines() -> tuple[str, ...]:
    from gated.bench.store import _postgres_admin_url

    return ("sqlite", "postgres") if _postgres_admin_url() else ("sqlite",)


def bench_api_batch(rounds: int = 5, end_to_end_rounds: int = 1, engines: tuple[str, ...] | None = None) -> dict:
    """Median CPU and wall seconds of each stage over `rounds` fresh registries; then, on each engine
    (SQLite, and PostgreSQL when given), `end_to_end_rounds` runs of the batch to two connected gates."""
    import structlog

    from gated.bench.store import _database

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
        end_to_end = {}
        # the gates' plaintext-uplink warning would land in `gated bench --json`'s stdout: errors only
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        for engine in engines or _engines():
            results = []
            for _ in range(end_to_end_rounds):
                with tempfile.TemporaryDirectory(prefix="gated-bench-api-e2e-") as tmp, _database(engine, Path(tmp)) as db:
                    results.append(measure_end_to_end(db, Path(tmp)))
            end_to_end[engine] = _summary(results)
    finally:
        structlog.configure(**previous)
    stages = {s: {"cpu_s": round(statistics.median(r[s][0] for r in runs), 3),
                  "wall_s": round(statistics.median(r[s][1] for r in runs), 3)} for s in STAGES}
    to_gate = ("parse", "store", "publish", "gate")
    return {"tickets_before": BASE, "batch": BATCH, "body_bytes": len(body), "rounds": rounds, "stages": stages,
            "to_one_gate_cpu_s": round(sum(stages[s]["cpu_s"] for s in to_gate), 3),
            "deltas": runs[0]["deltas"][0], "largest_delta_bytes": runs[0]["deltas"][1],
            "load_average": [round(min(load), 1), round(max(load), 1)], "cpus": os.cpu_count(),
            "end_to_end": end_to_end}


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's figures (by the time to both gates), every run's time, and whether every run was complete."""
    ordered = sorted(results, key=lambda r: r["everywhere_s"])
    median = ordered[(len(ordered) - 1) // 2]
    keep = ("engine", "applied_s", "first_s", "everywhere_s", "again_s", "longest_ack_wait_s", "lost", "duplicated", "held",
            "answer_again", "load_average")
    return {**{k: median[k] for k in keep}, "admitted": sum(median["admitted"]), "runs": len(results),
            "everywhere_s_each": [r["everywhere_s"] for r in results], "complete": all(r["complete"] for r in results)}


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
    for engine, e in r.get("end_to_end", {}).items():
        each = ", ".join(f"{t:.2f}" for t in e["everywhere_s_each"])
        lines.append(f"  end to end (registry process, PUT over HTTP, two gates over gRPC), median of {e['runs']} ({each} s): "
                     + format_end_to_end({**e, "admitted": [e["admitted"]]}))
    return "\n".join(lines)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gated.bench.api_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--end-to-end-rounds", type=int, default=3, help="runs of the batch to two connected gates, per engine")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench_api_batch(args.rounds, args.end_to_end_rounds)
    print(json.dumps(result, indent=2) if args.json else format_api_batch(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
