"""The redemption round trip for `gated bench --sections redeem`.

Two handheld units (real gates: journal, cache, uplink with mutual TLS) and
the reference registry in its own process on loopback. Each sample is one
attendee at the meal hall, alternating between the units, on 10-digit
registration numbers with one lunch each:

- `redeem_rpc`: the `Redeem` call alone, as the uplink makes it (gate ->
  registry: check, take, SQLite commit -> answer);
- `scan_to_decision`: the lane's whole path for a redemption: decide on the
  cache, ask the registry, journal the decision (fsync), journal the
  redemption record;
- `refused_rpc`: the same badge at the other unit straight after, asked of
  the registry (its answer: benefit_exhausted);
- `retry_rpc`: the first unit's request sent again (the registry answers
  from its records, taking nothing).

Returns plain numbers: median and p99 in milliseconds for each.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gated import eventloop
from gated.config import LaneConfig
from gated.drivers.base import Read
from gated.clock import GateClock
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.redeem import RedeemAsk
from gated.journal import Journal
from gated.rpc.certs import make_venue_certs
from gated.bench.rpc import _percentile, _registry_process, _settings, _stop, _until
from gated.rpc.uplink import Uplink
from gated.validation import EntitlementCache, KeyRing, Policy, TicketRecord, Validator
from gated.validation.token import Reason, mint_static

__all__ = ["measure_redemption"]

_KEY = bytes(range(32))
FIRST_ID = 5_205_320_758  # 10-digit registration numbers
BENEFIT = "lunch_day2"


def _stats(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1000, 3), "p99_ms": round(_percentile(samples, 99) * 1000, 3),
            "n": len(samples)}


def measure_redemption(samples: int = 300) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    with tempfile.TemporaryDirectory(prefix="gated-redeem-") as tmp:
        tmp = Path(tmp)
        certs = make_venue_certs(tmp / "certs", ["desk-a", "desk-b"])
        tickets = [TicketRecord(ticket_id=FIRST_ID + i, category="guest", zones=("hall",), benefits=((BENEFIT, 1),),
                                name=f"Guest {i}") for i in range(samples)]
        with RegistryStore(tmp / "registry.db") as store:
            store.put_tickets([(t, "") for t in tickets], record_changes=False)
            store.add_key(1, _KEY)
        with _registry_process(tmp / "registry.db", certs) as port:
            timings = eventloop.run(_meal_hall(tmp, certs, port, samples))
        with RegistryStore(tmp / "registry.db", create=False) as store:
            left = sum(dict(store.ticket(t.ticket_id).benefits)[BENEFIT] for t in tickets)
    rpc, lane, refused, retry, outcomes = timings
    return {
        "samples": samples,
        "redeem_rpc": _stats(rpc),
        "scan_to_decision": _stats(lane),
        "refused_rpc": _stats(refused),
        "retry_rpc": _stats(retry),
        "granted_once_each": outcomes == {"ok": samples, "benefit_exhausted": samples} and left == 0,
        "path": "handheld lane: decide -> Redeem (mTLS, registry in its own process, SQLite commit) -> journal fsync",
    }


async def _meal_hall(tmp: Path, certs, port: int, samples: int):
    units = []
    for gate_id in ("desk-a", "desk-b"):
        journal = Journal(tmp / f"{gate_id}.db", gate_id, checkpoint_every_s=None)
        cache, ring, clock = EntitlementCache(), KeyRing(), GateClock()
        uplink = Uplink(gate_id, journal, cache, ring, clock, _settings(port, certs, gate_id))
        timed: list[float] = []

        async def redeem(ask: RedeemAsk, uplink=uplink, timed=timed):
            start = time.perf_counter()
            answer = await uplink.redeem(ask)
            timed.append(time.perf_counter() - start)
            return answer

        validator = Validator(ring, cache, Policy(rate_burst=samples + 1, rate_per_s=1000.0))
        config = LaneConfig(id=f"meal-{gate_id}", zone="hall", direction="in", mode="handheld", categories=None,
                            passage_timeout_s=None, scanners=(), camera=None, relay=None, light=None, buzzer=None,
                            passage=None, offline_redemption="refuse")
        services = LaneServices(validator=validator, journal=journal, clock=clock, monotonic=time.monotonic,
                                spawn=asyncio.ensure_future, on_journal_failure=lambda exc: None,
                                on_record=uplink.wake, redeem=redeem)
        units.append((LaneRunner(config, services, LaneOutputs()), uplink, journal, cache, ring, timed))
    tasks = [asyncio.create_task(u[1].run()) for u in units]
    lane_s, refused_s, retry_s = [], [], []
    outcomes: dict[str, int] = {}
    try:
        for _lane, uplink, _j, cache, ring, _t in units:
            await _until(lambda c=cache, r=ring, u=uplink: len(c) == samples and len(r) == 1 and u.status()["connected"],
                         60, "both units in sync")
        for i in range(samples):
            lane, uplink, journal, *_ = units[i % 2]
            other_uplink = units[1 - i % 2][1]
            ticket = FIRST_ID + i
            read = Read(source=f"{lane.id}/serial0", text=mint_static(_KEY, 1, ticket, 0), at=time.monotonic())
            start = time.perf_counter()
            decision = await lane.handle_read(read, benefit=BENEFIT)
            lane_s.append(time.perf_counter() - start)
            outcomes[str(decision.reason)] = outcomes.get(str(decision.reason), 0) + 1
            rid = journal.tail(1)[-1].payload.get("redemption_id", "")
            ask = RedeemAsk(f"other-{i}", ticket, BENEFIT, "meal-other", time.time())
            start = time.perf_counter()
            answer = await other_uplink.redeem(ask)
            refused_s.append(time.perf_counter() - start)
            outcomes[str(answer.reason if answer else "no_answer")] = outcomes.get(str(answer.reason if answer else "no_answer"), 0) + 1
            start = time.perf_counter()
            again = await uplink.redeem(RedeemAsk(rid, ticket, BENEFIT, lane.id, time.time()))
            retry_s.append(time.perf_counter() - start)
            if again is None or again.reason is not Reason.OK or not again.replayed:
                raise RuntimeError(f"ticket {ticket}: a retry was answered {again}")
        await asyncio.gather(*(_until(lambda j=u[2]: j.backlog() == 0, 60, "the journals acknowledged") for u in units))
    finally:
        for task in tasks:
            await _stop(task)
        for u in units:
            u[2].close()
    rpc = units[0][5] + units[1][5]
    return rpc, lane_s, refused_s, retry_s, outcomes
