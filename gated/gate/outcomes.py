"""Admissions whose outcome a power cut lost: found at start, counted as used.

A lane follows every admitted decision (but a check lane's, which counts
nothing) with exactly one outcome record
("passage", "redemption" or "not_passed", see `gated.gate.lane`) whose
``decision_seq`` names the decision's record. A power cut can fall between
the two: the relay may have opened, so at the next start, before any lane
runs, `settle_unknown_outcomes` journals the missing outcome as used, a
"passage" or "redemption" with ``"outcome": "unknown"``, counted by the
gate's cache and, being an ordinary usage record, by the registry. An exit
whose outcome is unknown counts the person out.

The start reads the journal from the `outcomes_settled` mark. The running
gate keeps moving that mark up to just before the oldest admission still
waiting for its outcome (`advance_settled_mark`, at every periodic save and
at stop), so a restart after a long day reads seconds of journal, not the
day.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import structlog

from gated.journal import Journal, Record
from gated.validation import Direction, EntitlementCache

log = structlog.get_logger("gated.gate.outcomes")

OUTCOME_KINDS = ("passage", "redemption", "not_passed")
SETTLED_MARK = "outcomes_settled"


def _outcome_key(record: Record) -> tuple:
    benefit = record.payload.get("benefit") if record.kind != "not_passed" else None
    return record.lane, record.ticket_id, benefit


class PendingOutcomes:
    """Admitted decisions after `after_seq` whose outcome record the journal does not hold yet.

    Reads the journal forward from where it last stopped (`read`), so a
    running gate pays only for the records written since. An outcome names
    its decision by `decision_seq`; one written before outcomes did (an older
    gated) is paired with the oldest admission on its lane, ticket and
    benefit (the order a lane writes them in).

    `settled_through()` is the highest seq below which every admitted
    decision has its outcome on disk: what the `outcomes_settled` mark may say.
    """

    def __init__(self, after_seq: int):
        self._lock = threading.Lock()  # `read` runs in worker threads, one at a time
        self.read_to = after_seq
        self._waiting: dict[int, Record] = {}  # decision seq -> decision, oldest first
        self._by_key: dict[tuple, list[int]] = {}

    def read(self, journal: Journal) -> "PendingOutcomes":
        with self._lock:
            self._read(journal)
        return self

    def _read(self, journal: Journal) -> None:
        for record in journal.since(self.read_to, kinds=("decision", *OUTCOME_KINDS)):
            self.read_to = record.seq
            if record.kind == "decision":
                if record.reason == "ok" and record.ticket_id is not None and record.payload.get("purpose") != "check":
                    self._waiting[record.seq] = record
                    self._by_key.setdefault(_outcome_key(record), []).append(record.seq)
                continue
            seq = record.payload.get("decision_seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                decision = self._waiting.get(seq)
                if decision is not None:
                    self._settle(_outcome_key(decision), seq)
            elif record.ticket_id is not None:
                key = _outcome_key(record)
                if key in self._by_key:
                    self._settle(key, self._by_key[key][0])

    def _settle(self, key: tuple, seq: int) -> None:
        del self._waiting[seq]
        seqs = self._by_key[key]
        seqs.remove(seq)
        if not seqs:  # a day holds a key per ticket: keep only those still waiting
            del self._by_key[key]

    def waiting(self) -> list[Record]:
        return list(self._waiting.values())

    def settled_through(self) -> int:
        return next(iter(self._waiting), self.read_to + 1) - 1


def unknown_outcomes(journal: Journal, after_seq: int) -> list[Record]:
    """Admitted decisions after `after_seq` with no outcome record, oldest first."""
    return PendingOutcomes(after_seq).read(journal).waiting()


def advance_settled_mark(journal: Journal, pending: PendingOutcomes) -> int:
    """Move the `outcomes_settled` mark up to just before the oldest admission still
    waiting for its outcome, so the next start reads only from there. Blocking
    (reads the journal): run it in a worker thread. Returns the mark.

    Safe at any moment, a power cut included: `pending` reads only committed
    records, so the mark never passes an admission whose outcome is not on
    disk, and the mark itself is one durable write (the old or the new value
    survives a cut, both true)."""
    through = pending.read(journal).settled_through()
    if through > journal.mark(SETTLED_MARK):
        journal.set_mark(SETTLED_MARK, through)
    return through


async def settle_unknown_outcomes(journal: Journal, cache: EntitlementCache, now: float) -> list[Record]:
    """At start, before any lane runs: count every admission whose outcome a power cut lost.

    Each gets its outcome record (see the module docstring) and its usage in
    `cache`; returns the records written. Idempotent: a decision settled once
    is paired with its record at the next start, and a journal mark keeps
    later starts from reading what was settled before."""
    settled: list[Record] = []
    for decision in unknown_outcomes(journal, journal.mark(SETTLED_MARK)):
        p = decision.payload
        zone, direction, benefit = p.get("zone"), p.get("direction"), p.get("benefit")
        payload: dict[str, Any] = {"ticket_id": decision.ticket_id, "zone": zone, "direction": direction,
                                   "benefit": benefit, "confirmed": False, "outcome": "unknown",
                                   "decision_seq": decision.seq}
        if isinstance(p.get("redemption_id"), str):  # the registry pairs it with its grant: taken once
            payload["redemption_id"] = p["redemption_id"]
        row = cache.row_of(decision.ticket_id)
        if row >= 0:
            if benefit is not None:
                remaining = cache.redeem(row, benefit)
                if remaining is not None:
                    payload["benefit_remaining"] = remaining
            elif direction == Direction.OUT:
                cache.count_exit(row, zone)
            elif isinstance(zone, str) and zone:
                cache.count_entry(row, zone)
            if benefit is None or "benefit_remaining" in payload:
                table = cache.table
                payload["entries_used"] = table.used[row]
                payload["inside"] = list(table.zones_of(table.inside[row]))
        kind = "redemption" if benefit is not None else "passage"
        record = await journal.append_async(kind, at=now, lane=decision.lane, ticket_id=decision.ticket_id,
                                            reason="ok", payload=payload)
        settled.append(record)
        log.warning("unknown_outcome_counted", lane=decision.lane, ticket_id=decision.ticket_id, kind=kind,
                    decision_seq=decision.seq, note="admitted before a power cut, outcome never recorded: counted as used")
    last = journal.tail(1)
    if last:
        await asyncio.to_thread(journal.set_mark, SETTLED_MARK, last[-1].seq)
    return settled
