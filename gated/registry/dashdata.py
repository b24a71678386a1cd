"""What the dashboard and the desk pages read, fast at a million tickets and a million check-ins.

The dashboard's figures are kept as they happen, not computed per request,
in small tables kept up to date in the same transaction as the write that
moves them (all or nothing, whoever writes: the server, `gated registry
import`, a desk page): on SQLite the store counts the events it inserts
(`count_new_events`) and triggers on `tickets` count the rest; on PostgreSQL
triggers do it all:

- `dash_hourly`       passages per hour (UTC, start of hour) per gate and lane, in and out
- `dash_zone_hourly`  passages per hour per zone, in and out (occupancy is their running sum)
- `dash_denials`      decisions refused, per reason
- `dash_attended`     every ticket with at least one entry (unique attendees)
- `dash_category`     per category: tickets registered, tickets with an entry
- `dash_change_at`    when each row of `changes` was written (the store keeps who, `changes.actor`;
                      the attendee page shows both)

`install(conn)` creates them once (filled from what the file already holds)
with the indexes the desk's search needs; it is idempotent and cheap once
done. Reading a chart is then a read of a few hundred rows whatever the
size of the event.

Every function here takes a `sqlite3.Connection` and returns plain values:
the pages run them in a worker thread, never on the loop.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from gated.journal import u64_from_sqlite, u64_to_sqlite
from gated.registry import engine

DASHBOARD_SCHEMA = 4  # 2: dash_change_at and the index of changes by ticket; 3: no index of tickets by category
# (nothing read through it, and it cost a fifth of the time a 50,000-attendee batch holds the write lock);
# 4: no trigger on events (SQLite: new events counted by `count_new_events`, called by the store)
#: PostgreSQL's figures are at 3 (4 changed only SQLite's).
_PG_DASHBOARD_SCHEMA = 3
HOUR = 3600

_TABLES = """
CREATE TABLE dash_hourly (
    hour INTEGER NOT NULL, gate_id TEXT NOT NULL, lane TEXT NOT NULL,
    ins INTEGER NOT NULL DEFAULT 0, outs INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, gate_id, lane)
) WITHOUT ROWID;
CREATE TABLE dash_zone_hourly (
    hour INTEGER NOT NULL, zone TEXT NOT NULL,
    ins INTEGER NOT NULL DEFAULT 0, outs INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, zone)
) WITHOUT ROWID;
CREATE TABLE dash_denials (reason TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE dash_attended (ticket_id INTEGER PRIMARY KEY);
CREATE TABLE dash_category (
    category TEXT PRIMARY KEY, registered INTEGER NOT NULL DEFAULT 0, attended INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX tickets_name_nocase ON tickets(name COLLATE NOCASE);
CREATE INDEX tickets_company_nocase ON tickets(company COLLATE NOCASE);
CREATE INDEX tickets_phone_last4 ON tickets(substr(phone, -4));
"""

# No trigger on `events` (a table with one makes SQLite copy every row of a many-row INSERT and run
# the trigger for each): the store calls `count_new_events` for the events it stored (SQLite;
# gated.registry.store._log_new_events), which counts them set-wise, a few statements a batch.
# An upsert fed by a SELECT needs a WHERE to parse (SQLite's ON CONFLICT ambiguity). CROSS JOIN: the new
# check-ins first, then each one's event by its key (SQLite keeps that order; left free, it chose once
# to read every passage stored and keep the new ones).
_NEW_PASSAGES = (f"SELECT CAST(e.at / {HOUR} AS INTEGER) * {HOUR} AS h, e.gate_id, e.lane, e.ticket_id, "
                 "json_extract(e.payload, '$.direction') AS d, json_extract(e.payload, '$.zone') AS z "
                 "FROM checkin_log l CROSS JOIN events e ON e.gate_id = l.gate_id AND e.epoch = l.epoch AND e.seq = l.seq "
                 "WHERE l.id > ? AND e.kind = 'passage' AND json_valid(e.payload)")
_COUNT_PASSAGES = (
    "INSERT INTO dash_hourly(hour, gate_id, lane, ins, outs) "
    f"SELECT h, gate_id, lane, sum(d = 'in'), sum(d = 'out') FROM ({_NEW_PASSAGES}) WHERE d IN ('in', 'out') "
    "GROUP BY h, gate_id, lane ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs",
    "INSERT INTO dash_zone_hourly(hour, zone, ins, outs) "
    f"SELECT h, z, sum(d = 'in'), sum(d = 'out') FROM ({_NEW_PASSAGES}) "
    "WHERE d IN ('in', 'out') AND typeof(z) = 'text' AND z <> '' "
    "GROUP BY h, z ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs",
    f"INSERT OR IGNORE INTO dash_attended(ticket_id) SELECT ticket_id FROM ({_NEW_PASSAGES}) "
    "WHERE ticket_id IS NOT NULL AND d = 'in'",
)
_COUNT_DENIALS = "INSERT INTO dash_denials(reason, n) VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET n = n + excluded.n"


_ADD_HOURLY = ("INSERT INTO dash_hourly(hour, gate_id, lane, ins, outs) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs")
_ADD_ZONE_HOURLY = ("INSERT INTO dash_zone_hourly(hour, zone, ins, outs) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs")
_ADD_ATTENDED = "INSERT OR IGNORE INTO dash_attended(ticket_id) VALUES (?)"
#: An hour of a time this far from 0 and beyond, or not a finite number, is left to SQLite's CAST (which saturates).
_PLAIN_TIME = 1e15


class NewPassage(NamedTuple):
    """A passage the store has just inserted, with its payload as the store parsed it (None: not parsed)."""

    at: float
    gate_id: str
    lane: str
    ticket_id: int | None  # as stored (a u64 as SQLite keeps it)
    payload: dict | None
    text: str  # the payload as stored


def count_new_events(conn: sqlite3.Connection, checkins_after: int | None, refused: Sequence[str],
                     passages: Sequence[NewPassage] = ()) -> None:
    """Count what the store has just stored (SQLite, inside its transaction), if the figures are
    installed: the passages given check-in ids after `checkins_after` (None: none), as the hourly,
    zone and attendance figures; `refused`, the reasons of the refused decisions, as denials.
    Each new event is counted once: the store calls this only for rows it inserted.

    `passages`, when the store has them with their payloads parsed (`_passage_figures`), are
    counted from those in Python, a few rows a batch; otherwise SQL reads each check-in's event
    and its stored text (`_COUNT_PASSAGES`). Why: SQL reads every new passage's JSON text three
    times in each of three statements, a fifth of the store's time replaying a day's backlog."""
    if not installed(conn):
        return
    if checkins_after is not None:
        figures = _passage_figures(passages)
        if figures is None:
            for statement in _COUNT_PASSAGES:
                conn.execute(statement, (checkins_after,))
        else:
            hourly, zones, attended = figures
            conn.executemany(_ADD_HOURLY, [(*key, n[0], n[1]) for key, n in hourly.items()])
            conn.executemany(_ADD_ZONE_HOURLY, [(*key, n[0], n[1]) for key, n in zones.items()])
            conn.executemany(_ADD_ATTENDED, [(t,) for t in attended])
    if refused:
        conn.executemany(_COUNT_DENIALS, collections.Counter(refused).items())


def _passage_figures(passages: Sequence[NewPassage]) -> tuple[dict, dict, list] | None:
    """What `_COUNT_PASSAGES` adds for these passages: ins and outs by (hour, gate, lane) and by
    (hour, zone), and the tickets entered (in order, once each), read from the parsed payloads.
    None unless every one is plain, so that SQL on its stored text reads the same: a payload
    parsed to a dict (of that text), its direction and zone strings, its time a finite number
    within ±1e15 s, and a text with no NaN or Infinity (which `json_valid` refuses: SQL counts
    nothing of such a passage). Anything else goes to SQL, whole batch."""
    if not passages:
        return None
    hourly: dict[tuple, list[int]] = {}
    zones: dict[tuple, list[int]] = {}
    attended: dict[int, None] = {}
    for at, gate_id, lane, ticket_id, payload, text in passages:
        if type(payload) is not dict:
            return None
        direction, zone = payload.get("direction"), payload.get("zone")
        if type(direction) is not str or type(zone) is not str or not -_PLAIN_TIME < at < _PLAIN_TIME:
            return None
        if "NaN" in text or "Infinity" in text:
            return None
        if direction == "in":
            i = 0
            if ticket_id is not None:
                attended[ticket_id] = None
        elif direction == "out":
            i = 1
        else:
            continue
        hour = int(at / HOUR) * HOUR  # CAST(at / 3600 AS INTEGER) * 3600: truncated toward zero, as SQLite's CAST
        hourly.setdefault((hour, gate_id, lane), [0, 0])[i] += 1
        if zone:
            zones.setdefault((hour, zone), [0, 0])[i] += 1
    return hourly, zones, list(attended)


_TRIGGERS = """
CREATE TRIGGER dash_attend AFTER INSERT ON dash_attended BEGIN
    UPDATE dash_category SET attended = attended + 1
        WHERE category = (SELECT category FROM tickets WHERE ticket_id = NEW.ticket_id);
END;
CREATE TRIGGER dash_ticket_add AFTER INSERT ON tickets BEGIN
    INSERT INTO dash_category(category, registered, attended)
        SELECT NEW.category, 1, EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = NEW.ticket_id) WHERE true
        ON CONFLICT(category) DO UPDATE SET registered = registered + 1, attended = attended + excluded.attended;
END;
CREATE TRIGGER dash_ticket_category AFTER UPDATE OF category ON tickets WHEN OLD.category <> NEW.category BEGIN
    UPDATE dash_category SET registered = registered - 1,
        attended = attended - EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = OLD.ticket_id)
        WHERE category = OLD.category;
    INSERT INTO dash_category(category, registered, attended)
        SELECT NEW.category, 1, EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = NEW.ticket_id) WHERE true
        ON CONFLICT(category) DO UPDATE SET registered = registered + 1, attended = attended + excluded.attended;
END;
CREATE TRIGGER dash_ticket_remove AFTER DELETE ON tickets BEGIN
    UPDATE dash_category SET registered = registered - 1,
        attended = attended - EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = OLD.ticket_id)
        WHERE category = OLD.category;
END;
"""

# Schema 2: when each change was made, and a ticket's changes found by index (the attendee page).
# A change written before this was installed has no time ("before the times were kept").
_CHANGE_TIMES = """
CREATE TABLE IF NOT EXISTS dash_change_at (change_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_ticket ON changes(ticket_id) WHERE ticket_id IS NOT NULL;
CREATE TRIGGER dash_change_time AFTER INSERT ON changes BEGIN
    INSERT OR REPLACE INTO dash_change_at(change_id, at) VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0);
END;
"""

# Filled once from what the file holds (the triggers keep them from then on).
_BACKFILL = f"""
INSERT INTO dash_denials(reason, n) SELECT reason, count(*) FROM events WHERE kind = 'decision' AND reason <> 'ok' GROUP BY reason;
INSERT INTO dash_hourly(hour, gate_id, lane, ins, outs)
    SELECT CAST(at / {HOUR} AS INTEGER) * {HOUR} AS h, gate_id, lane, sum(d = 'in'), sum(d = 'out')
    FROM (SELECT at, gate_id, lane, json_extract(payload, '$.direction') AS d FROM events
          WHERE kind = 'passage' AND json_valid(payload)) WHERE d IN ('in', 'out') GROUP BY h, gate_id, lane;
INSERT INTO dash_zone_hourly(hour, zone, ins, outs)
    SELECT CAST(at / {HOUR} AS INTEGER) * {HOUR} AS h, z, sum(d = 'in'), sum(d = 'out')
    FROM (SELECT at, json_extract(payload, '$.direction') AS d, json_extract(payload, '$.zone') AS z FROM events
          WHERE kind = 'passage' AND json_valid(payload))
    WHERE d IN ('in', 'out') AND typeof(z) = 'text' AND z <> '' GROUP BY h, z;
INSERT OR IGNORE INTO dash_attended(ticket_id)
    SELECT ticket_id FROM events WHERE kind = 'passage' AND ticket_id IS NOT NULL AND json_valid(payload)
    AND json_extract(payload, '$.direction') = 'in';
INSERT INTO dash_category(category, registered, attended)
    SELECT t.category, count(*), count(a.ticket_id) FROM tickets t LEFT JOIN dash_attended a ON a.ticket_id = t.ticket_id
    GROUP BY t.category;
"""

# The same figures on PostgreSQL (gated.registry.engine), created whole at _PG_DASHBOARD_SCHEMA and read by
# the same queries. What differs from SQLite:
# - A counter row updated again and again in one transaction is slow there (each update leaves a
#   version, and an index entry, the next one must step over until the transaction ends: a
#   50,000-attendee batch bumping one category's count is quadratic, minutes instead of seconds).
#   So the triggers only append what they count to `dash_*_new`; `dash_fold()` moves those rows
#   into `dash_*_sum` (one update per counter, however many rows), and `dash_hourly`,
#   `dash_category`... are views adding the two: always exact, folded or not. The dashboard's
#   read folds first (`dashboard`), in its own short transaction.
# - When a change was made is a column default of `changes` (no trigger); `dash_change_at` its view.
# - The triggers are PL/pgSQL functions reading the payload as jsonb once; an hour is
#   trunc(at / HOUR) * HOUR as SQLite's CAST truncates (a cast to BIGINT would round).
# - The search's case-insensitive prefixes are indexes on lower(...) (text_pattern_ops: LIKE 'abc%'
#   seeks), the phone's last four digits on right(phone, 4).
#: pg_try_advisory_xact_lock key of `dash_fold()`: one fold at a time, a busy one is skipped ("gatD")
FOLD_LOCK = 0x67617444
_PG_HOUR = f"trunc(at / {HOUR})::bigint * {HOUR}"
_PG_COUNTERS = {  # name: (key columns, counted columns)
    "dash_hourly": ("hour BIGINT, gate_id TEXT, lane TEXT", "ins BIGINT, outs BIGINT"),
    "dash_zone_hourly": ("hour BIGINT, zone TEXT", "ins BIGINT, outs BIGINT"),
    "dash_denials": ("reason TEXT", "n BIGINT"),
    "dash_category": ("category TEXT", "registered BIGINT, attended BIGINT"),
}


def _pg_counters() -> str:
    ddl, folds = [], []
    for name, (key, counted) in _PG_COUNTERS.items():
        keys = [c.split()[0] for c in key.split(", ")]
        values = [c.split()[0] for c in counted.split(", ")]
        k, v = ", ".join(keys), ", ".join(values)
        sums = ", ".join(f"sum({c})::bigint AS {c}" for c in values)
        ddl.append(f"""
CREATE TABLE {name}_sum ({", ".join(c + " NOT NULL" for c in key.split(", "))},
    {", ".join(c + " NOT NULL" for c in counted.split(", "))}, PRIMARY KEY ({k}));
CREATE TABLE {name}_new ({key}, {counted});
CREATE VIEW {name} AS SELECT {k}, {sums}
    FROM (SELECT {k}, {v} FROM {name}_sum UNION ALL SELECT {k}, {v} FROM {name}_new) c GROUP BY {k};""")
        folds.append(f"""
    WITH moved AS (DELETE FROM {name}_new RETURNING *)
    INSERT INTO {name}_sum AS t ({k}, {v}) SELECT {k}, {", ".join(f"sum({c})" for c in values)} FROM moved GROUP BY {k}
        ON CONFLICT ({k}) DO UPDATE SET {", ".join(f"{c} = t.{c} + excluded.{c}" for c in values)};""")
    return "".join(ddl) + f"""
CREATE FUNCTION dash_fold() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock({FOLD_LOCK}) THEN
        RETURN false;
    END IF;{"".join(folds)}
    RETURN true;
END $$;
"""


_PG_DASHBOARD = _pg_counters() + f"""
CREATE TABLE dash_attended (ticket_id BIGINT PRIMARY KEY);
ALTER TABLE changes ADD COLUMN dash_at DOUBLE PRECISION;  -- NULL: written before the times were kept
ALTER TABLE changes ALTER COLUMN dash_at SET DEFAULT extract(epoch FROM clock_timestamp());
CREATE VIEW dash_change_at AS SELECT id AS change_id, dash_at AS at FROM changes WHERE dash_at IS NOT NULL;
CREATE INDEX tickets_name_lower ON tickets(lower(name) text_pattern_ops);
CREATE INDEX tickets_company_lower ON tickets(lower(company) text_pattern_ops);
CREATE INDEX tickets_phone_last4 ON tickets(right(phone, 4));
CREATE INDEX tickets_category ON tickets(category);
CREATE INDEX changes_by_ticket ON changes(ticket_id) WHERE ticket_id IS NOT NULL;

CREATE TEMP TABLE dash_passages ON COMMIT DROP AS
    SELECT at, gate_id, lane, ticket_id, doc ->> 'direction' AS d,
           CASE WHEN jsonb_typeof(doc -> 'zone') = 'string' THEN doc ->> 'zone' END AS z
    FROM (SELECT at, gate_id, lane, ticket_id, CASE WHEN json_valid(payload) THEN payload::jsonb END AS doc
          FROM events WHERE kind = 'passage') p;
INSERT INTO dash_denials_sum(reason, n)
    SELECT reason, count(*) FROM events WHERE kind = 'decision' AND reason <> 'ok' GROUP BY reason;
INSERT INTO dash_hourly_sum(hour, gate_id, lane, ins, outs)
    SELECT {_PG_HOUR} AS h, gate_id, lane, count(*) FILTER (WHERE d = 'in'), count(*) FILTER (WHERE d = 'out')
    FROM dash_passages WHERE d IN ('in', 'out') GROUP BY h, gate_id, lane;
INSERT INTO dash_zone_hourly_sum(hour, zone, ins, outs)
    SELECT {_PG_HOUR} AS h, z, count(*) FILTER (WHERE d = 'in'), count(*) FILTER (WHERE d = 'out')
    FROM dash_passages WHERE d IN ('in', 'out') AND z <> '' GROUP BY h, z;
INSERT INTO dash_attended(ticket_id)
    SELECT DISTINCT ticket_id FROM dash_passages WHERE ticket_id IS NOT NULL AND d = 'in';
INSERT INTO dash_category_sum(category, registered, attended)
    SELECT t.category, count(*), count(a.ticket_id) FROM tickets t LEFT JOIN dash_attended a ON a.ticket_id = t.ticket_id
    GROUP BY t.category;

CREATE FUNCTION dash_denial() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dash_denials_new(reason, n) VALUES (NEW.reason, 1);
    RETURN NULL;
END $$;
CREATE TRIGGER dash_denial AFTER INSERT ON events FOR EACH ROW WHEN (NEW.kind = 'decision' AND NEW.reason <> 'ok')
    EXECUTE FUNCTION dash_denial();
CREATE FUNCTION dash_passage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc jsonb;
    d text;
    h bigint := trunc(NEW.at / {HOUR})::bigint * {HOUR};
BEGIN
    BEGIN
        doc := NEW.payload::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;  -- not JSON: not counted, as on SQLite
    END;
    d := doc ->> 'direction';
    IF d IS NULL OR d NOT IN ('in', 'out') THEN
        RETURN NULL;
    END IF;
    INSERT INTO dash_hourly_new(hour, gate_id, lane, ins, outs) VALUES (h, NEW.gate_id, NEW.lane, (d = 'in')::int, (d = 'out')::int);
    IF jsonb_typeof(doc -> 'zone') = 'string' AND doc ->> 'zone' <> '' THEN
        INSERT INTO dash_zone_hourly_new(hour, zone, ins, outs) VALUES (h, doc ->> 'zone', (d = 'in')::int, (d = 'out')::int);
    END IF;
    IF NEW.ticket_id IS NOT NULL AND d = 'in' THEN
        INSERT INTO dash_attended(ticket_id) VALUES (NEW.ticket_id) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER dash_passage AFTER INSERT ON events FOR EACH ROW WHEN (NEW.kind = 'passage')
    EXECUTE FUNCTION dash_passage();
CREATE FUNCTION dash_attend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dash_category_new(category, registered, attended)
        SELECT category, 0, 1 FROM tickets WHERE ticket_id = NEW.ticket_id;
    RETURN NULL;
END $$;
CREATE TRIGGER dash_attend AFTER INSERT ON dash_attended FOR EACH ROW EXECUTE FUNCTION dash_attend();
CREATE FUNCTION dash_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO dash_category_new(category, registered, attended)
            VALUES (OLD.category, -1, -(EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = OLD.ticket_id))::int);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO dash_category_new(category, registered, attended)
            VALUES (NEW.category, 1, (EXISTS (SELECT 1 FROM dash_attended WHERE ticket_id = NEW.ticket_id))::int);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER dash_ticket_add AFTER INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION dash_ticket();
CREATE TRIGGER dash_ticket_category AFTER UPDATE OF category ON tickets FOR EACH ROW
    WHEN (OLD.category <> NEW.category) EXECUTE FUNCTION dash_ticket();
CREATE TRIGGER dash_ticket_remove AFTER DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION dash_ticket();
"""


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, a trigger's body kept whole (it holds semicolons)."""
    buffer = ""
    for line in script.strip().splitlines():
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""


def _schema(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'dashboard_schema'").fetchone()
    return 0 if row is None else int(row[0])


def _wanted(conn) -> int:
    return DASHBOARD_SCHEMA if engine.dialect(conn) == engine.SQLITE else _PG_DASHBOARD_SCHEMA


def installed(conn: sqlite3.Connection) -> bool:
    return _schema(conn) >= _wanted(conn)


def install(conn: sqlite3.Connection) -> bool:
    """Create the dashboard's tables, triggers and indexes once (one transaction); True if it did.
    A file installed at an earlier schema gains only what came since."""
    if installed(conn):
        return False
    if engine.dialect(conn) == engine.POSTGRES:
        return _install_postgres(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        schema = _schema(conn)  # another process may have done it while we waited for the lock
        if schema < DASHBOARD_SCHEMA:
            statements: list[str] = []
            if schema < 1:
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'dash!_%' ESCAPE '!'").fetchall():
                    conn.execute(f'DROP TRIGGER "{name}"')  # a half-removed earlier install: the triggers come again below
                statements += [*_statements(_TABLES), *_statements(_BACKFILL), *_statements(_TRIGGERS)]
            if schema < 2:
                conn.execute("DROP TRIGGER IF EXISTS dash_change_time")
                statements += _statements(_CHANGE_TIMES)
            if 1 <= schema < 4:  # the counts so far stand; from now on `count_new_events` keeps them
                conn.execute("DROP TRIGGER IF EXISTS dash_denial")
                conn.execute("DROP TRIGGER IF EXISTS dash_passage")
            statements.append("DROP INDEX IF EXISTS tickets_category")
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dashboard_schema', ?)", (DASHBOARD_SCHEMA,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return True


def _install_postgres(conn) -> bool:
    conn.execute("BEGIN IMMEDIATE")  # every instance's writers' lock: one of them installs
    try:
        done = _schema(conn) >= _PG_DASHBOARD_SCHEMA
        if not done:
            conn.script(_PG_DASHBOARD)
            conn.execute("INSERT INTO meta(key, value) VALUES ('dashboard_schema', ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (_PG_DASHBOARD_SCHEMA,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return not done


def changes_of(conn: sqlite3.Connection, ticket_id: int, limit: int = 200) -> list[dict]:
    """Who changed this ticket and when, newest first: {"at" (None: before times were kept), "what", "actor"}.
    `actor` is None for a change made before actors were kept (or by a program that names none)."""
    rows = conn.execute(
        "SELECT c.kind, c.actor, t.at FROM changes c LEFT JOIN dash_change_at t ON t.change_id = c.id "
        "WHERE c.ticket_id = ? ORDER BY c.id DESC LIMIT ?", (u64_to_sqlite(ticket_id), limit)).fetchall()
    out = [{"at": at, "what": _CHANGE_WORDS.get(kind, kind), "actor": actor} for kind, actor, at in rows]
    if out and len(rows) < limit and rows[-1][0] == "ticket":
        out[-1]["what"] = "registered"  # the ticket's first change made it
    return out


_CHANGE_WORDS = {"ticket": "details changed", "state": "revoked", "reissue": "badge reprinted"}


# ------------------------------------------------------------------ the dashboard


@dataclass(frozen=True, slots=True)
class GateState:
    """What the registry knows of a gate."""

    gate_id: str
    connected: bool  # watching the registry's entitlements now
    acked_seq: int  # the highest seq stored of its latest journal epoch
    epochs: int  # journal epochs seen (one per boot)
    last_event_at: float | None  # the gate's clock
    last_received_at: float | None  # the registry's clock
    # The gate's latest ReportStatus (None until it reported since the registry started):
    backlog: int | None = None  # journal records the registry has not acknowledged
    cache_version: int | None = None
    clock_offset_ms: int | None = None  # the registry's clock minus the gate's
    clock_trusted: bool | None = None
    status_at: float | None = None  # when the report arrived (the registry's clock)


def gates(conn: sqlite3.Connection, connected: set[str] | frozenset[str] = frozenset(),
          reported: Mapping[str, Any] | None = None) -> list[GateState]:
    """Each gate the registry heard from or that watches now. The last event of each journal epoch
    is the one at its acked seq: a primary-key lookup per epoch, whatever the number of events.
    `reported`: each gate's latest status report (`RegistryService.gate_states()`)."""
    reported = reported or {}
    latest: dict[str, tuple] = {}
    epochs: dict[str, int] = {}
    for gate_id, seq, at, received in conn.execute(
        "SELECT g.gate_id, g.acked_seq, e.at, e.received_at FROM gates g "
        "LEFT JOIN events e ON e.gate_id = g.gate_id AND e.epoch = g.epoch AND e.seq = g.acked_seq"
    ):
        epochs[gate_id] = epochs.get(gate_id, 0) + 1
        if gate_id not in latest or (received or 0) > (latest[gate_id][2] or 0):
            latest[gate_id] = (seq, at, received)
    out = []
    for gate_id in sorted(set(latest) | set(connected) | set(reported)):
        seq, at, received = latest.get(gate_id, (0, None, None))
        r = reported.get(gate_id)
        status = () if r is None else (r.backlog, r.cache_version, r.clock_offset_ms, r.clock_trusted, r.received_at)
        out.append(GateState(gate_id, gate_id in connected, seq, epochs.get(gate_id, 0), at, received, *status))
    return out


def hourly(conn: sqlite3.Connection) -> list[dict]:
    return [{"hour": h, "gate": g, "lane": lane, "in": i, "out": o}
            for h, g, lane, i, o in conn.execute("SELECT hour, gate_id, lane, ins, outs FROM dash_hourly ORDER BY hour, gate_id, lane")]


def occupancy(conn: sqlite3.Connection) -> dict[str, list[list]]:
    """Per zone, [hour, people inside at the end of that hour] (entries minus exits so far, never below 0)."""
    zones: dict[str, list[list]] = {}
    totals: dict[str, int] = {}
    for hour, zone, ins, outs in conn.execute("SELECT hour, zone, ins, outs FROM dash_zone_hourly ORDER BY hour, zone"):
        totals[zone] = max(0, totals.get(zone, 0) + ins - outs)
        zones.setdefault(zone, []).append([hour, totals[zone]])
    return zones


def categories(conn: sqlite3.Connection) -> list[dict]:
    return [{"category": c, "registered": r, "attended": a, "rate": (a / r) if r else 0.0}
            for c, r, a in conn.execute("SELECT category, registered, attended FROM dash_category WHERE registered > 0 ORDER BY category")]


def denials(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT reason, n FROM dash_denials ORDER BY n DESC, reason"))


def conflicts(conn: sqlite3.Connection, limit: int = 20) -> dict:
    from gated.registry.store import CONFLICT_KINDS

    counts = dict.fromkeys(CONFLICT_KINDS, 0)
    counts.update(conn.execute("SELECT kind, count(*) FROM conflicts GROUP BY kind"))
    latest = [
        {"kind": k, "ticket_id": str(u64_from_sqlite(t)), "benefit": b, "gate": g, "lane": lane, "at": at,
         "first_gate": fg, "first_lane": fl, "first_at": fa}
        for k, t, b, g, lane, at, fg, fl, fa in conn.execute(
            "SELECT kind, ticket_id, benefit, gate_id, lane, at, first_gate, first_lane, first_at FROM conflicts "
            "ORDER BY id DESC LIMIT ?", (limit,))
    ]
    return {"counts": counts, "latest": latest}


def unpaired_grants(conn: sqlite3.Connection, limit: int = 20) -> dict:
    """Redeem grants no journal record of their unit has reported yet: how many, the oldest `limit`."""
    from gated.registry.redeem import unpaired_grants as grants

    waiting = grants(conn)
    return {"count": len(waiting), "oldest": [
        {"ticket": str(g.ticket_id), "benefit": g.benefit, "gate": g.gate_id, "lane": g.lane, "at": g.at}
        for g in waiting[:limit]]}


def dashboard(conn: sqlite3.Connection, connected: set[str] | frozenset[str] = frozenset(), *, version: int | None = None,
              reported: Mapping[str, Any] | None = None) -> dict:
    """Everything the dashboard draws, as one JSON-ready dict (a read transaction: one consistent picture)."""
    if engine.dialect(conn) == engine.POSTGRES:
        conn.execute("SELECT dash_fold()")  # its own transaction (autocommit): the counters since the last read
    conn.execute("BEGIN" if engine.dialect(conn) == engine.SQLITE else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        data = {
            "at": time.time(),
            "hourly": hourly(conn),
            "occupancy": occupancy(conn),
            "categories": categories(conn),
            "denials": denials(conn),
            "conflicts": conflicts(conn),
            "unpaired_grants": unpaired_grants(conn),
            "gates": [
                {"gate": g.gate_id, "connected": g.connected, "acked_seq": g.acked_seq, "epochs": g.epochs,
                 "last_event_at": g.last_event_at, "last_received_at": g.last_received_at,
                 "backlog": g.backlog, "cache_version": g.cache_version, "clock_offset_ms": g.clock_offset_ms,
                 "clock_trusted": g.clock_trusted, "status_at": g.status_at}
                for g in gates(conn, connected, reported)
            ],
            "unique_attendees": conn.execute("SELECT count(*) FROM dash_attended").fetchone()[0],
            "version": version,
        }
    finally:
        conn.execute("COMMIT")
    return data


# ------------------------------------------------------------------ exports

CHECKIN_CSV_HEADER = ("time_utc", "at", "gate", "lane", "zone", "direction", "ticket_id", "category", "ticket_type", "event_id")


def checkins_csv(conn: sqlite3.Connection, chunk: int = 20_000) -> Iterator[bytes]:
    """Every check-in and check-out, oldest first, as CSV bytes in chunks (time, place, who's category).

    SQLite formats each row (time, zone, direction, the u64 id): Python only writes them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CHECKIN_CSV_HEADER)
    valid = "json_valid(e.payload)"
    cur = _pg_checkins(conn) if engine.dialect(conn) == engine.POSTGRES else conn.execute(
        "SELECT strftime('%Y-%m-%d %H:%M:%S', e.at, 'unixepoch'), printf('%.3f', e.at), e.gate_id, e.lane, "
        f"coalesce(CASE WHEN {valid} THEN json_extract(e.payload, '$.zone') END, ''), "
        f"coalesce(CASE WHEN {valid} THEN json_extract(e.payload, '$.direction') END, ''), "
        "e.ticket_id, "
        "coalesce(t.category, ''), coalesce(t.ticket_type, ''), e.event_id "
        "FROM events e LEFT JOIN tickets t ON t.ticket_id = e.ticket_id WHERE e.kind = 'passage' ORDER BY e.at"
    )
    while rows := cur.fetchmany(chunk):
        if any(r[6] is not None and r[6] < 0 for r in rows):  # ids of 2^63 and above are stored negative
            rows = [r if r[6] is None or r[6] >= 0 else (*r[:6], u64_from_sqlite(r[6]), *r[7:]) for r in rows]
        writer.writerows(rows)
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()


_PG_CHECKINS = (
    "SELECT to_char(to_timestamp(e.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), round(e.at::numeric, 3)::text, "
    "e.gate_id, e.lane, coalesce(json_extract(e.payload, '$.zone'), ''), coalesce(json_extract(e.payload, '$.direction'), ''), "
    "e.ticket_id, coalesce(t.category, ''), coalesce(t.ticket_type, ''), e.event_id "
    "FROM events e LEFT JOIN tickets t ON t.ticket_id = e.ticket_id WHERE e.kind = 'passage' ORDER BY e.at"
)


def _pg_checkins(conn):
    """The check-ins through a server-side cursor (its own transaction, ended when the connection
    closes): a million rows arrive chunk by chunk, as they do from SQLite."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    cur = conn.raw.cursor(name="checkins_csv")
    cur.execute(_PG_CHECKINS)
    return cur


# ------------------------------------------------------------------ the desk's reads

SEARCH_LIMIT = 50


def search(conn: sqlite3.Connection, query: str, limit: int = SEARCH_LIMIT) -> list[dict]:
    """Tickets by number (exact), last four phone digits, or the start of a name or company
    (any case). Each lookup is an index seek: instant at a million tickets."""
    query = query.strip()[:120]
    if not query:
        return []
    rows: dict[int, tuple] = {}
    cols = "ticket_id, name, company, category, ticket_type, state, badge_serial"

    def take(sql: str, args: tuple) -> None:
        for row in conn.execute(f"SELECT {cols} FROM tickets WHERE {sql} LIMIT ?", (*args, limit)):
            rows.setdefault(row[0], row)

    postgres = engine.dialect(conn) == engine.POSTGRES
    if query.isdigit():
        if len(query) == 4:
            take("right(phone, 4) = ?" if postgres else "substr(phone, -4) = ?", (query,))
        number = int(query)
        if number < 1 << 64:
            take("ticket_id = ?", (u64_to_sqlite(number),))
    pattern = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if postgres:  # LIKE is case-sensitive there: the lower-cased prefix, on the lower(...) indexes
        pattern = pattern.lower()
        take("lower(name) LIKE ? ESCAPE '\\'", (pattern,))
        take("lower(company) LIKE ? ESCAPE '\\'", (pattern,))
        return _found(rows, limit)
    take("name LIKE ? ESCAPE '\\'", (pattern,))
    take("company LIKE ? ESCAPE '\\'", (pattern,))
    return _found(rows, limit)


def _found(rows: dict[int, tuple], limit: int) -> list[dict]:
    return [
        {"ticket_id": str(u64_from_sqlite(tid)), "name": name, "company": company, "category": category,
         "ticket_type": ticket_type, "revoked": bool(state), "badge_serial": serial}
        for tid, name, company, category, ticket_type, state, serial in list(rows.values())[:limit]
    ]


def movements(conn: sqlite3.Connection, ticket_id: int, limit: int = 500) -> list[dict]:
    """A ticket's check-ins, check-outs and redemptions, newest first, with time, gate and lane."""
    out = []
    for at, gate_id, lane, kind, payload, event_id in conn.execute(
        "SELECT at, gate_id, lane, kind, payload, event_id FROM events WHERE ticket_id = ? "
        "AND kind IN ('passage', 'redemption') ORDER BY at DESC LIMIT ?", (u64_to_sqlite(ticket_id), limit)
    ):
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        what = "redeemed " + str(body.get("benefit", "")) if kind == "redemption" else (
            "check-in" if body.get("direction") == "in" else "check-out")
        out.append({"at": at, "gate": gate_id, "lane": lane, "what": what, "zone": body.get("zone", ""), "event_id": event_id})
    return out
