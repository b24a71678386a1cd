"""How close one process can get: the real gates against registries stripped to one job.

Two of issue 14's targets are about the registry's speed (a backlog replayed
at 200,000 events/s; fan-out p99 at most 100 ms to 500 gates). Before taking
the registry apart, these say what the rest of the path allows on this
machine, with the same gates and the same load as the real measurements:

- ``replay``: the real gate (its journal, `Uplink`, mutual TLS) replays
  `events` journaled records to a registry that
  ``ack``: acknowledges each batch as it arrives, storing nothing (what the
  gate and gRPC allow), or ``store``: writes each batch's rows unchecked
  into the real registry schema (`RegistryStore`'s tables, indexes and
  triggers, and the dashboard's triggers `gated registry serve` installs;
  SQLite, synchronous=FULL, a transaction per batch, rows inserted as the
  registry inserts them) and then acknowledges it (the least a durable
  registry does).
- ``fanout``: `gated bench fleet`'s load (N gates, each its own stream and
  watch, one scan a second) against a registry that acknowledges each batch
  once the next round has handed its passages out as usage ops, one delta to
  every watch, rounds at least `cadence_ms` apart; nothing stored, nothing
  checked. Reported like the fleet: fan-out p50/p99 over (passage, gate)
  pairs, updates a gate received a second, the registry's CPU.

None of these is a registry: they keep no entitlements and check nothing.
Run standalone: `python -m gated.bench.floors replay [--events N]` or
`python -m gated.bench.floors fanout [--gates 500] [--cadence-ms 0 30 50]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from gated import eventloop

REPLAY_MODES = ("ack", "store")
_READY_TIMEOUT_S = 60.0


# ------------------------------------------------------------ the stripped registries (their own process)


def _servicer(mode: str, db: str | None, version: int, cadence_s: float):
    import grpc

    from gated.rpc.convert import EVENT_KINDS
    from gated.rpc.v1 import registry_pb2 as pb
    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    kinds = {wire: kind for kind, (wire, _case) in EVENT_KINDS.items()}

    class Stripped(pb_grpc.RegistryServiceServicer):
        def __init__(self) -> None:
            self.store = None
            if mode == "store":
                from gated.registry import dashdata
                from gated.registry.store import RegistryStore

                self.store = RegistryStore(db)
                dashdata.install(self.store.conn)  # the triggers `gated registry serve`'s pages install
            self.version = version
            self.pending: list[int] = []
            self.round: asyncio.Future | None = None
            self.wake = asyncio.Event()
            self.watchers: set[asyncio.Queue] = set()
            self.used: dict[int, int] = {}

        def _store_rows(self, gate_id: str, batch) -> None:
            from gated.journal import u64_to_sqlite
            from gated.registry.store import _insert_events

            now, epoch = time.time(), u64_to_sqlite(batch.journal_epoch)
            rows = [(ev.event_id, gate_id, ev.seq, ev.at, kinds[ev.kind], ev.lane,
                     u64_to_sqlite(ev.ticket_id) if ev.HasField("ticket_id") else None, ev.reason,
                     ev.extra_json or "{}", now, epoch) for ev in batch.events]
            with self.store.transaction():
                _insert_events(self.store.conn, self.store.dialect, rows)  # as the real registry inserts them

        async def rounds(self) -> None:
            last = 0.0
            while True:
                await self.wake.wait()
                self.wake.clear()
                wait = last + cadence_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.round is None:  # woken by batches a round already took
                    continue
                last = time.monotonic()
                pending, done = self.pending, self.round
                self.pending, self.round = [], None
                ops = []
                for tid in pending:
                    self.used[tid] = self.used.get(tid, 0) + 1
                    ops.append(pb.DeltaOp(set_usage=pb.SetUsage(ticket_id=tid, entries_used=self.used[tid], inside=["hall-a"])))
                base, self.version = self.version, self.version + 1
                update = pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=base, version=self.version, ops=ops))
                for queue in self.watchers:
                    queue.put_nowait(update)
                done.set_result(self.version)

        async def StreamEvents(self, request_iterator, context):  # noqa: N802 - gRPC's name
            gate_id = dict(context.invocation_metadata() or ()).get("gated-gate-id", "gate-a")
            async for batch in request_iterator:
                last = batch.events[-1].seq if batch.events else 0
                if mode == "fanout" and batch.events:
                    if self.round is None:
                        self.round = asyncio.get_running_loop().create_future()
                    done = self.round
                    self.pending += [ev.passage.ticket_id for ev in batch.events if ev.HasField("passage")]
                    self.wake.set()
                    yield pb.StreamEventsResponse(up_to_seq=last, version=await done)
                    continue
                if mode == "store" and batch.events:
                    await asyncio.to_thread(self._store_rows, gate_id, batch)
                yield pb.StreamEventsResponse(up_to_seq=last, version=self.version)

        async def WatchEntitlements(self, request, context):  # noqa: N802 - gRPC's name
            queue: asyncio.Queue = asyncio.Queue()
            self.watchers.add(queue)
            try:
                while True:
                    update = await queue.get()
                    while not queue.empty():  # behind: the newest covers what it skipped (usage is absolute)
                        update = queue.get_nowait()
                    yield update
            finally:
                self.watchers.discard(queue)

        async def WatchKeys(self, request, context):  # noqa: N802 - gRPC's name
            await asyncio.Event().wait()
            yield pb.WatchKeysResponse()

        async def GetTime(self, request, context):  # noqa: N802 - gRPC's name
            return pb.GetTimeResponse(unix_nanos=time.time_ns())

        async def ReportStatus(self, request, context):  # noqa: N802 - gRPC's name
            return pb.ReportStatusResponse()

    return Stripped(), grpc, pb_grpc


async def _serve(mode: str, db: str | None, version: int, cadence_s: float, tls: list[str] | None) -> None:
    servicer, grpc, pb_grpc = _servicer(mode, db, version, cadence_s)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20), ("grpc.so_reuseport", 0)])
    pb_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    if tls:
        from gated.registry.server import TlsFiles, server_credentials

        port = server.add_secure_port("127.0.0.1:0", server_credentials(TlsFiles(*map(Path, tls))))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rounds = asyncio.create_task(servicer.rounds()) if mode == "fanout" else None
    print(f"registry listening on 127.0.0.1:{port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        if rounds is not None:
            rounds.cancel()


def _stripped(log: Path, mode: str, *, db: Path | None = None, version: int = 0, cadence_ms: float = 0.0,
              tls: list[Path] | None = None):
    """`python -m gated.bench.floors serve MODE ...` in its own process until the block ends (its `Served`)."""
    from gated.bench.rpc import serving

    return serving([sys.executable, "-m", "gated.bench.floors", "serve", mode, "--version", str(version),
                    "--cadence-ms", str(cadence_ms)] + (["--db", str(db)] if db else [])
                   + (["--tls", *map(str, tls)] if tls else []), log, ready_timeout_s=_READY_TIMEOUT_S)


# ------------------------------------------------------------ replay


def replay_floor(events: int = 100_000, batch_size: int = 2000, modes: tuple[str, ...] = REPLAY_MODES) -> list[dict[str, Any]]:
    """The real gate's replay of `events` static records to each stripped registry (module docstring)."""
    from gated.bench.replay import fill_journal
    from gated.bench.rpc import _settings, replay_to_last_ack
    from gated.clock import GateClock
    from gated.journal import Journal
    from gated.registry.store import RegistryStore
    from gated.rpc.certs import make_venue_certs
    from gated.rpc.uplink import Uplink
    from gated.validation import EntitlementCache, KeyRing

    out = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="gated-floor-") as tmp_name:
            tmp = Path(tmp_name)
            certs = make_venue_certs(tmp / "certs", ["gate-a"])
            journal = Journal(tmp / "journal.db", "gate-a", checkpoint_every_s=None)
            last_seq = fill_journal(journal, events, "static")
            db = tmp / "registry.db"
            if mode == "store":
                RegistryStore(db).close()  # the schema, before the server opens it
            with _stripped(tmp / "registry.log", mode, db=db, tls=[certs.ca, certs.registry.cert, certs.registry.key]) as served:
                uplink = Uplink("gate-a", journal, EntitlementCache(), KeyRing(), GateClock(),
                                _settings(served.port, certs, "gate-a"), batch_size=batch_size)
                elapsed, gate, registry = eventloop.run(replay_to_last_ack(uplink, last_seq, served.pid))
            backlog = journal.backlog()
            journal.close()
            stored = None
            if mode == "store":
                with RegistryStore(db, create=False) as store:
                    stored = store.event_count("gate-a")
        out.append({"registry": mode, "events": events, "batch_size": batch_size, "seconds": round(elapsed, 3),
                    "events_per_s": round(events / elapsed), "gate_cpu_us_per_event": round(gate / events * 1e6, 2),
                    "registry_cpu_us_per_event": round(registry / events * 1e6, 2),
                    "stored": stored, "journal_backlog_after": backlog,
                    "data": "static decisions (reason ok, the payload all extra_json), ids 1..5000 in turn"})
    return out


# ------------------------------------------------------------ fan-out


def fanout_floor(gates: int = 500, cadence_ms: float = 0.0, seconds: float = 15.0, processes: int = 4) -> dict[str, Any]:
    """`gated bench fleet`'s load against the stripped fan-out registry (module docstring)."""
    from gated.bench.fleet import _load_process, _report
    from gated.bench.rpc import _cpu_s

    version = 1
    processes = max(1, min(processes, gates))
    with tempfile.TemporaryDirectory(prefix="gated-floor-") as tmp_name, \
            _stripped(Path(tmp_name) / "registry.log", "fanout", version=version, cadence_ms=cadence_ms) as served:
        slices = [list(range(gates))[i::processes] for i in range(processes)]
        start_at = time.time() + 2.0 + gates / 200  # every watch open first
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_load_process, [served.port], sl, version, 1.0, seconds, start_at, i)
                       for i, sl in enumerate(slices)]
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before, wall_before = _cpu_s(served.pid), time.monotonic()
            time.sleep(seconds)
            cpu = [(_cpu_s(served.pid) - cpu_before) / (time.monotonic() - wall_before)]
            results = [f.result() for f in futures]
    per_gate = {g: r for res in results for g, r in res["gates"].items()}
    stored = {f"fleet-{g}": r["acked"] for g, r in per_gate.items()}  # nothing is stored: what was acknowledged
    report = _report(gates, 1.0, seconds, "none (stripped to its fan-out)", processes, results, stored, {}, {}, cpu)
    keep = ("gates", "ack_p50_ms", "ack_p99_ms", "fanout_p50_ms", "fanout_p99_ms", "fanout_all_gates_p99_ms",
            "fanout_missed", "updates_per_gate_per_s", "registry_cpu_percent", "unacked", "errors", "data")
    return {"registry": "fanout", "cadence_ms": cadence_ms} | {k: report[k] for k in keep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.floors", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    replay = sub.add_parser("replay")
    replay.add_argument("--events", type=int, default=100_000)
    replay.add_argument("--batch", type=int, default=2000)
    fanout = sub.add_parser("fanout")
    fanout.add_argument("--gates", type=int, default=500)
    fanout.add_argument("--seconds", type=float, default=15.0)
    fanout.add_argument("--cadence-ms", type=float, nargs="+", default=[0.0, 30.0, 50.0])
    serve = sub.add_parser("serve")  # the stripped registry's own process
    serve.add_argument("mode", choices=(*REPLAY_MODES, "fanout"))
    serve.add_argument("--db")
    serve.add_argument("--version", type=int, default=0)
    serve.add_argument("--cadence-ms", type=float, default=0.0)
    serve.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    args = parser.parse_args(argv)
    if args.what == "serve":
        eventloop.run(_serve(args.mode, args.db, args.version, args.cadence_ms / 1000, args.tls))
        return 0
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.what == "replay":
        for result in replay_floor(args.events, args.batch):
            print(json.dumps(result), flush=True)
    else:
        for cadence in args.cadence_ms:
            print(json.dumps(fanout_floor(args.gates, cadence, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
