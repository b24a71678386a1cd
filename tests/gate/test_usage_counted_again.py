"""A gate's journaled usage counted onto a cache (`gated.usage`) reads only what it needs
(`Journal.usage_since`: six payload fields read by SQLite, no `Record` made) and the ticket's
usage only (`EntitlementCache.usage_of`, `benefit_remaining`): on a hostile day the cache ends
exactly as the way before left it, record for record, both after a registry snapshot and at start."""

from __future__ import annotations

import random

from gated.journal import USAGE_KINDS, Journal
from gated.usage import reapply_local_usage, replay_usage
from gated.validation import EntitlementCache, TicketRecord, encode_snapshot

HIGH_U64 = (1 << 64) - 25  # kept by the journal as a negative i64


def reapply_the_way_before(cache: EntitlementCache, records) -> int:
    """`reapply_local_usage` as it was: every record whole (`Journal.since`), each ticket's whole record."""
    applied = 0
    for record in records:
        if record.kind not in USAGE_KINDS or record.ticket_id is None:
            continue
        rec = cache.get(record.ticket_id)
        if rec is None:
            continue
        p = record.payload
        benefit, zone, direction = p.get("benefit"), p.get("zone"), p.get("direction")
        if benefit is not None:
            remaining = dict(rec.benefits).get(benefit)
            if remaining is None:
                continue
            remaining = max(0, remaining - 1)
            if isinstance(p.get("benefit_remaining"), int):
                remaining = min(remaining, p["benefit_remaining"])
            changed = cache.restore_usage(record.ticket_id, rec.entries_used, rec.inside, benefit, remaining)
        elif isinstance(zone, str) and zone and direction in ("in", "out"):
            if direction == "in":
                used = max(rec.entries_used + 1, p["entries_used"] if isinstance(p.get("entries_used"), int) else 0)
                inside = rec.inside if zone in rec.inside else (*rec.inside, zone)
            else:
                used, inside = rec.entries_used, tuple(z for z in rec.inside if z != zone)
            changed = cache.restore_usage(record.ticket_id, min(used, 0xFFFFFFFF), inside)
        else:
            continue
        applied += changed
    return applied


def replay_the_way_before(journal: Journal, cache: EntitlementCache, saved_seq: int) -> int:
    replayed = 0
    for record in journal.since(saved_seq, kinds=USAGE_KINDS):
        p = record.payload
        if record.ticket_id is None or "entries_used" not in p:
            continue
        if cache.restore_usage(record.ticket_id, int(p["entries_used"]), tuple(p.get("inside") or ()), p.get("benefit"), p.get("benefit_remaining")):
            replayed += 1
    return replayed


def venue(rng: random.Random) -> list[TicketRecord]:
    ids = ([100_001 + i for i in range(40)] + [5_205_320_758 + 7 * i for i in range(40)]
           + [1_000_000 * k + n for k in (1, 2, 3, 4) for n in range(10)] + [rng.getrandbits(63) for _ in range(40)] + [HIGH_U64])
    return [TicketRecord(ticket_id=tid, category="guest", zones=("hall-a", "hall-b"), max_entries=rng.choice((0, 1, 3)),
                         entries_used=rng.choice((0, 0, 1)), inside=rng.choice(((), ("hall-a",))),
                         benefits=(("lunch_day1", 2), ("dinner", 1)) if i % 3 == 0 else ())
            for i, tid in enumerate(ids)]


def hostile_day(journal: Journal, tickets: list[TicketRecord], rng: random.Random, n: int = 3000) -> None:
    """Entries, exits and lunches on held and absent ids in the four shapes, and the odd payloads a
    journal may hold: no zone, a benefit the ticket lacks, values of another type, nulls, nesting."""
    held = [t.ticket_id for t in tickets]
    odd = [{}, {"zone": None, "direction": "in"}, {"zone": "", "direction": "in"}, {"zone": "hall-a", "direction": "up"},
           {"zone": "hall-a", "direction": "in", "entries_used": "7"}, {"zone": "hall-a", "direction": "in", "entries_used": True},
           {"zone": "hall-a", "direction": "in", "entries_used": 1 << 40}, {"zone": "hall-c", "direction": "in"},
           {"benefit": "spa"}, {"benefit": False}, {"benefit": "lunch_day1", "benefit_remaining": "0"},
           {"benefit": "lunch_day1", "benefit_remaining": -3}, {"benefit": "dinner", "benefit_remaining": 5},
           {"zone": "hall-b", "direction": "out", "inside": "hall-b", "nested": {"zone": "x", "a": [1, {"b": None}]}},
           {"zone": "Halle Süd", "direction": "in", "note": "扫描 \"quoted\" \\ \u2028"}, {"zone": ["hall-a"], "direction": "in"}]
    at = 1_764_230_400.0
    for i in range(n):
        at += 0.5
        tid = rng.choice(held) if rng.random() < 0.9 else rng.getrandbits(63)
        roll = rng.random()
        if roll < 0.05:
            kind, ticket, payload = rng.choice(("passage", "redemption")), rng.choice((tid, None)), rng.choice(odd)
        elif roll < 0.2:
            kind, ticket, payload = "redemption", tid, {"ticket_id": tid, "benefit": rng.choice(("lunch_day1", "dinner")),
                                                        "benefit_remaining": rng.choice((0, 1, None)), "zone": "hall-a",
                                                        "direction": "in", "entries_used": 1, "inside": ["hall-a"]}
        elif roll < 0.3:
            kind, ticket, payload = "decision", tid, {"zone": "hall-a", "direction": "in", "benefit": "lunch_day1"}
        else:
            direction = rng.choice(("in", "in", "out"))
            kind, ticket, payload = "passage", tid, {"ticket_id": tid, "zone": rng.choice(("hall-a", "hall-b")), "direction": direction,
                                                     "entries_used": rng.choice((1, 2, 9)), "inside": ["hall-a"] if direction == "in" else [],
                                                     "benefit": None, "benefit_remaining": None, "confirmed": True, "decision_seq": i}
        journal.append(kind, at=at, lane="in-1", ticket_id=ticket, reason="ok", payload=payload)


def test_counted_again_on_a_snapshot_and_at_start_as_the_way_before_counted_it(tmp_path):
    rng = random.Random(23)
    tickets = venue(rng)
    snapshot = encode_snapshot(5, tickets)
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        hostile_day(journal, tickets, rng)
        records = list(journal.since(0, kinds=USAGE_KINDS))
        usage = list(journal.usage_since(0, batch=97))  # batches that end mid-day
        assert [u.seq for u in usage] == [r.seq for r in records if r.ticket_id is not None]
        assert {u.ticket_id for u in usage} >= {HIGH_U64, 100_001, 5_205_320_758}
        for after in (0, 1500):
            before, now = EntitlementCache(), EntitlementCache()
            before.load_snapshot(snapshot)
            now.load_snapshot(snapshot)
            applied_before = reapply_the_way_before(before, [r for r in records if r.seq > after])
            applied_now = reapply_local_usage(now, journal.usage_since(after))
            assert applied_now == applied_before > 100
            assert now.to_snapshot() == before.to_snapshot()
            # at start: absolute values from each record
            before.load_snapshot(snapshot)
            now.load_snapshot(snapshot)
            assert replay_usage(journal, now, after) == replay_the_way_before(journal, before, after) > 100
            assert now.to_snapshot() == before.to_snapshot()


def test_the_usage_accessors_read_what_a_whole_record_says(tmp_path):
    rng = random.Random(5)
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, venue(rng)))
    for rec in cache.records():
        assert cache.usage_of(rec.ticket_id) == (rec.entries_used, rec.inside)
        for name, left in rec.benefits:
            assert cache.benefit_remaining(rec.ticket_id, name) == left
        assert cache.benefit_remaining(rec.ticket_id, "spa") is None
    assert cache.usage_of(77) is None and cache.benefit_remaining(77, "lunch_day1") is None
