"""Conflicts at the registry: gates apart admit what together they would not, and the registry shows it.

A day of a show with the network split: single-entry tickets admitted at two
gates, a dinner voucher redeemed at two handhelds, a ticket revoked at the
desk while a gate could not hear it. The registry counts all of it, keeps
both records of each conflict, logs it and reports it; the report tells the
gates' lanes apart. And the registry's file, which holds the raw event key,
is readable by its owner only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from gated.registry.report import checkin_report, format_report
from gated.registry.store import CONFLICT_KINDS, SCHEMA_VERSION, IncomingEvent, RegistryStore
from gated.validation import TicketRecord, TicketState
from tests.rpc.test_event_continuity import _V1_SCHEMA
from tests.rpc_helpers import KEY, KID, Gate, badge_code, start_registry, until

pytestmark = pytest.mark.timeout(120)

NINE = 1_748_768_400.0  # 2025-06-01 09:00 UTC
_rng = random.Random(9)
ID_SHAPES = {
    "consecutive": [1001 + i for i in range(40)],
    "registration numbers": [5_205_320_758 + 7 * i for i in range(40)],
    "blocks": [1_000_000 * k + n for k in (1, 2, 3, 4) for n in range(10)],
    "random 63-bit": _rng.sample(range(1, 2**63), 40),
}


def ticket(tid: int, max_entries: int = 1, benefits=(), zones=("hall-a",)) -> TicketRecord:
    return TicketRecord(ticket_id=tid, category="guest", ticket_type="1-day", zones=zones, max_entries=max_entries,
                        benefits=benefits, name=f"Guest {tid}")


class GateFeed:
    """What one gate's journal sends: consecutive seqs under its epoch, as the server hands them to the store."""

    def __init__(self, store: RegistryStore, gate_id: str, epoch: int) -> None:
        self.store, self.gate_id, self.epoch, self.seq = store, gate_id, epoch, 0
        self.sent: list[IncomingEvent] = []

    def event(self, kind: str, tid: int, lane: str, at: float, **payload) -> IncomingEvent:
        self.seq += 1
        body = {"ticket_id": tid, "zone": "hall-a", **payload}
        ev = IncomingEvent(f"{self.gate_id}:{self.seq}", self.seq, at, kind, lane, tid, "ok", json.dumps(body))
        self.sent.append(ev)
        return ev

    def entry(self, tid: int, at: float, lane: str = "in-1") -> IncomingEvent:
        return self.event("passage", tid, lane, at, direction="in")

    def exit(self, tid: int, at: float, lane: str = "out-1") -> IncomingEvent:
        return self.event("passage", tid, lane, at, direction="out")

    def redemption(self, tid: int, benefit: str, at: float, lane: str = "hand-1") -> IncomingEvent:
        return self.event("redemption", tid, lane, at, benefit=benefit)

    def send(self, events) -> None:
        events = list(events)
        for start in range(0, len(events), 500):
            self.store.store_events(self.gate_id, events[start:start + 500], time.time(), epoch=self.epoch)


def conflict_logs(logs) -> list[dict]:
    return [entry for entry in logs if entry["event"] == "registry_conflict"]


@pytest.mark.parametrize("shape", list(ID_SHAPES))
def test_single_entry_tickets_admitted_at_two_gates_while_apart_are_conflicts_with_both_records(tmp_path, shape, registry_db):
    ids = ID_SHAPES[shape]
    twice, once = ids[::2], ids[1::2]
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ticket(t), "") for t in ids], record_changes=False)
        north, south = GateFeed(store, "north", 7), GateFeed(store, "south", 2**64 - 1)
        with capture_logs() as logs:
            north.send(north.entry(t, NINE + i) for i, t in enumerate(ids))
            assert store.conflicts() == []
            south.send(south.entry(t, NINE + 600 + i) for i, t in enumerate(twice))
            north.send(north.sent[:10])  # a replay after a lost ack: stored once, no new conflict
        conflicts = store.conflicts()
        assert [c.ticket_id for c in conflicts] == twice
        assert store.conflict_counts() == {"over_entry": len(twice), "over_redemption": 0, "revoked_use": 0}
        for c in conflicts:
            i = ids.index(c.ticket_id)
            assert c.kind == "over_entry" and c.benefit is None
            assert (c.first.event_id, c.first.gate_id, c.first.lane, c.first.at) == (f"north:{i + 1}", "north", "in-1", NINE + i)
            j = twice.index(c.ticket_id)
            assert (c.then.event_id, c.then.gate_id, c.then.lane, c.then.at) == (f"south:{j + 1}", "south", "in-1", NINE + 600 + j)
        # Counted all the same: the registry's table says what happened, the conflicts say why it is wrong.
        assert {t: store.ticket(t).entries_used for t in ids} == {**{t: 2 for t in twice}, **{t: 1 for t in once}}
        lines = conflict_logs(logs)
        assert len(lines) == len(twice) and all(line["log_level"] == "warning" for line in lines)
        assert (lines[0]["ticket_id"], lines[0]["gate"], lines[0]["first_gate"]) == (twice[0], "south", "north")


def test_multi_entry_and_unlimited_tickets_overdraw_only_past_their_count(tmp_path, registry_db):
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ticket(5_205_320_758, max_entries=3), ""), (ticket(5_205_320_759, max_entries=0), "")],
                          record_changes=False)
        a, b = GateFeed(store, "a", 1), GateFeed(store, "b", 1)
        for k in range(3):
            a.send([a.entry(5_205_320_758, NINE + 10 * k), a.exit(5_205_320_758, NINE + 10 * k + 5)])
        for k in range(20):
            b.send([b.entry(5_205_320_759, NINE + k)])
        assert store.conflicts() == []
        b.send([b.entry(5_205_320_758, NINE + 25, lane="in-2")])
        (c,) = store.conflicts()
        assert (c.kind, c.ticket_id, c.first.event_id, c.first.at) == ("over_entry", 5_205_320_758, "a:5", NINE + 20)
        assert (c.then.gate_id, c.then.lane) == ("b", "in-2")


def test_a_voucher_redeemed_at_two_handhelds_is_an_over_redemption(tmp_path, registry_db):
    tid = 2**63 + 12345  # a u64 past the signed range
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ticket(tid, benefits=(("dinner", 1), ("lunch_day1", 2))), "")], record_changes=False)
        east, west = GateFeed(store, "east", 3), GateFeed(store, "west", 4)
        east.send([east.redemption(tid, "dinner", NINE + 3600), east.redemption(tid, "lunch_day1", NINE + 3700)])
        west.send([west.redemption(tid, "lunch_day1", NINE + 3650)])
        assert store.conflicts() == []  # two lunches of two
        with capture_logs() as logs:
            west.send([west.redemption(tid, "dinner", NINE + 3660, lane="hand-2")])
        (c,) = store.conflicts("over_redemption")
        assert (c.ticket_id, c.benefit) == (tid, "dinner")
        assert (c.first.event_id, c.first.gate_id, c.first.lane) == ("east:1", "east", "hand-1")
        assert (c.then.event_id, c.then.lane, c.then.at) == ("west:2", "hand-2", NINE + 3660)
        assert dict(store.ticket(tid).benefits)["dinner"] == 0
        assert [(line["kind"], line["benefit"]) for line in conflict_logs(logs)] == [("over_redemption", "dinner")]


def test_an_entry_after_the_revocation_is_a_conflict_and_one_before_it_is_not(tmp_path, registry_db):
    revoked_at = NINE + 1800
    with RegistryStore(registry_db) as store:
        ids = ID_SHAPES["registration numbers"][:3]
        store.put_tickets([(ticket(t, max_entries=0), "") for t in ids], record_changes=False)
        for t in ids:
            store.revoke(t, at=revoked_at)
        gate = GateFeed(store, "far-gate", 11)
        gate.send([
            gate.entry(ids[0], revoked_at - 60),   # admitted before the desk revoked it, reported late: fine
            gate.entry(ids[1], revoked_at + 60),   # admitted while the gate could not hear the revocation
            gate.exit(ids[1], revoked_at + 900),   # leaving is always allowed
            gate.entry(ids[2], revoked_at),        # the same second counts as after
        ])
        conflicts = store.conflicts()
        assert [(c.kind, c.ticket_id) for c in conflicts] == [("revoked_use", ids[1]), ("revoked_use", ids[2])]
        first = conflicts[0].first
        assert (first.event_id, first.gate_id, first.lane, first.at) == (None, None, None, revoked_at)
        assert (conflicts[0].then.event_id, conflicts[0].then.at) == ("far-gate:2", revoked_at + 60)


def test_the_report_lists_conflicts_and_tells_two_gates_lanes_of_the_same_name_apart(tmp_path, registry_db):
    tid, voucher = 5_205_320_758, 3_000_007
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ticket(tid), ""), (ticket(voucher, max_entries=0, benefits=(("dinner", 1),)), "")],
                          record_changes=False)
        store.revoke(voucher, at=NINE)
        north, south = GateFeed(store, "north", 1), GateFeed(store, "south", 1)
        north.send([north.entry(tid, NINE + 60), north.redemption(voucher, "dinner", NINE + 120)])
        south.send([south.entry(tid, NINE + 90), south.redemption(voucher, "dinner", NINE + 150)])
        report = checkin_report(store)
        text = format_report(report)
    assert [(h.hour, h.gate, h.lane, h.entries) for h in report.hours] == [
        ("2025-06-01 09:00", "north", "in-1", 1), ("2025-06-01 09:00", "south", "in-1", 1)]
    assert "  2025-06-01 09:00  north  in-1       1       0" in text
    assert [(c.kind, c.ticket_id) for c in report.conflicts] == [
        ("revoked_use", voucher), ("over_entry", tid), ("over_redemption", voucher), ("revoked_use", voucher)]
    assert "Conflicts: 4 (over_entry 1, over_redemption 1, revoked_use 2)" in text
    assert (f"  over_entry       ticket {tid}: north in-1 at 2025-06-01 09:01:00, "
            f"then south in-1 at 2025-06-01 09:01:30") in text
    assert (f"  over_redemption  ticket {voucher} (dinner): north hand-1 at 2025-06-01 09:02:00, "
            f"then south hand-1 at 2025-06-01 09:02:30") in text
    assert (f"  revoked_use      ticket {voucher} (dinner): revoked at 2025-06-01 09:00:00, "
            f"then north hand-1 at 2025-06-01 09:02:00") in text


def test_the_report_command_shows_conflicts_and_says_so_when_there_are_none(tmp_path, registry_db):
    db = registry_db
    with RegistryStore(db) as store:
        store.put_tickets([(ticket(1001), "")], record_changes=False)
    report = subprocess.run([sys.executable, "-m", "gated", "registry", "report", "--db", str(db)],
                            capture_output=True, text=True, timeout=30)
    assert report.returncode == 0 and "Conflicts: none" in report.stdout
    with RegistryStore(db, create=False) as store:
        a, b = GateFeed(store, "a", 1), GateFeed(store, "b", 1)
        a.send([a.entry(1001, NINE)])
        b.send([b.entry(1001, NINE + 1)])
    report = subprocess.run([sys.executable, "-m", "gated", "registry", "report", "--db", str(db)],
                            capture_output=True, text=True, timeout=30)
    assert report.returncode == 0 and "Conflicts: 1 (over_entry 1, over_redemption 0, revoked_use 0)" in report.stdout
    assert "ticket 1001: a in-1 at 2025-06-01 09:00:00, then b in-1 at 2025-06-01 09:00:01" in report.stdout


def test_bulk_a_partition_of_10000_single_entry_tickets_across_two_gates(tmp_path, registry_db):
    ids = [1_000_000 * k + n for k in range(1, 11) for n in range(1000)]
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ticket(t), "") for t in ids], record_changes=False)
        a, b = GateFeed(store, "a", 1), GateFeed(store, "b", 1)
        a.send(a.entry(t, NINE + i * 0.01) for i, t in enumerate(ids))
        started = time.perf_counter()
        with capture_logs():
            b.send(b.entry(t, NINE + 100 + i * 0.01) for i, t in enumerate(ids[::2]))
        took = time.perf_counter() - started
        assert store.conflict_counts()["over_entry"] == 5000
        assert {c.ticket_id for c in store.conflicts()} == set(ids[::2])
        explain = "EXPLAIN QUERY PLAN" if store.dialect == "sqlite" else "EXPLAIN"
        plan = " ".join(str(r) for r in store.conn.execute(
            f"{explain} SELECT event_id FROM events WHERE ticket_id = 1 AND kind IN ('passage', 'redemption') "
            "ORDER BY at DESC LIMIT 1"))
    assert "usage_by_ticket" in plan
    print(f"\n5,000 over-entries among 10,000 block ids stored in {took:.2f} s")


def test_two_gates_apart_admit_one_single_entry_ticket_and_the_registry_reports_it_after_the_heal(tmp_path, registry_db):
    guest = ticket(5_205_320_758)

    async def day():
        registry = await start_registry(registry_db, None, tickets=(guest,))
        gates = [Gate(tmp_path, gid, registry.port, None).start() for gid in ("north", "south")]
        for gate in gates:
            await until(lambda g=gate: g.uplink.status()["connected"] and len(g.cache) == 1 and KID in g.keyring, what="sync")
        port = registry.port
        await registry.stop()  # the venue's network splits
        code = badge_code(guest.ticket_id)
        decisions = [await gate.pass_through(code) for gate in gates]
        assert all(d.admitted for d in decisions)  # each gate saw the ticket unused
        with capture_logs() as logs:
            registry = await start_registry(registry_db, None, port=port)
            await until(lambda: all(g.journal.backlog() == 0 for g in gates), timeout=20, what="both gates drained")
        (c,) = registry.store.conflicts()
        assert (c.kind, c.ticket_id) == ("over_entry", guest.ticket_id)
        assert {c.first.gate_id, c.then.gate_id} == {"north", "south"}
        assert registry.store.ticket(guest.ticket_id).entries_used == 2
        assert len(conflict_logs(logs)) == 1
        for gate in gates:
            await gate.stop()
        await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))


# ------------------------------------------------------------------ the file


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_registry_database_and_its_wal_and_shm_are_created_0600(tmp_path):
    db = tmp_path / "registry.db"
    old = os.umask(0o022)  # the usual umask, which gave 0644
    try:
        with RegistryStore(db) as store:
            store.add_key(KID, KEY)
            GateFeed(store, "a", 1).send([IncomingEvent("a:1", 1, NINE, "decision", "in-1", None, "ok", "{}")])
            assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
                "registry.db": 0o600, "registry.db-wal": 0o600, "registry.db-shm": 0o600}
        cli_db = tmp_path / "cli" / "registry.db"
        cli_db.parent.mkdir()
        (tmp_path / "keys.json").write_text(json.dumps({"keys": {"1": KEY.hex()}}))
        os.chmod(tmp_path / "keys.json", 0o600)
        added = subprocess.run([sys.executable, "-m", "gated", "registry", "keys", "add", "--db", str(cli_db),
                                "--from", str(tmp_path / "keys.json")], capture_output=True, text=True, timeout=30)
        assert added.returncode == 0, added.stderr
        assert mode(cli_db) == 0o600
    finally:
        os.umask(old)


def test_an_older_registry_file_readable_by_others_is_tightened_when_opened(tmp_path):
    db = tmp_path / "registry.db"
    with RegistryStore(db) as store:
        store.add_key(KID, KEY)
    os.chmod(db, 0o644)
    with RegistryStore(db, create=False) as store:
        assert store.keys() == {KID: KEY}
        assert mode(db) == 0o600 and mode(f"{db}-wal") == 0o600 and mode(f"{db}-shm") == 0o600


def test_a_version_1_database_is_migrated_to_keep_conflicts_and_its_revoked_tickets_still_count(tmp_path):
    db = tmp_path / "r.db"
    conn = sqlite3.connect(db)
    conn.executescript(_V1_SCHEMA)
    conn.execute("INSERT INTO tickets VALUES (42, 'guest', '1-day', '[\"hall-a\"]', '[]', 1, 0, '[]', 0, ?, '[]', '', '', '')",
                 (int(TicketState.REVOKED),))
    conn.commit()
    conn.close()
    with RegistryStore(db, create=False) as store:
        assert store._meta("schema") == SCHEMA_VERSION and store.conflict_counts() == dict.fromkeys(CONFLICT_KINDS, 0)
        gate = GateFeed(store, "g", 5)
        gate.send([gate.entry(42, NINE)])
        (c,) = store.conflicts()
        assert (c.kind, c.first.at) == ("revoked_use", None)  # revoked before the registry kept the time
    with RegistryStore(db, create=False) as store:  # reopening migrates nothing twice
        assert len(store.conflicts()) == 1
