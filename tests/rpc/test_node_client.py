"""Another vendor's gate, in Node.js, against a real registry: the contract read from proto/ and docs/ alone.

`examples/node-gate/gate.js` loads proto/gated/v1 unchanged with @grpc/grpc-js and @grpc/proto-loader
and plays a gate (time, the entitlement snapshot decoded and a delta applied, the key ring, events with
an ack per batch and a resend stored once, health). `make test` installs its node_modules from the
committed package-lock.json; without `node` on the machine these tests skip.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gated.validation.cache import TicketRecord, TicketState
from tests.rpc_helpers import KID, start_registry

NODE = shutil.which("node")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-gate"
pytestmark = [pytest.mark.skipif(NODE is None, reason="node is not installed (Debian: nodejs)"), pytest.mark.timeout(120)]

REG_NO = 5205320758  # a 10-digit registration number: the Node gate's decision and passage are about it
TO_REVOKE = 3_000_017  # revoked at the registry while the Node gate watches
ABSENT = (REG_NO + 1, 4_000_000, 2**64 - 1)


def a_show() -> list[TicketRecord]:
    """About 30,000 tickets in the shapes a real show brings, so the snapshot comes in more than one chunk:
    consecutive ids, blocks of 1,000,000 per ticket type, random 63-bit ids, a registration number,
    some revoked, names with non-ASCII text."""
    rng = random.Random(15)
    ids = list(range(1, 12_001))
    ids += [1_000_000 * k + n for k in (1, 2, 3) for n in range(1, 4_001)]
    ids += rng.sample(range(2**40, 2**63), 6_000)
    tickets = [TicketRecord(ticket_id=REG_NO, category="vip", ticket_type="3-day", zones=("hall-a", "lounge"),
                            max_entries=3, benefits=(("lunch_day1", 1),), name="Zoë Ångström", company="北京日报",
                            phone_last4="0042")]
    for n, tid in enumerate(ids):
        category = ("guest", "media", "staff", "exhibitor")[n % 4]
        tickets.append(TicketRecord(ticket_id=tid, category=category, ticket_type="1-day", zones=("hall-a",),
                                    state=TicketState.REVOKED if n % 997 == 0 else TicketState.ACTIVE,
                                    name=f"Guest {tid}" if n % 3 == 0 else ""))
    return tickets


async def run_node_gate(registry, db: Path, lookup: list[int]) -> tuple[dict, list[dict]]:
    """Run gate.js; once it reports its snapshot, revoke a ticket with `gated registry revoke` (another
    process, on the registry's file, as a desk would). Returns its result line and its progress lines."""
    proc = await asyncio.create_subprocess_exec(
        NODE, str(EXAMPLE / "gate.js"), "--target", f"127.0.0.1:{registry.port}", "--gate-id", "node-gate-1",
        "--lookup", ",".join(map(str, lookup)), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    seen = []
    while not any(p.get("progress") == "snapshot" for p in seen):
        line = await proc.stderr.readline()
        assert line, f"gate.js ended before its snapshot: {(await proc.stdout.read()).decode()}"
        seen.append(json.loads(line))
    revoke = await asyncio.create_subprocess_exec(sys.executable, "-m", "gated", "registry", "revoke", str(TO_REVOKE),
                                                  "--db", str(db), stdout=asyncio.subprocess.DEVNULL)
    assert await revoke.wait() == 0
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    seen += [json.loads(line) for line in err.decode().splitlines()]
    return json.loads(out), seen


def stored_events(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT epoch, seq, kind, ticket_id, payload FROM events WHERE gate_id = 'node-gate-1' "
                            "ORDER BY epoch, seq").fetchall()
    finally:
        conn.close()


def test_a_node_gate_loads_the_contract_unchanged_and_plays_a_day_against_the_registry(tmp_path):
    assert (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "examples/node-gate/node_modules is missing: `make examples/node-gate/node_modules/.package-lock.json` (make test does it)"
    db = tmp_path / "registry.db"
    show = a_show()
    present = [REG_NO, TO_REVOKE, 1, 12_000, 2_000_001, show[-1].ticket_id]

    async def day():
        registry = await start_registry(db, None, tickets=show)
        try:
            result, progress = await run_node_gate(registry, db, present + list(ABSENT))
            return result, progress, registry.store.ticket_count(), registry.store.ticket(REG_NO)
        finally:
            await registry.stop()

    result, progress, registry_tickets, reg_no_after = asyncio.run(asyncio.wait_for(day(), 100))

    # 1. The registry's clock, one loopback round trip away.
    assert result["time"]["rtt_ms"] < 10_000 and abs(result["time"]["offset_ms"]) < 10_000

    # 2. The snapshot, reassembled from its chunks and decoded from the contract's layout: every ticket.
    snapshot = result["snapshot"]
    assert snapshot["tickets"] == registry_tickets == len(show)
    assert snapshot["chunks"] >= 2 and snapshot["format"] == 2
    assert snapshot["revoked"] == sum(t.state is TicketState.REVOKED for t in show)
    # Then the revocation, as a delta on top of the snapshot's version, applied whole.
    delta = result["delta"]
    assert delta["base_version"] == snapshot["version"] and delta["version"] > snapshot["version"]
    assert {"set_state": {"ticket_id": str(TO_REVOKE), "state": "TICKET_STATE_REVOKED"}} in delta["ops"]
    looked_up = result["lookup"]
    assert looked_up[str(TO_REVOKE)]["state"] == "TICKET_STATE_REVOKED"
    for tid in present:
        mine = next(t for t in show if t.ticket_id == tid)
        assert looked_up[str(tid)]["category"] == mine.category and looked_up[str(tid)]["zones"] == list(mine.zones)
    assert all(looked_up[str(tid)] is None for tid in ABSENT)

    # 3. The ring: the registry's one key, and no key bytes printed.
    assert result["keys"] == {"complete": True, "kids": [KID], "key_bytes": [32], "retire": []}

    # 4. One ack per batch, the empty ones too; the resend acknowledged as well.
    first, resent = result["events"]["streams"]
    assert [a["up_to_seq"] for a in first] == [0, 2] and [a["up_to_seq"] for a in resent] == [2, 2]
    # The registry holds each record once, its payload as sent, and counted the passage once.
    epoch = int(result["events"]["journal_epoch"])
    rows = stored_events(db)
    assert [(r[1], r[2], r[3]) for r in rows] == [(1, "decision", REG_NO), (2, "passage", REG_NO)]
    assert {r[0] for r in rows} == {epoch - 2**64 if epoch >= 2**63 else epoch}
    decision, passage = (json.loads(r[4]) for r in rows)
    assert decision["zone"] == "hall-a" and decision["direction"] == "in" and decision["source"] == "node-scanner-1"
    assert passage["ticket_id"] == REG_NO and passage["zone"] == "hall-a" and passage["vendor"] == "node-gate"
    assert reg_no_after.entries_used == 1 and reg_no_after.inside == ("hall-a",)
    # The registry's usage delta reached the Node gate's cache too.
    assert result["usage"] == {"version": result["usage"]["version"], "ticket_id": str(REG_NO), "entries_used": 1,
                               "inside": ["hall-a"]}
    assert result["usage"]["version"] >= max(a["version"] for a in first + resent) > delta["version"]

    # 5. Health.
    assert result["health"] == {"": "SERVING", "gated.v1.RegistryService": "SERVING"}
    assert [p["progress"] for p in progress][:2] == ["snapshot", "delta"]


def test_the_node_gates_own_checks_pass_the_contract_vectors_and_deltas_all_or_nothing():
    """node --test examples/node-gate/test/: the snapshot vectors of docs/snapshot-vectors.json, deltas whole or refused."""
    done = subprocess.run([NODE, "--test", "test/"], cwd=EXAMPLE, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout


def test_a_node_gate_given_bad_arguments_answers_in_one_line():
    done = subprocess.run([NODE, str(EXAMPLE / "gate.js"), "--target", "127.0.0.1:1", "--gate-id", "g",
                           "--ticket", "12x"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.splitlines()[0] == 'gate.js: "12x" is not a ticket id (0..2^64-1)'
    # A registry that is not there: one line naming the step, no stack trace.
    done = subprocess.run([NODE, str(EXAMPLE / "gate.js"), "--target", "127.0.0.1:1", "--gate-id", "g",
                           "--call-timeout", "3"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("gate.js: GetTime: UNAVAILABLE")
