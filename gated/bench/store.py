"""The registry's store on each engine, same run, same data: SQLite (a temp file) and PostgreSQL.

PostgreSQL is measured when `GATED_BENCH_POSTGRES` (or `GATED_TEST_POSTGRES`) names a server
whose role may create databases: a fresh database per measurement, dropped afterwards.
Tickets carry 10-digit registration numbers (`layout_ids("regno10")`, e.g. 5205320758).

- import: `RegistryStore.put_tickets` of 100,000 tickets, one transaction (what
  `gated registry import` does after parsing the CSV);
- backlog replay: `RegistryStore.store_events` of 100,000 events from one gate's
  journal epoch in batches of 2,000, in process (no gRPC): decisions and, one in
  four, a passage in or out that moves the ticket's usage;
- group commit: `RegistryStore.store_event_batches` of a live venue's group, 25
  gates' batches (each gate's next decision and its passage in, each gate on its own
  random 64-bit journal epoch, tickets unlimited so every passage moves usage), the
  median and p90 ms a group over 300 groups (the first 20 left out: prepared statements
  and caches warming), with the version bump logged to the instances' change log on
  PostgreSQL as a registry instance does;
- cold start: a registry process's `RegistryServer.start()` until its first
  snapshot is served, at 1,000,000 tickets: the very first start (mirror built from
  every row) and a restart (from the snapshot the registry keeps in the database);
  and the whole restart as a venue sees it, three times: a new `gated registry
  serve` process spawned until a gate's client holds the last byte of its snapshot;
  then a revocation while it runs, and how long until a gate asking gets a snapshot
  that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gated import eventloop
from gated.bench.common import layout_ids, layout_records

POSTGRES_ENV = ("GATED_BENCH_POSTGRES", "GATED_TEST_POSTGRES")


def _postgres_admin_url() -> str | None:
    return next((os.environ[name] for name in POSTGRES_ENV if os.environ.get(name)), None)


@contextlib.contextmanager
def _database(engine: str, tmp: Path) -> Iterator[Path | str]:
    if engine == "sqlite":
        path = tmp / f"registry-{secrets.token_hex(4)}.db"
        yield path
        return
    import psycopg

    admin = _postgres_admin_url()
    name = f"gated_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tickets(n: int):
    ids = layout_ids("regno10", n)
    return ids, [(rec, f"+49 170 {i % 10_000_000:07d}") for i, rec in enumerate(layout_records(ids))]


def measure_import(engine: str, tmp: Path, n: int) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    _ids, tickets = _tickets(n)
    with _database(engine, tmp) as db, RegistryStore(db) as store:
        started = time.perf_counter()
        store.put_tickets(tickets, record_changes=True)
        took = time.perf_counter() - started
        assert store.ticket_count() == n
    return {"tickets": n, "seconds": round(took, 3), "tickets_per_s": round(n / took)}


def measure_replay(engine: str, tmp: Path, n: int, batch: int = 2000, tickets: int = 10_000) -> dict[str, Any]:
    from gated.registry.store import IncomingEvent, RegistryStore

    ids, records = _tickets(tickets)
    now = time.time()
    events = []
    for seq in range(1, n + 1):
        tid = ids[seq % len(ids)]
        if seq % 4 == 0:
            payload = {"ticket_id": tid, "zone": "hall-a", "direction": "in" if seq % 8 == 0 else "out"}
            events.append(IncomingEvent(f"gate-a:{seq}", seq, now + seq * 0.01, "passage", "in-1", tid, "ok", json.dumps(payload)))
        else:
            payload = {"code": "static", "lane_seq": seq}
            events.append(IncomingEvent(f"gate-a:{seq}", seq, now + seq * 0.01, "decision", "in-1", tid, "ok", json.dumps(payload)))
    with _database(engine, tmp) as db, RegistryStore(db) as store:
        store.put_tickets(records, record_changes=False)
        started = time.perf_counter()
        for i in range(0, n, batch):
            store.store_events("gate-a", events[i:i + batch], time.time(), epoch=77)
        took = time.perf_counter() - started
        again = time.perf_counter()
        resent = store.store_events("gate-a", events[:batch], time.time(), epoch=77)  # a resend after a lost ack
        resend_s = time.perf_counter() - again
        stored = store.event_count("gate-a")
    return {"events": n, "batch": batch, "passages": n // 4, "seconds": round(took, 3), "events_per_s": round(n / took),
            "stored_once": stored == n and resent.new_events == 0, "resent_batch_ms": round(resend_s * 1000, 1)}


def measure_group_commit(engine: str, tmp: Path, groups: int = 300, gates: int = 25, tickets: int = 5000) -> dict[str, Any]:
    import random
    import statistics

    from gated.registry.store import EventBatch, IncomingEvent, RegistryStore

    ids, records = _tickets(tickets)
    rng = random.Random(25)
    epochs = {f"gate-{n:03d}": rng.getrandbits(64) or 1 for n in range(500)}
    seqs = dict.fromkeys(epochs, 0)
    took = []
    with _database(engine, tmp) as db, RegistryStore(db) as store:
        store.put_tickets([(dataclasses.replace(rec, max_entries=0), phone) for rec, phone in records], record_changes=False)
        if engine == "postgres":
            from gated.registry.changelog import SCHEMA, ChangeLog

            store.conn.execute(SCHEMA)
            store.change_log = ChangeLog("bench")
        for _ in range(groups):
            batches = []
            for gate in rng.sample(sorted(epochs), gates):
                seq, tid = seqs[gate], rng.choice(ids)
                passage = {"ticket_id": tid, "zone": "hall-a", "direction": "in", "decision_seq": seq + 1, "outcome": "passed"}
                batches.append(EventBatch(gate, epochs[gate], [
                    IncomingEvent(f"{gate}:{seq + 1}", seq + 1, 1.0, "decision", "in-1", tid, "ok", '{"category":"guest"}',
                                  {"category": "guest"}),
                    IncomingEvent(f"{gate}:{seq + 2}", seq + 2, 1.1, "passage", "in-1", tid, "ok", json.dumps(passage), passage)]))
                seqs[gate] = seq + 2
            started = time.perf_counter()
            results, delta = store.store_event_batches(batches, time.time())
            took.append(time.perf_counter() - started)
            assert delta is not None and len(delta.ops) == gates and all(r.new_events == 2 for r in results)
    took = sorted(took[20:])
    return {"groups": groups, "gates": gates, "median_ms": round(statistics.median(took) * 1e3, 2),
            "p90_ms": round(took[int(len(took) * 0.9)] * 1e3, 2)}


def measure_cold_start(engine: str, tmp: Path, n: int) -> dict[str, Any]:
    """The first start (mirror built from every row, then kept), a restart (from the kept
    snapshot), and a snapshot asked for after a change (a revocation) while running."""
    from gated.registry.server import RegistryServer
    from gated.registry.store import RegistryStore

    ids, tickets = _tickets(n)
    with _database(engine, tmp) as db:
        with RegistryStore(db) as store:
            store.put_tickets(tickets, record_changes=False)

        async def start(change: bool) -> tuple[float, float, int, float | None]:
            started = time.perf_counter()
            server = RegistryServer(db, "127.0.0.1:0")
            await server.start()
            listening = time.perf_counter() - started
            version, data = await server.service.snapshot()
            first = time.perf_counter() - started
            after_change = None
            if change:
                await asyncio.to_thread(server.store.revoke, ids[n // 2])
                changed = time.perf_counter()
                server.service.wake()
                while (await server.service.snapshot())[0] == version:
                    await asyncio.sleep(0.005)
                after_change = time.perf_counter() - changed
            await server.stop()  # keeps the snapshot (the first start kept it already)
            return listening, first, len(data), after_change

        listening, first, size, _ = eventloop.run(start(False))
        re_listening, re_first, _, after_change = eventloop.run(start(True))
        process = sorted(_process_restart(db, tmp) for _ in range(3))
    return {"tickets": n, "first_start_s": round(listening, 3), "first_start_snapshot_s": round(first, 3),
            "start_s": round(re_listening, 3), "first_snapshot_s": round(re_first, 3), "snapshot_bytes": size,
            "snapshot_after_change_s": round(after_change, 3),
            "process_first_snapshot_s": round(process[1], 3), "process_first_snapshot_max_s": round(process[-1], 3)}


def _process_restart(db: Path | str, tmp: Path) -> float:
    """Seconds from spawning `gated registry serve` (a new Python process: imports, the kept
    snapshot read, gRPC up) to the last byte of its snapshot at a gate's raw client."""
    import grpc

    from gated.bench.rpc import registry_serve
    from gated.rpc.v1 import registry_pb2 as pb
    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    async def snapshot(port: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = pb_grpc.RegistryServiceStub(channel).WatchEntitlements(
                pb.WatchEntitlementsRequest(have_version=0), metadata=(("gated-gate-id", "bench"),))
            async for update in watch:
                chunk = update.snapshot
                if update.WhichOneof("update") == "snapshot" and chunk.offset + len(chunk.data) == chunk.total_size:
                    watch.cancel()
                    return

    started = time.perf_counter()
    # Polled every 2 ms: the wait for "listening" is inside the figure.
    with registry_serve(db, ["--plaintext", "--http", "off"], tmp / f"serve-{secrets.token_hex(4)}.log",
                        ready_timeout_s=120, poll_s=0.002) as served:
        eventloop.run(snapshot(served.port))
        return time.perf_counter() - started


def bench_store(quick: bool) -> dict[str, Any]:
    engines = ["sqlite"] + (["postgres"] if _postgres_admin_url() else [])
    size, cold = (10_000, 100_000) if quick else (100_000, 1_000_000)
    out: dict[str, Any] = {"ids": "10-digit registration numbers", "engines": {}}
    if "postgres" not in engines:
        out["postgres_skipped"] = f"set {POSTGRES_ENV[0]}=postgresql://... (a role that may create databases)"
    with tempfile.TemporaryDirectory(prefix="gated-store-") as tmp:
        for engine in engines:
            out["engines"][engine] = {
                "import": measure_import(engine, Path(tmp), size),
                "replay": measure_replay(engine, Path(tmp), size),
                "group_commit": measure_group_commit(engine, Path(tmp), groups=100 if quick else 300),
                "cold_start": measure_cold_start(engine, Path(tmp), cold),
            }
    return out


def format_store(r: dict) -> str:
    lines = [f"registry store, each engine ({r['ids']})            import t/s    replay ev/s   cold start → 1st snapshot"]
    for engine, m in r["engines"].items():
        i, p, c = m["import"], m["replay"], m["cold_start"]
        lines.append(f"  {engine:<10} import {i['tickets']:,} in {i['seconds']:>6} s {i['tickets_per_s']:>9,}   "
                     f"{p['events_per_s']:>9,} (once: {p['stored_once']})   {c['first_snapshot_s']} s at {c['tickets']:,} "
                     f"(first start ever {c['first_start_snapshot_s']} s; after a change {c['snapshot_after_change_s']} s)")
        g = m["group_commit"]
        lines.append(f"  {engine:<10} group commit of {g['gates']} gates' batches (a decision and a passage each): "
                     f"median {g['median_ms']} ms, p90 {g['p90_ms']} ms a group")
        if "process_first_snapshot_s" in c:
            lines.append(f"  {engine:<10} a new `registry serve` process to its whole snapshot at a gate: median of 3 "
                         f"{c['process_first_snapshot_s']} s, max {c['process_first_snapshot_max_s']} s")
    if "postgres_skipped" in r:
        lines.append(f"  postgres: skipped: {r['postgres_skipped']}")
    return "\n".join(lines)
