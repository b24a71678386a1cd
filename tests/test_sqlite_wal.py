"""WAL checkpoints in a thread of their own (gated/sqlite_wal.py), on real SQLite files: the
journal's and the registry's."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from gated.registry.store import RegistryStore
from gated.sqlite_wal import WalCheckpointer

ROW = b"x" * 3000  # about a page a row


def _wal_db(path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer never checkpoints: only the thread does
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
    return conn


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not within the timeout")
        time.sleep(0.01)


def test_the_thread_copies_the_log_into_the_file_while_the_writer_never_checkpoints(tmp_path):
    db = tmp_path / "w.db"
    writer = _wal_db(db)
    writer.executemany("INSERT INTO t(blob) VALUES (?)", [(ROW,)] * 200)
    before = os.path.getsize(db)
    assert before < 100 * 3000  # nothing copied yet: the rows are in the -wal file
    names = {t.name for t in threading.enumerate()}
    checkpoints = WalCheckpointer(sqlite3.connect(str(db), check_same_thread=False), 0.01,
                                  name="test-checkpoint", on_error=pytest.fail)
    try:
        assert "test-checkpoint" in {t.name for t in threading.enumerate()} - names
        _until(lambda: os.path.getsize(db) > 200 * 3000)  # the pages are in the database file now
        # Everything logged is in the file: a checkpoint finds nothing left to copy.
        busy, logged, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, logged) == (0, copied)
    finally:
        checkpoints.stop()
    assert "test-checkpoint" not in {t.name for t in threading.enumerate()}
    checkpoints.stop()  # twice: nothing happens
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 200
    writer.close()


def test_a_failing_checkpoint_is_reported_and_tried_again(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "gone.db"), check_same_thread=False)
    conn.close()  # every checkpoint on it raises sqlite3.ProgrammingError
    errors: list[sqlite3.Error] = []
    checkpoints = WalCheckpointer(conn, 0.01, name="test-checkpoint-fails", on_error=errors.append)
    try:
        _until(lambda: len(errors) >= 3)  # the thread goes on after each
    finally:
        checkpoints.stop()
    assert all(isinstance(e, sqlite3.Error) for e in errors)


def test_every_s_must_be_positive(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "x.db"))
    with pytest.raises(ValueError, match="every_s"):
        WalCheckpointer(conn, 0, name="never", on_error=pytest.fail)
    conn.close()


def test_the_registry_log_stays_bounded_under_a_steady_stream_of_commits(tmp_path):
    """A checkpoint beside a stream of commits rarely copies the last frame, and the log goes
    back to its start only after one that did: the committing connection's own bound does it.
    Commits of about 10 pages each, 600 of them, never a pause: the -wal file stays within a
    few times the bound (64 pages; a commit that finds the thread checkpointing skips its own,
    so the bound is soft) instead of growing with the 6,000 pages written (30 MB without it)."""
    db = tmp_path / "registry.db"
    store = RegistryStore(db)
    store.checkpoint_in_background(every_s=0.001, bound_pages=64)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 64
        store.conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, blob BLOB)")
        largest = 0
        for _ in range(600):
            with store.transaction():
                store.conn.executemany("INSERT INTO filler(blob) VALUES (?)", [(ROW,)] * 10)
            largest = max(largest, os.path.getsize(f"{db}-wal"))
        page = store.conn.execute("PRAGMA page_size").fetchone()[0]
        assert largest < 1000 * (page + 24)  # 6,000 pages went through it
        assert store.conn.execute("SELECT count(*) FROM filler").fetchone()[0] == 6000
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("registry-checkpoint:")]


def test_a_serving_registry_checkpoints_in_the_background_and_stops_with_it(tmp_path):
    import asyncio

    from gated.registry.server import RegistryServer
    from gated.registry.store import WAL_BOUND_PAGES

    async def serve() -> None:
        server = RegistryServer(tmp_path / "registry.db", "127.0.0.1:0")
        await server.start()
        try:
            running = [t.name for t in threading.enumerate() if t.name.startswith("registry-checkpoint:")]
            assert running == ["registry-checkpoint:registry.db"]  # one: the service's store
            wal_bound = server.service.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            assert wal_bound == WAL_BOUND_PAGES
            assert server.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # others as SQLite has it
        finally:
            await server.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("registry-checkpoint:")]

    asyncio.run(serve())
