"""The reference registry's database: tickets, keys, events, versions (SQLite).

Owns every read and write of the registry's file, for the server and for the
`gated registry ...` commands alike. Rules it keeps:

- Events are stored once per (gate, journal epoch, seq): the primary key,
  and ``INSERT OR IGNORE``, so a gate that resends after a lost ack changes
  nothing. Event ids ("<gate>:<seq>") are for display: a gate whose journal
  was replaced starts again at seq 1 under a new epoch, and those events
  are new. Only an event stored for the first time counts towards usage.
- A resent (gate, epoch, seq) must be the record already stored: one with
  other content (a gate whose journal lost records it had sent, then reused
  their numbers) is refused with `EventConflict`, the whole batch rolled
  back, never acknowledged as if stored.
- What the registry holds of a gate is kept per (gate, epoch): the highest
  seq stored (``gates.acked_seq``).
- A batch of events, the usage it changes and the entitlement version it
  bumps are one transaction (``synchronous=FULL``): an ack is sent only
  after that commit, so an acknowledged event survives a power cut.
- Changes made by the commands (revoke, reissue, import, keys) are written
  together with a row in ``changes``; the running server notices the commit
  (``PRAGMA data_version``) and turns those rows into deltas and key
  updates. A server that was not running applies them at start.
- Ticket ids are u64; SQLite integers are signed, so they are stored as the
  two's-complement i64 and mapped back on read.
- Conflicts are shown, not hidden. Gates apart from the registry (or from
  each other) can each admit the last entry of a ticket; the registry counts
  what was used all the same, and when a new usage event overdraws a ticket
  it stores a row in ``conflicts`` holding both records (the one already
  held and the one that overdrew, each with gate, lane and time) and logs
  ``registry_conflict``: over-entry (entries beyond max_entries),
  over-redemption (a benefit taken at 0 remaining), and use of a revoked
  ticket (an entry or redemption timed at or after its revocation; the
  revocation is the earlier record).
- Redemptions granted through `Redeem` (gated/registry/redeem.py, which
  states the rules) are taken there, at once and once per (gate,
  redemption_id). The gate's "redemption" journal record for such a grant
  carries the same redemption_id and is paired with it when it arrives:
  stored, and taking nothing more. A record with no grant to pair with (a
  unit that redeemed offline) counts as any usage does, and an overdraw it
  causes is an over_redemption conflict whose first record may be the grant.
- The file holds the event's raw signing keys: it is created mode 0600 (its
  -wal and -shm follow the file's mode), and an older file found readable by
  others is tightened to 0600 when opened.
- A writer waits up to BUSY_TIMEOUT_S for another's write lock (an import
  in another process holds it for a second or two); readers never wait
  (WAL). A connection may be handed between threads, one at a time: the
  server runs its store work off its event loop.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import operator
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from gated.errors import EventConflict, RegistryError
from gated.journal import USAGE_KINDS, u64_from_sqlite, u64_to_sqlite
from gated.registry import engine
from gated.sqlite_wal import WalCheckpointer
from gated.validation.cache import (
    MAX_ZONES,
    Delta,
    Op,
    SetBenefit,
    SetUsage,
    TicketRecord,
    TicketState,
)
from gated.registry import dashdata as registry_dashdata
from gated.registry import epochs as registry_epochs
from gated.registry import redeem as registry_redeem

log = structlog.get_logger()

BUSY_TIMEOUT_S = 30.0
#: A serving registry's WAL checkpoints (`RegistryStore.checkpoint_in_background`): a thread of
#: their own copies the log into the file this often, and the committing connection checkpoints
#: itself only once the log has passed this many pages (32 MiB), where it finds most copied.
CHECKPOINT_EVERY_S = 0.25
WAL_BOUND_PAGES = 8192
APPLICATION_ID = 0x67617452  # "gatR": tells our file apart from any other SQLite file
SCHEMA_VERSION = 7  # 2: events and gates keyed by (gate_id, epoch, ...); 3: conflicts, revocations; 4: redemptions; 5: accounts, actors, check-in cursor; 6: late grants released, closed epochs and implied uses; 7: no trigger on events (`_log_new_events`), only passages indexed by time; older files are migrated
#: A PostgreSQL registry's schema: 7 changed only SQLite's file (PostgreSQL keeps its row trigger).
PG_SCHEMA_VERSION = 6
_U64 = 1 << 64
_I64_TOP = 1 << 63

_EVENT_COLUMNS = "event_id, gate_id, seq, at, kind, lane, ticket_id, reason, payload, received_at, epoch"
_INSERT_EVENT = f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
#: On SQLite, events are inserted this many rows to a statement at most (`_insert_events`), and
#: fewer in halves (128, 64, ... 1): a dozen statements, each prepared once. 11 parameters a row.
_ROWS_PER_INSERT = 256
_INSERT_EVENTS = {
    n: f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * n)
    for n in (1 << k for k in range(_ROWS_PER_INSERT.bit_length()))
}

# The set-wise group commit's statements on PostgreSQL (`RegistryStore._store_setwise`): a group's
# rows go as one array a column, not as a list of placeholders (a new statement text for every
# group size, which psycopg parses anew each time and never prepares) nor as a pipelined
# statement a row (a message and Python a row). One text each: parsed once, kept prepared.
_PG_SETWISE_CHECKS = (
    "SELECT 'held', NULL, NULL FROM (SELECT 1 FROM events e JOIN unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[]) "
    "AS k(gate_id, epoch, lo, hi) ON e.gate_id = k.gate_id AND e.epoch = k.epoch AND e.seq BETWEEN k.lo AND k.hi LIMIT 1) AS held "
    "UNION ALL SELECT 'open', gate_id, epoch FROM gates WHERE gate_id = ANY(?::text[]) AND NOT EXISTS "
    "(SELECT 1 FROM closed_epochs c WHERE c.gate_id = gates.gate_id AND c.epoch = gates.epoch) "
    "UNION ALL SELECT 'grant', NULL, NULL FROM (SELECT 1 FROM redemptions WHERE gate_id = ANY(?::text[]) AND outcome = 'ok' "
    "AND record_seq IS NULL AND decision_seq IS NULL AND released_at IS NULL LIMIT 1) AS granted "
    "UNION ALL SELECT 'implied', gate_id, NULL FROM (SELECT DISTINCT gate_id FROM implied_uses WHERE gate_id = ANY(?::text[])) AS implied")
_PG_INSERT_EVENTS = (
    f"INSERT INTO events({_EVENT_COLUMNS}) SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::double precision[], "
    "?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::double precision[], ?::bigint[]) ON CONFLICT DO NOTHING")
_PG_TICKET_USAGE = ("SELECT ticket_id, entries_used, inside, benefits, zones, max_entries, state FROM tickets "
                    "WHERE ticket_id = ANY(?::bigint[])")
_PG_SET_TICKET_USAGE = (
    "UPDATE tickets SET entries_used = v.entries_used, inside = v.inside, benefits = v.benefits "
    "FROM unnest(?::bigint[], ?::text[], ?::text[], ?::bigint[]) AS v(entries_used, inside, benefits, ticket_id) "
    "WHERE tickets.ticket_id = v.ticket_id")
_ACK_GATE = ("INSERT INTO gates(gate_id, epoch, acked_seq) VALUES (?, ?, ?) "
             "ON CONFLICT(gate_id, epoch) DO UPDATE SET acked_seq = max(gates.acked_seq, excluded.acked_seq)")
_PG_ACK_GATES = ("INSERT INTO gates(gate_id, epoch, acked_seq) SELECT * FROM unnest(?::text[], ?::bigint[], ?::bigint[]) "
                 "ON CONFLICT(gate_id, epoch) DO UPDATE SET acked_seq = GREATEST(gates.acked_seq, excluded.acked_seq)")


def _columns(rows: Sequence[tuple]) -> list[list]:
    """Rows as one list a column (PostgreSQL arrays)."""
    return [list(column) for column in zip(*rows)]

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE tickets (
    ticket_id    INTEGER PRIMARY KEY,  -- u64 as two's-complement i64
    category     TEXT NOT NULL,
    ticket_type  TEXT NOT NULL,
    zones        TEXT NOT NULL,        -- JSON list
    windows      TEXT NOT NULL,        -- JSON [[from, until], ...]
    max_entries  INTEGER NOT NULL,
    entries_used INTEGER NOT NULL DEFAULT 0,
    inside       TEXT NOT NULL DEFAULT '[]',
    badge_serial INTEGER NOT NULL DEFAULT 0,
    state        INTEGER NOT NULL DEFAULT 0,
    benefits     TEXT NOT NULL,        -- JSON [[name, remaining], ...]
    name         TEXT NOT NULL,
    company      TEXT NOT NULL,
    phone        TEXT NOT NULL
);
CREATE TABLE events (
    event_id    TEXT NOT NULL,         -- "<gate_id>:<seq>", for display
    gate_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,
    lane        TEXT NOT NULL,
    ticket_id   INTEGER,
    reason      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at REAL NOT NULL,
    epoch       INTEGER NOT NULL DEFAULT 0,  -- the gate's journal epoch (u64 as i64), 0 before epochs
    PRIMARY KEY (gate_id, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX events_passages_at ON events(at) WHERE kind = 'passage';  -- the exports, the report (schema 7)
CREATE TABLE gates (
    gate_id   TEXT NOT NULL,
    epoch     INTEGER NOT NULL DEFAULT 0,
    acked_seq INTEGER NOT NULL,
    PRIMARY KEY (gate_id, epoch)
) WITHOUT ROWID;
CREATE TABLE keys (kid INTEGER PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,           -- ticket | state | reissue | key_add | key_retire
    ticket_id INTEGER,
    kid       INTEGER
);
"""

# Schema 3: what the registry keeps to show conflicts (see the rules above).
_CONFLICT_SCHEMA = """
CREATE TABLE conflicts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,         -- over_entry | over_redemption | revoked_use
    ticket_id   INTEGER NOT NULL,
    benefit     TEXT,                  -- over_redemption: the benefit
    first_event TEXT,                  -- the record already held: an event id, NULL for a revocation
    first_gate  TEXT,
    first_epoch INTEGER,
    first_seq   INTEGER,
    first_lane  TEXT,
    first_at    REAL,                  -- NULL: a revocation from before the registry kept its time
    event_id    TEXT NOT NULL,         -- the record that overdrew
    gate_id     TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    lane        TEXT NOT NULL,
    at          REAL NOT NULL,
    found_at    REAL NOT NULL
);
CREATE TABLE revocations (ticket_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX usage_by_ticket ON events(ticket_id, kind, at) WHERE kind IN ('passage', 'redemption');
"""
_SCHEMA += _CONFLICT_SCHEMA + registry_redeem.SCHEMA + registry_epochs.SCHEMA

# Schema 5: who may use the pages and the API (gated.registry.accounts), who made each change,
# and a cursor over check-ins and check-outs a registration system can follow: every passage
# stored gets the next id, once, in the order stored (`_log_new_events`; on PostgreSQL a trigger).
_ACCOUNT_SCHEMA = """
CREATE TABLE users (
    username     TEXT PRIMARY KEY,
    role         TEXT NOT NULL,         -- viewer | desk | admin
    hash         TEXT NOT NULL,         -- argon2id
    failed       INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE api_tokens (
    digest     TEXT PRIMARY KEY,        -- SHA-256 of the token, hex: the token itself is shown once, never kept
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
ALTER TABLE changes ADD COLUMN actor TEXT;
CREATE TABLE checkin_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    gate_id  TEXT NOT NULL,
    epoch    INTEGER NOT NULL,
    seq      INTEGER NOT NULL
);
"""
CONFLICT_KINDS = ("over_entry", "over_redemption", "revoked_use")

# The same schema (PG_SCHEMA_VERSION) on PostgreSQL, created whole (a PostgreSQL registry started at 5:
# no migrations). Integers are BIGINT (ticket ids are u64 as i64, like SQLite's), times DOUBLE
# PRECISION, keys BYTEA, ids identity columns; the check-in cursor's trigger is a PL/pgSQL function
# (a row trigger costs PostgreSQL no copy of the statement's rows; SQLite's did: `_log_new_events`).
_PG_SCHEMA = engine.PG_FUNCTIONS + """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT);
CREATE TABLE tickets (
    ticket_id BIGINT PRIMARY KEY, category TEXT NOT NULL, ticket_type TEXT NOT NULL, zones TEXT NOT NULL,
    windows TEXT NOT NULL, max_entries BIGINT NOT NULL, entries_used BIGINT NOT NULL DEFAULT 0,
    inside TEXT NOT NULL DEFAULT '[]', badge_serial BIGINT NOT NULL DEFAULT 0, state BIGINT NOT NULL DEFAULT 0,
    benefits TEXT NOT NULL, name TEXT NOT NULL, company TEXT NOT NULL, phone TEXT NOT NULL
);
CREATE TABLE events (
    event_id TEXT NOT NULL, gate_id TEXT NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL, lane TEXT NOT NULL, ticket_id BIGINT, reason TEXT NOT NULL, payload TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL, epoch BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (gate_id, epoch, seq)  -- the event's identity: stored once, whichever instance receives it
);
CREATE INDEX events_kind_at ON events(kind, at);
CREATE INDEX usage_by_ticket ON events(ticket_id, kind, at) WHERE kind IN ('passage', 'redemption');
CREATE TABLE gates (gate_id TEXT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0, acked_seq BIGINT NOT NULL,
                    PRIMARY KEY (gate_id, epoch));
CREATE TABLE keys (kid BIGINT PRIMARY KEY, key BYTEA NOT NULL);
CREATE TABLE changes (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, ticket_id BIGINT, kid BIGINT, actor TEXT
);
CREATE TABLE conflicts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, ticket_id BIGINT NOT NULL,
    benefit TEXT, first_event TEXT, first_gate TEXT, first_epoch BIGINT, first_seq BIGINT, first_lane TEXT,
    first_at DOUBLE PRECISION, event_id TEXT NOT NULL, gate_id TEXT NOT NULL, epoch BIGINT NOT NULL,
    seq BIGINT NOT NULL, lane TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, found_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE revocations (ticket_id BIGINT PRIMARY KEY, at DOUBLE PRECISION NOT NULL);
CREATE TABLE redemptions (
    gate_id TEXT NOT NULL, redemption_id TEXT NOT NULL, ticket_id BIGINT NOT NULL, benefit TEXT NOT NULL,
    lane TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL, remaining BIGINT NOT NULL,
    version BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL, record_epoch BIGINT, record_seq BIGINT,
    decision_seq BIGINT, released_at DOUBLE PRECISION, released_why TEXT,
    PRIMARY KEY (gate_id, redemption_id)
);
CREATE INDEX redemptions_by_ticket ON redemptions(ticket_id, benefit, at);
CREATE INDEX redemptions_unpaired ON redemptions(gate_id, received_at) WHERE outcome = 'ok' AND record_seq IS NULL;
CREATE TABLE closed_epochs (
    gate_id TEXT NOT NULL, epoch BIGINT NOT NULL, closed_at DOUBLE PRECISION NOT NULL, by_epoch BIGINT NOT NULL,
    counted BIGINT NOT NULL, PRIMARY KEY (gate_id, epoch)
);
CREATE TABLE implied_uses (
    gate_id TEXT NOT NULL, seq BIGINT NOT NULL, epoch BIGINT NOT NULL, ticket_id BIGINT NOT NULL,
    counted_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (gate_id, seq, epoch)
);
CREATE TABLE users (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, failed BIGINT NOT NULL DEFAULT 0,
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE api_tokens (
    digest TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE checkin_log (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, gate_id TEXT NOT NULL, epoch BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE FUNCTION checkin_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO checkin_log(gate_id, epoch, seq) VALUES (NEW.gate_id, NEW.epoch, NEW.seq);
    RETURN NULL;
END $$;
CREATE TRIGGER checkin_logged AFTER INSERT ON events FOR EACH ROW WHEN (NEW.kind = 'passage')
    EXECUTE FUNCTION checkin_logged();
"""


# The mirror's last encoded snapshot, kept so a restart serves its first gate without reading
# every ticket (gated/registry/server.py). A cache of the tickets table, not part of the schema's
# version: created when missing, dropped whole by any put of tickets, trusted only at its version.
_KEPT_SNAPSHOT_DDL = {
    engine.SQLITE: "CREATE TABLE IF NOT EXISTS kept_snapshot (slot INTEGER PRIMARY KEY CHECK (slot = 0), "
                   "version INTEGER NOT NULL, data BLOB NOT NULL)",
    engine.POSTGRES: "CREATE TABLE IF NOT EXISTS kept_snapshot (slot BIGINT PRIMARY KEY CHECK (slot = 0), "
                     "version BIGINT NOT NULL, data BYTEA NOT NULL); "
                     "ALTER TABLE kept_snapshot ALTER COLUMN data SET STORAGE EXTERNAL",  # compressed by us (below)
}


class _NotSetwise(Exception):
    """A group holds something only the batch-by-batch path handles (`_store_setwise`)."""


def _insert_events(conn, dialect: str, rows: Sequence[tuple], events: Sequence[IncomingEvent] = ()) -> int:
    """Insert `rows` (``INSERT OR IGNORE``, in order): how many were new, as
    ``executemany(_INSERT_EVENT, rows).rowcount`` says, in the same order, and what follows a
    new event (`_log_new_events`). The callers insert only rows they found new under the write
    lock, and roll back when fewer were.

    On SQLite in statements of up to `_ROWS_PER_INSERT` rows, not one a row. Why: a statement
    inside a transaction keeps each page it changes in a statement journal, in case it must
    be undone, and what follows the rows (the check-in log, the dashboard's counters) changes
    the same few pages again and again. One row a statement, those pages were written again
    for every event, to a temporary file once past 64 KiB: replaying a day's backlog, 28 kB
    an event, and its writes a quarter of the registry's CPU. Many rows a statement, once for
    them all. On PostgreSQL in one statement, a column an array (`_PG_INSERT_EVENTS`), and its
    row triggers do what `_log_new_events` does on SQLite."""
    if not rows:
        return 0
    if dialect != engine.SQLITE:
        columns = _columns(rows)
        for at in (3, 9):  # `at` and `received_at`: an array holds one type, never an int among floats
            columns[at] = [float(value) for value in columns[at]]
        return conn.execute(_PG_INSERT_EVENTS, columns).rowcount
    new, i, left = 0, 0, len(rows)
    flat = itertools.chain.from_iterable
    while left:
        n = _ROWS_PER_INSERT if left >= _ROWS_PER_INSERT else 1 << (left.bit_length() - 1)
        new += conn.execute(_INSERT_EVENTS[n], list(flat(rows[i:i + n]))).rowcount
        i, left = i + n, left - n
    _log_new_events(conn, rows, events)
    return new


_LOG_CHECKIN = "INSERT INTO checkin_log(gate_id, epoch, seq) VALUES (?, ?, ?)"


def _log_new_events(conn, rows: Sequence[tuple], events: Sequence[IncomingEvent] = ()) -> None:
    """On SQLite, what follows new event rows (`_EVENT_COLUMNS`), which triggers on `events` did
    before schema 7: each passage gets the next id of the check-in log, in the order stored, and
    the dashboard's figures, when installed, count the passages and the refused decisions
    (`gated.registry.dashdata.count_new_events`).

    Why not triggers: a table with a row trigger makes SQLite copy every row of a many-row
    INSERT into a temporary table before storing it, and run each trigger's program for every
    row, whatever its WHEN says. Replaying a backlog of decisions, that was 0.6 µs of the
    registry's 5 an event, for rows no trigger wanted.

    `events`: the rows' events (the same order), whose parsed payloads the figures count
    the passages from when they can (`count_new_events`); empty: SQL reads the stored texts."""
    passages = [(row[1], row[10], row[2]) for row in rows if row[4] == "passage"]
    refused = [row[7] for row in rows if row[4] == "decision" and row[7] != "ok"]
    checkins_after = None
    if passages:
        checkins_after = conn.execute("SELECT coalesce(max(id), 0) FROM checkin_log").fetchone()[0]
        conn.executemany(_LOG_CHECKIN, passages)
    if (passages or refused) and registry_dashdata.installed(conn):
        new_passages = []
        if passages and len(events) == len(rows):
            new_passages = [registry_dashdata.NewPassage(row[3], row[1], row[5], row[6], ev.payload, row[8])
                            for row, ev in zip(rows, events) if row[4] == "passage"]
        registry_dashdata.count_new_events(conn, checkins_after, refused, new_passages)


def _event_rows(events: Sequence[IncomingEvent], gate_id: str, db_epoch: int, received_at: float) -> list[tuple]:
    """`events` as rows of `_EVENT_COLUMNS` (a ticket id of 2^63 and above as SQLite keeps it,
    `u64_to_sqlite`, written out: a call an event is a tenth of the rows' cost)."""
    top, wrap = _I64_TOP, _U64
    return [(ev.event_id, gate_id, ev.seq, ev.at, ev.kind, ev.lane,
             t if (t := ev.ticket_id) is None or t < top else t - wrap, ev.reason, ev.payload_json, received_at,
             db_epoch) for ev in events]


def _increasing(events: Sequence[IncomingEvent]) -> bool:
    """Whether the events' seqs strictly increase (no seq twice)."""
    seqs = [ev.seq for ev in events]
    return all(map(operator.lt, seqs, itertools.islice(seqs, 1, None)))


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class _UsageRefused(Exception):
    """The usage a batch would fan out is refused by the mirror: roll it back, keep the events."""


@dataclass(slots=True, unsafe_hash=True)  # hashed as a frozen one would be
class IncomingEvent:
    """An event as the server received it (already checked against the sender). Never changed
    once made.

    Not a frozen dataclass: its `__init__` sets each field through `object.__setattr__`, 0.9 µs
    an event, about a tenth of the registry's CPU replaying a backlog (one is made per event
    received); a plain slots class's takes 0.15 µs."""

    event_id: str
    seq: int
    at: float
    kind: str
    lane: str
    ticket_id: int | None
    reason: str
    payload_json: str
    #: `payload_json` already parsed (the server has it from the typed payload): not parsed again.
    payload: dict | None = None


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: str
    ticket_id: int | None
    kid: int | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What storing a batch did: how far the gate is acknowledged, and the delta it caused."""

    acked_seq: int
    new_events: int
    delta: Delta | None
    #: Why the batch's usage fan-out was refused (the events are stored all the same), or None.
    usage_refused: str | None = None


class EventBatch(NamedTuple):
    """One gate's batch as it arrived: its journal epoch and its events, seqs increasing."""

    gate_id: str
    epoch: int
    events: Sequence[IncomingEvent]


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A passage (check-in or check-out) as the API hands it out; `cursor` orders them."""

    cursor: int
    event_id: str
    gate_id: str
    lane: str
    at: float
    ticket_id: int | None
    category: str | None  # the ticket's category now; None: not a registered ticket
    zone: str | None
    direction: str | None  # in | out
    outcome: str | None  # "unknown": counted after a power cut lost the passage record


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One side of a conflict: a stored event, or (event_id None) the registry's revocation."""

    event_id: str | None
    gate_id: str | None
    lane: str | None
    at: float | None  # None: a revocation whose time the registry did not keep


@dataclass(frozen=True, slots=True)
class Conflict:
    """A usage event that overdrew a ticket, with the record it collided with."""

    id: int
    kind: str  # one of CONFLICT_KINDS
    ticket_id: int
    benefit: str | None
    first: UsageRecord  # held before: the last entry or redemption, or the revocation
    then: UsageRecord  # the one that overdrew
    found_at: float


_TICKET_COLUMNS = (
    "ticket_id, category, ticket_type, zones, windows, max_entries, entries_used, inside, "
    "badge_serial, state, benefits, name, company, phone"
)
#: What a put of a ticket already held changes (not its usage, serial or state).
_PUT_UPDATE = (
    "ON CONFLICT(ticket_id) DO UPDATE SET category=excluded.category, "
    "ticket_type=excluded.ticket_type, zones=excluded.zones, windows=excluded.windows, "
    "max_entries=excluded.max_entries, benefits=excluded.benefits, name=excluded.name, "
    "company=excluded.company, phone=excluded.phone"
)
#: From this many tickets a put on PostgreSQL goes through COPY (`_put_rows_copied`).
_COPY_FROM = 1000


class RegistryStore:
    """The registry's SQLite file: one connection, used by one thread at a time (any thread)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """`path`: an SQLite file, or a ``postgresql://`` URL (gated.registry.engine)."""
        self._zone_json: dict[str, tuple[str, ...]] = {}
        #: Set by a registry instance on PostgreSQL: where version bumps are logged for the others.
        self.change_log: Any = None
        #: Inside a write transaction on PostgreSQL: meta.version as the transaction holds it (read
        #: under the writers' lock with its BEGIN, then moved by `_bump_version`); None elsewhere.
        self.txn_version: int | None = None
        self._pairs_json: dict[str, tuple[tuple, ...]] = {}
        self._checkpoints: WalCheckpointer | None = None
        if engine.is_url(path):
            self.path = path
            self.dialect = engine.POSTGRES
            self._open_postgres(path, create)
            return
        self.path = Path(path)
        self.dialect = engine.SQLITE
        if not create and not self.path.exists():
            raise RegistryError(f"{self.path}: no registry database (create one with: gated registry import FILE.csv --db {self.path})")
        try:
            _make_private(self.path)
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
            tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables == 0:
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    self._add_accounts()
                    self.conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self._initial_meta()
            elif app_id != APPLICATION_ID:
                raise RegistryError(f"{self.path}: not a gated registry database")
            else:
                self._migrate()
            self.conn.execute(_KEPT_SNAPSHOT_DDL[engine.SQLITE])
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"{self.path}: cannot open the registry database: {exc}") from None

    def _open_postgres(self, url: str, create: bool) -> None:
        """Open (and on an empty database create) the schema; two instances starting at once
        on an empty database take turns (the writers' advisory lock)."""
        where = engine.describe(url)
        self.conn = engine.connect_postgres(url)
        try:
            with self.transaction():
                has_meta = self.conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
                tables = self.conn.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()").fetchone()[0]
                if not has_meta and tables == 0:
                    if not create:
                        raise RegistryError(f"{where}: no registry database (create one with: gated registry import FILE.csv --db URL)")
                    self.conn.script(_PG_SCHEMA)
                    self._initial_meta()
                elif not has_meta:
                    raise RegistryError(f"{where}: not a gated registry database")
                else:
                    schema = int(self._meta("schema"))
                    if schema != PG_SCHEMA_VERSION:
                        raise RegistryError(f"{where}: registry schema {schema}; this gated supports {PG_SCHEMA_VERSION}")
                if not self.conn.execute("SELECT to_regclass('kept_snapshot') IS NOT NULL").fetchone()[0]:
                    self.conn.script(_KEPT_SNAPSHOT_DDL[engine.POSTGRES])
            # From now on every write transaction knows the version from its BEGIN's round trip.
            self.conn.begin_read = "SELECT value FROM meta WHERE key = 'version'"
        except RegistryError:
            self.conn.close()
            raise
        except engine.errors() as exc:
            self.conn.close()
            raise RegistryError(f"{where}: cannot open the registry database: {engine._first_line(exc)}") from None

    def _initial_meta(self) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [("schema", SCHEMA_VERSION if self.dialect == engine.SQLITE else PG_SCHEMA_VERSION), ("version", 1),
             ("applied_change", 0), ("keys_managed", 0)],
        )

    def checkpoint_in_background(self, every_s: float = CHECKPOINT_EVERY_S, bound_pages: int = WAL_BOUND_PAGES) -> None:
        """Have a thread of its own checkpoint this file's WAL every `every_s` (gated/sqlite_wal.py)
        until `close`; this connection's commits then checkpoint only once the log has passed
        `bound_pages`, which bounds it under a steady stream of commits. Nothing on PostgreSQL.

        For the connection that stores the gates' events. Why: at SQLite's default bound a
        commit every 4 MiB of log also copies it all into the file and fsyncs it, and the
        next group waits: storing a backlog alone, 7 % of the time and the slowest batches
        (9 ms against 4.7). In a thread of their own (SQLite's C, the GIL let go) the
        checkpoints run on another core; a gate's acknowledgement and every gate's delta
        wait for a commit, not for a checkpoint."""
        if self.dialect != engine.SQLITE or self._checkpoints is not None:
            return
        try:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={int(bound_pages)}")
            conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as exc:
            raise RegistryError(f"{self.path}: cannot open the checkpoint connection: {exc}") from None
        self._checkpoints = WalCheckpointer(
            conn, every_s, name=f"registry-checkpoint:{self.path.name}",
            on_error=lambda exc: log.warning("registry_checkpoint_failed", db=str(self.path), error=str(exc)))

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
            self._checkpoints = None
        self.conn.close()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Bring an older file up to SCHEMA_VERSION (one transaction; old events get epoch 0)."""
        schema = int(self._meta("schema"))
        if schema > SCHEMA_VERSION:
            raise RegistryError(f"{self.path}: registry schema {schema} is newer than this gated supports ({SCHEMA_VERSION})")
        if schema < 2:
            self._migrate_to_2()
        if schema < 3:
            with self.transaction():
                for statement in _CONFLICT_SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self._set_meta("schema", 3)
        if schema < 4:
            with self.transaction():
                for statement in registry_redeem.SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self._set_meta("schema", 4)
        if schema < 5:
            with self.transaction():
                self._add_accounts()
                # Passages stored before the cursor existed come first, in the order they arrived.
                self.conn.execute(
                    "INSERT INTO checkin_log(gate_id, epoch, seq) SELECT gate_id, epoch, seq FROM events "
                    "WHERE kind = 'passage' ORDER BY received_at, gate_id, epoch, seq")
                self._set_meta("schema", 5)
        if schema < 6:
            with self.transaction():
                registry_redeem.add_release_columns(self.conn)
                registry_epochs.create_tables(self.conn)
                self._set_meta("schema", 6)
        if schema < 7:
            with self.transaction():
                self.conn.execute("DROP TRIGGER IF EXISTS checkin_logged")  # `_log_new_events` does its work
                # Only passages are read by time (the exports, the report): decisions, most of what
                # a gate sends, no longer go into an index of every kind (0.3 µs an event).
                self.conn.execute("DROP INDEX IF EXISTS events_kind_at")
                self.conn.execute("CREATE INDEX IF NOT EXISTS events_passages_at ON events(at) WHERE kind = 'passage'")
                self._set_meta("schema", 7)

    def _add_accounts(self) -> None:
        """Schema 5's tables (inside the caller's transaction)."""
        for statement in _ACCOUNT_SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def _migrate_to_2(self) -> None:
        statements = [s for s in _SCHEMA.split(";") if "TABLE events" in s or "TABLE gates" in s or "INDEX events" in s]
        with self.transaction():
            self.conn.execute("DROP INDEX IF EXISTS events_kind_at")
            self.conn.execute("ALTER TABLE events RENAME TO events_v1")
            self.conn.execute("ALTER TABLE gates RENAME TO gates_v1")
            for statement in statements:
                self.conn.execute(statement)
            self.conn.execute(
                f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) SELECT event_id, gate_id, seq, at, kind, lane, "
                "ticket_id, reason, payload, received_at, 0 FROM events_v1"
            )
            self.conn.execute("INSERT INTO gates(gate_id, epoch, acked_seq) SELECT gate_id, 0, acked_seq FROM gates_v1")
            self.conn.execute("DROP TABLE events_v1")
            self.conn.execute("DROP TABLE gates_v1")
            self._set_meta("schema", 2)

    # ------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        begun_with = getattr(self.conn, "begun_with", None)
        self.txn_version = None if begun_with is None else int(begun_with)
        try:
            yield
        except BaseException:
            self.txn_version = None
            self.conn.execute("ROLLBACK")
            raise
        self.txn_version = None
        self.conn.execute("COMMIT")

    def _meta(self, key: str) -> Any:
        return self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def data_version(self) -> int:
        """Changes whenever another connection (a command) commits to the file.

        PostgreSQL has no such counter: there it is the last change row's id, which moves
        whenever a command (or another instance's page) records a change."""
        if self.dialect == engine.POSTGRES:
            return self.conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    @property
    def version(self) -> int:
        return int(self._meta("version"))

    def _bump_version(self, ops: Sequence[Op] | None = None, wire: Sequence | None = None) -> tuple[int, int]:
        """Inside a write transaction: the next version, for `ops` (None: no delta to send).
        With several instances the bump goes to their change log too (gated/registry/changelog.py)."""
        base = self.txn_version if self.txn_version is not None else int(self._meta("version"))
        if self.change_log is not None:
            self.change_log.bump_version(self.conn, base, ops, wire)  # meta.version with it
        else:
            self._set_meta("version", base + 1)
        if self.txn_version is not None:
            self.txn_version = base + 1
        return base, base + 1

    # ------------------------------------------------------------- tickets

    def _parsed(self, text: str) -> tuple[str, ...]:
        zones = self._zone_json.get(text)
        if zones is None:
            zones = self._zone_json[text] = tuple(json.loads(text))
        return zones

    def _parsed_pairs(self, text: str) -> tuple[tuple, ...]:
        """Windows and benefits as tuples of pairs; tickets of a list share a few texts, parsed once."""
        pairs = self._pairs_json.get(text)
        if pairs is None:
            if len(self._pairs_json) >= 65536:
                self._pairs_json.clear()
            pairs = self._pairs_json[text] = tuple(tuple(p) for p in json.loads(text))
        return pairs

    def _record(self, row: tuple) -> TicketRecord:
        (tid, category, ticket_type, zones, windows, max_entries, used, inside, serial, state,
         benefits, name, company, phone) = row
        return TicketRecord(
            ticket_id=u64_from_sqlite(tid),
            category=category,
            ticket_type=ticket_type,
            zones=self._parsed(zones),
            windows=self._parsed_pairs(windows),
            max_entries=max_entries,
            entries_used=used,
            badge_serial=serial,
            state=_STATES[state] if state in _STATES else TicketState(state),
            inside=self._parsed(inside),
            benefits=self._parsed_pairs(benefits),
            name=name,
            company=company,
            phone_last4=phone[-4:] if len(phone) >= 4 else "",
        )

    def ticket(self, ticket_id: int) -> TicketRecord | None:
        row = self.conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()
        return None if row is None else self._record(row)

    def records(self) -> Iterator[TicketRecord]:
        cur = self.conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets ORDER BY ticket_id")
        while rows := cur.fetchmany(5000):
            for row in rows:
                yield self._record(row)

    def ticket_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM tickets").fetchone()[0]

    def zones_in_use(self) -> set[str]:
        """Every zone any ticket names (its zones or where it is inside): what a gate's cache must hold."""
        zones: set[str] = set()
        for (text,) in self.conn.execute("SELECT DISTINCT zones FROM tickets UNION SELECT DISTINCT inside FROM tickets"):
            zones.update(self._parsed(text))
        return zones

    def put_tickets(self, tickets: Iterable[tuple[TicketRecord, str]], *, record_changes: bool = True,
                    actor: str | None = None) -> int:
        """Insert or update tickets (with their full phone numbers) in one transaction.

        An existing ticket takes the new definition, name and benefits; its
        entries, whereabouts, badge serial and state are kept. Refused whole
        (`RegistryError`) when the tickets would then name more zones than a
        gate's cache holds (64): a change the gates cannot take is never
        committed.
        """
        rows = [_ticket_row(rec, phone) for rec, phone in tickets]
        # Built before the transaction: the write lock is held for the inserts only.
        with self.transaction():
            self._put_rows(rows, record_changes, actor)
        return len(rows)

    def _put_rows_copied(self, rows: list[tuple], record_changes: bool, actor: str | None) -> None:
        """PostgreSQL, many rows: COPY them into a temporary table, then one INSERT ... SELECT.

        The same statement as row by row (the same triggers fire), in a few round trips
        instead of one per row (ids given twice take the row-by-row path: the last wins there): an import or an API batch of 50,000 attendees spent most of
        its transaction waiting on the network."""
        raw = self.conn.raw
        raw.execute("CREATE TEMP TABLE IF NOT EXISTS tickets_in (LIKE tickets, n BIGINT NOT NULL) ON COMMIT DELETE ROWS")
        with raw.cursor().copy(f"COPY tickets_in ({_TICKET_COLUMNS}, n) FROM STDIN") as copy:
            for n, row in enumerate(rows):
                copy.write_row((*row, n))
        self.conn.execute(f"INSERT INTO tickets({_TICKET_COLUMNS}) SELECT {_TICKET_COLUMNS} FROM tickets_in ORDER BY n {_PUT_UPDATE}")
        if record_changes:  # change ids in the order the attendees came, as row by row
            self.conn.execute("INSERT INTO changes(kind, ticket_id, actor) SELECT 'ticket', ticket_id, ? FROM tickets_in ORDER BY n",
                              (actor,))
        raw.execute("TRUNCATE tickets_in")

    def upsert_attendees(self, tickets: Sequence[tuple[TicketRecord, str]], actor: str) -> tuple[int, int, int]:
        """`put_tickets`, all or nothing, where a ticket already held with the same definition,
        name and phone is left alone (no change row, no delta): a batch sent twice changes
        nothing the second time. Returns (created, updated, unchanged)."""
        rows = [_ticket_row(rec, phone) for rec, phone in tickets]
        compared = (1, 2, 3, 4, 5, 10, 11, 12, 13)  # the columns a put sets (not usage, serial, state)
        with self.transaction():
            held: dict[int, tuple] = {}
            for i in range(0, len(rows), 500):
                ids = [r[0] for r in rows[i:i + 500]]
                for row in self.conn.execute(
                        f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE ticket_id IN ({','.join('?' * len(ids))})", ids):
                    held[row[0]] = row
            changed = [r for r in rows if r[0] not in held or any(r[c] != held[r[0]][c] for c in compared)]
            if changed:
                self._put_rows(changed, True, actor)
        created = sum(1 for r in changed if r[0] not in held)
        return created, len(changed) - created, len(rows) - len(changed)

    def _put_rows(self, rows: list[tuple], record_changes: bool, actor: str | None) -> None:
        """Insert or update rows inside the caller's transaction (see `put_tickets`)."""
        if self.dialect == engine.POSTGRES and len(rows) >= _COPY_FROM and len({r[0] for r in rows}) == len(rows):
            self._put_rows_copied(rows, record_changes, actor)
        else:
            self.conn.executemany(f"INSERT INTO tickets({_TICKET_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) {_PUT_UPDATE}", rows)
            if record_changes:
                self.conn.executemany("INSERT INTO changes(kind, ticket_id, actor) VALUES ('ticket', ?, ?)",
                                      ((r[0], actor) for r in rows))
        self.conn.execute("DELETE FROM kept_snapshot")  # it no longer says what the tickets are
        zones = self.zones_in_use()
        if len(zones) > MAX_ZONES:
            raise RegistryError(
                f"refused: the tickets would name {len(zones)} distinct zones; a gate holds at most {MAX_ZONES}"
            )

    def _require(self, ticket_id: int) -> TicketRecord:
        rec = self.ticket(ticket_id)
        if rec is None:
            raise RegistryError(f"ticket {ticket_id} is not registered")
        return rec

    def revoke(self, ticket_id: int, *, at: float | None = None, actor: str | None = None) -> TicketRecord:
        """Revoke a ticket; `at` (now by default) is kept: an entry timed after it is a conflict."""
        with self.transaction():
            self._require(ticket_id)
            self.conn.execute("UPDATE tickets SET state = ? WHERE ticket_id = ?", (int(TicketState.REVOKED), u64_to_sqlite(ticket_id)))
            self.conn.execute("INSERT OR IGNORE INTO revocations(ticket_id, at) VALUES (?, ?)",
                              (u64_to_sqlite(ticket_id), time.time() if at is None else at))
            self.conn.execute("INSERT INTO changes(kind, ticket_id, actor) VALUES ('state', ?, ?)", (u64_to_sqlite(ticket_id), actor))
        return self._require(ticket_id)

    def reissue(self, ticket_id: int, *, actor: str | None = None) -> TicketRecord:
        """A badge reprint: the serial goes up by one, so the old badge is superseded."""
        with self.transaction():
            rec = self._require(ticket_id)
            if rec.badge_serial >= 0xFFFF:
                raise RegistryError(f"ticket {ticket_id}: badge serial 65535 reached; issue a new ticket")
            self.conn.execute("UPDATE tickets SET badge_serial = ? WHERE ticket_id = ?", (rec.badge_serial + 1, u64_to_sqlite(ticket_id)))
            self.conn.execute("INSERT INTO changes(kind, ticket_id, actor) VALUES ('reissue', ?, ?)", (u64_to_sqlite(ticket_id), actor))
        return self._require(ticket_id)

    def phone(self, ticket_id: int) -> str | None:
        row = self.conn.execute("SELECT phone FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()
        return None if row is None else row[0]

    def history(self, ticket_id: int) -> list[tuple[int, str, str | None]]:
        """Every change made to this ticket: (change id, kind, who made it; None before actors were kept)."""
        return self.conn.execute("SELECT id, kind, actor FROM changes WHERE ticket_id = ? ORDER BY id",
                                 (u64_to_sqlite(ticket_id),)).fetchall()

    def checkins_after(self, cursor: int, limit: int) -> list[CheckIn]:
        """Check-ins and check-outs (passages) stored after `cursor`, in the order stored: a
        registration system follows them by passing the last one's cursor back."""
        rows = self.conn.execute(
            "SELECT l.id, e.event_id, e.gate_id, e.lane, e.at, e.ticket_id, e.payload, t.category FROM checkin_log l "
            "JOIN events e ON e.gate_id = l.gate_id AND e.epoch = l.epoch AND e.seq = l.seq "
            "LEFT JOIN tickets t ON t.ticket_id = e.ticket_id WHERE l.id > ? ORDER BY l.id LIMIT ?", (cursor, limit),
        ).fetchall()
        out = []
        for cid, event_id, gate_id, lane, at, tid, payload, category in rows:
            try:
                fields = json.loads(payload)
            except (ValueError, RecursionError):
                fields = {}
            fields = fields if isinstance(fields, dict) else {}
            zone, direction = fields.get("zone"), fields.get("direction")
            out.append(CheckIn(cid, event_id, gate_id, lane, at, None if tid is None else u64_from_sqlite(tid),
                               category, zone if isinstance(zone, str) else None,
                               direction if direction in ("in", "out") else None,
                               fields.get("outcome") if isinstance(fields.get("outcome"), str) else None))
        return out

    # ------------------------------------------------------ kept snapshot

    def kept_snapshot(self) -> tuple[int, bytes] | None:
        """The snapshot last kept, with the version it was cut at (None: none kept)."""
        sql = "SELECT version, data FROM kept_snapshot WHERE slot = 0"
        if self.dialect == engine.POSTGRES:  # in binary: as text, bytea travels hex-encoded, twice its size
            with self.conn.raw.cursor(binary=True) as cur:
                row = cur.execute(sql).fetchone()
        else:
            row = self.conn.execute(sql).fetchone()
        if row is None:
            return None
        data = row[1]
        return int(row[0]), zlib.decompress(data) if self.dialect == engine.POSTGRES else bytes(data)

    def kept_version(self) -> int | None:
        row = self.conn.execute("SELECT version FROM kept_snapshot WHERE slot = 0").fetchone()
        return None if row is None else int(row[0])

    def keep_snapshot(self, version: int, data: bytes) -> bool:
        """Keep `data`, the mirror's snapshot at `version`, unless the database has moved past it
        (or a later one is kept: several instances may keep theirs). True when kept.

        On PostgreSQL it is kept compressed (zlib, fast level): a bytea of 80 MB comes back
        from its TOAST chunks several times slower than a sixth of that plus zlib."""
        if self.dialect == engine.POSTGRES:
            data = zlib.compress(data, 1)
        with self.transaction():
            if self.version != version:
                return False
            return bool(self.conn.execute(
                "INSERT INTO kept_snapshot(slot, version, data) VALUES (0, ?, ?) ON CONFLICT(slot) DO UPDATE "
                "SET version = excluded.version, data = excluded.data WHERE kept_snapshot.version < excluded.version",
                (version, data)).rowcount)

    # ---------------------------------------------------------------- keys

    def keys(self) -> dict[int, bytes]:
        return {kid: bytes(key) for kid, key in self.conn.execute("SELECT kid, key FROM keys ORDER BY kid")}

    @property
    def keys_managed(self) -> bool:
        """True once any key was added: from then on the registry's ring is the gates' ring."""
        return bool(int(self._meta("keys_managed")))

    def add_key(self, kid: int, key: bytes, *, actor: str | None = None) -> None:
        if not 0 <= kid <= 255 or len(key) != 32:
            raise RegistryError("a key needs a kid 0..255 and 32 bytes")
        with self.transaction():
            self.conn.execute("INSERT INTO keys(kid, key) VALUES (?, ?) ON CONFLICT(kid) DO UPDATE SET key = excluded.key",
                              (kid, key))
            self.conn.execute("INSERT INTO changes(kind, kid, actor) VALUES ('key_add', ?, ?)", (kid, actor))
            self._set_meta("keys_managed", 1)

    def retire_key(self, kid: int, *, actor: str | None = None) -> None:
        with self.transaction():
            if self.conn.execute("DELETE FROM keys WHERE kid = ?", (kid,)).rowcount == 0:
                raise RegistryError(f"no key with kid {kid} (kids present: {sorted(self.keys())})")
            self.conn.execute("INSERT INTO changes(kind, kid, actor) VALUES ('key_retire', ?, ?)", (kid, actor))

    # ------------------------------------------------------------- changes

    def pending_changes(self) -> list[Change]:
        after = int(self._meta("applied_change"))
        return [
            Change(cid, kind, None if tid is None else u64_from_sqlite(tid), kid)
            for cid, kind, tid, kid in self.conn.execute(
                "SELECT id, kind, ticket_id, kid FROM changes WHERE id > ? ORDER BY id", (after,)
            )
        ]

    def next_changes(self, limit: int) -> list[tuple[Change, TicketRecord | None]]:
        """The first `limit` pending changes, each with its ticket as it is now (None: none, or a key change)."""
        after = int(self._meta("applied_change"))
        cols = ", ".join(f"t.{c.strip()}" for c in _TICKET_COLUMNS.split(","))
        rows = self.conn.execute(
            f"SELECT c.id, c.kind, c.ticket_id, c.kid, {cols} FROM changes c "
            "LEFT JOIN tickets t ON t.ticket_id = c.ticket_id WHERE c.id > ? ORDER BY c.id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            (Change(cid, kind, None if tid is None else u64_from_sqlite(tid), kid),
             None if ticket[0] is None else self._record(ticket))
            for cid, kind, tid, kid, *ticket in rows
        ]

    def apply_changes(self, changes: Sequence[Change], ops: Sequence[Op], keys: Any = None, wire: Sequence | None = None) -> Delta | None:
        """Mark `changes` applied and, when they changed tickets, bump the version for `ops`.
        `keys`: the key change they make, for the other instances' change log; `wire`: `ops`
        already in their wire form (the change log stores them, not converted twice)."""
        if not changes:
            return None
        with self.transaction():
            if self.change_log is not None and int(self._meta("applied_change")) >= changes[-1].id:
                return None  # another instance published them first (its log row reaches this one)
            self._set_meta("applied_change", changes[-1].id)
            if keys is not None and self.change_log is not None:
                self.change_log.append_keys(self.conn, keys)
            if not ops:
                return None
            base, version = self._bump_version(ops, wire)
        return Delta(base, version, tuple(ops))

    def mark_all_changes_applied(self) -> bool:
        """At server start: the snapshot covers everything; True when the version moved."""
        changes = self.pending_changes()
        if not changes:
            return False
        with self.transaction():
            self._set_meta("applied_change", changes[-1].id)
            self._bump_version()
        return True

    # -------------------------------------------------------------- events

    def acked_seq(self, gate_id: str, epoch: int = 0) -> int:
        """The highest seq stored of this gate's journal `epoch` (0: none)."""
        row = self.conn.execute(
            "SELECT acked_seq FROM gates WHERE gate_id = ? AND epoch = ?", (gate_id, u64_to_sqlite(epoch))
        ).fetchone()
        return 0 if row is None else row[0]

    def gate_epochs(self, gate_id: str) -> list[int]:
        """The journal epochs this gate has sent events from."""
        return [u64_from_sqlite(e) for (e,) in self.conn.execute("SELECT epoch FROM gates WHERE gate_id = ?", (gate_id,))]

    def store_events(
        self,
        gate_id: str,
        events: Sequence[IncomingEvent],
        received_at: float,
        *,
        epoch: int = 0,
        check: Callable[[tuple[Op, ...]], None] | None = None,
    ) -> StoredBatch:
        """Store a batch (each event id once), count new usage, all in one transaction.

        `events` must be this gate's, from its journal `epoch`, seqs
        increasing (the server checks). The batch is acknowledged up to its
        own last seq, never beyond (`StoredBatch.acked_seq`).
        The usage an event changes is the registry's own count, moved by one
        per new passage or redemption, so a replay never counts twice.

        `check(ops)` (the server's mirror) runs before the commit; when it
        raises ValueError the usage changes and the version bump are rolled
        back and the events are stored without them (`usage_refused` says
        why): the database never moves to a version the mirror refused.
        An `EventConflict` rolls the whole batch back.
        """
        (result,), delta = self.store_event_batches([EventBatch(gate_id, epoch, events)], received_at, check=check)
        if isinstance(result, BaseException):
            raise result
        return StoredBatch(result.acked_seq, result.new_events, delta, result.usage_refused)

    def store_event_batches(
        self,
        batches: Sequence[EventBatch],
        received_at: float,
        *,
        check: Callable[[tuple[Op, ...]], None] | None = None,
    ) -> tuple[list[StoredBatch | EventConflict], Delta | None]:
        """Store several gates' batches in one transaction (group commit); one version for all their usage.

        Each batch is stored as `store_events` would, inside its own savepoint
        (a group of one, in a transaction of its own: `_store_alone`):
        a batch holding a conflicting (gate, epoch, seq) is rolled back alone
        and its place in the result is the `EventConflict`; a batch whose
        usage the mirror refuses (`check`) is stored without it. The others
        commit together, with one fsync, and their usage goes out as one
        delta (returned; each `StoredBatch.delta` is None). Why: with many
        gates each sending small batches, one commit and one delta per batch
        bound the registry at a few hundred batches a second and send every
        gate a delta per batch; grouped, both scale with the rounds instead.
        """
        if len(batches) == 1:
            return self._store_alone(batches[0], received_at, check)
        conn = self.conn
        results: list[StoredBatch | EventConflict] = []
        ops: list[Op] = []
        conflicts: list[Conflict] = []
        delta = None
        with self.transaction():
            setwise = self._try_setwise(batches, received_at, check) if len(batches) > 1 else None
            if setwise is not None:
                results, ops = setwise
                batches = ()  # all stored
            for batch in batches:
                conn.execute("SAVEPOINT batch")
                mine: list[Conflict] = []
                try:
                    try:
                        stored, batch_ops = self._store_events(batch, received_at, check, mine, count_usage=True)
                    except _UsageRefused as refused:
                        conn.execute("ROLLBACK TO SAVEPOINT batch")
                        mine.clear()
                        stored, batch_ops = self._store_events(batch, received_at, None, mine, count_usage=False)
                        stored = StoredBatch(stored.acked_seq, stored.new_events, None, str(refused))
                except EventConflict as conflict:
                    conn.execute("ROLLBACK TO SAVEPOINT batch")
                    conn.execute("RELEASE SAVEPOINT batch")
                    results.append(conflict)
                    continue
                conn.execute("RELEASE SAVEPOINT batch")
                results.append(stored)
                ops += batch_ops
                conflicts += mine
            if ops:
                base, version = self._bump_version(ops)
                delta = Delta(base, version, tuple(ops))
        for conflict in conflicts:  # logged once committed: a rolled-back batch found nothing
            _log_conflict(conflict)
        return results, delta

    def _store_alone(self, batch: EventBatch, received_at: float,
                     check: Callable[[tuple[Op, ...]], None] | None) -> tuple[list[StoredBatch | EventConflict], Delta | None]:
        """`store_event_batches` of one batch: what it stores, in a transaction of its own, with no savepoint.

        The batch is the whole transaction, so what a savepoint would undo (the batch on a
        conflict, its usage when the mirror refuses it) is undone by rolling the transaction
        back; refused usage, the batch is stored again without it in a new one. Why: inside a
        savepoint, SQLite journals every page the batch changes for the savepoint too, and no
        statement's journal can be dropped at its end (`_insert_events`): replaying a day's
        backlog, a batch alone in its transaction writes half as much to SQLite's temporary
        file, about 1.5 µs an event less. (A gate's stream is stored one batch at a time.)"""
        conflicts: list[Conflict] = []
        try:
            with self.transaction():
                stored, ops = self._store_events(batch, received_at, check, conflicts, count_usage=True)
                delta = None
                if ops:
                    base, version = self._bump_version(ops)
                    delta = Delta(base, version, tuple(ops))
        except EventConflict as conflict:
            return [conflict], None
        except _UsageRefused as refused:
            conflicts = []
            try:
                with self.transaction():
                    stored, _ops = self._store_events(batch, received_at, None, conflicts, count_usage=False)
            except EventConflict as conflict:
                return [conflict], None
            stored, delta = StoredBatch(stored.acked_seq, stored.new_events, None, str(refused)), None
        for conflict in conflicts:  # logged once committed
            _log_conflict(conflict)
        return [stored], delta

    def _try_setwise(self, batches: Sequence[EventBatch], received_at: float,
                     check: Callable[[tuple[Op, ...]], None] | None) -> tuple[list[StoredBatch], list[Op]] | None:
        """`_store_setwise` inside a savepoint; None (and nothing of it kept) when the group needs
        the batch-by-batch path."""
        conn = self.conn
        conn.execute("SAVEPOINT grouped")
        try:
            stored = self._store_setwise(batches, received_at, check)
        except _NotSetwise:
            conn.execute("ROLLBACK TO SAVEPOINT grouped")
            stored = None
        conn.execute("RELEASE SAVEPOINT grouped")
        return stored

    def _store_setwise(self, batches: Sequence[EventBatch], received_at: float,
                       check: Callable[[tuple[Op, ...]], None] | None) -> tuple[list[StoredBatch], list[Op]]:
        """Every batch of a group at once, in a fixed number of statements (not a few per batch).

        For the common case only: each batch from another gate, new records
        (no resend), no earlier epoch of its gate left open, no Redeem grant of
        its gate waiting, no conflict found, usage the mirror takes. Anything
        else raises `_NotSetwise` and the caller rolls this back and stores the
        group batch by batch, so the rare paths keep their one implementation.
        Why: on PostgreSQL each statement is a round trip; a few per batch bound
        the registry at a few hundred gates' batches a second.
        """
        conn = self.conn
        gates = [b.gate_id for b in batches]
        if len(set(gates)) != len(gates) or not all(b.events for b in batches):
            raise _NotSetwise
        if any(ev.kind == "redemption" or "redemption_id" in ev.payload_json for b in batches for ev in b.events):
            raise _NotSetwise
        keyed = [(b, u64_to_sqlite(b.epoch)) for b in batches]
        found = self._setwise_checks(keyed, gates)
        tags = {tag for tag, _gate, _epoch in found}
        if "held" in tags:
            raise _NotSetwise  # a resend: each held record is compared, batch by batch
        epoch_of = {b.gate_id: e for b, e in keyed}
        if any(tag == "open" and epoch != epoch_of[gate] for tag, gate, epoch in found):
            raise _NotSetwise  # an earlier epoch closes (its admissions without outcome are counted)
        if "grant" in tags:
            raise _NotSetwise  # a grant of one of these gates may be due to be given back (redeem.settle_batch)
        implied = {gate for tag, gate, _epoch in found if tag == "implied"}
        rows = [row for b, e in keyed for row in _event_rows(b.events, b.gate_id, e, received_at)]
        seqs = [{ev.seq for ev in b.events} for b in batches]
        if any(len(s) != len(b.events) for s, b in zip(seqs, batches)):
            raise _NotSetwise  # a seq twice in one batch
        if _insert_events(conn, self.dialect, rows, [ev for b in batches for ev in b.events]) != len(rows):
            raise _NotSetwise
        usage = [(b, e, ev) for b, e in keyed for ev in b.events if ev.kind in USAGE_KINDS]
        tickets = self._usage_tickets([ev for _b, _e, ev in usage])
        conflicts: list[Conflict] = []
        per_batch: dict[str, list[Op]] = {g: [] for g in gates}
        for b, e, ev in usage:
            op = self._count_usage(ev, b.gate_id, e, conflicts, tickets, implied=b.gate_id in implied)
            if conflicts:
                raise _NotSetwise  # reported with the record it overdrew, found batch by batch
            if op is not None:
                per_batch[b.gate_id].append(op)
        self._write_usage(tickets)
        acked = [(b.gate_id, e, b.events[-1].seq) for b, e in keyed]  # one row a gate: its batches are one
        if self.dialect == engine.POSTGRES:
            conn.execute(_PG_ACK_GATES, _columns(acked))
        else:
            conn.executemany(_ACK_GATE, acked)
        ops: list[Op] = []
        for gate in gates:
            if per_batch[gate] and check is not None:
                try:
                    check(tuple(per_batch[gate]))
                except ValueError:
                    raise _NotSetwise from None  # stored without its usage, batch by batch
            ops += per_batch[gate]
        return [StoredBatch(b.events[-1].seq, len(b.events), None) for b in batches], ops

    def _setwise_checks(self, keyed: list[tuple[EventBatch, int]], gates: list[str]) -> list[tuple]:
        """What rules the set-wise path out (a held seq, an open earlier epoch, a waiting grant) and
        the gates with implied uses, as tagged rows (tag, gate_id, epoch): one statement, one round
        trip on PostgreSQL where four were."""
        if self.dialect == engine.POSTGRES:
            spans = _columns([(b.gate_id, e, b.events[0].seq, b.events[-1].seq) for b, e in keyed])
            return self.conn.execute(_PG_SETWISE_CHECKS, (*spans, gates, gates, gates)).fetchall()
        marks = ",".join("?" * len(gates))
        parts, args = [], []
        for i, chunk in enumerate(_chunks(keyed, 150)):  # an OR chain deeper than SQLite's expression limit is refused
            where = " OR ".join(["(gate_id = ? AND epoch = ? AND seq BETWEEN ? AND ?)"] * len(chunk))
            parts.append(f"SELECT 'held', NULL, NULL FROM (SELECT 1 FROM events WHERE {where} LIMIT 1) AS held{i}")
            args += [a for b, e in chunk for a in (b.gate_id, e, b.events[0].seq, b.events[-1].seq)]
        parts.append(f"SELECT 'open', gate_id, epoch FROM gates WHERE gate_id IN ({marks}) AND NOT EXISTS "
                     "(SELECT 1 FROM closed_epochs c WHERE c.gate_id = gates.gate_id AND c.epoch = gates.epoch)")
        parts.append(f"SELECT 'grant', NULL, NULL FROM (SELECT 1 FROM redemptions WHERE gate_id IN ({marks}) "
                     "AND outcome = 'ok' AND record_seq IS NULL AND decision_seq IS NULL AND released_at IS NULL LIMIT 1) AS granted")
        parts.append(f"SELECT 'implied', gate_id, NULL FROM (SELECT DISTINCT gate_id FROM implied_uses WHERE gate_id IN ({marks})) AS implied")
        return self.conn.execute(" UNION ALL ".join(parts), [*args, *gates, *gates, *gates]).fetchall()

    def _store_events(self, batch: EventBatch, received_at, check, conflicts: list[Conflict], *,
                      count_usage: bool) -> tuple[StoredBatch, list[Op]]:
        """One batch, inside the caller's transaction: its result and the usage ops it made."""
        # Set-wise, not event by event: which of the batch's seqs are held already is one
        # query, the new rows one executemany, and the tickets their usage moves are read in
        # one query and written back in one executemany. (Inside the write lock: nothing
        # else stores this gate's events meanwhile, on either engine.)
        conn = self.conn
        gate_id, epoch, events = batch
        db_epoch = u64_to_sqlite(epoch)
        ops: list[Op] = []
        rows = _event_rows(events, gate_id, db_epoch, received_at)
        held = self._held_seqs(gate_id, db_epoch, events)
        if not held and _increasing(events):  # the usual: none of it stored before
            fresh, counted, again = rows, events, ()
        else:
            fresh, counted, again = [], [], []  # a seq twice in one batch: the second is a resend of the first
            for ev, row in zip(events, rows):
                if ev.seq in held:
                    again.append(row)
                else:
                    held.add(ev.seq)
                    fresh.append(row)
                    counted.append(ev)
        new = _insert_events(conn, self.dialect, fresh, counted)
        if new != len(fresh):
            raise RegistryError(f"events of {gate_id} were stored meanwhile outside the write lock; batch rolled back")
        for row in again:  # resent: each must be what is stored
            self._check_same(gate_id, epoch, row)
        if count_usage:
            usage = [ev for ev in counted if ev.kind in USAGE_KINDS]
            if usage:
                ops += self._count_usages(usage, gate_id, db_epoch, conflicts)
        if count_usage and events:
            # A record of this epoch closes the gate's earlier ones (gated/registry/epochs.py).
            ops += registry_epochs.close_earlier_epochs(
                self, gate_id, db_epoch, conflicts, lambda ev, epoch: self._count_usage(ev, gate_id, epoch, conflicts))
        if count_usage:  # late Redeem grants this batch proves nobody received: given back
            ops += registry_redeem.settle_batch(self, gate_id, db_epoch, events, received_at)
        last = events[-1].seq if events else 0
        conn.execute(_ACK_GATE, (gate_id, db_epoch, last))
        if ops and check is not None:
            try:
                check(tuple(ops))
            except ValueError as exc:
                raise _UsageRefused(str(exc)) from None
        return StoredBatch(last, new, None), ops

    def _held_seqs(self, gate_id: str, db_epoch: int, events: Sequence[IncomingEvent]) -> set[int]:
        """The seqs of `events` (increasing) this gate's epoch has stored already: a resend."""
        if not events:
            return set()
        return {seq for (seq,) in self.conn.execute(
            "SELECT seq FROM events WHERE gate_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
            (gate_id, db_epoch, events[0].seq, events[-1].seq))}

    def _count_usages(self, usage: list[IncomingEvent], gate_id: str, db_epoch: int, conflicts: list[Conflict]) -> list[Op]:
        """`_count_usage` of each new usage event in order, on its tickets read at once and written back at once."""
        tickets = self._usage_tickets(usage)
        # Whether an epoch's closing counted any admission of this gate: when none did (a gate that
        # never lost an outcome), no usage event needs looking up in implied_uses one by one.
        implied = self.conn.execute("SELECT 1 FROM implied_uses WHERE gate_id = ? LIMIT 1", (gate_id,)).fetchone() is not None
        ops = [op for ev in usage
               if (op := self._count_usage(ev, gate_id, db_epoch, conflicts, tickets, implied=implied)) is not None]
        self._write_usage(tickets)
        return ops

    def _usage_tickets(self, usage: Sequence[IncomingEvent]) -> dict[int, list]:
        """The tickets `usage` events name, read at once, by their stored id: [entries_used, inside,
        benefits, zones, max_entries, state, changed] (`_count_usage` changes them in place)."""
        ids = set()
        for ev in usage:
            payload = self._payload_of(ev)
            tid = payload.get("ticket_id", ev.ticket_id) if payload is not None else None
            if isinstance(tid, int) and 0 <= tid < _U64:
                ids.add(u64_to_sqlite(tid))
        ordered = sorted(ids)
        if self.dialect == engine.POSTGRES:
            rows = self.conn.execute(_PG_TICKET_USAGE, (ordered,)).fetchall() if ordered else []
        else:
            rows = [row for chunk in _chunks(ordered, 500) for row in self.conn.execute(
                "SELECT ticket_id, entries_used, inside, benefits, zones, max_entries, state FROM tickets "
                f"WHERE ticket_id IN ({','.join('?' * len(chunk))})", chunk)]
        return {tid: [*row, False] for tid, *row in rows}

    def _write_usage(self, tickets: dict[int, list]) -> None:
        """Write back the tickets `_count_usage` changed (`_usage_tickets`' rows)."""
        changed = [(row[0], row[1], row[2], tid) for tid, row in tickets.items() if row[6]]
        if not changed:
            return
        if self.dialect == engine.POSTGRES:
            self.conn.execute(_PG_SET_TICKET_USAGE, _columns(changed))
        else:
            self.conn.executemany("UPDATE tickets SET entries_used = ?, inside = ?, benefits = ? WHERE ticket_id = ?", changed)

    @staticmethod
    def _payload_of(ev: IncomingEvent) -> dict | None:
        payload = ev.payload
        if payload is None:
            try:
                payload = json.loads(ev.payload_json)
            except (ValueError, RecursionError):  # a gate's payload, nested past the recursion limit or not JSON
                return None
        return payload if isinstance(payload, dict) else None

    def _check_same(self, gate_id: str, epoch: int, row: tuple) -> None:
        """Raise `EventConflict` when the stored event under this row's key differs from it."""
        _event_id, _gate, seq, at, kind, lane, ticket_id, reason, payload, _received, db_epoch = row
        stored = self.conn.execute(
            "SELECT at, kind, lane, ticket_id, reason, payload FROM events WHERE gate_id = ? AND epoch = ? AND seq = ?",
            (gate_id, db_epoch, seq),
        ).fetchone()
        if stored is None:
            return
        s_at, s_kind, s_lane, s_ticket, s_reason, s_payload = stored
        for what, mine, theirs in (("time", at, s_at), ("kind", kind, s_kind), ("lane", lane, s_lane),
                                   ("ticket", ticket_id, s_ticket), ("reason", reason, s_reason)):
            if mine != theirs:
                raise EventConflict(gate_id, epoch, seq, what)
        if payload != s_payload:
            try:
                same = json.loads(payload) == json.loads(s_payload)
            except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
                same = False
            if not same:
                raise EventConflict(gate_id, epoch, seq, "payload")

    def _count_usage(self, ev: IncomingEvent, gate_id: str, db_epoch: int, conflicts: list[Conflict],
                     tickets: dict[int, list] | None = None, *, implied: bool = True) -> Op | None:
        """The usage change of a new passage or redemption, as an absolute-value op.

        Appends to `conflicts` what this usage overdrew (it is counted all the same).
        `tickets` (see `_count_usages`): the batch's tickets as read, changed in place and
        written back by the caller; None: read and written here. `implied=False`: the
        gate has no admission counted when an epoch closed (nothing to look up).
        """
        payload = self._payload_of(ev)
        if payload is None:
            return None
        ticket_id = payload.get("ticket_id", ev.ticket_id)
        if not isinstance(ticket_id, int) or not 0 <= ticket_id < _U64:
            return None
        if tickets is None:
            row = self.conn.execute(
                "SELECT entries_used, inside, benefits, zones, max_entries, state FROM tickets WHERE ticket_id = ?",
                (u64_to_sqlite(ticket_id),),
            ).fetchone()
            held = None
        else:
            row = held = tickets.get(u64_to_sqlite(ticket_id))
        if row is None:
            return None
        used, inside_json, benefits_json, zones_json, max_entries, state = row[:6]
        if implied and registry_epochs.counted_on_closing(self, gate_id, ticket_id, payload):
            return None  # its decision was counted when its epoch closed without it: not twice
        benefit = payload.get("benefit")
        if ev.kind == "redemption" or benefit:
            if ev.kind == "redemption" and registry_redeem.pair_record(self, gate_id, db_epoch, ev.seq, payload):
                return None  # granted through Redeem, taken then: stored, not taken again
            benefits = json.loads(benefits_json)
            for pair in benefits:
                if pair[0] == benefit:
                    if pair[1] <= 0:
                        _Found(self, ev, gate_id, db_epoch, ticket_id, conflicts).conflict("over_redemption", benefit)
                    if state == TicketState.REVOKED:
                        _Found(self, ev, gate_id, db_epoch, ticket_id, conflicts).conflict("revoked_use", benefit)
                    pair[1] = max(0, pair[1] - 1)
                    if held is None:
                        self.conn.execute("UPDATE tickets SET benefits = ? WHERE ticket_id = ?", (json.dumps(benefits), u64_to_sqlite(ticket_id)))
                    else:
                        held[2], held[6] = json.dumps(benefits), True
                    return SetBenefit(ticket_id, benefit, pair[1])
            return None
        zone, direction = payload.get("zone"), payload.get("direction")
        if not isinstance(zone, str) or not zone or direction not in ("in", "out"):
            return None
        if zone not in self._parsed(zones_json):
            return None  # a zone the ticket does not name: not the registry's count (and never a new zone)
        inside = list(self._parsed(inside_json))  # a few texts: [], ["hall-a"], ...
        if direction == "in":
            used = min(used + 1, 0xFFFFFFFF)
            if 0 < max_entries < used:
                _Found(self, ev, gate_id, db_epoch, ticket_id, conflicts).conflict("over_entry")
            if state == TicketState.REVOKED:
                _Found(self, ev, gate_id, db_epoch, ticket_id, conflicts).conflict("revoked_use")
            if zone not in inside:
                inside.append(zone)
        elif zone in inside:
            inside.remove(zone)
        inside = tuple(inside)
        if held is None:
            self.conn.execute(
                "UPDATE tickets SET entries_used = ?, inside = ? WHERE ticket_id = ?",
                (used, _json_of_names(inside), u64_to_sqlite(ticket_id)),
            )
        else:
            held[0], held[1], held[6] = used, _json_of_names(inside), True
        return SetUsage(ticket_id, used, inside)

    # ----------------------------------------------------------- conflicts

    def conflicts(self, kind: str | None = None) -> list[Conflict]:
        """Every conflict found (of one kind, or all), in the order found."""
        where, args = ("WHERE kind = ?", (kind,)) if kind is not None else ("", ())
        return [
            Conflict(cid, k, u64_from_sqlite(tid), benefit, UsageRecord(f_event, f_gate, f_lane, f_at),
                     UsageRecord(event_id, gate, lane, at), found_at)
            for cid, k, tid, benefit, f_event, f_gate, f_lane, f_at, event_id, gate, lane, at, found_at in self.conn.execute(
                "SELECT id, kind, ticket_id, benefit, first_event, first_gate, first_lane, first_at, "
                f"event_id, gate_id, lane, at, found_at FROM conflicts {where} ORDER BY id", args)
        ]

    def conflict_counts(self) -> dict[str, int]:
        """How many conflicts of each kind (every kind present, 0 included): what a dashboard shows."""
        counts = dict.fromkeys(CONFLICT_KINDS, 0)
        counts.update(self.conn.execute("SELECT kind, count(*) FROM conflicts GROUP BY kind"))
        return counts

    def event_count(self, gate_id: str | None = None) -> int:
        if gate_id is None:
            return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM events WHERE gate_id = ?", (gate_id,)).fetchone()[0]

    def event_ids(self, gate_id: str, epoch: int | None = None) -> list[str]:
        """This gate's event ids by seq (of one journal epoch, or of all: then an id may appear once per epoch)."""
        if epoch is None:
            rows = self.conn.execute("SELECT event_id FROM events WHERE gate_id = ? ORDER BY seq, received_at", (gate_id,))
        else:
            rows = self.conn.execute(
                "SELECT event_id FROM events WHERE gate_id = ? AND epoch = ? ORDER BY seq", (gate_id, u64_to_sqlite(epoch)))
        return [r[0] for r in rows]


class _Found:
    """Records the conflicts one new usage event causes (inside the batch's transaction)."""

    def __init__(self, store: RegistryStore, ev: IncomingEvent, gate_id: str, db_epoch: int, ticket_id: int,
                 conflicts: list[Conflict]) -> None:
        self.store, self.ev, self.gate_id, self.db_epoch, self.ticket_id = store, ev, gate_id, db_epoch, ticket_id
        self.conflicts = conflicts

    def conflict(self, kind: str, benefit: str | None = None) -> None:
        ev, conn, tid = self.ev, self.store.conn, u64_to_sqlite(self.ticket_id)
        if kind == "revoked_use":
            row = conn.execute("SELECT at FROM revocations WHERE ticket_id = ?", (tid,)).fetchone()
            revoked_at = None if row is None else row[0]
            if revoked_at is not None and ev.at < revoked_at:
                return  # used before the revocation, reported after it: no conflict
            first = UsageRecord(None, None, None, revoked_at)
            held = (None, None, None, None, None, revoked_at)
        else:
            # The record already held: the latest other use of the same entry count or benefit.
            field, value = ("$.direction", "in") if kind == "over_entry" else ("$.benefit", benefit)
            row = conn.execute(
                "SELECT event_id, gate_id, epoch, seq, lane, at FROM events "
                "WHERE ticket_id = ? AND kind IN ('passage', 'redemption') "
                "AND CASE WHEN json_valid(payload) THEN json_extract(payload, ?) END = ? "
                "AND NOT (gate_id = ? AND epoch = ? AND seq >= ?) ORDER BY at DESC LIMIT 1",
                (tid, field, value, self.gate_id, self.db_epoch, ev.seq),
            ).fetchone()
            held = row or (None,) * 6  # usage counted before the registry kept its events
            if kind == "over_redemption":
                grant = registry_redeem.latest_grant(self.store, self.ticket_id, benefit)
                if grant is not None and grant.record_seq is None and (held[5] is None or grant.at >= held[5]):
                    # granted through Redeem, its journal record not here yet: the grant is the record held
                    held = (f"{grant.gate_id}:redeem:{grant.redemption_id}", grant.gate_id, None, None, grant.lane, grant.at)
            first = UsageRecord(held[0], held[1], held[4], held[5])
        found_at = time.time()
        conflict_id = conn.execute(
            "INSERT INTO conflicts(kind, ticket_id, benefit, first_event, first_gate, first_epoch, first_seq, first_lane, "
            "first_at, event_id, gate_id, epoch, seq, lane, at, found_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (kind, tid, benefit, *held, ev.event_id, self.gate_id, self.db_epoch, ev.seq, ev.lane, ev.at, found_at),
        ).fetchall()[0][0]  # fetched whole: SQLite's statement is done before COMMIT
        then = UsageRecord(ev.event_id, self.gate_id, ev.lane, ev.at)
        self.conflicts.append(Conflict(conflict_id, kind, self.ticket_id, benefit, first, then, found_at))


def _ticket_row(rec: TicketRecord, phone: str) -> tuple:
    return (u64_to_sqlite(rec.ticket_id), rec.category, rec.ticket_type, _json_of(rec.zones),
            _json_of(rec.windows), rec.max_entries, rec.entries_used,
            _json_of(rec.inside), rec.badge_serial, int(rec.state),
            _json_of(rec.benefits), rec.name, rec.company, phone)


def _json_of(value) -> str:
    """Names, or pairs, as the JSON list the columns hold."""
    try:
        return _json_of_tuple(value)
    except TypeError:  # not hashable: a list
        return json.dumps([list(v) if isinstance(v, (tuple, list)) else v for v in value])


@functools.lru_cache(maxsize=4096)  # the tickets of a list share a few zones, windows and benefits
def _json_of_tuple(value: tuple) -> str:
    return json.dumps([list(v) if isinstance(v, (tuple, list)) else v for v in value])


def _json_of_names(names: tuple) -> str:
    """`json.dumps(list(names))`: the inside column's text."""
    try:
        return _json_of_hashable_names(names)
    except TypeError:  # not hashable: no names of ours
        return json.dumps(list(names))


@functools.lru_cache(maxsize=4096)  # where a ticket is: a few zone lists, over and over
def _json_of_hashable_names(names: tuple) -> str:
    return json.dumps(list(names))


_STATES = {int(s): s for s in TicketState}  # the column's values


def _log_conflict(c: Conflict) -> None:
    log.warning(
        "registry_conflict", kind=c.kind, ticket_id=c.ticket_id, benefit=c.benefit,
        event_id=c.then.event_id, gate=c.then.gate_id, lane=c.then.lane, at=c.then.at,
        first_event_id=c.first.event_id, first_gate=c.first.gate_id, first_lane=c.first.lane, first_at=c.first.at,
    )


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm the
    file's mode); an older file of ours that others may read is tightened to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(name, 0o600)
