"""The registry's two database engines behind one connection: SQLite (a path) or PostgreSQL (a URL).

`connect(db)` is the one place that tells them apart: a ``postgresql://``
(or ``postgres://``) URL opens PostgreSQL through psycopg 3, anything else
is the path of an SQLite file. What the rest of the registry gets back is a
connection with SQLite's calling convention: ``execute(sql, params)`` giving
a cursor (fetchone, fetchall, fetchmany, iteration, rowcount),
``executemany`` and ``close``. For SQLite it is the `sqlite3.Connection`
itself (the embedded default pays for no wrapper); for PostgreSQL it is
`PgConnection`, which rewrites each statement once (cached by its text):

- ``?`` placeholders become ``%s`` (and a literal ``%`` becomes ``%%``);
- ``INSERT OR IGNORE INTO ...`` becomes ``INSERT INTO ... ON CONFLICT DO NOTHING``;
- the two-argument scalar ``max(a, b)`` becomes ``GREATEST(a, b)``;
- ``BEGIN IMMEDIATE`` becomes ``BEGIN`` followed by a transaction-scoped
  advisory lock (`WRITE_LOCK`): like SQLite's write lock it lets one writer
  at a time in, across every registry instance and command sharing the
  database, so the read-modify-write of usage counts and of the version is
  safe under READ COMMITTED. (Exactly-once storage does not depend on it:
  the events' primary key and ON CONFLICT do that.) Both go in one round
  trip (no parameters: the simple query protocol takes several statements),
  with the owner's `begin_read` if it set one, whose value it finds in
  `begun_with`: what the transaction needs first, read under the lock
  without a round trip of its own. Round trips are what a group commit's
  time is made of on a busy machine.

Why this seam and not an ORM or two copies of the SQL: nearly all of the
registry's SQL is already plain SQL both engines agree on (upserts with
``ON CONFLICT ... DO UPDATE SET x = excluded.x``, ``RETURNING``, partial
indexes), so the modules keep one copy of it; the few things that differ are
mechanical and rewritten here. What is truly per engine lives beside its
owner, chosen by `dialect(conn)`: the schema DDL (BIGINT, DOUBLE
PRECISION, BYTEA, identity columns, no WITHOUT ROWID), triggers
(PL/pgSQL functions on PostgreSQL), PRAGMAs and ``sqlite_master`` (SQLite
only), date formatting. SQLite's ``json_valid`` and ``json_extract(doc,
'$.key')``, which a few queries use, are created as SQL functions in the
PostgreSQL schema (`PG_FUNCTIONS`), so those queries need no second copy.

psycopg is used synchronously, in autocommit mode with explicit BEGIN and
COMMIT exactly as the SQLite connection is (isolation_level=None): the
registry already runs all store work off its event loop in worker threads,
one step at a time (server.py ``_exclusive``), so the sync driver on that
same path needs no second concurrency model; the async API would gain
nothing while the SQL of a step runs on one connection in sequence.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from gated.errors import RegistryError

SQLITE = "sqlite"
POSTGRES = "postgres"
URL_SCHEMES = ("postgresql://", "postgres://")
#: pg_advisory_xact_lock key of the registry's writers: "gatR" (the SQLite file's application id)
WRITE_LOCK = 0x67617452

#: SQLite's JSON functions the shared queries use, as PostgreSQL functions (text in, text out).
PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION json_valid(doc text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM doc::jsonb;
    RETURN doc IS NOT NULL;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN doc::jsonb #>> string_to_array(substr(path, 3), '.');
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""


def is_url(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(URL_SCHEMES)


def describe(db: str | Path) -> str:
    """The database as messages name it: a path, or a URL without its password."""
    if not is_url(db):
        return str(db)
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)


def dialect(conn: Any) -> str:
    return POSTGRES if isinstance(conn, PgConnection) else SQLITE


def connect_postgres(url: str) -> PgConnection:
    try:
        import psycopg
    except ImportError:
        raise RegistryError("a PostgreSQL registry needs psycopg: pip install 'gated[postgres]'") from None
    from psycopg.types.array import ListBinaryDumper

    try:
        raw = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise RegistryError(f"{describe(url)}: cannot connect: {_first_line(exc)}") from None
    # A list parameter (an array: a group commit's column) goes in binary: the text form quotes
    # and escapes each element with a regular expression, 3x the time of the whole statement.
    raw.adapters.register_dumper(list, ListBinaryDumper)
    return PgConnection(raw)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_MAX2 = re.compile(r"\bmax\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)", re.IGNORECASE)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)


def to_postgres(sql: str) -> str:
    """One statement in SQLite's spelling, in PostgreSQL's (see the module docstring)."""
    ignore = bool(_OR_IGNORE.match(sql))
    if ignore:
        sql = _OR_IGNORE.sub("INSERT INTO", sql, count=1)
    sql = _MAX2.sub(r"GREATEST(\1, \2)", sql)
    out = []
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    sql = "".join(out)
    if ignore:
        sql = sql.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return sql


class PgConnection:
    """A psycopg connection spoken to like an `sqlite3.Connection` in autocommit mode."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self._sql: dict[str, str] = {}
        #: A query without parameters run with every ``BEGIN IMMEDIATE`` (module docstring), its
        #: first row's first value kept in `begun_with` (None: none).
        self.begin_read: str | None = None
        self.begun_with: Any = None

    def _translate(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            if len(self._sql) > 4096:
                self._sql.clear()
            out = self._sql[sql] = to_postgres(sql)
        return out

    def execute(self, sql: str, params: Any = ()):
        if sql == "BEGIN IMMEDIATE":
            begin = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK:d})"
            cur = self.raw.execute(begin if self.begin_read is None else f"{begin}; {self.begin_read}")
            self.begun_with = None
            if self.begin_read is not None:
                while cur.nextset():  # to the last statement's result
                    pass
                row = cur.fetchone()
                self.begun_with = None if row is None else row[0]
            return cur
        return self.raw.execute(self._translate(sql), tuple(params))

    def executemany(self, sql: str, rows):
        """Like sqlite3's: the cursor's rowcount is the number of rows changed in all."""
        cur = self.raw.cursor()
        cur.executemany(self._translate(sql), list(rows))
        return cur

    def script(self, ddl: str) -> None:
        """Several statements at once (no parameters): the schema."""
        self.raw.execute(ddl)

    def close(self) -> None:
        self.raw.close()

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE


def errors() -> tuple[type[BaseException], ...]:
    """The database errors of both engines (what a store turns into `RegistryError`)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)
