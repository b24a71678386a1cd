"""The registry's database and its in-memory mirror never part: a change the gates cannot take is refused whole."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from gated.registry.importer import AttendeeFileError, import_attendees
from gated.registry.server import RegistryServer
from gated.registry.store import IncomingEvent, RegistryError, RegistryStore
from gated.validation import TicketState
from gated.validation.cache import TicketRecord
from tests.rpc_helpers import ALICE, BOB, Gate, start_registry, until

pytestmark = pytest.mark.timeout(60)

HEADER = "ticket_id,name,company,category,ticket_type,zones,valid_from,valid_until,max_entries,benefits,phone\n"


def many_zones_file(path, n, first_id=5000):
    path.write_text(HEADER + "".join(f"{first_id + i},N{i},,guest,1-day,zone{i},,,0,,\n" for i in range(n)))
    return path


def passage(gate, seq, ticket_id, zone, direction="in"):
    payload = {"ticket_id": ticket_id, "zone": zone, "direction": direction}
    return IncomingEvent(f"{gate}:{seq}", seq, 1.0, "passage", "in-1", ticket_id, "", json.dumps(payload))


def test_an_import_that_would_exceed_64_zones_is_refused_whole_and_revocations_still_reach_the_gate(tmp_path, registry_db):
    """The reviewer's c_zones.py: 3 zones in the database + 62 in the file used to wedge every later delta."""
    csv_file = many_zones_file(tmp_path / "z.csv", 62)

    async def day():
        reg = await start_registry(registry_db, None)
        gate = Gate(tmp_path, "gate-a", reg.port, None).start()
        try:
            await until(lambda: gate.cache.version == reg.service.cache.version and len(gate.cache) == 3, what="sync")
            with RegistryStore(registry_db, create=False) as desk:
                with pytest.raises(AttendeeFileError) as refused:
                    import_attendees(desk, csv_file)
                assert desk.ticket_count() == 3
            # line 63 holds zone61: with hall-a, lounge and press it is zone number 65
            assert str(refused.value) == (
                f"{csv_file}:63: zones: 'zone61' would be zone number 65 (3 already in the database); a gate holds at most 64")
            with RegistryStore(registry_db, create=False) as desk:
                desk.revoke(BOB.ticket_id)
            await until(lambda: gate.cache.get(BOB.ticket_id).state is TicketState.REVOKED, what="revocation at the gate")
            assert reg.store.version == reg.service.cache.version == gate.cache.version
        finally:
            await gate.stop()
            await reg.stop()
        again = RegistryServer(registry_db, "127.0.0.1:0")
        await again.start()
        await again.stop()

    asyncio.run(asyncio.wait_for(day(), 30))


def test_the_import_command_prints_one_line_for_too_many_zones_and_for_a_record_the_cache_refuses(tmp_path, registry_db):
    db = registry_db
    r = subprocess.run([sys.executable, "-m", "gated", "registry", "import", str(many_zones_file(tmp_path / "z.csv", 65)),
                        "--db", str(db)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.strip() == f"error: {tmp_path / 'z.csv'}:66: zones: 'zone64' would be zone number 65 (0 already in the database); a gate holds at most 64"
    # zones in use in the database count too
    with RegistryStore(db) as store:
        store.put_tickets([(TicketRecord(ticket_id=1, category="guest", zones=tuple(f"old{i}" for i in range(60))), "")])
    with RegistryStore(db) as store, pytest.raises(AttendeeFileError, match=r"z5\.csv:6: zones: 'zone4' would be zone number 65 \(60 already"):
        import_attendees(store, many_zones_file(tmp_path / "z5.csv", 5))


def test_the_store_itself_refuses_tickets_naming_more_than_64_zones(tmp_path, registry_db):
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ALICE, "")])
        many = [(TicketRecord(ticket_id=10 + i, category="guest", zones=(f"z{i}",)), "") for i in range(63)]
        with pytest.raises(RegistryError, match="65 distinct zones; a gate holds at most 64"):
            store.put_tickets(many)
        assert store.ticket_count() == 1 and len(store.pending_changes()) == 1


def test_a_change_committed_behind_the_checks_is_not_published_and_does_not_wedge_the_registry(tmp_path, registry_db):
    """A tool that bypassed the checks (or an older gated) commits 62 new zones: the server must not bump past its mirror."""
    async def day():
        reg = await start_registry(registry_db, None)
        gate = Gate(tmp_path, "gate-a", reg.port, None).start()
        try:
            await until(lambda: gate.cache.version == reg.service.cache.version and len(gate.cache) == 3, what="sync")
            with RegistryStore(registry_db, create=False) as desk, desk.transaction():
                desk.conn.execute(
                    "INSERT INTO tickets(ticket_id, category, ticket_type, zones, windows, max_entries, benefits, name, company, phone) "
                    "VALUES (77, 'guest', '', ?, '[]', 0, '[]', '', '', '')", (json.dumps([f"zone{i}" for i in range(62)]),))
                desk.conn.execute("INSERT INTO changes(kind, ticket_id) VALUES ('ticket', 77)")
            await until(lambda: reg.store.pending_changes() == [], what="change seen")
            assert reg.store.version == reg.service.cache.version
            with RegistryStore(registry_db, create=False) as desk:
                desk.conn.execute("DELETE FROM tickets WHERE ticket_id = 77")
                desk.revoke(BOB.ticket_id)
            await until(lambda: gate.cache.get(BOB.ticket_id).state is TicketState.REVOKED, what="revocation at the gate")
            assert reg.store.version == reg.service.cache.version == gate.cache.version
        finally:
            await gate.stop()
            await reg.stop()

    asyncio.run(asyncio.wait_for(day(), 30))


def test_usage_the_mirror_refuses_is_rolled_back_but_the_events_are_stored(tmp_path, registry_db):
    def refuse(ops):
        raise ValueError("more than 64 zones")

    with RegistryStore(registry_db) as store:
        store.put_tickets([(ALICE, "")], record_changes=False)
        version = store.version
        stored = store.store_events("a", [passage("a", 1, ALICE.ticket_id, "hall-a")], 2.0, check=refuse)
        assert stored.usage_refused == "more than 64 zones" and stored.delta is None and stored.new_events == 1
        assert store.version == version and store.event_count() == 1 and store.acked_seq("a") == 1
        assert store.ticket(ALICE.ticket_id).entries_used == 0 and store.ticket(ALICE.ticket_id).inside == ()
        # a later good batch fans out as usual
        ok = store.store_events("a", [passage("a", 2, ALICE.ticket_id, "hall-a")], 3.0, check=lambda ops: None)
        assert ok.delta is not None and ok.usage_refused is None and store.version == version + 1


def test_a_passage_into_a_zone_the_ticket_does_not_name_moves_no_usage(tmp_path, registry_db):
    """The reviewer's f_zone_payload.py: 69 passages into made-up zones used to push the mirror past 64 zones."""
    with RegistryStore(registry_db) as store:
        store.put_tickets([(ALICE, "")], record_changes=False)
        stored = store.store_events("a", [passage("a", s, ALICE.ticket_id, f"z{s}") for s in range(1, 70)], 2.0)
        assert stored.delta is None and stored.new_events == 69
        assert store.ticket(ALICE.ticket_id).inside == () and store.ticket(ALICE.ticket_id).entries_used == 0
        assert len(store.zones_in_use()) == 2
        counted = store.store_events("a", [passage("a", 70, ALICE.ticket_id, "lounge")], 3.0)
        assert counted.delta is not None and store.ticket(ALICE.ticket_id).inside == ("lounge",)


def test_a_change_poll_that_fails_is_retried_not_forgotten(tmp_path, registry_db):
    async def day():
        reg = await start_registry(registry_db, None)
        try:
            service = reg.service
            real = service.store.next_changes
            calls = []

            def busy_once(limit):
                calls.append(1)
                if len(calls) == 1:
                    raise OSError("database is locked")
                return real(limit)

            service.store.next_changes = busy_once
            with RegistryStore(registry_db, create=False) as desk:
                desk.revoke(BOB.ticket_id)
            await until(lambda: len(calls) >= 1, what="first poll")
            await until(lambda: service.cache.get(BOB.ticket_id).state is TicketState.REVOKED, timeout=3, what="retried poll")
        finally:
            await reg.stop()

    asyncio.run(asyncio.wait_for(day(), 30))
