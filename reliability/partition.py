"""Partitions: the registry down and back while two gates scan, with changes made meanwhile.

Two gate processes (one entry lane each, passage beams, mTLS uplink,
`trust_local_clock = false`) and the registry process. One round per
offline policy (strict, lenient):

1. online: both gates load the snapshot and admit a few people;
2. the registry dies (kill -9). While it is down, staff revoke ticket R,
   reissue ticket I's badge and import a new ticket N (the `gated registry`
   commands on its database), and the gates keep scanning: fresh tickets at
   each gate, the same single-entry ticket C at both (over-entry), R at gate
   A (a revoked ticket used while apart), I's old badge at gate B;
3. gate B loses power and comes back with no registry: its clock is no
   longer trusted, so a printed badge is `clock_unsynced` under strict and
   admitted under lenient, a phone code `clock_unsynced` under both;
4. the registry comes back: both journals drain; after heal R says
   `revoked`, I's old badge `superseded_badge`, N is admitted, C
   `entries_exhausted`.

Checked: every record of both journals stored exactly once (same content
under the same (gate, epoch, seq), nothing twice; a journal has one epoch
per start, its seqs leaping ahead at each); no ticket admitted twice by one
gate; the offline policy as stated; the changes reach both gates; and the
conflicts the registry keeps (`CONFLICT_KINDS`: over-entry, over-redemption,
use of a revoked ticket) exactly as they happened: C `over_entry` with both
gates' records, R `revoked_use` after its revocation, each in the registry's
conflicts table with both records and as a line of the "Conflicts" section
of `gated registry report`; no other conflict. I's old badge used after the
reissue is not one of those kinds (the ticket was used once): it is checked
by I's old badge saying `superseded_badge` after heal.

People walk through: each person admitted while apart walks through the
beam, and the turnstile locks again, before the next scan at that lane
(`walked`), as at a real turnstile: the simulated person walks when the
relay opens (`reliability.gate_process`), so a scan admitted while the relay
is still open from the one before has nobody walking and ends `not_passed`.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gated.validation import TicketRecord
from gated.validation.token import mint_dynamic, mint_static
from reliability.venue import (
    KEY, KID, LaneSpec, Registry, free_port, journal_rows, make_venue, registry_conflicts, registry_rows, start_gate,
    wait_drained, write_gate,
)

GATES = ("gate-a", "gate-b")


@dataclass
class PartitionResult:
    policy: str
    records: int = 0
    lost: int = 0
    duplicated: int = 0
    double_admissions: int = 0
    conflicts_expected: int = 0
    conflicts_reported: int = 0
    conflicts_unexpected: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def problems(self) -> list[str]:
        out = [f"{name} failed" for name, ok in self.checks.items() if not ok]
        if self.lost:
            out.append(f"{self.lost} records lost")
        if self.duplicated:
            out.append(f"{self.duplicated} records duplicated")
        if self.double_admissions:
            out.append(f"{self.double_admissions} double admissions at one gate")
        if self.conflicts_reported < self.conflicts_expected:
            out.append(f"conflicts reported {self.conflicts_reported} of {self.conflicts_expected}")
        if self.conflicts_unexpected:
            out.append(f"conflicts nobody caused: {'; '.join(self.conflicts_unexpected)}")
        return out


def run(root: Path, policy: str, *, seed: int = 9) -> PartitionResult:
    t0 = time.monotonic()
    rng = random.Random(seed)
    res = PartitionResult(policy)
    certs = make_venue(root, list(GATES))
    base = 7_000_000_000 + rng.randrange(10**8)
    singles = [base + i for i in range(60)]
    conflict, revoked, reissued, imported = singles.pop(), singles.pop(), singles.pop(), base + 1000
    from gated.registry.store import RegistryStore

    with RegistryStore(root / "registry.db") as store:
        day = ((int(time.time()) - 86400, int(time.time()) + 3 * 86400),)  # a validity window: strict needs a clock for it
        store.put_tickets([(TicketRecord(t, "guest", zones=("hall",), windows=day, max_entries=1), "") for t in [*singles, conflict, revoked, reissued]],
                          record_changes=False)
        store.add_key(KID, KEY)
    registry = Registry(root, free_port(), certs)
    registry.start()
    gates = {g: write_gate(root / g, root, certs, g, registry.port, [LaneSpec("in-1", 17, 5)],
                           offline_policy=policy, trust_local_clock=False) for g in GATES}
    procs = {}
    logged: dict[str, list[dict]] = {g: [] for g in GATES}

    def scan(g: str, code: str, timeout: float = 10.0) -> dict:
        proc = procs[g]
        before = len(proc.named("decision"))
        gates[g].ptys["in-1"].send(code)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = proc.named("decision")
            if len(got) > before:
                return got[before]
            time.sleep(0.01)
        raise RuntimeError(f"{g}: no decision for a scan within {timeout}s")

    def walked(g: str, ticket: int, timeout: float = 10.0) -> bool:
        """Until gate `g` journaled the outcome of `ticket`'s admission: True if the person walked through."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            outcomes = [r.kind for r in journal_rows(gates[g].journal, g) if r.ticket_id == ticket and r.kind in ("passage", "not_passed")]
            if outcomes:
                time.sleep(0.3)  # the turnstile locks again (relay pulse 0.1 s) before the next person scans
                return outcomes[-1] == "passage"
            time.sleep(0.05)
        return False

    def badge(t: int, serial: int = 0) -> str:
        return mint_static(KEY, KID, t, serial)

    def start(g: str, *, snapshot: bool) -> None:
        procs[g] = start_gate(gates[g], seed=rng.getrandbits(32), walk=1.0)
        if snapshot:
            procs[g].wait_for(lambda e: e.get("event") == "entitlement_snapshot_loaded", 60, f"{g} snapshot")
        procs[g].wait_for(lambda e: e.get("event") == "scanner_connected", 30, f"{g} scanner")

    def stop(g: str, *, kill: bool = False) -> None:
        p = procs.pop(g)
        p.kill() if kill else p.terminate()
        logged[g] += p.named("decision")
        with open(gates[g].root / "gated.log", "a") as f:  # kept for a look at what went wrong
            f.writelines(json.dumps(e, default=str) + "\n" for e in p.events)
            f.writelines(line + "\n" for line in p.stderr)

    try:
        for g in GATES:
            start(g, snapshot=True)
        # 1. online
        for g in GATES:
            for _ in range(3):
                d = scan(g, badge(singles.pop()))
                res.checks.setdefault("online scans admitted", True)
                res.checks["online scans admitted"] &= d.get("reason") == "ok"
        time.sleep(1.5)
        # 2. partition
        registry.stop(kill=True)
        for g in GATES:
            procs[g].wait_for(lambda e: e.get("event") in ("uplink_disconnected", "uplink_unreachable"), 30, f"{g} sees the outage")
        for cmd in (("revoke", str(revoked)), ("reissue", str(reissued))):
            r = registry.cli(*cmd)
            res.checks[f"registry {cmd[0]} while the gates are apart"] = r.returncode == 0
        csv = root / "new.csv"
        csv.write_text("ticket_id,name,company,category,ticket_type,zones,max_entries,benefits,phone,valid_from,valid_until\n"
                       f"{imported},New Person,Acme,guest,1-day,hall,1,,,,\n")
        r = registry.cli("import", str(csv))
        res.checks["registry import while the gates are apart"] = r.returncode == 0
        if r.returncode != 0:
            res.notes.append(f"import: {r.stderr.strip()[:200]}")
        apart = {
            "C at gate A": scan("gate-a", badge(conflict)),
            "C at gate B": scan("gate-b", badge(conflict)),
        }
        for g in GATES:
            res.checks[f"apart: C walked through at {g}"] = walked(g, conflict)
        apart["R at gate A"] = scan("gate-a", badge(revoked))
        apart["I's old badge at gate B"] = scan("gate-b", badge(reissued, 0))
        res.checks["apart: R walked through at gate A"] = walked("gate-a", revoked)
        res.checks["apart: I's old badge walked through at gate B"] = walked("gate-b", reissued)
        for g in GATES:
            for _ in range(3):
                scan(g, badge(singles.pop()))
        for what, d in apart.items():
            res.checks[f"apart: {what} admitted (the gate cannot know)"] = d.get("reason") == "ok"
        expected = {("over_entry", conflict): {"gate-a", "gate-b"}, ("revoked_use", revoked): {"revoked", "gate-a"}}
        res.conflicts_expected = len(expected)
        time.sleep(1.5)  # the people walk through
        # 3. gate B loses power and reboots with no registry
        stop("gate-b", kill=True)
        start("gate-b", snapshot=False)
        printed = scan("gate-b", badge(singles.pop()))
        phone = scan("gate-b", mint_dynamic(KEY, KID, singles.pop(), time.time()))
        want = "ok" if policy == "lenient" else "clock_unsynced"
        res.checks[f"rebooted offline: printed badge says {want}"] = printed.get("reason") == want
        res.checks["rebooted offline: phone code says clock_unsynced"] = phone.get("reason") == "clock_unsynced"
        time.sleep(1.5)
        # 4. heal
        registry.start()
        for g in GATES:
            res.checks[f"{g} drained after heal"] = wait_drained(gates[g], registry.db, timeout=60)
        time.sleep(2.0)  # the changes made while apart reach the gates
        after = {
            "R says revoked at gate B": (scan("gate-b", badge(revoked)), "revoked"),
            "I's old badge says superseded_badge at gate A": (scan("gate-a", badge(reissued, 0)), "superseded_badge"),
            "N (imported while apart) admitted at gate B": (scan("gate-b", badge(imported)), "ok"),
            "C says entries_exhausted at gate A": (scan("gate-a", badge(conflict)), "entries_exhausted"),
        }
        for what, (d, reason) in after.items():
            res.checks[f"after heal: {what}"] = d.get("reason") == reason
            if d.get("reason") != reason:
                res.notes.append(f"{what}: got {d.get('reason')}")
        time.sleep(1.5)
        for g in GATES:
            res.checks[f"{g} drained at the end"] = wait_drained(gates[g], registry.db, timeout=60)
        for g in list(procs):
            stop(g)
        report = registry.cli("report")
        res.checks["gated registry report exits 0"] = report.returncode == 0
        reported = _report_conflicts(report.stdout)
        for c in registry_conflicts(registry.db):
            sides = {c["first_gate"] or "revoked", c["gate_id"]}
            key = (c["kind"], c["ticket_id"])
            if expected.get(key) == sides and key in reported:
                res.conflicts_reported += 1
                expected.pop(key)
            else:
                res.conflicts_unexpected.append(f"{c['kind']} ticket {c['ticket_id']} ({' / '.join(sorted(sides))})"
                                                + ("" if key in reported else ", not in the report"))
        res.notes += [f"conflict not found: {kind} ticket {t}" for kind, t in expected]
    finally:
        for g in list(procs):
            stop(g, kill=True)
        registry.stop()
        for gate in gates.values():
            for pty in gate.ptys.values():
                pty.close()
    stored = registry_rows(registry.db)
    at_registry = {(r.gate_id, r.epoch, r.seq): r for r in stored}
    for g in GATES:
        rows = journal_rows(gates[g].journal, g)
        res.records += len(rows)
        res.lost += sum(at_registry.get((r.gate_id, r.epoch, r.seq), None) is None
                        or at_registry[(r.gate_id, r.epoch, r.seq)].content != r.content for r in rows)
        admitted = Counter(r.ticket_id for r in rows if r.kind == "decision" and r.reason == "ok")
        not_passed = Counter(r.ticket_id for r in rows if r.kind == "not_passed")
        res.double_admissions += sum(1 for t, n in admitted.items() if n - not_passed[t] > 1 and t != reissued)
    res.duplicated = sum(n - 1 for n in Counter(r.content for r in stored).values() if n > 1)
    res.seconds = time.monotonic() - t0
    return res


def _report_conflicts(text: str) -> set[tuple[str, int]]:
    """(kind, ticket) of each line of the report's "Conflicts" section (`gated/registry/report.format_report`):
    a header "Conflicts: N (kind n, ...)", then one line "  <kind>  ticket <id>[ (benefit)]: <first>, then <then>"."""
    found: set[tuple[str, int]] = set()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Conflicts:")), None)
    if start is None:
        return found
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        words = line.split()
        if len(words) >= 3 and words[1] == "ticket":
            found.add((words[0], int(words[2].split("(")[0].rstrip(":"))))
    return found
