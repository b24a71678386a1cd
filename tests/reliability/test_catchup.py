"""A gate restarted after a power cut that its SD card answered by losing the journal's tail.

People were admitted (the decision journaled, sent and stored at the
registry, the relay pulsed) and the power went while they were still in the
turnstile; the card came back without those records, and without the cache
saved since. The restarted gate must not let those single-entry tickets in
again: it holds their admissions until it has caught up with the registry,
which counts them as used once this boot's epoch reaches it.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time

import pytest

from gated.registry.store import RegistryStore
from gated.validation import TicketRecord
from tests.gate.test_daemon_process import Daemon, phone
from tests.gate.test_snapshot_keeps_local_usage import Registry, free_port
from tests.gatekit import KEY, Pty, make_gate_dir

pytestmark = pytest.mark.timeout(120)

ADMITTED = [5205320758 + i for i in range(6)] + [1_000_000 * k + 7 for k in (2, 3)] + [0x3C1F_0000_0000_0042]
NEVER_SEEN = [100001 + i for i in range(3)]  # consecutive ids nobody scanned before the cut


def registry_decisions(db) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE kind = 'decision' AND reason = 'ok'").fetchone()[0]


def test_admissions_the_card_lost_are_not_admitted_again_after_the_restart(tmp_path):
    db, port = tmp_path / "registry.db", free_port()
    with RegistryStore(db) as store:
        store.put_tickets([(TicketRecord(ticket_id=t, category="guest", zones=("hall",), max_entries=1), "")
                           for t in ADMITTED + NEVER_SEEN], record_changes=False)
        store.add_key(1, KEY)
    config = make_gate_dir(tmp_path, tickets=None, passage=True, emergency=False, rate_burst=1000,
                           uplink=f'target = "127.0.0.1:{port}"\nplaintext = true\nreconnect_max_s = 1\ncatchup_wait_s = 10')
    # Nobody walks through in this test: a passage window long enough that the cut lands inside it.
    config.write_text(config.read_text().replace("passage_timeout_s = 1.0", "passage_timeout_s = 60"))
    card = tmp_path / "what-the-card-kept"
    scanners = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    registry = Registry(db, port)
    try:
        gate = Daemon(tmp_path)
        try:
            gate.wait_for(lambda e: e["event"] == "entitlement_snapshot_loaded")
            gate.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
            time.sleep(0.3)  # the snapshot's save
            # What the card will come back with: the state directory (journal, WAL, cache) as it is now.
            shutil.copytree(tmp_path / "state", card / "state")
            for ticket in ADMITTED:
                scanners[0].send(phone(ticket))
            gate.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == ADMITTED[-1])
            assert [e["reason"] for e in gate.named("decision")] == ["ok"] * len(ADMITTED)
            deadline = time.monotonic() + 10
            while registry_decisions(db) < len(ADMITTED) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert registry_decisions(db) == len(ADMITTED)
        finally:
            gate.proc.send_signal(signal.SIGKILL)  # the power goes with everyone still in the turnstile
            gate.proc.wait(timeout=10)
        shutil.rmtree(tmp_path / "state")
        shutil.copytree(card / "state", tmp_path / "state")  # the card lied: the tail is gone

        gate = Daemon(tmp_path)
        try:
            gate.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
            for ticket in ADMITTED + NEVER_SEEN:  # they come back at once, before any delta could arrive
                scanners[0].send(phone(ticket))
            gate.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == NEVER_SEEN[-1], timeout=20)
            reasons = {e["ticket_id"]: e["reason"] for e in gate.named("decision")}
            assert {reasons[t] for t in ADMITTED} <= {"already_inside", "entries_exhausted"}, reasons
            assert [reasons[t] for t in NEVER_SEEN] == ["ok"] * len(NEVER_SEEN)
            started = gate.wait_for(lambda e: e["event"] == "gate_started")[0]
            assert started["catching_up"] == "unclean_stop"
            assert gate.wait_for(lambda e: e["event"] == "catchup_done")[0]["outcome"] == "caught_up"
            gate.proc.send_signal(signal.SIGTERM)
            assert gate.proc.wait(timeout=15) == 0
        finally:
            if gate.proc.poll() is None:
                gate.proc.kill()
        with RegistryStore(db, create=False) as store:
            assert [store.ticket(t).entries_used for t in ADMITTED] == [1] * len(ADMITTED)
    finally:
        registry.stop()

    # A clean stop before: nothing to catch up with, and the registry away changes nothing.
    gate = Daemon(tmp_path)
    try:
        gate.wait_for(lambda e: e["event"] == "gate_started")
        assert gate.named("gate_started")[0]["catching_up"] is None
        gate.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        scanners[0].send(phone(NEVER_SEEN[0]))  # a record in this boot (a boot that wrote nothing lost nothing)
        gate.wait_for(lambda e: e["event"] == "decision")
        gate.proc.send_signal(signal.SIGKILL)
        gate.proc.wait(timeout=10)
    finally:
        if gate.proc.poll() is None:
            gate.proc.kill()
    # After that kill, offline: the hold ends at the first failed attempt and the policy decides.
    gate = Daemon(tmp_path)
    try:
        gate.wait_for(lambda e: e["event"] == "catchup_done", timeout=15)
        assert gate.named("catchup_done")[0]["outcome"] == "registry_unreachable"
        gate.proc.send_signal(signal.SIGTERM)
        assert gate.proc.wait(timeout=15) == 0
    finally:
        if gate.proc.poll() is None:
            gate.proc.kill()
        for pty in scanners:
            pty.close()
