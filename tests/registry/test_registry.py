"""The reference registry: attendee import, the check-in report, the event stream's rules, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest

from gated.registry.importer import AttendeeFileError, import_attendees
from gated.registry.report import checkin_report, format_report
from gated.registry.store import IncomingEvent, RegistryStore
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation import TicketState
from tests.rpc_helpers import start_registry

pytestmark = pytest.mark.timeout(60)

HEADER = "ticket_id,name,company,category,ticket_type,zones,valid_from,valid_until,max_entries,benefits,phone\n"
GOOD_ROWS = (
    "1001,Alice Zhang,Acme 股份有限公司,vip,3-day,hall-a;lounge,2025-06-01T08:00:00+02:00,2025-06-04T00:00:00+02:00,3,lunch_day1=1;dinner=2,+49 170 1234567\n"
    "1002,Bob,,guest,1-day,hall-a,1748757600,1748844000,1,,\n"
    '1003,"Carol, Jr.",Press Inc,media,press,hall-a;press,,,0,,0171-9876\n'
)


def gated(*args):
    return subprocess.run([sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=30)


def test_an_attendee_list_is_imported_with_every_field(tmp_path, registry_db):
    csv_file = tmp_path / "attendees.csv"
    csv_file.write_text(HEADER + GOOD_ROWS)
    with RegistryStore(registry_db) as store:
        assert import_attendees(store, csv_file) == 3
        alice = store.ticket(1001)
        assert alice.zones == ("hall-a", "lounge") and alice.windows == ((1748757600, 1748988000),)
        assert alice.max_entries == 3 and alice.benefits == (("lunch_day1", 1), ("dinner", 2))
        assert alice.company == "Acme 股份有限公司" and alice.phone_last4 == "4567"
        assert store.ticket(1002).windows == ((1748757600, 1748844000),)
        carol = store.ticket(1003)
        assert carol.name == "Carol, Jr." and carol.windows == () and carol.phone_last4 == "9876"


def test_several_validity_windows_in_one_column(tmp_path, registry_db):
    csv_file = tmp_path / "days.csv"
    csv_file.write_text(
        "ticket_id,name,company,category,ticket_type,zones,validity,max_entries,benefits,phone\n"
        "7,Dee,,exhibitor,2-day,hall-a,2025-06-01T08:00:00Z/2025-06-01T18:00:00Z;1748851200/1748887200,,,\n"
    )
    with RegistryStore(registry_db) as store:
        import_attendees(store, csv_file)
        assert store.ticket(7).windows == ((1748764800, 1748800800), (1748851200, 1748887200))


@pytest.mark.parametrize("bad_row, where", [
    ("1004,Dan,,guest,1-day,hall-a,2025-06-01T08:00:00,2025-06-02T08:00:00+00:00,1,,", "5: valid_from: '2025-06-01T08:00:00' has no UTC offset"),
    ("10x5,Eve,,guest,1-day,hall-a,,,1,,", "5: ticket_id: '10x5' is not a whole number"),
    ("1006,Fay,,,1-day,hall-a,,,1,,", "5: category: must not be empty"),
    ("1007,Gus,,guest,1-day,,,,1,,", "5: zones: at least one zone"),
    ("1008,Hal,,guest,1-day,hall-a,,,1,lunch,", "5: benefits: 'lunch' is not 'name=count'"),
    ("1009,Ida,,guest,1-day,hall-a,1748844000,1748757600,1,,", "5: valid_until: a validity window must end after it starts"),
    ("1001,Alice again,,guest,1-day,hall-a,,,1,,", "5: ticket_id: 1001 is already on line 2"),
    ("1010,Jo,,guest,1-day,hall-a,,,-1,,", "5: max_entries: '-1' is not a whole number"),
    ("1011,Kim,,guest,1-day,hall-a,,,1,,call me", "5: phone: 'call me' is not a phone number"),
    ("1012,Lu,,guest", "5: row: expected 11 cells"),
])
def test_a_bad_row_is_named_by_line_and_nothing_is_imported(tmp_path, bad_row, where, registry_db):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER + GOOD_ROWS + bad_row + "\n")
    with RegistryStore(registry_db) as store:
        with pytest.raises(AttendeeFileError) as refused:
            import_attendees(store, csv_file)
        assert str(refused.value).startswith(f"{csv_file}:{where}")
        assert store.ticket_count() == 0


def test_a_bad_header_is_refused(tmp_path, registry_db):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER.replace("phone", "mobile") + GOOD_ROWS)
    with RegistryStore(registry_db) as store, pytest.raises(AttendeeFileError, match=r":1: header: unknown column 'mobile'"):
        import_attendees(store, csv_file)


def test_import_revoke_reissue_and_report_from_the_command_line(tmp_path, registry_db):
    csv_file, db = tmp_path / "list.csv", registry_db
    csv_file.write_text(HEADER + GOOD_ROWS)
    r = gated("registry", "import", str(csv_file), "--db", str(db))
    assert r.returncode == 0 and "imported 3 tickets" in r.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "2001,Zed,,guest,1-day,hall-a,,,x,,\n")
    r = gated("registry", "import", str(bad), "--db", str(db))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}:2: max_entries: 'x' is not a whole number 0..4294967295"
    assert gated("registry", "revoke", "1002", "--db", str(db)).returncode == 0
    assert "serial is now 1" in gated("registry", "reissue", "1001", "--db", str(db)).stdout
    r = gated("registry", "revoke", "4242", "--db", str(db))
    assert r.returncode == 2 and "ticket 4242 is not registered" in r.stderr
    with RegistryStore(db) as store:
        assert store.ticket_count() == 3
        assert store.ticket(1002).state is TicketState.REVOKED and store.ticket(1001).badge_serial == 1
        who = f"cli:{__import__('getpass').getuser()}"  # each change names who made it from the command line
        assert [(kind, actor) for _id, kind, actor in store.history(1001)] == [("ticket", who), ("reissue", who)]
        assert store.history(1002)[-1][1:] == ("state", who)
    r = gated("registry", "serve", "--db", str(db))
    assert r.returncode == 2 and "--plaintext, for the simulator only" in r.stderr


def passage(event_id, seq, ticket_id, lane, at, direction, zone="hall-a"):
    payload = {"ticket_id": ticket_id, "zone": zone, "direction": direction, "entries_used": 1, "inside": [zone],
               "benefit": None, "benefit_remaining": None}
    return IncomingEvent(event_id, seq, at, "passage", lane, ticket_id, "", json.dumps(payload))


def test_the_checkin_report_counts_entries_exits_attendees_and_categories(tmp_path, registry_db):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER + GOOD_ROWS)
    nine = 1748768400  # 2025-06-01 09:00 UTC
    with RegistryStore(registry_db) as store:
        import_attendees(store, csv_file)
        store.store_events("a", [
            passage("a:1", 1, 1001, "in-1", nine + 60, "in"),
            passage("a:2", 2, 1002, "in-1", nine + 120, "in"),
            passage("a:3", 3, 1001, "out-1", nine + 1800, "out"),
            passage("a:4", 4, 1001, "in-1", nine + 3700, "in"),
            IncomingEvent("a:5", 5, nine + 3800, "decision", "in-1", 1003, "revoked", "{}"),
        ], time.time())
        report = checkin_report(store)
        text = format_report(report)
    assert [(h.hour, h.lane, h.entries, h.exits) for h in report.hours] == [
        ("2025-06-01 09:00", "in-1", 2, 0), ("2025-06-01 09:00", "out-1", 0, 1), ("2025-06-01 10:00", "in-1", 1, 0)]
    assert report.unique_attendees == 2
    assert [(c.category, c.registered, c.attended) for c in report.categories] == [("guest", 1, 1), ("media", 1, 0), ("vip", 1, 1)]
    assert "  2025-06-01 10:00  a     in-1        1       0" in text
    assert "  guest              1         1  100.0%" in text and "Unique attendees: 2" in text


def test_events_are_counted_once_and_usage_follows_the_registrys_own_count(tmp_path, registry_db):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER + GOOD_ROWS)
    with RegistryStore(registry_db) as store:
        import_attendees(store, csv_file)
        first = store.store_events("a", [passage("a:1", 1, 1001, "in-1", 1.0, "in")], 2.0)
        again = store.store_events("a", [passage("a:1", 1, 1001, "in-1", 1.0, "in")], 3.0)
        assert first.new_events == 1 and first.delta is not None and again.new_events == 0 and again.delta is None
        redeem = IncomingEvent("a:2", 2, 4.0, "redemption", "h-1", 1001, "ok",
                               json.dumps({"ticket_id": 1001, "benefit": "dinner", "benefit_remaining": 1}))
        store.store_events("a", [redeem, redeem], 5.0)
        alice = store.ticket(1001)
        assert alice.entries_used == 1 and alice.inside == ("hall-a",) and dict(alice.benefits)["dinner"] == 1
        assert store.acked_seq("a") == 2


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_passage_whose_payload_nests_any_depth_is_stored_and_counts_nothing(tmp_path, depth, registry_db):
    # payload_json is whatever a gate (or something claiming to be one) sent.
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER + GOOD_ROWS)
    with RegistryStore(registry_db) as store:
        import_attendees(store, csv_file)
        deep = IncomingEvent("a:1", 1, 1.0, "passage", "in-1", 1002, "ok", '{"ticket_id": 1002, "x": ' + "[" * depth + "]" * depth + "}")
        unclosed = IncomingEvent("a:2", 2, 2.0, "redemption", "in-1", 1001, "ok", "[" * depth)
        stored = store.store_events("a", [deep, unclosed, passage("a:3", 3, 1002, "in-1", 3.0, "in")], 4.0)
        assert (stored.acked_seq, stored.new_events) == (3, 3)
        assert store.ticket(1002).entries_used == 1 and store.ticket(1001).benefits == (("lunch_day1", 1), ("dinner", 2))
        report = checkin_report(store)
    assert report.events == 3 and report.unique_attendees == 1


def test_a_gap_within_a_stream_is_refused_not_acknowledged(tmp_path, registry_db):
    async def day():
        registry = await start_registry(registry_db, None)
        md = (("gated-gate-id", "gate-a"),)

        def batch(after, *seqs):
            return pb.StreamEventsRequest(after_seq=after, events=[
                pb.Event(event_id=f"gate-a:{s}", seq=s, at=1.0, kind=pb.EVENT_KIND_DECISION) for s in seqs])

        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=md)
            await call.write(batch(0, 1, 2))
            assert (await call.read()).up_to_seq == 2
            await call.write(batch(3, 4, 5))  # record 3 never arrived
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert registry.store.acked_seq("gate-a") == 2 and registry.store.event_count() == 2
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                call = pb_grpc.RegistryServiceStub(channel).StreamEvents()
                await call.write(batch(0, 1))
                await call.read()
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 30))


def test_registry_serve_runs_from_the_command_line_with_mtls(tmp_path, registry_db):
    certs = tmp_path / "certs"
    r = gated("certs", "make", "--out", str(certs), "--gate-ids", "gate-a")
    assert r.returncode == 0 and (certs / "gate-gate-a.pem").exists()
    assert (certs / "gate-gate-a.key").stat().st_mode & 0o777 == 0o600
    proc = subprocess.Popen(
        [sys.executable, "-m", "gated", "registry", "serve", "--db", str(registry_db), "--listen", "127.0.0.1:0",
         "--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "registry.pem"), "--tls-key", str(certs / "registry.key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = ""
        while "registry listening" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        port = int(line.split()[3].rpartition(":")[2])
        creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), (certs / "gate-gate-a.key").read_bytes(),
                                             (certs / "gate-gate-a.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            reply = pb_grpc.RegistryServiceStub(channel).GetTime(pb.GetTimeRequest(), timeout=10)
        assert abs(reply.unix_nanos / 1e9 - time.time()) < 5
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.stderr.read()[-2000:]


def test_records_split_where_csv_says_and_errors_name_the_line_where_the_record_starts(tmp_path):
    """The reviewer's e_csv.py: splitlines() broke rows on U+2028 and form feed and miscounted lines."""
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(HEADER + "1,Ann,Acme\u2028Ltd,guest,,hall,,,0,,\n", encoding="utf-8")
    from gated.registry.importer import read_attendees

    [(ann, _)] = read_attendees(csv_file)
    assert ann.company == "Acme\u2028Ltd"
    csv_file.write_text(HEADER + '1,Ann,"Acme\x0cLtd\nGmbH",guest,,hall,,,0,,\n2,Bob,,guest,,hall,,,x,,\n', encoding="utf-8")
    with pytest.raises(AttendeeFileError) as refused:
        read_attendees(csv_file)
    assert str(refused.value).startswith(f"{csv_file}:4: max_entries:")  # Ann's record spans lines 2-3
    csv_file.write_text(HEADER + '1,"Ann\nZhang",,guest,,hall,,,x,,\n', encoding="utf-8")
    with pytest.raises(AttendeeFileError, match=r":2: max_entries:"):
        read_attendees(csv_file)



@pytest.mark.parametrize("listen", ["0.0.0.0:7443", "[::]:7443", "192.168.1.10:7443", "registry.example:7443", ":7443"])
def test_plaintext_serve_is_refused_off_loopback(tmp_path, listen):
    r = gated("registry", "serve", "--db", str(tmp_path / "r.db"), "--plaintext", "--listen", listen)
    assert r.returncode == 2 and "--plaintext listens on loopback only" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r.db").exists()


def test_plaintext_loopback_addresses_are_recognised():
    from gated.cli.registry import _is_loopback

    assert all(_is_loopback(a) for a in ("127.0.0.1:0", "localhost:7443", "[::1]:7443", "127.1.2.3:1"))


def test_the_serving_process_rests_the_collector_once_loaded_and_keeps_freeing_cycles():
    """`registry serve`'s collector policy (docs/architecture.md), in a process of its own: what
    was loaded is frozen, young passes come every COLLECT_EVERY allocations, and a cycle made
    afterwards is still collected."""
    probe = (
        "import gc, weakref\n"
        "from gated.cli.registry import COLLECT_EVERY, _rest_the_collector\n"
        "loaded = [[i] for i in range(50_000)]\n"
        "_rest_the_collector()\n"
        "assert gc.get_freeze_count() >= 50_000, gc.get_freeze_count()\n"
        "assert gc.get_threshold()[0] == COLLECT_EVERY == 20_000\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "gone = weakref.ref(a); del a, b\n"
        "gc.collect(0); gc.collect(1); gc.collect(2)\n"
        "assert gone() is None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
