"""Backlog replay, stage by stage: where each event's microseconds go, gate side and registry side.

The journals a replay starts from (`fill_journal`), in two shapes:

- ``static``: what `measure_backlog_replay` has always sent: decisions with
  reason ok, a static code, its payload two keys the typed Decision has no
  field for (so all of it travels as extra_json).
- ``day``: a day at a pair of turnstiles and a desk: admissions (a decision,
  then its passage naming it by decision_seq), entries nobody walked through
  for (not_passed), denials (unknown, absent ids among them), lunches
  redeemed at a handheld (a decision with its redemption_id, then the
  redemption). Tickets in the four shapes a show brings: consecutive ids,
  10-digit registration numbers, blocks 1_000_000*k+n, random 63-bit ids;
  the registry holds them (`venue_tickets`), so passages and redemptions
  count there as at a show.

`measure_stages(n, shape)` runs every stage of the path in this process,
without gRPC, each timed alone over the same batches: the journal read (the
records' kept encodings, `Journal.unacked_wire`), the batch joined from them
(`convert.stream_batch_bytes`), parsed back, checked into `IncomingEvent`s
(`gated.registry.incoming.parse_batch`), stored (`RegistryStore.store_events`,
SQLite, or PostgreSQL with `db`), and the acks marked in the journal. The
gate's read and build are also timed the two ways they ran before: from rows
(`unacked_rows`, `event_batch_rows`, then serialized: "rows") and from
Records (`event_batch`: "before"); the registry's parse the event-by-event
way ("before"). Every batch is compared with the Records way's bytes.

Run standalone: `python -m gated.bench.replay [--events N] [--shape day] [--batch 2000] [--db URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gated import eventloop
from gated.journal import Journal
from gated.validation import TicketRecord

__all__ = ["SHAPES", "fill_journal", "measure_stages", "venue_tickets"]

SHAPES = ("static", "day")
_DAY_START = 1_764_230_400.0  # 2025-11-27 08:00 UTC, a show's opening
_PER_SHAPE = 5000


def venue_tickets(per_shape: int = _PER_SHAPE, seed: int = 14) -> list[TicketRecord]:
    """The venue of the ``day`` shape: `per_shape` tickets in each of the four id layouts."""
    rng = random.Random(seed)
    ids = (
        [100_001 + i for i in range(per_shape)],                                    # consecutive
        [5_205_320_758 + 7 * i for i in range(per_shape)],                          # 10-digit registration numbers
        [1_000_000 * (1 + i % 4) + i // 4 for i in range(per_shape)],               # blocks 1_000_000*k + n
        sorted({rng.getrandbits(63) for _ in range(per_shape)}),                    # random 63-bit
    )
    categories = ("guest", "guest", "guest", "exhibitor", "media", "staff", "vip")
    return [
        TicketRecord(ticket_id=tid, category=categories[i % len(categories)], zones=("hall-a", "hall-b"),
                     benefits=(("lunch_day1", 1),) if i % 3 == 0 else ())
        for shape in ids for i, tid in enumerate(shape)
    ]


def _static_records(n: int) -> list[tuple[str, dict]]:
    now = time.time()
    return [("decision", dict(at=now + i * 0.01, lane="in-1", ticket_id=1 + i % 5000, reason="ok",
                              payload={"code": "static", "lane_seq": i})) for i in range(n)]


def _day_records(n: int, tickets: list[TicketRecord], seed: int = 14) -> list[tuple[str, dict]]:
    """A day's records in journal order; the outcome records name their decision by its seq (1-based)."""
    rng = random.Random(seed)
    out: list[tuple[str, dict]] = []
    held = {t.ticket_id for t in tickets}
    inside: dict[int, int] = {}
    entries: dict[int, int] = {}
    at = _DAY_START

    def add(kind: str, **fields) -> int:
        out.append((kind, fields))
        return len(out)  # the seq it will get in a fresh journal

    while len(out) < n:
        at += rng.expovariate(4.0)  # four scans a second across the lanes
        ticket = rng.choice(tickets)
        tid = ticket.ticket_id
        roll = rng.random()
        lane, direction = ("in-1", "in") if not inside.get(tid) else ("out-1", "out")
        kind_of_code = "dynamic" if roll < 0.6 else "static"
        scan = {"code_kind": kind_of_code, "category": ticket.category, "zone": "hall-a", "direction": direction,
                "mode": "turnstile", "source": f"{lane}-scanner", "length": 54 if kind_of_code == "dynamic" else 22,
                "truncated": False}
        if roll < 0.05:  # a code for a ticket the venue does not hold: next to a held id, or anywhere
            absent = tid + rng.choice((1, 2, -1, 1_000_000)) if rng.random() < 0.5 else rng.getrandbits(63)
            while absent in held:
                absent += 3
            add("decision", at=at, lane=lane, ticket_id=absent, reason="unknown_ticket",
                payload={**scan, "category": None, "direction": direction})
        elif roll < 0.10:
            add("decision", at=at, lane=lane, ticket_id=tid, reason=rng.choice(("code_expired", "already_inside", "bad_signature")),
                payload=scan)
        elif roll < 0.15 and dict(ticket.benefits).get("lunch_day1"):
            rid = f"{rng.getrandbits(128):032x}"
            decision = {"code_kind": "static", "category": ticket.category, "zone": "hall-a", "direction": "in",
                        "mode": "handheld", "source": "desk-1-scanner", "length": 22, "truncated": False,
                        "benefit": "lunch_day1", "redemption_id": rid, "authority": "local"}
            seq = add("decision", at=at, lane="desk-1", ticket_id=tid, reason="ok", payload=decision)
            add("redemption", at=at + 0.2, lane="desk-1", ticket_id=tid, reason="ok", payload={
                "ticket_id": tid, "zone": "hall-a", "direction": "in", "entries_used": entries.get(tid, 0),
                "inside": ["hall-a"] if inside.get(tid) else [], "benefit": "lunch_day1", "benefit_remaining": 0,
                "confirmed": False, "decision_seq": seq, "redemption_id": rid, "authority": "local"})
        else:
            seq = add("decision", at=at, lane=lane, ticket_id=tid, reason="ok", payload=scan)
            if rng.random() < 0.06:
                add("not_passed", at=at + 5.0, lane=lane, ticket_id=tid, reason="ok", payload={
                    "zone": "hall-a", "direction": direction, "decided_at": at, "gate_stopping": False, "decision_seq": seq})
                continue
            if direction == "in":
                entries[tid] = entries.get(tid, 0) + 1
            inside[tid] = direction == "in"
            add("passage", at=at + 1.5, lane=lane, ticket_id=tid, reason="ok", payload={
                "ticket_id": tid, "zone": "hall-a", "direction": direction, "entries_used": entries.get(tid, 0),
                "inside": ["hall-a"] if direction == "in" else [], "benefit": None, "benefit_remaining": None,
                "confirmed": True, "decision_seq": seq})
    return out[:n]


def fill_journal(journal: Journal, n: int, shape: str = "static", tickets: list[TicketRecord] | None = None) -> int:
    """Journal `n` records of `shape` (a lane's day, committed in groups as the journal does); the last seq."""
    if shape == "static":
        records = _static_records(n)
    elif shape == "day":
        records = _day_records(n, tickets if tickets is not None else venue_tickets())
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")

    async def fill() -> None:
        for start in range(0, len(records), 1000):
            await asyncio.gather(*(journal.append_async(kind, **fields) for kind, fields in records[start:start + 1000]))

    eventloop.run(fill())
    return journal.stats()["last_seq"]


def _timed(fn, *args, **kwargs) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def measure_stages(n: int = 100_000, shape: str = "static", batch_size: int = 2000, db: str | None = None) -> dict[str, Any]:
    """µs per event of each stage of a replay of `n` records of `shape`, in this process (see the module docstring)."""
    from gated.registry.incoming import _parse_event_by_event, parse_batch
    from gated.registry.store import RegistryStore
    from gated.rpc import convert
    from gated.rpc.v1 import registry_pb2 as pb

    with tempfile.TemporaryDirectory(prefix="gated-stages-") as tmp:
        tmp = Path(tmp)
        tickets = venue_tickets()
        journal = Journal(tmp / "journal.db", "gate-a", checkpoint_every_s=None)
        journal.keep_wire(convert.journal_wire("gate-a"))  # as a gate's uplink has it (gated/journal.py)
        last_seq = fill_journal(journal, n, shape, tickets)
        epoch = journal.epoch
        spent: dict[str, float] = dict.fromkeys(
            ("gate_read_before", "gate_build_before", "gate_read_rows", "gate_build_rows", "serialize_rows",
             "gate_read", "gate_build", "deserialize", "registry_parse_before", "registry_parse", "registry_store",
             "gate_mark_acked"), 0.0)
        wire: list[bytes] = []
        try:
            cursor, after = 0, 0
            while cursor < last_seq:
                took, records = _timed(journal.unacked, cursor, batch_size)
                spent["gate_read_before"] += took
                took, old = _timed(convert.event_batch, after, records, epoch)
                spent["gate_build_before"] += took
                took, rows = _timed(journal.unacked_rows, cursor, batch_size)
                spent["gate_read_rows"] += took
                took, batch = _timed(convert.event_batch_rows, "gate-a", after, rows, epoch)
                spent["gate_build_rows"] += took
                took, from_rows = _timed(batch.SerializeToString)
                spent["serialize_rows"] += took
                took, kept = _timed(journal.unacked_wire, cursor, batch_size)
                spent["gate_read"] += took
                took, data = _timed(convert.stream_batch_bytes, "gate-a", after, kept, epoch)
                spent["gate_build"] += took
                if not data == from_rows == old.SerializeToString():
                    raise AssertionError(f"the batch after {after} differs from event_batch's")
                wire.append(data)
                after = cursor = kept[-1][0]
            store = RegistryStore(db if db is not None else tmp / "registry.db")
            store.checkpoint_in_background()  # as a serving registry's store has it
            try:
                if shape == "day":
                    store.put_tickets(((t, "") for t in tickets), record_changes=False)
                acked = 0
                for data in wire:
                    took, batch = _timed(pb.StreamEventsRequest.FromString, data)
                    spent["deserialize"] += took
                    took, reference = _timed(_parse_event_by_event, batch, "gate-a")
                    spent["registry_parse_before"] += took
                    took, events = _timed(parse_batch, batch, "gate-a")
                    spent["registry_parse"] += took
                    if events != reference:
                        raise AssertionError(f"parse_batch differs from the reference after seq {batch.after_seq}")
                    took, stored = _timed(store.store_events, "gate-a", events, time.time(), epoch=epoch)
                    spent["registry_store"] += took
                    took, _ = _timed(journal.mark_acked, stored.acked_seq)
                    spent["gate_mark_acked"] += took
                    acked = stored.acked_seq
                stored_count = store.event_count("gate-a")
            finally:
                store.close()
        finally:
            journal.close()
    per_event = {k: round(v / n * 1e6, 3) for k, v in spent.items()}
    gate = per_event["gate_read"] + per_event["gate_build"]
    gate_rows = per_event["gate_read_rows"] + per_event["gate_build_rows"] + per_event["serialize_rows"]
    gate_before = per_event["gate_read_before"] + per_event["gate_build_before"] + per_event["serialize_rows"]
    registry = per_event["deserialize"] + per_event["registry_parse"] + per_event["registry_store"]
    registry_before = per_event["deserialize"] + per_event["registry_parse_before"] + per_event["registry_store"]
    return {
        "events": n, "shape": shape, "batch_size": batch_size, "store": "postgresql" if db else "sqlite",
        "us_per_event": per_event,
        "gate_us": round(gate, 3), "gate_us_rows": round(gate_rows, 3), "gate_us_before": round(gate_before, 3),
        "registry_us": round(registry, 3), "registry_us_before": round(registry_before, 3),
        "wire_bytes_per_event": round(sum(map(len, wire)) / n, 1),
        "stored_once": stored_count == n, "acked_through": acked == last_seq,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--shape", choices=SHAPES, default="static")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--db", help="a postgresql:// URL for the store (default: an SQLite file)")
    args = parser.parse_args(argv)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # the day's conflicts: expected
    print(json.dumps(measure_stages(args.events, args.shape, args.batch, args.db), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
