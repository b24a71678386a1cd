"""Checkpoints of a SQLite database in WAL mode, run by a thread of their own.

In WAL mode a commit appends the pages it changed to the log (``-wal``) and
fsyncs it; a checkpoint copies logged pages into the database file and fsyncs
that. Left to SQLite, the connection that commits runs a checkpoint inside the
commit whenever the log has passed ``wal_autocheckpoint`` pages (1,000): every
few megabytes one commit also copies them all and waits for a second fsync, and
whoever waits on that commit waits with it (a person at a turnstile on the
gate's journal, a gate's acknowledgement and every gate's delta on the
registry).

`WalCheckpointer` runs PASSIVE checkpoints on a connection of its own, every
`every_s`. A passive checkpoint takes no lock a writer or a reader needs: it
copies what is logged and not read by an older snapshot, while commits go on.
Its work is SQLite's, in C, with the GIL let go: it runs beside the Python
threads, on another core where there is one.

What the committing connection still does (the owner sets its
``wal_autocheckpoint``): the log goes back to its start only when a write
begins after a checkpoint that copied all of it. Where commits come seconds
apart (a gate's lanes) a checkpoint nearly always does, and the journal's
connection never checkpoints (0). Where they come back to back (a registry
storing a backlog) a checkpoint beside them rarely catches the last frame, and
with 0 the log would grow as long as the stream lasts; there the connection
keeps a bound, checkpoints itself at it, finds most pages copied already, and
the log starts over.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

__all__ = ["WalCheckpointer"]


class WalCheckpointer:
    """A thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on `conn` every `every_s` until `stop`.

    `conn` is the checkpointer's own connection to the database (opened by the owner, who
    knows how to name its errors); `stop` closes it. An error checkpointing goes to
    `on_error` and the next period tries again: a checkpoint that fails loses nothing (the
    pages stay in the log, which the committing connection's own bound still checkpoints).
    """

    def __init__(self, conn: sqlite3.Connection, every_s: float, *, name: str,
                 on_error: Callable[[sqlite3.Error], None]) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s!r}")
        self._conn = conn
        self._every_s = float(every_s)
        self._on_error = on_error
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._every_s):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                self._on_error(exc)

    def stop(self) -> None:
        """End the thread (after a checkpoint under way) and close its connection. Safe twice."""
        self._stopping.set()
        self._thread.join()
        self._conn.close()
