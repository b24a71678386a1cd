"""Several registry instances on one PostgreSQL: how long usage counted at one takes to reach a gate on the other.

`measure_cross_instance(url, samples)` starts two `gated registry serve`
processes on the database `url` (plaintext, loopback), gate A's uplink on
instance A and gate B's on instance B, and admits one ticket at a time at
gate A (decide, commit, journal, wake): the time until gate B's cache holds
that ticket inside. The same run repeats with both gates on instance A, the
one-instance path, for comparison. Tickets are 10-digit registration
numbers, consecutive.

Run standalone: `python -m gated.bench.instances --db postgresql://... [--samples N]`
prints one JSON object. The database should be empty (a fresh one per run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gated.bench.rpc import _percentile, _stop, _until
from gated.clock import GateClock
from gated.config import UplinkSection
from gated.journal import Journal
from gated.rpc.uplink import Uplink
from gated.validation import EntitlementCache, KeyRing, Lane, Policy, TicketRecord, Validator
from gated.validation.token import mint_static

__all__ = ["measure_cross_instance"]

_KEY = bytes(range(32))
FIRST = 5205320758


@contextlib.contextmanager
def _instance(url: str, log_path: Path) -> Iterator[int]:
    """`gated registry serve --db url` on an ephemeral loopback port; yields the port."""
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gated", "registry", "serve", "--db", url, "--listen", "127.0.0.1:0",
             "--plaintext", "--http", "off"], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        port = None
        while port is None:
            found = re.search(r"^registry listening on 127\.0\.0\.1:(\d+)", log_path.read_text(), re.MULTILINE)
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the registry did not start: {log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _propagate(tmp: Path, ports: dict[str, int], tickets: list[int], interval_s: float) -> list[float]:
    lane = Lane("in-1", "hall-a")
    arrived: dict[int, float] = {}
    waiting: dict[int, float] = {}
    gates = {}

    def seen_at_b(snapshot: bool = False) -> None:
        cache = gates["gate-b"][1]
        for ticket_id in list(waiting):
            rec = cache.get(ticket_id)
            if rec is not None and rec.inside:
                arrived[ticket_id] = time.perf_counter() - waiting.pop(ticket_id)

    tasks = []
    for gate_id, port in ports.items():
        journal = Journal(tmp / f"{gate_id}-{tickets[0]}.db", gate_id, checkpoint_every_s=None)
        cache, ring = EntitlementCache(), KeyRing()
        settings = UplinkSection(f"127.0.0.1:{port}", True, None, None, None, 1.0)
        uplink = Uplink(gate_id, journal, cache, ring, GateClock(), settings,
                        on_cache_changed=seen_at_b if gate_id == "gate-b" else None)
        policy = Policy(rate_burst=len(tickets) + 1, rate_per_s=1000.0)
        gates[gate_id] = (journal, cache, ring, uplink, Validator(ring, cache, policy))
        tasks.append(asyncio.create_task(uplink.run()))
    try:
        for journal, cache, ring, uplink, _ in gates.values():
            await _until(lambda c=cache, r=ring: c.get(tickets[-1]) is not None and len(r) == 1, 60, "both gates in sync")
        journal, _cache, _ring, uplink, validator = gates["gate-a"]
        for ticket_id in tickets:
            decision = validator.decide(mint_static(_KEY, 1, ticket_id, 0), lane, time.time())
            if not decision.admitted:
                raise RuntimeError(f"ticket {ticket_id}: {decision.reason}")
            usage = validator.commit(decision)
            payload = {**usage._asdict(), "direction": str(usage.direction), "inside": list(usage.inside)}
            waiting[ticket_id] = time.perf_counter()
            await journal.append_async("passage", at=decision.at, lane=lane.id, ticket_id=ticket_id, payload=payload)
            uplink.wake()
            await _until(lambda t=ticket_id: t in arrived, 10, f"ticket {ticket_id} at gate B")
            await asyncio.sleep(interval_s)
    finally:
        for task in tasks:
            await _stop(task)
        for journal, *_ in gates.values():
            journal.close()
    return [arrived[t] for t in tickets]


def _figures(delays: list[float]) -> dict[str, Any]:
    return {
        "samples": len(delays),
        "median_ms": round(statistics.median(delays) * 1000, 2),
        "p99_ms": round(_percentile(delays, 99) * 1000, 2),
        "max_ms": round(max(delays) * 1000, 2),
    }


def measure_cross_instance(url: str, samples: int = 200, interval_s: float = 0.02) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    ids = [FIRST + i for i in range(2 * samples)]
    with RegistryStore(url) as store:
        if store.ticket_count():
            raise RuntimeError("measure_cross_instance needs an empty registry database")
        store.put_tickets([(TicketRecord(ticket_id=t, category="guest", zones=("hall-a",)), "") for t in ids],
                          record_changes=False)
        store.add_key(1, _KEY)
    with tempfile.TemporaryDirectory(prefix="gated-instances-") as tmp:
        tmp = Path(tmp)
        with _instance(url, tmp / "a.log") as port_a, _instance(url, tmp / "b.log") as port_b:
            across = asyncio.run(_propagate(tmp, {"gate-a": port_a, "gate-b": port_b}, ids[:samples], interval_s))
            same = asyncio.run(_propagate(tmp, {"gate-a": port_a, "gate-b": port_a}, ids[samples:], interval_s))
    return {
        "across_instances": _figures(across),
        "one_instance": _figures(same),
        "ids": f"10-digit registration numbers, consecutive from {FIRST}",
        "path": "gate A journal (fsync) -> uplink -> instance A (PostgreSQL commit, change log, NOTIFY) "
                "-> instance B follows -> delta -> gate B cache",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.instances", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="postgresql://... (an empty database)")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps(measure_cross_instance(args.db, args.samples), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
