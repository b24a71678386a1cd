"""A registry snapshot never erases the gate's own usage it does not include.

A gate admits people while the registry is away; the registry changes
meanwhile, so on reconnect it sends a full snapshot, cut from the events it
had stored, which lack those admissions. The gate must keep them, live and
in the cache it saves, so a power cut right after and a reboot with no
network still refuse every single-entry ticket already used.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from gated.journal import Journal
from gated.registry.store import RegistryStore
from gated.usage import reapply_local_usage
from gated.validation import EntitlementCache, TicketRecord, encode_snapshot
from tests.gate.test_daemon_process import Daemon, phone
from tests.gatekit import KEY, Pty, make_gate_dir

pytestmark = pytest.mark.timeout(120)

REGISTERED = [5205320758 + i for i in range(20)]  # consecutive 10-digit registration numbers
SPARE = 1_000_000 * 9 + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`gated registry serve --plaintext` in its own process, on a fixed loopback port."""

    def __init__(self, db, port):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gated", "registry", "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}", "--plaintext"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        while line and not line.startswith("registry listening"):
            line = self.proc.stdout.readline()
        assert line, "the registry did not start"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def saved_seq(root) -> int | None:
    try:
        return json.loads((root / "state" / "cache.json").read_text())["journal_seq"]
    except (OSError, ValueError):
        return None


def test_offline_admissions_survive_a_snapshot_a_power_cut_and_an_offline_reboot(tmp_path):
    """The issue's defect 3: 20 of 20 offline-admitted single-entry tickets were admitted again."""
    db, port = tmp_path / "registry.db", free_port()
    with RegistryStore(db) as store:
        tickets = [TicketRecord(ticket_id=t, category="guest", zones=("hall",), max_entries=1) for t in REGISTERED]
        store.put_tickets([(t, "") for t in tickets + [TicketRecord(ticket_id=SPARE, category="guest", zones=("hall",))]],
                          record_changes=False)
        store.add_key(1, KEY)
    make_gate_dir(tmp_path, tickets=None, passage=False, emergency=False, rate_burst=1000,
                  uplink=f'target = "127.0.0.1:{port}"\nplaintext = true\nreconnect_max_s = 1')
    scanners = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    registry = Registry(db, port)
    gate = Daemon(tmp_path)
    try:
        gate.wait_for(lambda e: e["event"] == "entitlement_snapshot_loaded" and e["tickets"] == 21)
        gate.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        registry.stop()  # the network goes
        gate.wait_for(lambda e: e["event"] == "uplink_disconnected")
        for ticket in REGISTERED:
            scanners[0].send(phone(ticket))
        gate.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == REGISTERED[-1])
        assert {e["reason"] for e in gate.named("decision")} == {"ok"}
        with RegistryStore(db, create=False) as store:  # meanwhile, at the registry's desk
            store.revoke(SPARE)

        before, snapshots = saved_seq(tmp_path), len(gate.named("entitlement_snapshot_loaded"))
        registry = Registry(db, port)  # back, and a version the gate cannot reach with deltas: a snapshot
        gate.wait_for(lambda e: len(gate.named("entitlement_snapshot_loaded")) > snapshots)
        loaded = gate.named("entitlement_snapshot_loaded")[-1]
        deadline = time.monotonic() + 10
        while saved_seq(tmp_path) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        gate.proc.send_signal(signal.SIGKILL)  # the power is cut right after the snapshot was saved
        gate.proc.wait(timeout=10)
    finally:
        if gate.proc.poll() is None:
            gate.proc.kill()
        registry.stop()

    gate = Daemon(tmp_path)  # the registry stays away: a reboot offline
    try:
        gate.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        for ticket in REGISTERED:
            scanners[0].send(phone(ticket))
        gate.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == REGISTERED[-1], timeout=15)
        reasons = [e["reason"] for e in gate.named("decision")]
        assert reasons.count("ok") == 0 and len(reasons) == 20, reasons
        assert loaded["local_usage_reapplied"] == 20  # the live gate kept them too, without waiting for deltas
        gate.proc.send_signal(signal.SIGTERM)
        assert gate.proc.wait(timeout=15) == 0
    finally:
        if gate.proc.poll() is None:
            gate.proc.kill()
        for pty in scanners:
            pty.close()


def test_reapplied_usage_counts_on_top_of_what_other_gates_did_and_never_below_the_records_own(tmp_path):
    """Absolute values would undo another gate's entry the snapshot holds; counting again does not."""
    multi, lunch, leaving = 1_000_000 * 4 + 1, 1_000_000 * 4 + 2, 2**63 + 12345
    snapshot = encode_snapshot(9, [
        TicketRecord(ticket_id=multi, category="guest", zones=("hall",), max_entries=3, entries_used=1),  # gate B's entry
        TicketRecord(ticket_id=lunch, category="media", zones=("hall",), benefits=(("lunch", 2),)),
        TicketRecord(ticket_id=leaving, category="guest", zones=("hall",), inside=("hall",), entries_used=1),
    ])
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        here = [
            journal.append("passage", at=1.0, lane="in-1", ticket_id=multi, reason="ok", payload={
                "ticket_id": multi, "zone": "hall", "direction": "in", "entries_used": 1, "inside": ["hall"], "benefit": None}),
            journal.append("redemption", at=1.0, lane="desk", ticket_id=lunch, reason="ok", payload={
                "ticket_id": lunch, "zone": "hall", "direction": "in", "entries_used": 0, "inside": [], "benefit": "lunch",
                "benefit_remaining": 0}),  # this gate had seen another redemption the snapshot lacks too
            journal.append("passage", at=1.0, lane="out-1", ticket_id=leaving, reason="ok", payload={
                "ticket_id": leaving, "zone": "hall", "direction": "out", "entries_used": 1, "inside": [], "benefit": None}),
            journal.append("passage", at=1.0, lane="in-1", ticket_id=77, reason="ok", payload={
                "ticket_id": 77, "zone": "hall", "direction": "in"}),  # not in the snapshot: nothing to do
        ]
        usage = list(journal.usage_since(0))
    cache = EntitlementCache()
    cache.load_snapshot(snapshot)
    assert [u.seq for u in usage] == [r.seq for r in here]
    assert reapply_local_usage(cache, usage) == 3
    assert (cache.get(multi).entries_used, cache.get(multi).inside) == (2, ("hall",))
    assert dict(cache.get(lunch).benefits) == {"lunch": 0}
    assert (cache.get(leaving).entries_used, cache.get(leaving).inside) == (1, ())
