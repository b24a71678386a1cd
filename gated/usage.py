"""This gate's journaled usage, counted onto an entitlement cache.

Two moments need it, and they count differently:

- at start (`replay_usage`): the saved cache includes everything up to the
  journal seq it was saved with, so the usage records after it carry the
  exact values to restore (absolute: replaying twice is harmless);
- after a registry snapshot (`reapply_local_usage`): the snapshot holds other
  gates' usage this journal does not know, so this gate's records not yet
  acknowledged are counted again on top of it (up, never down), so a
  snapshot never erases local usage it does not include.
"""

from __future__ import annotations

from collections.abc import Iterable

from gated.journal import USAGE_KINDS, Journal, Record
from gated.validation import EntitlementCache


def replay_usage(journal: Journal, cache: EntitlementCache, saved_seq: int) -> int:
    """At start: re-apply the usage this gate journaled after its cache was saved
    (`saved_seq`), absolute values from each record. Returns how many applied."""
    if not len(cache):
        return 0
    replayed = 0
    for record in journal.since(saved_seq, kinds=USAGE_KINDS):
        p = record.payload
        if record.ticket_id is None or "entries_used" not in p:
            continue
        if cache.restore_usage(record.ticket_id, int(p["entries_used"]), tuple(p.get("inside") or ()), p.get("benefit"), p.get("benefit_remaining")):
            replayed += 1
    return replayed


def reapply_local_usage(cache: EntitlementCache, records: Iterable[Record]) -> int:
    """Count this gate's usage records again on top of a registry snapshot that lacks them.

    Entries are counted up (never below the record's own count), exits take
    the zone off, redemptions take one (never above the record's own
    remainder). A record the snapshot did include is counted twice: a
    ticket shows one use too many until the registry's delta for it arrives
    with its absolute values, never one too few. Returns how many applied.
    """
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
