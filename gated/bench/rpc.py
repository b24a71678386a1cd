"""The uplink's figures for `gated bench`: replay, propagation, snapshot.

Each function sets up a scratch venue in a temporary directory (a CA and
certificates, the reference registry in its own process, listening on
loopback with mutual TLS, and real gates in this process) and returns a
dict of plain numbers:

- `measure_backlog_replay(n)`: n records journaled while offline, then
  delivered; events per second from the uplink's start to the last ack, and
  a check that the registry holds each event exactly once.
- `measure_propagation(samples)`: gate A admits a ticket (decide, commit,
  journal, wake); the time until gate B has applied the registry's delta.
  Median and p99 seconds.
- `measure_snapshot(tickets)`: a registry holding `tickets` tickets streams a
  snapshot to a gate that has none; transfer and apply seconds.
- `measure_import(tickets)`: `gated registry import` of `tickets` new
  attendees (a CSV, in its own process, on the serving registry's file)
  while a gate watches: seconds until the gate holds them all; GetTime
  round trips from a third process during the import (median, p99, max);
  and, from a raw client with gRPC's default 4 MiB receive limit, the
  number and the largest size of the update messages, and that it reached
  the registry's final version.

The pieces the other measurements share live here too: `registry_serve`
(`gated registry serve` in its own process, given its arguments, until it
listens), `BenchGate` (a gate without devices, its uplink running) and
`admit_and_wait` (gate A admits, the time until gate B holds it; the
instances bench runs it across two registry instances).

Run standalone: `python -m gated.bench.rpc [--quick]` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gated import eventloop
from gated.clock import GateClock
from gated.config import UplinkSection
from gated.journal import Journal
from gated.rpc.certs import VenueCerts, make_venue_certs
from gated.rpc.convert import SnapshotAssembler, journal_wire
from gated.rpc.uplink import Uplink, channel_options
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import EntitlementCache, KeyRing, Lane, Policy, TicketRecord, Validator
from gated.validation.token import mint_static

__all__ = ["BenchGate", "Served", "admit_and_wait", "measure_backlog_replay", "measure_import", "measure_propagation",
           "measure_snapshot", "registry_serve", "replay_to_last_ack", "serving"]

_KEY = bytes(range(32))
_READY_TIMEOUT_S = 600.0


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Served:
    """A `gated registry serve` process that is listening."""

    port: int
    pid: int
    pages: str | None  # the staff pages' and the API's URL (None with `--http off`)


@contextlib.contextmanager
def registry_serve(db: Path | str, serve_args: Sequence[str], log_path: Path,
                   ready_timeout_s: float = _READY_TIMEOUT_S, poll_s: float = 0.05) -> Iterator[Served]:
    """`gated registry serve --db DB --listen 127.0.0.1:0 SERVE_ARGS...` in its own process, its output in
    `log_path`; yields once it has started: listening, and serving its pages unless ``--http off``
    (they start by default); stopped with SIGTERM on leaving (SIGKILL after 30 s).

    Why wait for the pages: the registry listens first, then imports and starts its pages on the
    same loop, 25-30 ms and 20-40 ms of its CPU here. A measurement begun at "listening" timed
    that start too (a 100,000-event replay's registry takes about 450 ms of CPU in all), where
    a gate replaying its backlog to the registry of a running show meets none of it."""
    serve_args = list(serve_args)
    wants_pages = "--http" not in serve_args or serve_args[serve_args.index("--http") + 1] != "off"
    with serving([sys.executable, "-m", "gated", "registry", "serve", "--db", str(db), "--listen", "127.0.0.1:0",
                  *serve_args], log_path, wants_pages=wants_pages, ready_timeout_s=ready_timeout_s, poll_s=poll_s) as served:
        yield served


@contextlib.contextmanager
def serving(argv: Sequence[str], log_path: Path, *, wants_pages: bool = False,
            ready_timeout_s: float = _READY_TIMEOUT_S, poll_s: float = 0.05) -> Iterator[Served]:
    """`argv` in its own process, its output in `log_path`, until it prints `registry listening on
    127.0.0.1:PORT` (and `registry pages at URL` when `wants_pages`); stopped as `registry_serve` says."""
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            text = log_path.read_text()
            listening = re.search(r"^registry listening on 127\.0\.0\.1:(\d+)", text, re.MULTILINE)
            pages = re.search(r"^registry pages at (http\S+/)", text, re.MULTILINE)
            if listening and (pages or not wants_pages):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the registry did not start: {text[-2000:]}")
            time.sleep(poll_s)
        yield Served(int(listening.group(1)), proc.pid, pages.group(1) if pages else None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _registry_process(db: Path, certs: VenueCerts, started: list | None = None) -> Iterator[int]:
    """The registry of these measurements, with mTLS (the venue's certificates); yields the port
    (and appends the `Served`, its pid with it, to `started`)."""
    with registry_serve(db, ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.registry.cert),
                             "--tls-key", str(certs.registry.key)], db.with_suffix(".log")) as served:
        if started is not None:
            started.append(served)
        yield served.port


def _settings(port: int, certs: VenueCerts, gate_id: str) -> UplinkSection:
    gate = certs.gates[gate_id]
    return UplinkSection(f"127.0.0.1:{port}", False, certs.ca, gate.cert, gate.key, 2.0)


def _venue_tickets(n: int) -> list[tuple[TicketRecord, str]]:
    return [(TicketRecord(ticket_id=i, category="guest", zones=("hall-a",)), "") for i in range(1, n + 1)]


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------ replay


def measure_backlog_replay(n: int = 100_000, batch_size: int = 2000, shape: str = "static") -> dict[str, Any]:
    """`shape`: the records journaled (gated/bench/replay.py): "static", decisions with reason ok
    and a static code; "day", a day at a door (passages by decision_seq, not_passed,
    denials, redemptions, tickets in the four id shapes, held by the registry)."""
    from gated.bench.replay import fill_journal, venue_tickets
    from gated.registry.store import RegistryStore

    with tempfile.TemporaryDirectory(prefix="gated-replay-") as tmp:
        tmp = Path(tmp)
        certs = make_venue_certs(tmp / "certs", ["gate-a"])
        journal = Journal(tmp / "journal.db", "gate-a", checkpoint_every_s=None)
        # The backlog of a gate whose uplink was running (its registry unreachable): each record
        # written with what is sent for it, as `Uplink` has the journal keep (gated/journal.py).
        journal.keep_wire(journal_wire("gate-a"))
        tickets = venue_tickets() if shape == "day" else None
        if tickets is not None:
            with RegistryStore(tmp / "registry.db") as store:
                store.put_tickets(((t, "") for t in tickets), record_changes=False)
        last_seq = fill_journal(journal, n, shape, tickets)
        registry: list[subprocess.Popen] = []
        with _registry_process(tmp / "registry.db", certs, registry) as port:
            uplink = Uplink("gate-a", journal, EntitlementCache(), KeyRing(), GateClock(),
                            _settings(port, certs, "gate-a"), batch_size=batch_size)
            elapsed, gate_cpu, registry_cpu = eventloop.run(replay_to_last_ack(uplink, last_seq, registry[0].pid))
            cpu = {"gate": gate_cpu, "registry": registry_cpu}
        backlog = journal.backlog()
        journal.close()
        with RegistryStore(tmp / "registry.db", create=False) as store:
            stored = store.event_count("gate-a")
    return {
        "events": n,
        "shape": shape,
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed),
        # CPU each side spent per event (every thread; the gate's until its journal marked the last ack):
        # what the replay costs, whatever else the machine is doing.
        "gate_cpu_us_per_event": round(cpu["gate"] / n * 1e6, 2),
        "registry_cpu_us_per_event": round(cpu["registry"] / n * 1e6, 2),
        "stored_once": stored == n,
        "journal_backlog_after": backlog,
        "transport": "gRPC over loopback, mTLS, registry in its own process",
    }


async def replay_to_last_ack(uplink: Uplink, last_seq: int, registry_pid: int) -> tuple[float, float, float]:
    """Run `uplink` until the registry acknowledged `last_seq` and the journal marked it: seconds to
    the last ack, the gate's CPU seconds (this process, its journal's acks included) and the registry's
    (its process, until the last ack)."""
    gate_cpu, registry_cpu = time.process_time(), _cpu_s(registry_pid)
    start = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    # (not status(): it counts the journal's backlog, a scan of every unacknowledged record, each poll)
    await _until(lambda: uplink.registry_acked_seq >= last_seq, 600, "the last ack")
    elapsed = time.perf_counter() - start
    registry_cpu = _cpu_s(registry_pid) - registry_cpu
    await _until(lambda: uplink.journal_acked_seq >= last_seq, 60, "the journal to record the acks")
    gate_cpu = time.process_time() - gate_cpu
    await _stop(task)
    return elapsed, gate_cpu, registry_cpu


# ------------------------------------------------------------- propagation


def measure_propagation(samples: int = 200, interval_s: float = 0.02) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    with tempfile.TemporaryDirectory(prefix="gated-propagation-") as tmp:
        tmp = Path(tmp)
        certs = make_venue_certs(tmp / "certs", ["gate-a", "gate-b"])
        with RegistryStore(tmp / "registry.db") as store:
            store.put_tickets(_venue_tickets(samples), record_changes=False)
            store.add_key(1, _KEY)
        with _registry_process(tmp / "registry.db", certs) as port:
            settings = {g: _settings(port, certs, g) for g in ("gate-a", "gate-b")}
            delays = eventloop.run(admit_and_wait(tmp, settings, list(range(1, samples + 1)), interval_s))
    return {
        "samples": len(delays),
        "median_s": round(statistics.median(delays), 6),
        "p99_s": round(_percentile(delays, 99), 6),
        "max_s": round(max(delays), 6),
        "path": "gate A journal (fsync) -> uplink -> registry (SQLite commit) -> delta -> gate B cache",
    }


class BenchGate:
    """A gate without devices: journal, cache, key ring, clock, a validator and its running uplink."""

    def __init__(self, journal_path: Path, gate_id: str, settings: UplinkSection, policy: Policy | None = None,
                 on_cache_changed: Callable[..., None] | None = None) -> None:
        self.gate_id = gate_id
        self.journal = Journal(journal_path, gate_id, checkpoint_every_s=None)
        self.cache, self.keyring = EntitlementCache(), KeyRing()
        self.validator = Validator(self.keyring, self.cache, policy or Policy())
        self.uplink = Uplink(gate_id, self.journal, self.cache, self.keyring, GateClock(), settings,
                             on_cache_changed=on_cache_changed)
        self.task: asyncio.Task | None = None

    def start(self) -> BenchGate:
        self.task = asyncio.create_task(self.uplink.run(), name=f"uplink-{self.gate_id}")
        return self

    async def stop(self) -> None:
        if self.task is not None:
            await _stop(self.task)
        self.journal.close()

    async def pass_through(self, code: str, lane: Lane) -> Any:
        """A lane's scan: the decision journaled and, when admitted, the person walks through
        (commit, the passage journaled); then the uplink is woken."""
        decision = self.validator.decide(code, lane, time.time())
        await self.journal.append_async("decision", at=decision.at, lane=lane.id, ticket_id=decision.ticket_id,
                                        reason=str(decision.reason))
        if decision.admitted:
            await self.walk_through(decision, lane)
        self.uplink.wake()
        return decision

    async def walk_through(self, decision, lane: Lane) -> None:
        usage = self.validator.commit(decision)
        payload = {**usage._asdict(), "direction": str(usage.direction), "inside": list(usage.inside)}
        await self.journal.append_async("passage", at=decision.at, lane=lane.id, ticket_id=usage.ticket_id, payload=payload)


async def admit_and_wait(tmp: Path, settings: dict[str, UplinkSection], tickets: list[int], interval_s: float) -> list[float]:
    """Gate A admits each of `tickets` in turn (decide, commit, the passage journaled, the uplink woken) and
    waits until gate B's cache holds it inside; the seconds each took, in the order of `tickets`.
    `settings` has the uplinks of "gate-a" and "gate-b" (the same registry or two instances)."""
    lane = Lane("in-1", "hall-a")
    arrived: dict[int, float] = {}
    waiting: dict[int, float] = {}
    gates: dict[str, BenchGate] = {}

    def seen_at_b(snapshot: bool = False) -> None:
        cache = gates["gate-b"].cache
        for ticket_id in list(waiting):
            rec = cache.get(ticket_id)
            if rec is not None and rec.inside:
                arrived[ticket_id] = time.perf_counter() - waiting.pop(ticket_id)

    # one lane admitting a ticket every interval: far above a turnstile's rate limit
    policy = Policy(rate_burst=len(tickets) + 1, rate_per_s=1000.0)
    for gate_id in ("gate-a", "gate-b"):
        gates[gate_id] = BenchGate(tmp / f"{gate_id}-{tickets[0]}.db", gate_id, settings[gate_id], policy,
                                   on_cache_changed=seen_at_b if gate_id == "gate-b" else None).start()
    try:
        for gate in gates.values():
            await _until(lambda g=gate: g.cache.get(tickets[-1]) is not None and len(g.keyring) == 1, 60, "both gates in sync")
        gate = gates["gate-a"]
        for ticket_id in tickets:
            decision = gate.validator.decide(mint_static(_KEY, 1, ticket_id, 0), lane, time.time())
            if not decision.admitted:
                raise RuntimeError(f"ticket {ticket_id}: {decision.reason}")
            waiting[ticket_id] = time.perf_counter()
            await gate.walk_through(decision, lane)
            gate.uplink.wake()
            await _until(lambda t=ticket_id: t in arrived, 10, f"ticket {ticket_id} at gate B")
            await asyncio.sleep(interval_s)
    finally:
        for gate in gates.values():
            await gate.stop()
    return [arrived[t] for t in tickets]


# ---------------------------------------------------------------- snapshot


def measure_snapshot(tickets: int = 1_000_000) -> dict[str, Any]:
    from gated.bench.common import synthetic_records
    from gated.registry.store import RegistryStore

    with tempfile.TemporaryDirectory(prefix="gated-snapshot-") as tmp:
        tmp = Path(tmp)
        certs = make_venue_certs(tmp / "certs", ["gate-a"])
        with RegistryStore(tmp / "registry.db") as store:
            store.put_tickets(((rec, "") for rec in synthetic_records(tickets)), record_changes=False)
        started = time.perf_counter()
        with _registry_process(tmp / "registry.db", certs) as port:
            registry_start_s = time.perf_counter() - started
            result = eventloop.run(_fetch_snapshot(port, certs))
    result.update(tickets=tickets, registry_start_s=round(registry_start_s, 3))
    return result


async def _fetch_snapshot(port: int, certs: VenueCerts) -> dict[str, Any]:
    gate = certs.gates["gate-a"]
    creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), gate.key.read_bytes(), gate.cert.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=channel_options()) as channel:
        stub = pb_grpc.RegistryServiceStub(channel)
        await stub.GetTime(pb.GetTimeRequest(), timeout=30)  # connected and handshaken before the clock starts
        assembler = SnapshotAssembler()
        started = time.perf_counter()
        call = stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=0))
        messages = 0
        async for update in call:
            messages += 1
            complete = assembler.add(update.snapshot)
            if complete is not None:
                break
        transfer_s = time.perf_counter() - started
        call.cancel()
    version, data = complete
    cache = EntitlementCache()
    started = time.perf_counter()
    cache.load_snapshot(data)
    apply_s = time.perf_counter() - started
    return {
        "bytes": len(data),
        "messages": messages,
        "transfer_s": round(transfer_s, 3),
        "apply_s": round(apply_s, 3),
        "total_s": round(transfer_s + apply_s, 3),
        "version": version,
        "loaded_tickets": len(cache),
    }


# ------------------------------------------------------------------ import

IMPORT_FIRST_ID = 2_000_001  # a block of consecutive ids above the venue's own
_CSV_HEADER = "ticket_id,name,company,category,ticket_type,zones,valid_from,valid_until,max_entries,benefits,phone\n"


def write_import_csv(path: Path, tickets: int, first: int = IMPORT_FIRST_ID) -> Path:
    """A late partner list: `tickets` attendees with consecutive ids from `first`, names, companies, phones."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(_CSV_HEADER)
        for i in range(tickets):
            category = ("guest", "guest", "guest", "media", "vip")[i % 5]
            benefits = "lunch_day1=1;dinner=1" if category != "guest" else ""
            f.write(f"{first + i},Attendee Number {i},Partner Company {i % 5000} Ltd,{category},1-day,hall-a;hall-b,"
                    f",,0,{benefits},+86 138 {i % 10000:04d} {(i * 37) % 10000:04d}\n")
    return path


def measure_import(tickets: int = 100_000, venue: int = 1000) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    with tempfile.TemporaryDirectory(prefix="gated-import-") as tmp:
        tmp = Path(tmp)
        certs = make_venue_certs(tmp / "certs", ["gate-a", "probe"])
        db = tmp / "registry.db"
        with RegistryStore(db) as store:
            store.put_tickets(_venue_tickets(venue), record_changes=False)
        csv_path = write_import_csv(tmp / "late-list.csv", tickets)
        with _registry_process(db, certs) as port:
            result = eventloop.run(_import_while_watching(port, certs, db, csv_path, venue, venue + tickets))
    result.update(tickets=tickets, venue_tickets=venue, ids=f"consecutive from {IMPORT_FIRST_ID}")
    return result


async def _import_while_watching(port: int, certs: VenueCerts, db: Path, csv_path: Path, venue: int, total: int) -> dict[str, Any]:
    journal = Journal(db.with_name("gate-a.db"), "gate-a", checkpoint_every_s=None)
    cache = EntitlementCache()
    uplink = Uplink("gate-a", journal, cache, KeyRing(), GateClock(), _settings(port, certs, "gate-a"))
    gate_task = asyncio.create_task(uplink.run())
    probe = certs.gates["probe"]
    creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), probe.key.read_bytes(), probe.cert.read_bytes())
    sizes: list[int] = []
    versions = [0]
    reached: dict[int, float] = {}

    async def raw_watch(stub) -> None:  # gRPC defaults: a 4 MiB receive limit
        async for update in stub.WatchEntitlements(pb.WatchEntitlementsRequest(have_version=0)):
            sizes.append(update.ByteSize())
            versions.append(update.delta.version if update.WhichOneof("update") == "delta" else update.snapshot.version)
            reached.setdefault(versions[-1], time.monotonic())

    pinger = subprocess.Popen(
        [sys.executable, "-m", "gated.bench.rpc", "--time-probe", str(port), str(certs.ca), str(probe.cert), str(probe.key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = pb_grpc.RegistryServiceStub(channel)
            watch_task = asyncio.create_task(raw_watch(stub))
            await _until(lambda: len(cache) == venue and len(sizes) > 0, 60, "the gate and the client in sync")
            sizes.clear()
            await asyncio.sleep(0.5)  # the pinger is up and has a few quiet samples
            started = time.monotonic()
            # subprocess.run in a thread, not the loop's subprocess API: on uvloop that fork()s, which
            # runs gRPC's fork handlers in this process (gated/eventloop.py).
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gated", "registry", "import", str(csv_path), "--db", str(db)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise RuntimeError(f"gated registry import failed: {done.stderr.decode()[-500:]}")
            imported = time.monotonic()
            await _until(lambda: len(cache) == total, 600, "the gate to hold every ticket")
            held = time.monotonic()
            final = cache.version
            await _until(lambda: versions[-1] >= final, 60, "the 4 MiB client at the final version")
            client_final = reached.get(final, time.monotonic())
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        out, _ = pinger.communicate("", timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
        await _stop(gate_task)
        journal.close()
    samples = [rtt for at, rtt in json.loads(out) if started <= at <= held]
    return {
        "import_command_s": round(imported - started, 3),
        "gate_holds_all_s": round(held - started, 3),
        "gate_tickets": len(cache),
        "registry_published_all_s": round(client_final - started, 3),
        "gettime_samples": len(samples),
        "gettime_median_ms": round(statistics.median(samples) * 1000, 2),
        "gettime_p99_ms": round(_percentile(samples, 99) * 1000, 2),
        "gettime_max_ms": round(max(samples) * 1000, 2),
        "update_messages": len(sizes),
        "largest_update_bytes": max(sizes),
        "default_limit_client_converged": versions[-1] >= final,
    }


def _time_probe(port: int, ca: str, cert: str, key: str) -> None:
    """Ask the registry for the time every 5 ms until stdin closes; print [[monotonic sent, seconds], ...]."""
    import selectors

    creds = grpc.ssl_channel_credentials(Path(ca).read_bytes(), Path(key).read_bytes(), Path(cert).read_bytes())
    samples = []
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = pb_grpc.RegistryServiceStub(channel)
        stub.GetTime(pb.GetTimeRequest(), timeout=30)
        sel = selectors.DefaultSelector()
        sel.register(sys.stdin, selectors.EVENT_READ)
        while not sel.select(timeout=0.005):
            sent = time.monotonic()
            stub.GetTime(pb.GetTimeRequest(), timeout=60)
            samples.append((sent, time.monotonic() - sent))
    print(json.dumps(samples))



def bench_rpc(quick: bool, tickets: int) -> dict:
    """Backlog replay, gate-to-gate propagation, a full snapshot and an import while a gate watches, over loopback with mTLS."""
    return {
        "backlog_replay": measure_backlog_replay(5_000 if quick else 100_000),
        "propagation": measure_propagation(30 if quick else 300),
        "snapshot": measure_snapshot(min(tickets, 20_000) if quick else tickets),
        "import": measure_import(5_000 if quick else 100_000),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.rpc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--shape", choices=("static", "day"), default="static", help="the replayed records (gated/bench/replay.py)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--replay-only", action="store_true", help="only the backlog replay")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--import-tickets", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--time-probe", nargs=4, metavar=("PORT", "CA", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_probe:
        port, ca, cert, key = args.time_probe
        _time_probe(int(port), ca, cert, key)
        return 0
    if args.quick:
        args.events, args.samples, args.tickets, args.import_tickets = 2000, 20, 10_000, 5000
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.replay_only:
        print(json.dumps(measure_backlog_replay(args.events, args.batch_size, args.shape), indent=2))
        return 0
    out = {
        "backlog_replay": measure_backlog_replay(args.events, args.batch_size, args.shape),
        "propagation": measure_propagation(args.samples),
        "snapshot": measure_snapshot(args.tickets),
        "import": measure_import(args.import_tickets),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
