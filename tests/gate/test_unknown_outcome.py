"""A power cut between "admitted" and "walked through": the admission counts as used.

The relay may have opened, so after the restart the ticket is used at this
gate (a single-entry ticket is refused, the holder is inside) and at the
registry (other gates and the reports know), once however often the gate
restarts.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gated.gate.outcomes import (
    PendingOutcomes,
    advance_settled_mark,
    settle_unknown_outcomes,
    unknown_outcomes,
)
from gated.gate.state import StateStore
from gated.journal import Journal
from gated.validation import EntitlementCache, TicketRecord, encode_snapshot
from tests.conftest import REPO
from tests.gate.test_daemon_process import Daemon, phone
from tests.gatekit import Pty, make_gate_dir
from tests.rpc_helpers import BOB, Gate, start_registry, until

pytestmark = pytest.mark.timeout(90)

SINGLE = 5205320758  # a 10-digit registration number, one entry
BLOCK = 1_000_000 * 7 + 42  # ids in blocks
RANDOM63 = 0x5C3A_91F2_0D4E_7B61  # a random 63-bit id
EXITING = 1_000_000 * 7 + 43
LUNCH = 1_000_000 * 7 + 44
ABSENT = 999  # never in the cache

TICKETS = [
    TicketRecord(ticket_id=SINGLE, category="guest", zones=("hall",), max_entries=1),
    TicketRecord(ticket_id=BLOCK, category="guest", zones=("hall",), max_entries=3),
    TicketRecord(ticket_id=RANDOM63, category="guest", zones=("hall",)),
    TicketRecord(ticket_id=EXITING, category="guest", zones=("hall",), inside=("hall",), entries_used=1),
    TicketRecord(ticket_id=LUNCH, category="media", zones=("hall",), benefits=(("lunch", 2),)),
]


def decision(journal, lane, ticket_id, *, reason="ok", zone="hall", direction="in", benefit=None):
    payload = {"zone": zone, "direction": direction, "mode": "turnstile"}
    if benefit is not None:
        payload["benefit"] = benefit
    return journal.append("decision", at=time.time(), lane=lane, ticket_id=ticket_id, reason=reason, payload=payload)


def usage(cache, ticket_id):
    rec = cache.get(ticket_id)
    return rec.entries_used, rec.inside, dict(rec.benefits)


def test_every_dangling_admission_is_counted_once_entries_exits_and_redemptions(tmp_path):
    path = tmp_path / "journal.db"
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        decision(journal, "in-1", SINGLE)
        decision(journal, "in-1", BLOCK)
        journal.append("passage", at=1.0, lane="in-1", ticket_id=BLOCK, reason="ok",
                       payload={"ticket_id": BLOCK, "zone": "hall", "direction": "in", "entries_used": 1,
                                "inside": ["hall"], "benefit": None, "benefit_remaining": None})
        decision(journal, "in-1", BLOCK)  # the same multi-entry ticket again, then the cut
        decision(journal, "in-1", RANDOM63)
        journal.append("not_passed", at=1.0, lane="in-1", ticket_id=RANDOM63, reason="ok", payload={"zone": "hall"})
        decision(journal, "out-1", EXITING, direction="out")
        decision(journal, "desk", LUNCH, benefit="lunch")
        decision(journal, "in-1", ABSENT, reason="unknown_ticket")  # a denial has no outcome to wait for
        decision(journal, "in-1", 2**64 - 1)  # admitted, then the ticket left the cache before the cut
        dangling = [(r.lane, r.ticket_id) for r in unknown_outcomes(journal, 0)]
        assert dangling == [("in-1", SINGLE), ("in-1", BLOCK), ("out-1", EXITING), ("desk", LUNCH), ("in-1", 2**64 - 1)]

    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, TICKETS))
    cache.restore_usage(BLOCK, 1, ("hall",))  # the replay of the journaled passage
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        written = asyncio.run(settle_unknown_outcomes(journal, cache, now=time.time()))
        assert [(r.kind, r.ticket_id) for r in written] == [
            ("passage", SINGLE), ("passage", BLOCK), ("passage", EXITING), ("redemption", LUNCH), ("passage", 2**64 - 1)]
        assert all(r.payload["outcome"] == "unknown" for r in written)
        assert written[-1].payload["zone"] == "hall" and "entries_used" not in written[-1].payload  # the registry counts it
        assert usage(cache, SINGLE)[:2] == (1, ("hall",))
        assert usage(cache, BLOCK)[:2] == (2, ("hall",))
        assert usage(cache, RANDOM63)[:2] == (0, ())  # not passed: not counted
        assert usage(cache, EXITING)[:2] == (1, ())  # assumed out
        assert usage(cache, LUNCH)[2] == {"lunch": 1}
        assert unknown_outcomes(journal, 0) == []
        # A second start (and a third, after a cut during the settling) writes nothing more.
        assert asyncio.run(settle_unknown_outcomes(journal, cache, now=time.time())) == []
        journal._call(lambda conn: conn.execute("DELETE FROM meta WHERE key = 'mark:outcomes_settled'"))
        assert asyncio.run(settle_unknown_outcomes(journal, cache, now=time.time())) == []
        assert usage(cache, BLOCK)[0] == 2 and usage(cache, LUNCH)[2] == {"lunch": 1}


def test_the_registry_counts_an_admission_whose_outcome_was_lost(tmp_path):
    async def day():
        registry = await start_registry(tmp_path / "r.db", None)
        gate = Gate(tmp_path, "gate-a", registry.port, None)
        gate.cache.load_snapshot((await registry.service.snapshot())[1])
        decision(gate.journal, "in-1", BOB.ticket_id, zone="hall-a")  # then the power went
        await settle_unknown_outcomes(gate.journal, gate.cache, now=time.time())
        gate.start()
        await until(lambda: registry.store.ticket(BOB.ticket_id).entries_used == 1, what="the registry counts it")
        assert registry.store.ticket(BOB.ticket_id).inside == ("hall-a",)
        await gate.stop()
        await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 45))


@pytest.fixture
def gate_with_sensor(tmp_path):
    make_gate_dir(tmp_path, passage=True, emergency=False, rate_burst=1000, tickets=[
        TicketRecord(ticket_id=4, category="guest", zones=("hall",), max_entries=1),
        TicketRecord(ticket_id=SINGLE, category="guest", zones=("hall",), max_entries=1),
        TicketRecord(ticket_id=RANDOM63, category="guest", zones=("hall",)),
    ])
    pty_in, pty_out = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    yield tmp_path, pty_in, pty_out
    pty_in.close()
    pty_out.close()


def run_daemon(root):
    d = Daemon(root)
    d.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
    return d


def test_kill_9_before_the_passage_sensor_fires_does_not_let_a_single_entry_ticket_in_twice(gate_with_sensor):
    """The issue's defect 1: 7 of 18 tickets cut in that gap were admitted again after the restart."""
    root, scanner, exit_scanner = gate_with_sensor
    d = run_daemon(root)
    try:
        for ticket in (4, SINGLE, RANDOM63):
            scanner.send(phone(ticket))
        d.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == RANDOM63)
        d.proc.send_signal(signal.SIGKILL)  # the turnstiles are open; nobody reached the beam yet
        d.proc.wait(timeout=10)
        d.read_events(0.2)
        assert [e["reason"] for e in d.named("decision")] == ["ok", "ok", "ok"]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()

    for restart in range(2):  # the count holds however often the gate restarts
        d = run_daemon(root)
        try:
            for ticket in (4, SINGLE, RANDOM63):
                scanner.send(phone(ticket))
            d.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == RANDOM63)
            reasons = {e["ticket_id"]: e["reason"] for e in d.named("decision")}
            left = "already_inside" if restart == 0 else "entries_exhausted"  # it left by the exit after the first restart
            assert reasons == {4: "already_inside", SINGLE: left, RANDOM63: "already_inside"}
            started = d.wait_for(lambda e: e["event"] == "gate_started")[0]  # the lanes may decide before it is logged
            assert started["unknown_outcomes_counted"] == (3 if restart == 0 else 0)
            if restart == 0:  # they leave, and come back: the single entry is spent
                exit_scanner.send(phone(SINGLE))
                d.wait_for(lambda e: e["event"] == "decision" and e["lane"] == "out-1")
                time.sleep(1.1)  # past the debounce window for the same code
                scanner.send(phone(SINGLE))
                again = d.wait_for(lambda e: e["event"] == "decision" and e["lane"] == "in-1" and e["ticket_id"] == SINGLE
                                   and e["reason"] != "already_inside")
                assert again[0]["reason"] == "entries_exhausted"
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(timeout=15) == 0
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
    with Journal(root / "state" / "journal.db", "test-gate") as journal:
        assumed = {r.ticket_id: r.payload["entries_used"] for r in journal.tail(1000) if r.payload.get("outcome") == "unknown"}
    assert assumed == {4: 1, SINGLE: 1, RANDOM63: 1}


# ---- a long day: the mark follows the oldest admission still waiting ----

def test_outcomes_name_their_decision_and_the_mark_stops_before_the_admission_still_waiting(tmp_path):
    from tests.gate.test_daemon import PASSAGE, RELAY_IN, Door
    from tests.gate.test_daemon import until as until_async

    async def scenario():
        async with Door(tmp_path, emergency=False) as door:
            journal, beam = door.gate.journal, door.pin(PASSAGE)
            beam.drive_high()
            door.scan_in.send(phone(1))
            await until_async(lambda: door.pin(RELAY_IN).state == 1)
            beam.drive_low()  # walks through
            await asyncio.sleep(0.05)
            beam.drive_high()
            await until_async(lambda: len(door.records("passage")) == 1)
            door.scan_in.send(phone(3))  # admitted; not through yet
            await until_async(lambda: len(door.records("decision")) == 2)
            first, waiting = door.records("decision")
            assert door.records("passage")[0].payload["decision_seq"] == first.seq
            await door.gate._advance_settled_mark()  # what the periodic save does
            assert journal.mark("outcomes_settled") == waiting.seq - 1
            await until_async(lambda: len(door.records("not_passed")) == 1, timeout=3)
            assert door.records("not_passed")[0].payload["decision_seq"] == waiting.seq
            await door.gate._advance_settled_mark()
            assert journal.mark("outcomes_settled") == door.records()[-1].seq

    asyncio.run(scenario())


LANES = ("in-1", "in-2", "out-1", "desk")
SHAPES = (lambda rng, n: 1000 + n, lambda rng, n: 5205320758 + n,
          lambda rng, n: 1_000_000 * rng.randrange(1, 40) + n, lambda rng, n: rng.getrandbits(63))


@pytest.mark.parametrize("seed", range(4))
def test_the_mark_never_passes_an_admission_whose_outcome_is_not_on_disk(tmp_path, seed):
    """Lanes append while the save moves the mark, over and over, from another thread;
    then the power goes. The next start finds exactly the admissions left without outcome."""
    rng = random.Random(seed)
    path = tmp_path / "journal.db"
    waiting: dict[str, list] = {lane: [] for lane in LANES}
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        pending = PendingOutcomes(journal.mark("outcomes_settled"))
        stop, marks = threading.Event(), []

        def save_again_and_again():
            while not stop.is_set():
                marks.append(advance_settled_mark(journal, pending))

        saver = threading.Thread(target=save_again_and_again)
        saver.start()
        try:
            for n in range(rng.randrange(120, 300)):
                lane = rng.choice(LANES)
                if waiting[lane] and rng.random() < 0.45:
                    # an outcome: usually the oldest on the lane, sometimes a later one (a sensor window)
                    d = waiting[lane].pop(0 if rng.random() < 0.8 else rng.randrange(len(waiting[lane])))
                    kind = "redemption" if lane == "desk" else rng.choice(("passage", "passage", "not_passed"))
                    journal.append(kind, at=time.time(), lane=lane, ticket_id=d.ticket_id, reason="ok",
                                   payload={"zone": "hall", "direction": "in", "benefit": d.payload.get("benefit"),
                                            "decision_seq": d.seq})
                else:
                    ok = rng.random() < 0.85
                    d = decision(journal, lane, SHAPES[n % 4](rng, n), reason="ok" if ok else "revoked",
                                 benefit="lunch" if lane == "desk" else None)
                    if ok:
                        waiting[lane].append(d)
        finally:
            stop.set()
            saver.join()
        assert marks == sorted(marks)  # it only moves forward
        assert all(pending._by_key.values())  # what it keeps is what still waits, not the day
    dangling = sorted(d.seq for records in waiting.values() for d in records)
    assert dangling, "the cut leaves admissions without outcome"
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        assert journal.mark("outcomes_settled") < dangling[0]
        settled = asyncio.run(settle_unknown_outcomes(journal, EntitlementCache(), now=time.time()))
    assert [r.payload["decision_seq"] for r in settled] == dangling


def write_a_long_day(path: str, records: int) -> None:
    """A session as two lanes write it, every outcome a batch after its decision, the
    save moving the mark every 10,000 records; then 5 admissions nobody saw through,
    and the power goes (SIGKILL). Prints the dangling seqs and the mark."""

    async def day():
        journal = Journal(path, "test-gate")
        pending = PendingOutcomes(journal.mark("outcomes_settled"))
        store = StateStore(Path(path).parent)
        rng = random.Random(5)

        async def decide(ticket, lane="in-1", reason="ok"):
            return await journal.append_async("decision", at=time.time(), lane=lane, ticket_id=ticket, reason=reason,
                                              payload={"zone": "hall", "direction": "in", "mode": "turnstile"})

        async def outcome(d):
            kind = "not_passed" if d.seq % 5 == 0 else "passage"
            return await journal.append_async(kind, at=time.time(), lane=d.lane, ticket_id=d.ticket_id, reason="ok",
                                              payload={"zone": "hall", "direction": "in", "decision_seq": d.seq})

        written, next_save, n, waiting = 0, 10_000, 0, []
        while written < records:
            batch = await asyncio.gather(*(decide(SHAPES[(n + k) % 4](rng, n + k), lane=("in-1", "out-1")[k % 2],
                                                  reason="ok" if (n + k) % 9 else "unknown_ticket") for k in range(400)))
            n += 400
            done = await asyncio.gather(*(outcome(d) for d in waiting))
            written += len(batch) + len(done)
            waiting = [d for d in batch if d.reason == "ok"]
            if written >= next_save:  # the periodic save, with the last batch still waiting for its outcomes:
                # the cache with the seq it includes (these passages carry no local usage to replay)...
                store.save_cache(store.cache_path.read_bytes(), batch[-1].seq)
                await asyncio.to_thread(advance_settled_mark, journal, pending)  # ...and the mark
                next_save += 10_000
        await asyncio.gather(*(outcome(d) for d in waiting))
        dangling = [await decide(t) for t in (4, SINGLE, 1_000_000 * 7 + 1, RANDOM63, 1001)]
        print(" ".join(str(d.seq) for d in dangling), journal.mark("outcomes_settled"), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(day())


@pytest.mark.timeout(180)
def test_after_a_long_day_and_a_power_cut_the_gate_is_back_within_the_target(gate_with_sensor):
    """100,000 records after the previous start, 5 admissions cut before their
    outcome near the end: the start reads only from the mark the last save left
    near the end (the cause of slow restarts), finds exactly the 5. The time
    itself (target: restart to first decision at most 1.5 s) is measured by the
    campaign (`make reliability`, docs/reliability.md), not asserted here."""
    root, scanner, _ = gate_with_sensor
    journal_path = root / "state" / "journal.db"
    day = subprocess.run([sys.executable, "-c", "import sys; from tests.gate.test_unknown_outcome import write_a_long_day as w; "
                          "w(sys.argv[1], int(sys.argv[2]))", str(journal_path), "100000"],
                         cwd=REPO, capture_output=True, text=True, timeout=150)
    assert day.returncode == -signal.SIGKILL, day.stderr
    *dangling, mark = map(int, day.stdout.split())
    assert dangling[0] - 11_000 < mark < dangling[0]  # the last save (every 10,000 records) moved the mark up

    started = time.monotonic()
    d = run_daemon(root)
    try:
        scanner.send(phone(4))
        first = d.wait_for(lambda e: e["event"] == "decision")[0]
        back_in = time.monotonic() - started
        assert (first["ticket_id"], first["reason"]) == (4, "already_inside")  # its lost admission counted
        assert d.wait_for(lambda e: e["event"] == "gate_started")[0]["unknown_outcomes_counted"] == 5
        print(f"restart to first decision after a 100,000-record day: {back_in:.2f} s")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=15) == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    with Journal(journal_path, "test-gate") as journal:
        assumed = [r.payload["decision_seq"] for r in journal.since(mark) if r.payload.get("outcome") == "unknown"]
    assert assumed == dangling  # each lost outcome found, none of the others settled twice
