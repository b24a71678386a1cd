"""A gate's closed journal epochs: admissions whose outcome never reached the registry, counted as used.

A gate follows each admitted decision with one outcome record (passage,
redemption or not_passed) naming it by ``decision_seq``; a gate restarting
after a power cut journals the outcomes the cut lost as used
(``"outcome": "unknown"``). What neither covers: a decision the registry
holds whose outcome no record will ever bring, because the gate's SD card
lost both (a WAL tail the card acknowledged and never wrote). The gate no
longer knows it let someone in; only the registry does.

Rules this module keeps (inside the store's batch transaction):

- A gate's epoch is *closed* once the registry stores a record of a later
  epoch of that gate: a gate sends its epochs oldest first, each completely
  before the next (gated/rpc/uplink.py), and starts a new one at every boot,
  so by then every record of the older epoch that still exists has arrived.
  Each epoch is closed once (table ``closed_epochs``).
- Closing counts as used every admitted decision of the epoch with no
  outcome record (from any epoch of the gate), when it is an entry at an
  ``in`` lane of a ticket with a limited number of entries, or a
  redemption: exactly as the outcome record would have (`_count_usage`: the
  registry's count, conflicts, the delta fanned out to every gate). Exits and
  unlimited tickets are left alone: counting them changes no admission.
- Exactly once: each decision counted so is kept (table ``implied_uses``);
  an outcome record naming it that arrives afterwards (a gate's unknown
  outcome journaled at its next start, in a later batch) is stored and counts
  nothing.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import structlog

from gated.journal import u64_from_sqlite, u64_to_sqlite
from gated.rpc.convert import json_value

if TYPE_CHECKING:
    from gated.registry.store import Conflict, IncomingEvent, RegistryStore
    from gated.validation.cache import Op

SCHEMA = """
CREATE TABLE IF NOT EXISTS closed_epochs (
    gate_id   TEXT NOT NULL,
    epoch     INTEGER NOT NULL,          -- u64 as i64
    closed_at REAL NOT NULL,
    by_epoch  INTEGER NOT NULL,          -- the later epoch whose first record closed it
    counted   INTEGER NOT NULL,          -- admissions counted as used on closing
    PRIMARY KEY (gate_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS implied_uses (
    gate_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,         -- the admitted decision's seq...
    epoch      INTEGER NOT NULL,         -- ...in this epoch
    ticket_id  INTEGER NOT NULL,
    counted_at REAL NOT NULL,
    PRIMARY KEY (gate_id, seq, epoch)
) WITHOUT ROWID;
"""

log = structlog.get_logger()


def create_tables(conn) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def counted_on_closing(store: RegistryStore, gate_id: str, ticket_id: int | None, payload: dict) -> bool:
    """This outcome record names a decision its epoch's closing counted already: store it, count nothing."""
    seq = payload.get("decision_seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or ticket_id is None:
        return False
    return store.conn.execute(
        "SELECT 1 FROM implied_uses WHERE gate_id = ? AND seq = ? AND ticket_id = ?",
        (gate_id, seq, u64_to_sqlite(ticket_id)),
    ).fetchone() is not None


def close_earlier_epochs(store: RegistryStore, gate_id: str, db_epoch: int, conflicts: list[Conflict],
                         count) -> list[Op]:
    """The gate sent a record of `db_epoch`: close every other epoch of it not closed yet.

    `count(ev, db_epoch)` is the store's usage count of one outcome (returns an op or None).
    Returns the ops of the admissions counted."""
    from gated.registry.store import IncomingEvent

    conn = store.conn
    open_ = [e for (e,) in conn.execute(
        "SELECT epoch FROM gates WHERE gate_id = ? AND epoch != ? "
        "AND epoch NOT IN (SELECT epoch FROM closed_epochs WHERE gate_id = ?)", (gate_id, db_epoch, gate_id))]
    ops: list[Op] = []
    now = time.time()
    for epoch in open_:
        first = conn.execute("SELECT min(seq) FROM events WHERE gate_id = ? AND epoch = ?", (gate_id, epoch)).fetchone()[0]
        decided = conn.execute(
            "SELECT seq, event_id, at, lane, ticket_id, payload FROM events "
            "WHERE gate_id = ? AND epoch = ? AND kind = 'decision' AND reason = 'ok' AND ticket_id IS NOT NULL ORDER BY seq",
            (gate_id, epoch)).fetchall()
        waiting = _without_outcome(conn, gate_id, epoch, decided, first or 0)
        counted = 0
        for seq, event_id, at, lane, db_ticket, payload_json in waiting:
            ev = _implied_outcome(IncomingEvent, store, seq, event_id, at, lane, u64_from_sqlite(db_ticket), payload_json)
            if ev is None:
                continue
            op = count(ev, epoch)
            conn.execute("INSERT OR IGNORE INTO implied_uses(gate_id, seq, epoch, ticket_id, counted_at) VALUES (?, ?, ?, ?, ?)",
                         (gate_id, seq, epoch, db_ticket, now))
            counted += 1
            if op is not None:
                ops.append(op)
        conn.execute("INSERT INTO closed_epochs(gate_id, epoch, closed_at, by_epoch, counted) VALUES (?, ?, ?, ?, ?)",
                     (gate_id, epoch, now, db_epoch, counted))
        if counted:
            log.warning("registry_unknown_outcomes_counted", gate=gate_id, epoch=f"{u64_from_sqlite(epoch):#018x}",
                        admissions=counted, note="admitted, no outcome record ever came: counted as used")
    return ops


def _without_outcome(conn, gate_id: str, epoch: int, decided: list[tuple], first_seq: int) -> list[tuple]:
    """The admitted decisions of `epoch` no outcome record of the gate names (by decision_seq; an
    outcome without one, from an older gated, takes the oldest decision of its lane and ticket).

    An outcome in another epoch names a decision of `epoch` only when its own epoch holds no
    decision under that seq: records a conflict moved to a new epoch keep their seqs, so the
    moved admission's passage names its own decision there, never the other content the
    registry held under the same seq in `epoch` (whose use is then counted here)."""
    if not decided:
        return []
    named: set[int] = set()
    elsewhere: set[tuple[int, int]] = set()  # (epoch, decision_seq) named by outcomes of other epochs
    legacy: dict[tuple, int] = {}
    # Outcomes come after their decision: in its epoch or a later one, whose seqs leap past it.
    # decision_seq read here, not by json_extract: PostgreSQL's json_extract (engine.PG_FUNCTIONS)
    # gives text, SQLite's a number, and on PostgreSQL every outcome fell to the legacy rule.
    for payload, lane, ticket, outcome_epoch in conn.execute(
            "SELECT payload, lane, ticket_id, epoch "
            "FROM events WHERE gate_id = ? AND seq >= ? AND kind IN ('passage', 'redemption', 'not_passed')",
            (gate_id, first_seq)):
        seq_named = _decision_seq(payload)
        if seq_named is not None:
            if outcome_epoch == epoch:
                named.add(seq_named)
            else:
                elsewhere.add((outcome_epoch, seq_named))
        else:
            legacy[(lane, ticket)] = legacy.get((lane, ticket), 0) + 1
    decided_seqs = {row[0] for row in decided}
    for outcome_epoch, seq_named in elsewhere:
        if seq_named in decided_seqs and seq_named not in named and conn.execute(
                "SELECT 1 FROM events WHERE gate_id = ? AND epoch = ? AND seq = ? AND kind = 'decision'",
                (gate_id, outcome_epoch, seq_named)).fetchone() is None:
            named.add(seq_named)
    out = []
    for row in decided:
        if row[0] in named:
            continue
        key = (row[3], row[4])
        if legacy.get(key):
            legacy[key] -= 1
            continue
        out.append(row)
    return out


def _decision_seq(payload_json: str) -> int | None:
    """The decision an outcome record names (its payload's integer decision_seq), if any."""
    try:
        payload = json_value(payload_json)
    except (ValueError, RecursionError):
        return None
    seq = payload.get("decision_seq") if type(payload) is dict else None
    return seq if type(seq) is int else None


def _implied_outcome(incoming, store: RegistryStore, seq, event_id, at, lane, ticket_id, payload_json):
    """The outcome record the gate would have sent for this admission, if it counts (see the rules)."""
    try:
        p = json.loads(payload_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(p, dict):
        return None
    benefit = p.get("benefit")
    if benefit is not None:
        kind = "redemption"
        out = {"ticket_id": ticket_id, "benefit": benefit, "outcome": "unknown"}
        if isinstance(p.get("redemption_id"), str):
            out["redemption_id"] = p["redemption_id"]
    else:
        if p.get("direction") != "in":
            return None
        row = store.conn.execute("SELECT max_entries FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()
        if row is None or not row[0]:
            return None
        kind = "passage"
        out = {"ticket_id": ticket_id, "zone": p.get("zone"), "direction": "in", "outcome": "unknown"}
    return incoming(event_id, seq, at, kind, lane, ticket_id, "ok", json.dumps(out))
