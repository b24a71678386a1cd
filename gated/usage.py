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

from gated.journal import Journal, UsageRecord
from gated.validation import EntitlementCache


def replay_usage(journal: Journal, cache: EntitlementCache, saved_seq: int) -> int:
    """At start: re-apply the usage this gate journaled after its cache was saved
    (`saved_seq`), absolute values from each record. Returns how many applied."""
    if not len(cache):
        return 0
    replayed = 0
    for u in journal.usage_since(saved_seq):
        if u.entries_used is None:
            continue
        if cache.restore_usage(u.ticket_id, int(u.entries_used), tuple(u.inside or ()), u.benefit, u.benefit_remaining):
            replayed += 1
    return replayed


def reapply_local_usage(cache: EntitlementCache, usage: Iterable[UsageRecord]) -> int:
    """Count this gate's usage records (`Journal.usage_since`) again on top of a registry snapshot that lacks them.

    Entries are counted up (never below the record's own count), exits take
    the zone off, redemptions take one (never above the record's own
    remainder). A record the snapshot did include is counted twice: a
    ticket shows one use too many until the registry's delta for it arrives
    with its absolute values, never one too few. Returns how many applied.
    """
    applied = 0
    for u in usage:
        held = cache.usage_of(u.ticket_id)
        if held is None:
            continue
        entries_used, inside = held
        benefit, zone, direction = u.benefit, u.zone, u.direction
        if benefit is not None:
            remaining = cache.benefit_remaining(u.ticket_id, benefit)
            if remaining is None:
                continue
            remaining = max(0, remaining - 1)
            if isinstance(u.benefit_remaining, int):
                remaining = min(remaining, u.benefit_remaining)
            changed = cache.restore_usage(u.ticket_id, entries_used, inside, benefit, remaining)
        elif isinstance(zone, str) and zone and direction in ("in", "out"):
            if direction == "in":
                used = max(entries_used + 1, u.entries_used if isinstance(u.entries_used, int) else 0)
                inside = inside if zone in inside else (*inside, zone)
            else:
                inside = tuple(z for z in inside if z != zone)
                used = entries_used
            changed = cache.restore_usage(u.ticket_id, min(used, 0xFFFFFFFF), inside)
        else:
            continue
        applied += changed
    return applied
