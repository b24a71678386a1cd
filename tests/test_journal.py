"""The journal on a real SQLite file: a day of records, restarts, power cuts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gated.bench.journal import measure_commit
from gated.errors import JournalError
from gated.journal import EPOCH_SEQ_LEAP, SCHEMA_VERSION, Journal, Record, u64_to_sqlite

pytestmark = pytest.mark.timeout(120)

DAY = 86400.0
T0 = 1_760_000_000.0  # a morning at the venue
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def seqs_in(path: Path, gate_id: str = "gate-7") -> list[int]:
    with Journal(path, gate_id, checkpoint_every_s=None) as journal:
        return [r.seq for r in journal.tail(10**9)]


# --------------------------------------------------------------- the basics


def test_a_decision_reads_back_exactly_as_written(path):
    with Journal(path, "gate-7") as journal:
        written = journal.append(
            "decision", at=T0, lane="north-1", ticket_id=4711, reason="ok",
            payload={"category": "media", "zone": "hall-a"},
        )
        journal.append("passage", at=T0 + 1.5, lane="north-1", ticket_id=4711)

        assert written == Record(
            seq=1, gate_id="gate-7", at=T0, kind="decision", lane="north-1",
            ticket_id=4711, reason="ok", payload={"category": "media", "zone": "hall-a"},
            acked=False,
        )
        assert written.event_id == "gate-7:1"
        assert journal.tail(5)[0] == written
        passage = journal.unacked()[1]
        assert (passage.kind, passage.reason, passage.payload) == ("passage", None, {})
        assert journal.backlog() == 2


def test_the_record_is_a_copy_the_caller_cannot_change_afterwards(path):
    payload = {"benefits": ["lunch_day1"]}
    with Journal(path, "gate-7") as journal:
        record = journal.append("redemption", at=T0, payload=payload)
        payload["benefits"].append("dinner")
        assert record.payload == {"benefits": ["lunch_day1"]}
        assert journal.tail(1)[0].payload == {"benefits": ["lunch_day1"]}


def test_bad_arguments_are_refused_before_anything_is_written(path):
    with Journal(path, "gate-7") as journal:
        for bad in (
            dict(kind="", at=T0),
            dict(kind="decision", at=float("nan")),
            dict(kind="decision", at=T0, ticket_id=-1),
            dict(kind="decision", at=T0, ticket_id=2**64),
            dict(kind="decision", at=T0, ticket_id=True),
            dict(kind="decision", at=T0, payload={"when": object()}),
            dict(kind="decision", at=T0, payload=["not", "a", "dict"]),
        ):
            kind = bad.pop("kind")
            with pytest.raises(ValueError):
                journal.append(kind, **bad)
        assert journal.tail(10) == []
        assert journal.append("decision", at=T0).seq == 1


def test_seq_keeps_increasing_across_restarts_even_after_everything_is_purged(path):
    with Journal(path, "gate-7", retention_s=DAY) as journal:
        assert [journal.append("decision", at=T0).seq for _ in range(3)] == [1, 2, 3]
        journal.mark_acked(3)
        assert journal.purge(now=T0 + 2 * DAY) == 3
        assert journal.tail(10) == []

    with Journal(path, "gate-7") as journal:  # a new epoch, leaping past what a lost WAL tail could have held
        record = journal.append("decision", at=T0 + 3 * DAY)
        assert record.seq > 3 + EPOCH_SEQ_LEAP and record.event_id == f"gate-7:{record.seq}"
        assert journal.stats()["last_seq"] == record.seq


def test_a_journal_refuses_to_change_gates(path):
    Journal(path, "gate-7").close()
    with pytest.raises(JournalError, match="belongs to gate 'gate-7'"):
        Journal(path, "gate-8")


@pytest.mark.parametrize("ticket_id", [0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1])
def test_u64_ticket_ids_round_trip_exactly(path, ticket_id):
    with Journal(path, "gate-7") as journal:
        assert journal.append("decision", at=T0, ticket_id=ticket_id).ticket_id == ticket_id
    with Journal(path, "gate-7") as journal:
        assert journal.unacked()[0].ticket_id == ticket_id
        out = io.StringIO()
        journal.export(out, "jsonl")
        assert json.loads(out.getvalue())["ticket_id"] == ticket_id


# ----------------------------------------------------------- acks and purge


def test_only_acknowledged_records_past_retention_are_purged(path):
    with Journal(path, "gate-7", retention_s=DAY) as journal:
        # Day 1: six records; the registry acknowledges the first four.
        for i in range(6):
            journal.append("decision", at=T0 + i, ticket_id=i)
        assert journal.mark_acked(4) == 4
        assert journal.mark_acked(4) == 0  # idempotent
        # Day 2 morning: two more, not yet acknowledged either.
        journal.append("decision", at=T0 + DAY, ticket_id=6)
        journal.append("decision", at=T0 + DAY + 1, ticket_id=7)

        assert [r.seq for r in journal.unacked()] == [5, 6, 7, 8]
        assert [r.seq for r in journal.unacked(after_seq=6, limit=1)] == [7]
        assert journal.backlog() == 4

        # Within retention nothing goes.
        assert journal.purge(now=T0 + DAY / 2) == 0
        # Three days later the gate was offline all along: only acked ones go,
        # the day-1 records 5 and 6 stay however old they are.
        assert journal.purge(now=T0 + 3 * DAY) == 4
        assert [r.seq for r in journal.tail(100)] == [5, 6, 7, 8]
        assert all(not r.acked for r in journal.tail(100))

        stats = journal.stats()
        assert stats["records"] == 4
        assert stats["unacked"] == 4
        assert stats["oldest_unacked_at"] == T0 + 4
        assert stats["last_seq"] == 8
        assert stats["file_size"] > 0 and stats["wal_size"] > 0

        journal.mark_acked(8)
        assert journal.backlog() == 0
        assert journal.stats()["oldest_unacked_at"] is None
        # Half a day past the day-2 records: only the day-1 ones are due.
        assert journal.purge(now=T0 + 1.5 * DAY) == 2
        assert [r.seq for r in journal.tail(100)] == [7, 8]


def test_an_acknowledgement_beyond_the_last_record_does_not_cover_later_ones(path):
    """The watermark stops at the last record written: a registry's (or a bug's) ack of seqs
    not yet written must not swallow the records that get them."""
    with Journal(path, "gate-7") as journal:
        for ticket in (4_200_000_001, 4_200_000_002, 2**63 + 5):
            journal.append("decision", at=T0, ticket_id=ticket)
        assert journal.mark_acked(10**6) == 3 and journal.backlog() == 0
        assert journal.mark_acked(2) == 0 and journal.acked_through() == 3  # never back
        fourth = journal.append("passage", at=T0 + 1, ticket_id=2**63 + 5)
        assert [r.seq for r in journal.unacked()] == [fourth.seq] and journal.acked_through() == fourth.seq - 1
    with Journal(path, "gate-7") as journal:  # and so across a reopen, the new epoch's leap included
        assert journal.backlog() == 1 and journal.acked_through() == fourth.seq - 1


def test_purge_goes_by_each_records_own_time(path):
    """A record stamped by a clock set later (a day behind, then corrected) goes when its own
    time is due, whatever its neighbours' times; an unacknowledged one never."""
    with Journal(path, "gate-7", retention_s=DAY) as journal:
        stamps = [T0 + 5 * DAY, T0 + 5 * DAY + 1, T0, T0 + 5 * DAY + 2, T0 + 1]  # 3rd and 5th: the clock a day behind
        for at in stamps:
            journal.append("decision", at=at, ticket_id=1)
        journal.mark_acked(4)
        assert journal.purge(now=T0 + 2 * DAY) == 1  # seq 3 only: seq 5 is as old but not acknowledged
        assert [r.seq for r in journal.tail(10)] == [1, 2, 4, 5]
        journal.mark_acked(5)
        assert journal.purge(now=T0 + 2 * DAY) == 1 and [r.seq for r in journal.tail(10)] == [1, 2, 4]
        assert journal.purge(now=T0 + 7 * DAY) == 3 and journal.tail(10) == []


def test_a_large_purge_runs_in_chunks_and_removes_everything_due(path):
    with Journal(path, "gate-7", retention_s=0) as journal:
        threads = [threading.Thread(target=lambda: [journal.append("passage", at=T0)
                                                    for _ in range(250)]) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        journal.mark_acked(2500)
        before = journal.transactions
        assert journal.purge(now=T0 + 1) == 2500
        assert journal.transactions - before >= 3  # 1000 + 1000 + 500 (+ the empty check)
        assert journal.stats()["records"] == 0


# ------------------------------------------------------------ group commit


def test_lanes_appending_at_once_share_commits(path):
    lanes, per_lane = 16, 40
    start = threading.Barrier(lanes)
    got: dict[str, list[Record]] = {}

    with Journal(path, "gate-7") as journal:
        def lane(name: str) -> None:
            start.wait()
            got[name] = [journal.append("decision", at=T0, lane=name, ticket_id=i)
                         for i in range(per_lane)]

        threads = [threading.Thread(target=lane, args=(f"L{n}",)) for n in range(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        total = lanes * per_lane
        seqs = sorted(r.seq for records in got.values() for r in records)
        assert seqs == list(range(1, total + 1))
        # Each lane saw its own records in order, with strictly rising seqs.
        for name, records in got.items():
            assert [r.ticket_id for r in records] == list(range(per_lane))
            assert all(a.seq < b.seq for a, b in zip(records, records[1:]))
            assert all(r.lane == name for r in records)
        assert len(journal.tail(total + 10)) == total
        # Group commit: fewer transactions (fsyncs) than records.
        assert journal.transactions < total
        assert journal.stats()["transactions"] == journal.transactions


def test_asyncio_lanes_append_without_blocking_the_loop(path):
    async def day_at_the_door(journal: Journal) -> tuple[list[Record], int]:
        ticks = 0
        stop = asyncio.Event()

        async def heartbeat():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        records = await asyncio.gather(*(
            journal.append_async("decision", at=T0 + i, lane=f"L{i % 4}", ticket_id=i)
            for i in range(200)
        ))
        stop.set()
        await beat
        return records, ticks

    with Journal(path, "gate-7") as journal:
        records, ticks = asyncio.run(day_at_the_door(journal))
        assert sorted(r.seq for r in records) == list(range(1, 201))
        assert [r.ticket_id for r in records] == list(range(200))
        assert journal.transactions < 200  # queued together, committed together
        # The loop kept turning while the writer committed (a loop blocked in
        # sqlite would tick once or twice between whole appends).
        assert ticks > 10
        assert [r.seq for r in journal.tail(1000)] == list(range(1, 201))


def test_append_async_reports_errors_to_the_awaiting_task(path):
    journal = Journal(path, "gate-7")
    journal.close()

    async def late():
        await journal.append_async("decision", at=T0)

    with pytest.raises(JournalError, match="closed"):
        asyncio.run(late())


# ------------------------------------------------------------------- export


def test_export_jsonl_and_csv_parse_back_to_the_same_records(path):
    with Journal(path, "gate-7") as journal:
        journal.append("decision", at=T0, lane="n1", ticket_id=2**64 - 1, reason="ok",
                       payload={"category": "vip", "note": 'comma, "quote"\nnewline'})
        journal.append("not_passed", at=T0 + 8, lane="n1", ticket_id=2**64 - 1)
        journal.append("emergency", at=T0 + 100.125, payload={"input": "fire"})
        journal.mark_acked(1)
        records = journal.tail(10)

        out = io.StringIO()
        assert journal.export(out, "jsonl") == 3
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert lines == [r.as_dict() for r in records]
        assert lines[0]["event_id"] == "gate-7:1" and lines[0]["acked"] is True

        out = io.StringIO()
        assert journal.export(out, "csv") == 3
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        parsed = [
            Record(
                seq=int(row["seq"]), gate_id=row["gate_id"], at=float(row["at"]),
                kind=row["kind"], lane=row["lane"] or None,
                ticket_id=int(row["ticket_id"]) if row["ticket_id"] else None,
                reason=row["reason"] or None, payload=json.loads(row["payload"]),
                acked=row["acked"] == "1",
            )
            for row in rows
        ]
        assert parsed == records
        assert [row["event_id"] for row in rows] == ["gate-7:1", "gate-7:2", "gate-7:3"]

        out = io.StringIO()
        assert journal.export(out, "jsonl", since=T0 + 8) == 2
        with pytest.raises(ValueError):
            journal.export(io.StringIO(), "xml")


# ------------------------------------------------------------------- errors


@pytest.fixture
def unwritable_dir(tmp_path: Path):
    """A directory this process cannot create files in, even as root."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    immutable = False

    def can_create() -> bool:
        try:
            (d / "probe").touch()
        except OSError:
            return False
        (d / "probe").unlink()
        return True

    if can_create() and shutil.which("chattr"):  # root ignores modes; not the immutable flag
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    if can_create():
        d.chmod(0o755)
        pytest.skip("cannot make a directory unwritable for this user")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


def assert_one_line_naming(exc: JournalError, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message
    assert str(path) in message


def test_an_unwritable_directory_is_a_clear_error(unwritable_dir):
    target = unwritable_dir / "journal.db"
    with pytest.raises(JournalError) as info:
        Journal(target, "gate-7")
    assert_one_line_naming(info.value, target)
    assert "not writable" in str(info.value) or "cannot be opened" in str(info.value)


def test_a_missing_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "no-such-dir" / "journal.db"
    with pytest.raises(JournalError, match="does not exist") as info:
        Journal(target, "gate-7")
    assert_one_line_naming(info.value, target)


def test_files_that_are_not_journals_are_refused_and_left_alone(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("gate 7 keys are in the drawer\n" * 50)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE visitors (name TEXT)")
    conn.close()

    for target in (text, other):
        before = target.read_bytes()
        with pytest.raises(JournalError, match="not a journal") as info:
            Journal(target, "gate-7")
        assert_one_line_naming(info.value, target)
        assert target.read_bytes() == before

    with pytest.raises(JournalError, match="not a regular file"):
        Journal(tmp_path, "gate-7")


def test_a_journal_from_a_newer_gated_is_refused(path):
    Journal(path, "gate-7").close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path, "gate-7")


def test_a_full_disk_fails_the_append_and_the_journal_recovers(path):
    with Journal(path, "gate-7") as journal:
        kept = journal.append("decision", at=T0).seq
        # Cap the database size on the writer's connection: SQLite then fails
        # exactly as it does on a full disk (SQLITE_FULL).
        pages = journal._call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        journal._call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
        with pytest.raises(JournalError, match="disk full") as info:
            for i in range(100):
                journal.append("decision", at=T0, payload={"pad": "x" * 3000, "i": i})
        assert_one_line_naming(info.value, path)
        written = [r.seq for r in journal.tail(1000)]
        assert written[0] == kept and written == sorted(written)

        journal._call(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        after = journal.append("decision", at=T0 + 1)
        assert after.seq > written[-1]  # failed seqs are skipped, never reused
    assert seqs_in(path)[-1] == after.seq


@pytest.mark.parametrize("damage_at, length", [
    (2 * 4096, 2 * 4096),  # pages 3-4: schema and meta, found while reading them
    (15 * 4096 + 100, 1000),  # inside a records page: only quick_check notices
])
def test_a_journal_corrupt_beyond_wal_recovery_is_refused(path, damage_at, length):
    with Journal(path, "gate-7") as journal:
        for i in range(300):
            journal.append("decision", at=T0 + i, payload={"pad": "x" * 200})
    # Closed cleanly: everything is in the main file now. Smash some of it.
    assert path.stat().st_size > damage_at + length
    with open(path, "r+b") as f:
        f.seek(damage_at)
        f.write(random.Random(7).randbytes(length))
    with pytest.raises(JournalError, match="corrupt") as info:
        Journal(path, "gate-7")
    assert_one_line_naming(info.value, path)


def test_close_commits_what_is_queued_and_is_safe_twice(path):
    journal = Journal(path, "gate-7")
    returned: list[int] = []
    refused: list[JournalError] = []

    def lane() -> None:
        for _ in range(200):
            try:
                returned.append(journal.append("decision", at=T0).seq)
            except JournalError as exc:
                refused.append(exc)
                return

    threads = [threading.Thread(target=lane) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    journal.close()
    journal.close()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert all("closed" in str(e) for e in refused)
    assert set(returned) <= set(seqs_in(path))
    with pytest.raises(JournalError, match="closed"):
        journal.append("decision", at=T0)


# --------------------------------------------------------------- power cuts

WRITER = r"""
import sys, threading, time
from gated.journal import Journal

path, checkpoint = sys.argv[1], sys.argv[2]
journal = Journal(path, "gate-7",
                  checkpoint_every_s=None if checkpoint == "none" else float(checkpoint))
out = threading.Lock()

def lane(name):
    i = 0
    while True:
        record = journal.append("decision", at=time.time(), lane=name, ticket_id=i,
                                payload={"pad": "x" * 150})
        with out:
            print(record.seq, flush=True)
        i += 1

for n in range(4):
    threading.Thread(target=lane, args=(f"L{n}",), daemon=True).start()
threading.Event().wait()
"""


class Writer:
    """A gate process appending from four lanes until it is killed."""

    def __init__(self, path: Path, checkpoint: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), checkpoint],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
        )
        self.printed: list[int] = []
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.printed) < count:
            if time.monotonic() > deadline or not self._sel.select(deadline - time.monotonic()):
                self.kill()
                pytest.fail(f"writer printed {len(self.printed)} seqs: {self.proc.stderr.read()}")
            line = self.proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died: {self.proc.stderr.read()}")
            self.printed.append(int(line))

    def kill(self) -> None:
        """kill -9, then collect every seq it printed before dying."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.printed.extend(int(line) for line in self.proc.stdout.read().split())
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_kill_9_mid_stream_loses_no_record_that_was_acknowledged(path):
    writer = Writer(path, checkpoint="0.05")  # checkpoints running too
    writer.wait_for(400)
    writer.kill()
    assert Path(str(path) + "-wal").exists()  # no clean close happened

    on_disk = seqs_in(path)
    assert set(writer.printed) <= set(on_disk)
    assert on_disk == list(range(1, len(on_disk) + 1))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    conn.close()
    with Journal(path, "gate-7") as journal:
        assert journal.append("decision", at=T0).seq > on_disk[-1] + EPOCH_SEQ_LEAP


def test_a_wal_cut_at_any_offset_opens_to_a_prefix_of_the_records(tmp_path):
    live = tmp_path / "live.db"
    writer = Writer(live, checkpoint="none")  # the main file stays as the copy expects
    writer.wait_for(150)
    durable_before_copy = list(writer.printed)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    shutil.copyfile(live, snapshot / "journal.db")
    shutil.copyfile(Path(str(live) + "-wal"), snapshot / "journal.db-wal")
    writer.kill()

    wal_bytes = (snapshot / "journal.db-wal").read_bytes()
    rng = random.Random(20240601)
    offsets = sorted({0, 32, 100, len(wal_bytes) // 3, len(wal_bytes) - 1, len(wal_bytes),
                      *(rng.randrange(len(wal_bytes)) for _ in range(6))})
    held = []
    for n, offset in enumerate(offsets):
        cut = tmp_path / f"cut-{n}"
        cut.mkdir()
        shutil.copyfile(snapshot / "journal.db", cut / "journal.db")
        (cut / "journal.db-wal").write_bytes(wal_bytes[:offset])
        seqs = seqs_in(cut / "journal.db")
        assert seqs == list(range(1, len(seqs) + 1)), f"cut at {offset}: not a prefix"
        held.append(len(seqs))
    assert held == sorted(held)  # a longer WAL never holds fewer records
    assert set(durable_before_copy) <= set(range(1, held[-1] + 1))


# -------------------------------------------------------------- measurement


def test_measure_commit_reports_both_latencies_and_cleans_up(tmp_path):
    result = measure_commit(tmp_path / "bench.db", n=50)
    for key in ("append_median_s", "append_p99_s", "fsync_median_s", "fsync_p99_s"):
        assert 0 < result[key] < 5, key
    assert result["append_median_s"] <= result["append_p99_s"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(JournalError, match="already exists"):
        (tmp_path / "taken.db").touch()
        measure_commit(tmp_path / "taken.db", n=1)


def test_every_opening_that_writes_starts_a_new_random_epoch_and_old_records_keep_theirs(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path, "g", checkpoint_every_s=None) as j:
        epoch = j.epoch
        first = j.append("decision", at=1.0)
    assert 0 < epoch < 2**64 and first.seq == 1
    with Journal(path, "g", checkpoint_every_s=None) as j:  # a reader that never appends starts nothing
        assert j.epoch_span(1) == (epoch, 1, None)
    with Journal(path, "g", checkpoint_every_s=None) as j:  # a reboot
        second = j.append("decision", at=2.0)
        assert j.epoch not in (0, epoch)
        assert j.epoch_span(1) == (epoch, 1, second.seq)
        assert j.epoch_span(second.seq) == (j.epoch, second.seq, None)
        assert second.seq > 1 + EPOCH_SEQ_LEAP
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"j.db{suffix}").unlink(missing_ok=True)
    with Journal(path, "g", checkpoint_every_s=None) as j:  # the SD card was replaced
        assert j.epoch not in (0, epoch)
        assert j.append("decision", at=2.0).seq == 1


#: The schema gated wrote before acknowledgement was a watermark (schema 1: without the epochs
#: table and the purge index; 2: with them), as it shipped.
_OLD_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE records (seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, lane TEXT, "
    "ticket_id INTEGER, reason TEXT, payload TEXT NOT NULL, acked_at REAL)",
    "CREATE INDEX records_unacked ON records(seq) WHERE acked_at IS NULL",
]
_OLD_SCHEMA_2 = [
    "CREATE TABLE epochs (first_seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)",
    "CREATE INDEX records_acked_at ON records(at) WHERE acked_at IS NOT NULL",
]


def old_journal(path: Path, version: int, records: list[tuple[int, float, int | None, float | None]],
                epoch: int | None, epochs: list[tuple[int, int]] = ()) -> None:
    """A journal file as gated wrote it at schema `version` (1 or 2): `records` are (seq, at,
    ticket_id, acked_at); `epoch` the file's meta epoch (None: none, as before epochs)."""
    conn = sqlite3.connect(path)
    try:
        for statement in _OLD_SCHEMA + (_OLD_SCHEMA_2 if version >= 2 else []):
            conn.execute(statement)
        conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                         [("gate_id", "g"), ("last_seq", max((r[0] for r in records), default=0)), ("created_at", 1.0)]
                         + ([("epoch", u64_to_sqlite(epoch))] if epoch is not None else []))
        conn.executemany("INSERT INTO records(seq, at, kind, ticket_id, payload, acked_at) VALUES (?, ?, 'decision', ?, '{}', ?)",
                         [(seq, at, None if t is None else u64_to_sqlite(t), acked) for seq, at, t, acked in records])
        if epochs:
            conn.executemany("INSERT INTO epochs(first_seq, epoch) VALUES (?, ?)",
                             [(first, u64_to_sqlite(e)) for first, e in epochs])
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA application_id = 0x6761744A")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


def test_a_version_1_journal_keeps_its_records_under_its_one_epoch(tmp_path):
    path = tmp_path / "j.db"
    old_journal(path, 1, [(1, 1.0, 7, None), (2, 1.0, 8, None)], epoch=2**64 - 5)
    with Journal(path, "g", checkpoint_every_s=None) as j:
        assert j.epoch_span(2) == (2**64 - 5, 0, None)
        assert [(r.seq, r.ticket_id, r.acked) for r in j.unacked()] == [(1, 7, False), (2, 8, False)]
        third = j.append("decision", at=1.0)
        assert j.epoch_span(2) == (2**64 - 5, 0, third.seq) and j.epoch_span(third.seq)[0] == j.epoch
    path.unlink()
    old_journal(path, 1, [(1, 1.0, None, None)], epoch=None)  # older still: no epoch at all
    with Journal(path, "g", checkpoint_every_s=None) as j:
        assert j.epoch_span(1)[0] == 0


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_journals_acknowledgements_become_the_watermark(tmp_path, version):
    """Schema 1 and 2 marked each record; the acknowledged prefix is what the registry holds,
    the rest is sent, and purge, backlog and acks go on from there."""
    path = tmp_path / "j.db"
    ids = [4_200_000_000 + n for n in range(6)] + [random.Random(7).getrandbits(64) for _ in range(4)]  # 10-digit, 64-bit
    records = [(seq, T0 + seq, ids[seq - 1], T0 + 100 if seq <= 6 else None) for seq in range(1, 11)]
    old_journal(path, version, records, epoch=77, epochs=[(0, 77)] if version >= 2 else [])
    with Journal(path, "g", retention_s=DAY, checkpoint_every_s=None) as j:
        assert j.acked_through() == 6 and j.backlog() == 4
        assert [(r.seq, r.ticket_id) for r in j.unacked()] == [(s, ids[s - 1]) for s in range(7, 11)]
        assert [r.acked for r in j.tail(10)] == [True] * 6 + [False] * 4
        assert [r[0] for r in j.unacked_rows()] == [7, 8, 9, 10]
        assert j.purge(now=T0 + DAY + 4.5) == 4  # acknowledged and a day old: 1..4, never 7..
        assert j.purge(now=T0 + 3 * DAY) == 2
        assert j.mark_acked(9) == 3 and j.backlog() == 1 and j.acked_through() == 9
        later = j.append("decision", at=T0 + 3 * DAY, ticket_id=1)
        assert later.seq > EPOCH_SEQ_LEAP and [r.seq for r in j.unacked()] == [10, later.seq]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "records_unacked" not in indexes and "records_acked_at" not in indexes and "records_at" in indexes
    conn.close()


def test_an_old_journal_with_every_record_acknowledged_and_some_purged(tmp_path):
    path = tmp_path / "j.db"
    old_journal(path, 2, [(5, 1.0, 1, 2.0), (6, 1.0, 2, 2.0)], epoch=3, epochs=[(0, 3)])
    with sqlite3.connect(path) as conn:  # 1..4 were purged and the file went on to seq 9, since purged too
        conn.execute("UPDATE meta SET value = 9 WHERE key = 'last_seq'")
    conn.close()
    with Journal(path, "g", checkpoint_every_s=None) as j:
        assert j.backlog() == 0 and j.acked_through() == 9 and j.unacked() == []
