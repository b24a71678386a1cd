"""`gated bench fleet`: many gates on one registry, over the real wire protocol.

N simulated gates, spread over a few load processes, each with its own gate id
(the ``gated-gate-id`` metadata: plaintext gRPC on loopback), its own random
64-bit journal epoch, its own `StreamEvents` stream and `WatchEntitlements`
watch (asking for heartbeats every 60 s, as a gate with the default
`stale_after_s` does). Each scan is what a turnstile journals for an admission: a decision and
a passage "in" (one batch), on one of the gate's own tickets (ids in blocks,
1_000_000*k + n: gate k's tickets, unlimited entries), at `scans_per_s` per gate
with a random phase. The registry is `gated registry serve` in its own process,
on an SQLite file or a fresh PostgreSQL database (`GATED_BENCH_POSTGRES` or
`GATED_TEST_POSTGRES`); with `instances` K above 1, K such processes on one
PostgreSQL database (following one change log), gate k on instance k mod K.

What it reports:

- events_per_s: events stored (counted in the database after the drain) over
  the sending time;
- ack latency: a batch written → its ack read (p50, p99);
- fan-out latency: a passage's batch written at gate i → the first delta at
  every other gate whose version holds it (the ack names that version) —
  p50/p99 over (passage, gate) pairs, and p99 of the time until *all* gates
  have it;
- updates_per_gate_per_s: the entitlement updates a gate received a second while
  the fleet scanned (median over gates): the rounds of fan-out, each one gRPC
  write per gate;
- cpu: each registry process's CPU over the sending time (percent of one CPU);
- per instance (K above 1): its gates, CPU, events stored from its gates, their
  ack latency, and the fan-out to its gates; and the fan-out across instances
  (a passage written at a gate on one instance, received at a gate on another);
- lost / duplicated, from the database after the drain: events acknowledged
  and not stored, or stored beyond what was sent; per ticket, entries counted
  short of (or beyond) the passages stored. `unacked`: sent and still not
  acknowledged 60 s after the last scan (an overloaded registry; a real gate
  sends them again from its journal).

`--sweep` runs increasing fleet sizes and reports the knee: the largest N whose
fan-out p99 stays at most 100 ms with nothing lost, doubled or left unacknowledged.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
import secrets
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from gated import eventloop

KNEE_FANOUT_P99_MS = 100.0
TICKETS_PER_GATE = 50
GATES_PER_CHANNEL = 25
ZONE = "hall-a"
_READY_TIMEOUT_S = 120.0
_DRAIN_TIMEOUT_S = 60.0
#: The heartbeats each gate asks for, as the reference gate does with the default
#: [uplink] stale_after_s (300 s: a third of it, at most 60 s).
HEARTBEAT_EVERY_S = 60.0
#: Fan-out is computed over at most this many passages (spread over the run).
_FANOUT_SAMPLES = 3000


def _percentile(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def ticket_of(gate: int, n: int) -> int:
    return 1_000_000 * (gate + 1) + n


# ------------------------------------------------------------ registry


# ----------------------------------------------------------- load side


def instance_of(gate: int, instances: int) -> int:
    """The registry instance gate `gate` talks to: round-robin."""
    return gate % instances


def _load_process(ports: list[int], gates: list[int], version: int, scans_per_s: float, seconds: float,
                  start_at: float, seed: int) -> dict[str, Any]:
    """One load process: its gates' streams and watches, each gate on instance `instance_of(gate)`
    (runs in a child process)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    return eventloop.run(_run_gates(ports, gates, version, scans_per_s, seconds, start_at, seed))


async def _run_gates(ports: list[int], gates: list[int], version: int, scans_per_s: float, seconds: float,
                     start_at: float, seed: int) -> dict[str, Any]:
    import grpc

    from gated.rpc.uplink import channel_options
    from gated.rpc.v1 import registry_pb2 as pb
    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    rng = random.Random(seed)
    channels, stub_of = [], {}
    for instance, port in enumerate(ports):  # GATES_PER_CHANNEL gates share a channel to their instance
        on_it = [g for g in gates if instance_of(g, len(ports)) == instance]
        for first in range(0, len(on_it), GATES_PER_CHANNEL):
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()))
            stub = pb_grpc.RegistryServiceStub(channels[-1])
            stub_of.update((g, stub) for g in on_it[first:first + GATES_PER_CHANNEL])
    out: dict[str, Any] = {"gates": {}, "errors": []}
    watching = 0
    all_watching = asyncio.Event()

    async def watch(gate: int, stub, seen: list[tuple[int, float]], stop: asyncio.Event) -> None:
        nonlocal watching
        call = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=version, current_every_s=HEARTBEAT_EVERY_S),
                                      metadata=(("gated-gate-id", f"fleet-{gate}"),))
        watching += 1
        if watching == len(gates):
            all_watching.set()
        try:
            while not stop.is_set():
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    return
                if msg.HasField("delta"):
                    seen.append((msg.delta.version, time.time()))
                elif msg.HasField("snapshot"):
                    seen.append((msg.snapshot.version, time.time()))
                # (a heartbeat, current_version, changes nothing: not a round of fan-out)
        except grpc.aio.AioRpcError as exc:
            if not stop.is_set():
                out["errors"].append(f"gate {gate} watch: {exc.code().name}")
        finally:
            call.cancel()

    async def send(gate: int, stub, record: dict[str, Any]) -> None:
        epoch = secrets.randbits(63) | 1
        gate_id = f"fleet-{gate}"
        call = stub.StreamEvents(metadata=(("gated-gate-id", gate_id),))
        sent: dict[int, float] = {}  # last seq of a batch -> when it was written
        passages = record["passages"]  # (written at, seq) ... versions filled from the acks
        acks = record["ack_s"]
        seq = 0
        done_writing = asyncio.Event()

        async def read() -> None:
            while True:
                ack = await call.read()
                if ack is grpc.aio.EOF:
                    return
                now = time.time()
                written = sent.pop(ack.up_to_seq, None)
                if written is not None:
                    acks.append(now - written)
                    record["versions"][ack.up_to_seq] = ack.version
                record["acked"] = ack.up_to_seq
                if done_writing.is_set() and not sent:
                    await call.done_writing()

        reader = asyncio.create_task(read())
        phase = rng.random() / scans_per_s
        k = 0
        try:
            end = start_at + seconds
            while True:
                due = start_at + phase + k / scans_per_s
                if due >= end:
                    break
                await asyncio.sleep(max(0.0, due - time.time()))
                ticket = ticket_of(gate, k % TICKETS_PER_GATE + 1)
                after = seq
                at = time.time()
                decision = pb.Event(event_id=f"{gate_id}:{seq + 1}", seq=seq + 1, at=at, kind=pb.EVENT_KIND_DECISION,
                                    lane="in-1", ticket_id=ticket, reason="ok",
                                    decision=pb.Decision(code_kind="static", category="guest", zone=ZONE, direction="in"))
                passage = pb.Event(event_id=f"{gate_id}:{seq + 2}", seq=seq + 2, at=at, kind=pb.EVENT_KIND_PASSAGE,
                                   lane="in-1", ticket_id=ticket, reason="ok",
                                   passage=pb.Passage(ticket_id=ticket, zone=ZONE, direction="in"))
                seq += 2
                sent[seq] = time.time()
                passages.append((sent[seq], seq))
                await call.write(pb.StreamEventsRequest(after_seq=after, journal_epoch=epoch, events=[decision, passage]))
                record["sent"] = seq
                record["ins"][ticket] = record["ins"].get(ticket, 0) + 1
                k += 1
            done_writing.set()
            if not sent:
                await call.done_writing()
            await asyncio.wait_for(reader, _DRAIN_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            out["errors"].append(f"gate {gate} events: {exc.code().name}")
        except TimeoutError:
            out["errors"].append(f"gate {gate} events: not all acknowledged {_DRAIN_TIMEOUT_S:.0f} s after the last scan")
        finally:
            reader.cancel()
            call.cancel()

    stop = asyncio.Event()
    records = {g: {"passages": [], "ack_s": [], "versions": {}, "seen": [], "sent": 0, "acked": 0, "ins": {}} for g in gates}
    watchers = [asyncio.create_task(watch(g, stub_of[g], records[g]["seen"], stop)) for g in gates]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_watching.wait(), 30)
    await asyncio.gather(*(send(g, stub_of[g], records[g]) for g in gates))
    await asyncio.sleep(1.0)  # the last deltas reach the watches
    stop.set()
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    for g, r in records.items():
        out["gates"][g] = {
            "sent": r["sent"], "acked": r["acked"], "ack_s": r["ack_s"], "ins": r["ins"],
            "passages": [(t, r["versions"].get(s)) for t, s in r["passages"]],
            "seen": r["seen"],
        }
    return out


# ------------------------------------------------------------ the run


def _database(store: str, tmp: Path):
    from gated.bench.store import _database as bench_database
    from gated.bench.store import _postgres_admin_url

    if store == "postgres" and _postgres_admin_url() is None:
        raise RuntimeError("--store postgres needs GATED_BENCH_POSTGRES=postgresql://... (a role that may create databases)")
    return bench_database("sqlite" if store == "sqlite" else "postgres", tmp)


def run_fleet(gates: int, scans_per_s: float, seconds: float = 10.0, *, store: str = "sqlite",
              processes: int | None = None, instances: int = 1) -> dict[str, Any]:
    """One fleet run; the JSON object `gated bench fleet --json` prints. `instances` registry processes
    serve one database (PostgreSQL when more than one), the gates spread round-robin over them."""
    from gated.bench.rpc import _cpu_s, registry_serve
    from gated.registry.store import RegistryStore
    from gated.validation.cache import TicketRecord

    if instances < 1 or (instances > 1 and store != "postgres"):
        raise ValueError("several registry instances share one PostgreSQL database: --instances above 1 needs --store postgres")
    processes = processes or max(1, min(4, math.ceil(gates / 100)))
    with tempfile.TemporaryDirectory(prefix="gated-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        with _database(store, tmp) as db:
            with RegistryStore(db) as s:
                s.put_tickets([(TicketRecord(ticket_id=ticket_of(g, n), category="guest", zones=(ZONE,)), "")
                               for g in range(gates) for n in range(1, TICKETS_PER_GATE + 1)], record_changes=False)
                version = s.version
            with contextlib.ExitStack() as running:
                served = [running.enter_context(registry_serve(db, ("--plaintext", "--http", "off"),
                                                               tmp / f"registry-{i}.log", _READY_TIMEOUT_S))
                          for i in range(instances)]
                ports = [r.port for r in served]
                slices = [list(range(gates))[i::processes] for i in range(processes)]
                start_at = time.time() + 2.0 + gates / 200  # every watch open first
                with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
                    futures = [pool.submit(_load_process, ports, sl, version, scans_per_s, seconds, start_at, i)
                               for i, sl in enumerate(slices) if sl]
                    time.sleep(max(0.0, start_at - time.time()))
                    cpu_before, wall_before = [_cpu_s(r.pid) for r in served], time.monotonic()
                    time.sleep(seconds)
                    wall = time.monotonic() - wall_before
                    cpu = [(_cpu_s(r.pid) - before) / wall for r, before in zip(served, cpu_before)]
                    results = [f.result() for f in futures]
            with RegistryStore(db, create=False) as s:
                stored = dict(s.conn.execute("SELECT gate_id, count(*) FROM events GROUP BY gate_id").fetchall())
                passages = dict(s.conn.execute("SELECT ticket_id, count(*) FROM events WHERE kind = 'passage' GROUP BY ticket_id").fetchall())
                used = {}
                for g in range(gates):
                    lo, hi = ticket_of(g, 1), ticket_of(g, TICKETS_PER_GATE)
                    used.update(s.conn.execute("SELECT ticket_id, entries_used FROM tickets WHERE ticket_id BETWEEN ? AND ?",
                                               (lo, hi)).fetchall())
    return _report(gates, scans_per_s, seconds, store, processes, results, stored, passages, used, cpu)


def _report(gates, scans_per_s, seconds, store, processes, results, stored, passages, used, cpu) -> dict[str, Any]:
    per_gate = {g: r for res in results for g, r in res["gates"].items()}
    errors = [e for res in results for e in res["errors"]]
    sent = sum(r["sent"] for r in per_gate.values())
    # lost: acknowledged and not in the database, or a stored passage the ticket's count misses;
    # duplicated: stored beyond what was sent, or counted beyond the passages stored;
    # unacked: sent, not acknowledged by the end of the drain (a gate would send them again).
    lost = duplicated = unacked = 0
    for g, r in per_gate.items():
        held = stored.get(f"fleet-{g}", 0)
        lost += max(0, r["acked"] - held)
        duplicated += max(0, held - r["sent"])
        unacked += r["sent"] - r["acked"]
        for ticket in r["ins"]:
            counted, stored_in = used.get(ticket, 0), passages.get(ticket, 0)
            lost += max(0, stored_in - counted)
            duplicated += max(0, counted - stored_in)
    acks = [a for r in per_gate.values() for a in r["ack_s"]]
    # Fan-out: each sampled passage, at every other gate, the first delta holding its version
    # (one version sequence over every instance: the change log's).
    instances = len(cpu)
    seen = {g: ([v for v, _ in r["seen"]], [t for _, t in r["seen"]]) for g, r in per_gate.items()}
    passages = [(g, t, v) for g, r in per_gate.items() for t, v in r["passages"]]
    rng = random.Random(7)
    sample = passages if len(passages) <= _FANOUT_SAMPLES else rng.sample(passages, _FANOUT_SAMPLES)
    pairs, everywhere, missing = [], [], 0
    to_instance: list[list[float]] = [[] for _ in range(instances)]  # by the receiving gate's instance
    across: list[float] = []  # written at a gate on one instance, received at a gate on another
    for g, written, version in sample:
        if version is None:
            missing += 1
            continue
        worst = 0.0
        for other, (versions, times) in seen.items():
            if other == g:
                continue
            i = bisect.bisect_left(versions, version)
            if i == len(versions):
                missing += 1
                worst = math.inf
                continue
            delay = times[i] - written
            pairs.append(delay)
            to_instance[instance_of(other, instances)].append(delay)
            if instance_of(other, instances) != instance_of(g, instances):
                across.append(delay)
            worst = max(worst, delay)
        everywhere.append(worst)
    # The rounds of fan-out: how many entitlement updates a gate received a second while the
    # fleet scanned (each a delta, or several merged for a gate that was behind). Every
    # update is one gRPC write per gate: what the registry's loop spends most of its time on.
    written = [t for _g, t, _v in passages]
    window = (min(written), max(written)) if len(written) > 1 else None
    rounds = ([sum(window[0] <= t <= window[1] for t in times) / (window[1] - window[0]) for _v, times in seen.values()]
              if window is not None and window[1] > window[0] else [])
    per_instance = []
    for i in range(instances):
        on_it = [g for g in per_gate if instance_of(g, instances) == i]
        its_acks = [a for g in on_it for a in per_gate[g]["ack_s"]]
        per_instance.append({
            "gates": len(on_it), "cpu_percent": round(cpu[i] * 100, 1),
            "events_stored": sum(stored.get(f"fleet-{g}", 0) for g in on_it),
            "ack_p50_ms": _ms(_percentile(its_acks, 50)), "ack_p99_ms": _ms(_percentile(its_acks, 99)),
            "fanout_to_its_gates_p50_ms": _ms(_percentile(to_instance[i], 50)),
            "fanout_to_its_gates_p99_ms": _ms(_percentile(to_instance[i], 99)),
        })
    return {
        "store": store, "gates": gates, "instances": instances, "scans_per_s": scans_per_s, "seconds": seconds,
        "load_processes": processes,
        "data": f"{TICKETS_PER_GATE} tickets per gate, ids 1_000_000*k+n; each scan a decision and a passage in (one batch)"
                + (f"; gate k on instance k mod {instances}" if instances > 1 else ""),
        "events_sent": sent,
        "events_per_s": round(sum(stored.values()) / seconds, 1),
        "ack_p50_ms": _ms(_percentile(acks, 50)), "ack_p99_ms": _ms(_percentile(acks, 99)),
        "fanout_p50_ms": _ms(_percentile(pairs, 50)), "fanout_p99_ms": _ms(_percentile(pairs, 99)),
        "fanout_all_gates_p99_ms": _ms(_percentile(everywhere, 99)) if everywhere and math.isfinite(max(everywhere)) else None,
        "fanout_across_instances_p50_ms": _ms(_percentile(across, 50)),
        "fanout_across_instances_p99_ms": _ms(_percentile(across, 99)),
        "fanout_samples": len(sample), "fanout_pairs": len(pairs), "fanout_missed": missing,
        "updates_per_gate_per_s": round(_percentile(rounds, 50), 1) if rounds else None,
        "registry_cpu_percent": [round(c * 100, 1) for c in cpu],
        "per_instance": per_instance,
        "lost": lost, "duplicated": duplicated, "unacked": unacked, "errors": errors[:10],
    }


def sweep(scans_per_s: float, seconds: float, store: str, sizes: list[int], instances: int = 1) -> dict[str, Any]:
    runs, knee = [], None
    for n in sizes:
        r = run_fleet(n, scans_per_s, seconds, store=store, instances=instances)
        runs.append(r)
        p99 = r["fanout_p99_ms"]
        if p99 is not None and p99 <= KNEE_FANOUT_P99_MS and r["lost"] == r["duplicated"] == r["unacked"] == 0 and not r["errors"]:
            knee = n
        else:
            break
    return {"store": store, "instances": instances, "scans_per_s": scans_per_s, "knee_gates": knee,
            "criterion": "fan-out p99 to all gates <= 100 ms, nothing lost or doubled", "runs": runs}


def format_fleet(r: dict[str, Any]) -> str:
    if "runs" in r:
        lines = [f"fleet sweep on {r['store']}, {_instances(r['instances'])}, {r['scans_per_s']} scans/s per gate: "
                 f"knee at {r['knee_gates']} gates ({r['criterion']})"]
        lines += ["  " + format_fleet(run) for run in r["runs"]]
        return "\n".join(lines)
    line = (f"{r['gates']} gates x {r['scans_per_s']} scans/s on {r['store']}, {_instances(r['instances'])}, for {r['seconds']} s: "
            f"{r['events_per_s']:,} events/s stored; ack p50 {r['ack_p50_ms']} ms p99 {r['ack_p99_ms']} ms; "
            f"fan-out p50 {r['fanout_p50_ms']} ms p99 {r['fanout_p99_ms']} ms (all gates p99 {r['fanout_all_gates_p99_ms']} ms"
            + (f"; across instances p50 {r['fanout_across_instances_p50_ms']} ms p99 {r['fanout_across_instances_p99_ms']} ms"
               if r["instances"] > 1 else "")
            + f"); {r['updates_per_gate_per_s']} updates a second to each gate (median)"
            + f"; registry CPU {' + '.join(f'{c}%' for c in r['registry_cpu_percent'])}; "
            f"lost {r['lost']}, duplicated {r['duplicated']}, unacked {r['unacked']}"
            + (f"; errors: {'; '.join(r['errors'])}" if r["errors"] else ""))
    if r["instances"] > 1:
        line += "".join(f"\n    instance {i}: {m['gates']} gates, CPU {m['cpu_percent']}%, {m['events_stored']:,} events stored, "
                        f"ack p50 {m['ack_p50_ms']} ms p99 {m['ack_p99_ms']} ms, fan-out to its gates p50 "
                        f"{m['fanout_to_its_gates_p50_ms']} ms p99 {m['fanout_to_its_gates_p99_ms']} ms"
                        for i, m in enumerate(r["per_instance"]))
    return line


def _instances(n: int) -> str:
    return "1 registry instance" if n == 1 else f"{n} registry instances"
