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
- A grant whose record never comes (the gate lost power between the answer
  and its journal write) stays taken: like an admission whose outcome was
  lost, it counts as used. `unpaired_grants` lists them.
- Over-redemptions name both records: the record already held may be a
  grant whose journal record has not arrived yet (`latest_grant`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gated.journal import u64_from_sqlite, u64_to_sqlite
from gated.validation.cache import Delta, Op, SetBenefit, TicketState

if TYPE_CHECKING:
    from gated.registry.store import RegistryStore

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
    PRIMARY KEY (gate_id, redemption_id)
) WITHOUT ROWID;
CREATE INDEX redemptions_by_ticket ON redemptions(ticket_id, benefit, at);
"""

OUTCOMES = ("ok", "no_benefit", "benefit_exhausted", "unknown_ticket", "revoked")
MAX_REDEMPTION_ID = 128


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
                base, version = store._bump_version()
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


def _grant(row: tuple) -> Grant:
    gate, rid, tid, benefit, lane, at, remaining, r_epoch, r_seq = row
    return Grant(gate, rid, u64_from_sqlite(tid), benefit, lane, at, remaining,
                 None if r_epoch is None else u64_from_sqlite(r_epoch), r_seq)


_GRANT_COLUMNS = "gate_id, redemption_id, ticket_id, benefit, lane, at, remaining, record_epoch, record_seq"


def latest_grant(store: RegistryStore, ticket_id: int, benefit: str) -> Grant | None:
    """The most recent ok grant of `benefit` to `ticket_id` (paired or not)."""
    row = store.conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE ticket_id = ? AND benefit = ? AND outcome = 'ok' "
        "ORDER BY at DESC LIMIT 1", (u64_to_sqlite(ticket_id), benefit)).fetchone()
    return None if row is None else _grant(row)


def unpaired_grants(store: RegistryStore) -> list[Grant]:
    """Ok grants no journal record has reported yet (in flight, or lost with a power cut)."""
    return [_grant(r) for r in store.conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM redemptions WHERE outcome = 'ok' AND record_seq IS NULL ORDER BY received_at")]


def answers(store: RegistryStore, ticket_id: int | None = None) -> list[tuple[str, str, int, str, str]]:
    """(gate, redemption_id, ticket, benefit, outcome) of every Redeem answered, oldest first."""
    where, args = ("WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)) if ticket_id is not None else ("", ())
    return [(g, r, u64_from_sqlite(t), b, o) for g, r, t, b, o in store.conn.execute(
        f"SELECT gate_id, redemption_id, ticket_id, benefit, outcome FROM redemptions {where} ORDER BY received_at", args)]
