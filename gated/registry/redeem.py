"""The registry's redemptions: `Redeem`, the atomic, idempotent take of one benefit.

Owns the ``redemptions`` table and every rule about it; `RegistryStore`
(gated/registry/store.py) calls in here when a gate's "redemption" journal
record arrives, and the server (gated/registry/server.py) when a gate calls
`Redeem`. Rules it keeps:

- One transaction per request: read the ticket, check, take one, store the
  answer, bump the entitlement version. SQLite's write lock (``BEGIN
  IMMEDIATE``) serialises two units asking for the last lunch at the same
  moment: the first takes it, the second reads 0 and is told
  ``benefit_exhausted``.
- Idempotent by (gate id, redemption_id): every answer is stored (refusals
  too), and a retry of the same request gets the stored answer back with
  ``replayed`` set, taking nothing. The same id for another ticket or
  benefit is refused (`RedemptionConflict`), nothing taken.
- Pairing with the journal. A gate whose redemption the registry granted
  journals its decision and then a "redemption" record, both with the same
  ``redemption_id`` in their payload, and sends them up later over
  StreamEvents. Counting that record again would take the lunch twice, so
  `pair_record` matches it to the grant: a record from the same gate with
  the redemption_id of an ``ok`` grant not yet paired is stored (its
  (epoch, seq) written on the grant) and takes nothing. Everything else
  counts as before: a record with no redemption_id (an older gate), with an
  id the registry never granted (the unit redeemed offline, or asked and got
  no answer in time and its policy let it redeem locally; had the registry
  granted it after all, the ids match and it is paired), or a second record
  for a grant already paired. A redemption the registry refused but the gate
  journaled as taken (its answer came after the deadline) is counted, and
  shows up as an over-redemption when it overdrew.
- Late grants are given back, never silently kept (`settle_batch`, run in
  the transaction that stores each batch of a gate's events). A grant whose
  answer reached its unit after the 1 s deadline stays taken here while the
  unit, under the strict policy, refused (`registry_unreachable`): nobody
  ate that lunch, and keeping it would leave the attendee one lunch short
  at every unit. So:
    * the unit's own refusal (its "decision" record carrying the grant's
      redemption_id with a reason other than ok) releases the grant at once:
      the refusal is on the operator's screen and in the journal, proof that
      no benefit was handed out;
    * a grant no record of its unit has named (neither the ok decision nor
      the redemption) `LATE_GRANT_RELEASE_S` after it was granted, once that
      unit has sent records it journaled (by its own clock) that long after
      the request, is released too: a unit journals a granted decision
      before the operator sees it and sends its journal in order, so the
      later records prove it never journaled this one (the power went
      between the answer and the write, the operator saw nothing). The one
      case it gets wrong is a journal tail an SD card lost after the
      operator saw the grant; that costs one extra lunch, as against one
      lost lunch per late answer otherwise, and it is reported.
    * a grant whose ok decision record has arrived is never released: its
      outcome comes as a "redemption" record, or at the unit's next start
      (`gated.gate.outcomes` journals it as used).
  Releasing gives the benefit back (one SetBenefit in the batch's delta, so
  every gate has it within a poll), marks the grant released, and records a
  `late_grant_released` conflict naming the grant and the record that
  settled it. `unpaired_grants` lists the grants still waiting (the report
  and the dashboard show them).
- Over-redemptions name both records: the record already held may be a
  grant whose journal record has not arrived yet (`latest_grant`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from gated.journal import u64_from_sqlite, u64_to_sqlite
from gated.validation.cache import Delta, Op, SetBenefit, TicketState

if TYPE_CHECKING:
    from gated.registry.store import IncomingEvent, RegistryStore

log = structlog.get_logger("gated.registry.redeem")

SCHEMA = """
CREATE TABLE redemptions (
    gate_id       TEXT NOT NULL,
    redemption_id TEXT NOT NULL,
    ticket_id     INTEGER NOT NULL,     -- u64 as two's-complement i64
    benefit       TEXT NOT NULL,
    lane          TEXT NOT NULL,
    at            REAL NOT NULL,        -- the gate's time of the request
    outcome       TEXT NOT NULL,        -- one of OUTCOMES
    remaining     INTEGER NOT NULL,     -- left after this answer
    version       INTEGER NOT NULL,     -- the entitlement version of an ok grant's delta, 0 for a refusal
    received_at   REAL NOT NULL,
    record_epoch  INTEGER,              -- the gate's "redemption" record paired with an ok grant
    record_seq    INTEGER,
    decision_seq  INTEGER,              -- the gate's ok "decision" record naming an ok grant
    released_at   REAL,                 -- a late grant given back (`settle_batch`), and why
    released_why  TEXT,
    PRIMARY KEY (gate_id, redemption_id)
) WITHOUT ROWID;
CREATE INDEX redemptions_by_ticket ON redemptions(ticket_id, benefit, at);
CREATE INDEX redemptions_unpaired ON redemptions(gate_id, received_at) WHERE outcome = 'ok' AND record_seq IS NULL;
"""

OUTCOMES = ("ok", "no_benefit", "benefit_exhausted", "unknown_ticket", "revoked")
MAX_REDEMPTION_ID = 128
LATE_GRANT_RELEASE_S = 600.0  # a grant no record named this long after it is given back (see above)
RELEASED_KIND = "late_grant_released"  # the conflict recorded for each grant given back
_RELEASE_COLUMNS = ("decision_seq INTEGER", "released_at REAL", "released_why TEXT")


class RedemptionConflict(ValueError):
    """A gate reused a redemption_id for another ticket or benefit."""


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    redemption_id: str
    ticket_id: int
    benefit: str
    lane: str
    at: float


@dataclass(frozen=True, slots=True)
class RedeemResult:
    outcome: str  # one of OUTCOMES
    remaining: int
    replayed: bool
    version: int  # the version of a grant's delta (0: a refusal)
    delta: Delta | None  # the version bump a grant made (None for a refusal or a replay)


def redeem(store: RegistryStore, gate_id: str, req: RedeemRequest,
           check: Callable[[tuple[Op, ...]], None] | None = None) -> RedeemResult:
    """Check and take one `req.benefit` of `req.ticket_id`, in one transaction.

    `check(ops)` (the server's mirror) runs before the commit; a ValueError
    from it rolls everything back and is raised.
    """
    conn = store.conn
    tid = u64_to_sqlite(req.ticket_id)
    with store.transaction():
        held = conn.execute(
            "SELECT ticket_id, benefit, outcome, remaining, version FROM redemptions WHERE gate_id = ? AND redemption_id = ?",
            (gate_id, req.redemption_id),
        ).fetchone()
        if held is not None:
            if (u64_from_sqlite(held[0]), held[1]) != (req.ticket_id, req.benefit):
                raise RedemptionConflict(
                    f"redemption {req.redemption_id!r} of gate {gate_id!r} was ticket {u64_from_sqlite(held[0])} "
                    f"{held[1]!r}, not ticket {req.ticket_id} {req.benefit!r}")
            return RedeemResult(held[2], held[3], True, held[4], None)
        row = conn.execute("SELECT state, benefits FROM tickets WHERE ticket_id = ?", (tid,)).fetchone()
        delta = None
        version = 0
        if row is None:
            outcome, remaining = "unknown_ticket", 0
        else:
            state, benefits_json = row
            benefits = json.loads(benefits_json)
            pair = next((p for p in benefits if p[0] == req.benefit), None)
            if state == TicketState.REVOKED:  # the gate's order: revoked, then no_benefit, benefit_exhausted
                outcome, remaining = "revoked", 0 if pair is None else pair[1]
            elif pair is None:
                outcome, remaining = "no_benefit", 0
            elif pair[1] <= 0:
                outcome, remaining = "benefit_exhausted", 0
            else:
                pair[1] -= 1
                outcome, remaining = "ok", pair[1]
                conn.execute("UPDATE tickets SET benefits = ? WHERE ticket_id = ?", (json.dumps(benefits), tid))
                ops = (SetBenefit(req.ticket_id, req.benefit, remaining),)
                if check is not None:
                    check(ops)
                base, version = store._bump_version(ops)
                delta = Delta(base, version, ops)
        conn.execute(
            "INSERT INTO redemptions(gate_id, redemption_id, ticket_id, benefit, lane, at, outcome, remaining, version, "
            "received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (gate_id, req.redemption_id, tid, req.benefit, req.lane, req.at, outcome, remaining, version, time.time()),
        )
    return RedeemResult(outcome, remaining, False, version, delta)


def pair_record(store: RegistryStore, gate_id: str, db_epoch: int, seq: int, payload: dict) -> bool:
    """A new "redemption" record of `gate_id`: True when it reports an ok grant not yet paired
    (it is paired now and must take nothing). Runs inside the batch's transaction."""
    rid = payload.get("redemption_id")
    if not isinstance(rid, str) or not rid:
        return False
    cur = store.conn.execute(
        "UPDATE redemptions SET record_epoch = ?, record_seq = ? WHERE gate_id = ? AND redemption_id = ? "
        "AND outcome = 'ok' AND record_seq IS NULL",
        (db_epoch, seq, gate_id, rid),
    )
    return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class Grant:
    gate_id: str
    redemption_id: str
    ticket_id: int
    benefit: str
    lane: str
    at: float
    remaining: int
    record_epoch: int | None
    record_seq: int | None
    received_at: float = 0.0


def _grant(row: tuple) -> Grant:
    gate, rid, tid, benefit, lane, at, remaining, r_epoch, r_seq, received_at = row
    return Grant(gate, rid, u64_from_sqlite(tid), benefit, lane, at, remaining,
                 None if r_epoch is None else u64_from_sqlite(r_epoch), r_seq, received_at)


_GRANT_COLUMNS = "gate_id, redemption_id, ticket_id, benefit, lane, at, remaining, record_epoch, record_seq, received_at"


def add_release_columns(conn: sqlite3.Connection) -> None:
    """Schema 6 on an SQLite file made before late grants were released (inside the caller's transaction)."""
    if not any(row[1] == "released_at" for row in conn.execute("PRAGMA table_info(redemptions)")):
        for column in _RELEASE_COLUMNS:
            conn.execute(f"ALTER TABLE redemptions ADD COLUMN {column}")
    conn.execute("CREATE INDEX IF NOT EXISTS redemptions_unpaired ON redemptions(gate_id, received_at) "
                 "WHERE outcome = 'ok' AND record_seq IS NULL")


def _not_released(conn: sqlite3.Connection) -> str:
    return " AND released_at IS NULL"


def latest_grant(store: RegistryStore, ticket_id: int, benefit: str) -> Grant | None:
    """The most recent ok grant of `benefit` to `ticket_id` (paired or not; not one given back)."""
    row = store.conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE ticket_id = ? AND benefit = ? AND outcome = 'ok'"
        f"{_not_released(store.conn)} ORDER BY at DESC LIMIT 1", (u64_to_sqlite(ticket_id), benefit)).fetchone()
    return None if row is None else _grant(row)


def unpaired_grants(store: RegistryStore | sqlite3.Connection) -> list[Grant]:
    """Ok grants no journal record has reported yet and not given back (in flight, answered
    late, or lost with a power cut), oldest first."""
    conn = getattr(store, "conn", store)  # a store, or a connection of either engine
    return [_grant(r) for r in conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE outcome = 'ok' AND record_seq IS NULL{_not_released(conn)} "
        "ORDER BY received_at")]


def settle_batch(store: RegistryStore, gate_id: str, db_epoch: int, events: Sequence[IncomingEvent],
                 now: float, release_after_s: float | None = None) -> list[Op]:
    """The grants this batch of `gate_id`'s events settles (module docstring, "Late grants"):
    each ok decision naming a grant is noted; each grant the batch proves no one received is
    given back. Runs inside the batch's transaction, after its events are stored; returns
    the benefit counts it restored, for the batch's delta."""
    if not events:
        return []
    conn = store.conn
    if release_after_s is None:
        release_after_s = LATE_GRANT_RELEASE_S
    ops: list[Op] = []
    for ev in events:
        if ev.kind != "decision" or "redemption_id" not in ev.payload_json:
            continue
        try:
            rid = json.loads(ev.payload_json).get("redemption_id")
        except (ValueError, RecursionError, AttributeError):
            continue
        if not isinstance(rid, str) or not rid:
            continue
        if ev.reason == "ok":
            conn.execute("UPDATE redemptions SET decision_seq = ? WHERE gate_id = ? AND redemption_id = ? "
                         "AND outcome = 'ok' AND decision_seq IS NULL", (ev.seq, gate_id, rid))
            continue
        row = conn.execute(f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE gate_id = ? AND redemption_id = ? "
                           "AND outcome = 'ok' AND record_seq IS NULL AND released_at IS NULL", (gate_id, rid)).fetchone()
        if row is not None:
            op = _release(store, _grant(row), f"the unit refused it ({ev.reason}): the answer came after its deadline",
                          ev, db_epoch, now)
            if op is not None:
                ops.append(op)
    last = events[-1]
    for row in conn.execute(
            f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE gate_id = ? AND outcome = 'ok' AND record_seq IS NULL "
            "AND decision_seq IS NULL AND released_at IS NULL AND received_at <= ? AND at <= ?",
            (gate_id, now - release_after_s, last.at - release_after_s)).fetchall():
        op = _release(store, _grant(row), f"no record of its unit named it within {release_after_s:g} s, "
                      "and the unit's later records have arrived", last, db_epoch, now)
        if op is not None:
            ops.append(op)
    return ops


def _release(store: RegistryStore, grant: Grant, why: str, ev: IncomingEvent, db_epoch: int, now: float) -> Op | None:
    """Give `grant`'s benefit back; record it as a `late_grant_released` conflict with both records."""
    conn = store.conn
    conn.execute("UPDATE redemptions SET released_at = ?, released_why = ? WHERE gate_id = ? AND redemption_id = ?",
                 (now, why, grant.gate_id, grant.redemption_id))
    conn.execute(
        "INSERT INTO conflicts(kind, ticket_id, benefit, first_event, first_gate, first_epoch, first_seq, first_lane, "
        "first_at, event_id, gate_id, epoch, seq, lane, at, found_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (RELEASED_KIND, u64_to_sqlite(grant.ticket_id), grant.benefit, f"{grant.gate_id}:redeem:{grant.redemption_id}",
         grant.gate_id, None, None, grant.lane, grant.at, ev.event_id, grant.gate_id, db_epoch, ev.seq, ev.lane, ev.at, now),
    )
    log.warning("late_grant_released", gate=grant.gate_id, lane=grant.lane, ticket_id=grant.ticket_id,
                benefit=grant.benefit, redemption_id=grant.redemption_id, why=why)
    tid = u64_to_sqlite(grant.ticket_id)
    row = conn.execute("SELECT benefits FROM tickets WHERE ticket_id = ?", (tid,)).fetchone()
    if row is None:
        return None
    benefits = json.loads(row[0])
    for pair in benefits:
        if pair[0] == grant.benefit:
            pair[1] += 1
            conn.execute("UPDATE tickets SET benefits = ? WHERE ticket_id = ?", (json.dumps(benefits), tid))
            return SetBenefit(grant.ticket_id, grant.benefit, pair[1])
    return None  # the benefit was taken off the ticket since: nothing to give back


def answers(store: RegistryStore, ticket_id: int | None = None) -> list[tuple[str, str, int, str, str]]:
    """(gate, redemption_id, ticket, benefit, outcome) of every Redeem answered, oldest first."""
    where, args = ("WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)) if ticket_id is not None else ("", ())
    return [(g, r, u64_from_sqlite(t), b, o) for g, r, t, b, o in store.conn.execute(
        f"SELECT gate_id, redemption_id, ticket_id, benefit, outcome FROM redemptions {where} ORDER BY received_at", args)]
