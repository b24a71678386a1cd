"""A gate's backlog on the wire: the batches built straight from journal rows (one constructor call an
event, the next batch read while this one goes out), and those joined from the encodings the journal
keeps with its records, carry exactly what record-by-record conversion carried, down to the byte; a batch never outgrows what a registry with gRPC's default 4 MiB receive
limit takes; and a replay through such a registry stores every record once, in order."""

from __future__ import annotations

import asyncio
import json
import random

import grpc
import pytest

from gated.journal import Journal
from gated.registry.server import RegistryService
from gated.registry.store import RegistryStore
from gated.rpc import convert
from gated.rpc.uplink import MAX_BATCH_BYTES
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from tests.rpc_helpers import Gate, until

pytestmark = pytest.mark.timeout(60)

REG_NO = 5205320758  # a 10-digit registration number
RANDOM_63 = 0x5DEECE66D3A1B2C9 & ((1 << 63) - 1)
HIGH_U64 = (1 << 64) - 25  # stored by the journal as a negative i64


def journaled_day(journal: Journal, scans: int, seed: int = 7) -> None:
    """Scans at a turnstile pair and a desk: admissions and their passages (by decision_seq), entries
    nobody walked through for, denials (absent ids too), lunches; ids in the four shapes a show brings."""
    rng = random.Random(seed)
    held = [100_001 + i for i in range(20)] + [REG_NO + 7 * i for i in range(20)] + \
           [1_000_000 * k + n for k in (1, 2, 3, 4) for n in range(5)] + [rng.getrandbits(63) for _ in range(20)] + [HIGH_U64]
    at = 1_764_230_400.0
    for i in range(scans):
        at += 0.25
        tid = rng.choice(held)
        scan = {"code_kind": rng.choice(("dynamic", "static")), "category": "guest", "zone": "hall-a", "direction": "in",
                "mode": "turnstile", "source": "in-1-scanner", "length": 54, "truncated": False}
        roll = rng.random()
        if roll < 0.1:
            journal.append("decision", at=at, lane="in-1", ticket_id=tid + 1, reason="unknown_ticket",
                           payload={**scan, "category": None})
        elif roll < 0.2:
            rid = f"{rng.getrandbits(128):032x}"
            seq = journal.append("decision", at=at, lane="desk-1", ticket_id=tid, reason="ok",
                                 payload={**scan, "mode": "handheld", "benefit": "lunch_day1", "redemption_id": rid,
                                          "authority": "local"}).seq
            journal.append("redemption", at=at + 0.1, lane="desk-1", ticket_id=tid, reason="ok", payload={
                "ticket_id": tid, "zone": "hall-a", "direction": "in", "entries_used": 1, "inside": ["hall-a"],
                "benefit": "lunch_day1", "benefit_remaining": 0, "confirmed": False, "decision_seq": seq,
                "redemption_id": rid, "authority": "local"})
        else:
            seq = journal.append("decision", at=at, lane="in-1", ticket_id=tid, reason="ok", payload=scan).seq
            if roll < 0.3:
                journal.append("not_passed", at=at + 5, lane="in-1", ticket_id=tid, reason="ok", payload={
                    "zone": "hall-a", "direction": "in", "decided_at": at, "gate_stopping": False, "decision_seq": seq})
            else:
                journal.append("passage", at=at + 1.5, lane="in-1", ticket_id=tid, reason="ok", payload={
                    "ticket_id": tid, "zone": "hall-a", "direction": "in", "entries_used": 1, "inside": ["hall-a"],
                    "benefit": None, "benefit_remaining": None, "confirmed": True, "decision_seq": seq})
    # and what a lane rarely journals: no lane, no ticket, no reason, no payload, a boot, an emergency
    journal.append("boot", at=at + 9, payload={"after": "no_clean_stop", "catchup_wait_s": 3.0})
    journal.append("emergency", at=at + 10, payload={"active": True, "source": "input"})
    journal.append("manual_open", at=at + 11, lane="in-1")


def odd_payloads(journal: Journal) -> None:
    """Values a typed field does not take, nulls, unknown keys, text beyond ASCII, nesting: each kept as before."""
    for kind, payload in [
        ("decision", {"code_kind": "static", "length": "54", "truncated": 1, "typed": 0}),       # a str for a uint32
        ("decision", {"length": 3.5, "category": None, "zone": "Halle Süd", "source": "扫描器"}),  # a float for a uint32
        ("decision", {"lookup_seq": -1, "registry_remaining": 1 << 40}),                          # out of range
        ("decision", {"code": "static", "lane_seq": 7}),                                          # no typed key at all
        ("decision", {"code_kind": ["static"], "mode": {"turnstile": True}}),                      # a list, a dict for strings
        ("passage", {"zone": "hall-a", "inside": "hall-a", "ticket_id": 1 << 64}),                # a str for a repeated field
        ("passage", {"zone": "hall-a", "inside": 5, "decision_seq": True, "nested": {"a": [1, {"b": None}]}}),
        ("passage", {"zone": "hall-a", "lane_temp_c": 41.5, "decision_seq": -1, "benefit": None}),
        ("not_passed", {"zone": "hall-a", "decided_at": 7, "gate_stopping": "yes"}),               # an int for a double
        ("phone_lookup", {"matches": 2, "ticket_ids": [3_000_017, REG_NO, HIGH_U64]}),
        ("phone_lookup", {"ticket_ids": [1, "two"]}),
        ("redemption", {}),
        ("decision", {"quote": "say \"ok\"\\ \u2028 \x01", "emoji": "🎟️"}),
    ]:
        for _ in range(2):  # twice: the second one comes from what the first left behind
            journal.append(kind, at=1_764_230_400.5, lane="in-1", ticket_id=RANDOM_63, reason="ok", payload=payload)


def batches_both_ways(journal: Journal, size: int) -> list[tuple[bytes, bytes]]:
    out, cursor, after = [], 0, 0
    while records := journal.unacked(cursor, size):
        rows = journal.unacked_rows(cursor, size)
        before = convert.event_batch(after, records, journal.epoch)
        now = convert.event_batch_rows(journal.gate_id, after, rows, journal.epoch)
        out.append((before.SerializeToString(), now.SerializeToString()))
        after = cursor = records[-1].seq
    return out


def test_a_days_backlog_goes_on_the_wire_exactly_as_record_by_record_conversion_sent_it(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journaled_day(journal, 1500)
        odd_payloads(journal)
        batches = batches_both_ways(journal, 400)
        assert len(batches) >= 5
        for before, now in batches:
            assert now == before
        # the ids as journaled, u64 above 2**63 included, and the odd values as extra_json
        wire = [convert.event_batch_rows("gate-a", 0, journal.unacked_rows(0, 10_000), journal.epoch)]
        tickets = {ev.ticket_id for ev in wire[0].events if ev.HasField("ticket_id")}
        assert HIGH_U64 in tickets and REG_NO in tickets and RANDOM_63 in tickets
        odd = [ev for ev in wire[0].events if ev.extra_json and "length" in json.loads(ev.extra_json)]
        assert json.loads(odd[0].extra_json) == {"length": "54"} and odd[0].decision.code_kind == "static"


def test_a_payload_with_no_typed_field_goes_as_extra_json_alone_with_no_empty_payload_message(tmp_path):
    """An empty typed message would carry only its tag: the registry reads the same payload without it."""
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journal.append("decision", at=1.0, lane="in-1", reason="ok", payload={"code": "static", "lane_seq": 7})
        journal.append("decision", at=2.0, lane="in-1", reason="ok", payload={"lane_seq": 8, "length": "54"})  # refused by its field
        journal.append("decision", at=3.0, lane="in-1", reason="ok", payload={"lane_seq": 9, "zone": "hall-a"})
        journal.append("passage", at=4.0, lane="in-1", reason="ok", payload={"inside": [], "x": 1})  # typed, and empty
        rows, records = journal.unacked_rows(0, 10), journal.unacked(0, 10)
    built = convert.event_batch_rows("gate-a", 0, rows, 1)
    assert built.SerializeToString() == convert.event_batch(0, records, 1).SerializeToString()
    for batch in (built, convert.event_batch(0, records, 1)):
        first, second, third, fourth = batch.events
        assert fourth.WhichOneof("payload") == "passage" and json.loads(fourth.extra_json) == {"x": 1}
        assert first.WhichOneof("payload") is None and first.extra_json == '{"code":"static","lane_seq":7}'
        assert second.WhichOneof("payload") is None and json.loads(second.extra_json) == {"lane_seq": 8, "length": "54"}
        assert third.WhichOneof("payload") == "decision" and third.decision.zone == "hall-a"
        assert [convert.event_payload(ev) for ev in batch.events] == [r.payload for r in records[:3]] + [{"x": 1}]


def test_a_kind_the_contract_does_not_know_is_refused_as_before(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journal.append("decision", at=1.0, payload={"code_kind": "static"})
        journal.append("coffee_break", at=2.0)
        with pytest.raises(ValueError, match="journal record 2: kind 'coffee_break' has no EventKind") as now:
            convert.event_batch_rows("gate-a", 0, journal.unacked_rows(), journal.epoch)
        with pytest.raises(ValueError) as before:
            convert.event_batch(0, journal.unacked(), journal.epoch)
        assert str(now.value) == str(before.value)


def test_a_batch_of_large_records_is_cut_below_half_of_grpcs_default_limit(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        for i in range(600):  # 600 records of ~10 kB: 6 MB as one batch
            journal.append("decision", at=1.0 + i, lane="desk-1", ticket_id=REG_NO + i, reason="ok",
                           payload={"note": f"{i:05d}" + "x" * 10_000})
        gate = Gate(tmp_path, "gate-b", 1, None)  # an uplink that never runs: its batch builder only
        records = journal.unacked_wire(0, 2000)
        data, last = gate.uplink._event_batch(0, records, journal.epoch)
        assert 0 < len(data) <= MAX_BATCH_BYTES
        batch = pb.StreamEventsRequest.FromString(data)
        assert [ev.seq for ev in batch.events] == [seq for seq, _ in records[: len(batch.events)]]
        assert len(batch.events) < len(records) and last == batch.events[-1].seq
        gate.journal.close()


def test_a_backlog_of_large_records_replays_through_a_registry_with_grpcs_default_receive_limit(tmp_path):
    """Another vendor's registry with gRPC's defaults (4 MiB per message): every batch is taken, every record stored once."""
    async def day():
        store = RegistryStore(tmp_path / "registry.db")
        service = RegistryService(store, tls=False)
        service.load()
        server = grpc.aio.server()  # gRPC's defaults
        pb_grpc.add_RegistryServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        gate = Gate(tmp_path, "gate-a", port, None, batch_size=2000)
        for start in range(0, 1200, 100):  # 1,200 records of ~8 kB (9.6 MB) wait in the journal
            await asyncio.gather(*(
                gate.journal.append_async("badge_printed", at=1_764_230_400.0 + i, lane="desk-1", ticket_id=REG_NO + i,
                                          reason="ok", payload={"serial": 1, "kid": 1, "layout": "x" * 8000})
                for i in range(start, start + 100)))
        gate.start()
        try:
            await until(lambda: gate.journal.backlog() == 0, timeout=30, what="the backlog acknowledged")
            with RegistryStore(tmp_path / "registry.db", create=False) as reader:
                assert reader.event_ids("gate-a") == [f"gate-a:{seq}" for seq in range(1, 1201)]
            assert gate.uplink.sessions == 1  # no batch was refused (a refusal ends the session)
        finally:
            await gate.stop()
            await server.stop(None)
            store.close()

    asyncio.run(asyncio.wait_for(day(), 45))


def test_a_payload_is_taken_as_all_extra_without_reading_it_only_when_no_typed_name_is_in_its_text(tmp_path):
    """`_payload_kwargs` finds a payload with no typed key by its text: a typed name as a value, in a
    longer key, escaped, or a typed key among others each reach the same message as the reference."""
    payloads = [
        {"note": "zone", "lane_seq": 1},                  # a typed name as a value: read, found all extra
        {"zoned": "hall-a", "lane_seq": 2},               # a longer key: all extra
        {"zone": "hall-a", "lane_seq": 3},                # typed
        {"lane_seq": 4, "direction": "in"},               # typed, last
        {"quote": 'say "zone"', "lane_seq": 5},           # escaped quotes around a typed name: read
        {"zone\u00e9": "Saal Ü", "lane_seq": 6},          # beyond ASCII
        {"nested": {"zone": "hall-a"}, "lane_seq": 7},    # a typed name one level down: read, all extra
        {"lane_seq": 8, "none": None},                    # a null
        {},                                               # empty
    ]
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        for i, payload in enumerate(payloads):
            journal.append("decision", at=1.0 + i, lane="in-1", reason="ok", payload=payload)
        rows, records = journal.unacked_rows(0, 20), journal.unacked(0, 20)
    convert._payload_kwargs_seen.clear()
    built = convert.event_batch_rows("gate-a", 0, rows, 1)
    assert built.SerializeToString() == convert.event_batch(0, records, 1).SerializeToString()
    assert [convert.event_payload(ev) for ev in built.events] == [r.payload for r in records]
    cases = [ev.WhichOneof("payload") for ev in built.events]
    assert cases == [None, None, "decision", "decision", None, None, None, None, None]


def test_a_backlog_whose_payloads_never_repeat_is_built_as_each_record_alone_would_be(tmp_path):
    """Past the first misses the payloads are no longer looked up, and an all-extra one is found
    in the builder's loop: the same bytes as the reference, whatever comes after (a typed name,
    escapes, an empty payload, no lane, no reason, a ticket id of 0, absent or above 2^63)."""
    odd = [{"zone": "hall-a", "lane_seq": 1}, {"quote": 'say "zone"'}, {"q": "a\\b"}, {}, {"zone": None},
           {"nested": {"direction": "in"}}, {"lane_seq": 2, "none": None}, {"ü": "Saal Ü"}]
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        for i in range(400):  # each a payload of its own: the lookups stop after the first 64
            journal.append("decision", at=1.0 + i, lane="in-1" if i % 3 else "", reason="ok" if i % 5 else "",
                           ticket_id=(None, 0, REG_NO, HIGH_U64)[i % 4], payload={"code": f"c{i:06d}", "lane_seq": i})
            if i % 50 == 49:
                for j, payload in enumerate(odd):
                    journal.append(("decision", "not_passed", "manual_open")[j % 3], at=2.0 + i, lane="in-1",
                                   ticket_id=RANDOM_63, payload=payload)
        rows, records = journal.unacked_rows(0, 10_000), journal.unacked(0, 10_000)
    convert._payload_kwargs_seen.clear()
    built = convert.event_batch_rows("gate-a", 0, rows, 1)
    assert built.SerializeToString() == convert.event_batch(0, records, 1).SerializeToString()
    assert [convert.event_payload(ev) for ev in built.events] == [r.payload for r in records]
    assert {ev.ticket_id for ev in built.events if ev.HasField("ticket_id")} >= {0, REG_NO, HIGH_U64, RANDOM_63}


def batches_from_kept_encodings(journal: Journal, size: int) -> list[tuple[bytes, bytes]]:
    """(the record-by-record reference, what the uplink sends: `stream_batch_bytes` of `unacked_wire`), page by page."""
    out, cursor, after = [], 0, 0
    while records := journal.unacked(cursor, size):
        kept = journal.unacked_wire(cursor, size)
        assert [seq for seq, _ in kept] == [r.seq for r in records]
        out.append((convert.event_batch(after, records, journal.epoch).SerializeToString(),
                    convert.stream_batch_bytes(journal.gate_id, after, kept, journal.epoch)))
        after = cursor = records[-1].seq
    return out


def test_each_record_keeps_the_bytes_its_batch_carries_for_it(tmp_path):
    """A journal whose uplink started keeps each record's encoding: the batch joined from them is the
    reference's, byte for byte, over a day's shapes (ids consecutive, 10-digit, in blocks, random,
    above 2^63, absent) and the odd payloads (values of other types, nulls, escapes, beyond ASCII)."""
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journal.keep_wire(convert.journal_wire("gate-a"))
        journaled_day(journal, 1500)
        odd_payloads(journal)
        kept = journal.unacked_wire(0, 100_000)
        assert kept and all(type(w) is bytes for _, w in kept)  # noqa: E721 - every record has its own
        batches = batches_from_kept_encodings(journal, 400)
        assert len(batches) >= 5
        for reference, sent in batches:
            assert sent == reference
        resent = journal.wire_since(0, 100_000)  # after a registry that lost what it acknowledged
        journal.mark_acked(kept[-1][0])
        assert journal.unacked_wire(0, 10) == [] and journal.wire_since(0, 100_000) == resent == kept


def _as_schema_3(path) -> None:
    """The file as gated wrote it before records kept their encodings (schema 3)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("ALTER TABLE records DROP COLUMN wire")
        conn.execute("PRAGMA user_version = 3")
        conn.commit()
    finally:
        conn.close()


def test_a_backlog_partly_without_encodings_goes_out_as_the_reference_and_replays_through_a_registry(tmp_path):
    """Records of an older gated's file, records written before the uplink started, then records with their
    encodings, interleaved in pages: each batch is the reference's bytes, and a registry stores them once."""
    path = tmp_path / "journal-gate-a.db"  # the journal `Gate` opens below
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        journaled_day(journal, 120, seed=1)
    _as_schema_3(path)
    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:  # migrated: the old records have none
        journaled_day(journal, 80, seed=2)  # written before the uplink started
        journal.keep_wire(convert.journal_wire("gate-a"))
        journaled_day(journal, 150, seed=3)
        odd_payloads(journal)
        kept = journal.unacked_wire(0, 100_000)
        bare = [seq for seq, w in kept if type(w) is not bytes]  # noqa: E721
        assert 300 < len(bare) < len(kept) and type(kept[-1][1]) is bytes  # noqa: E721
        assert [row[0] for _, row in kept if type(row) is tuple] == bare  # noqa: E721 - each as its row
        for reference, sent in batches_from_kept_encodings(journal, 97):  # pages across the seams
            assert sent == reference
        last = kept[-1][0]

    async def replay():
        store = RegistryStore(tmp_path / "registry.db")
        service = RegistryService(store, tls=False)
        service.load()
        server = grpc.aio.server()
        pb_grpc.add_RegistryServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        gate = Gate(tmp_path, "gate-a", port, None, batch_size=64)
        gate.start()
        try:
            await until(lambda: gate.journal.backlog() == 0, timeout=30, what="the backlog acknowledged")
            with RegistryStore(tmp_path / "registry.db", create=False) as reader:
                ids = reader.event_ids("gate-a")
            assert len(ids) == len(kept) and ids[-1] == f"gate-a:{last}" and len(set(ids)) == len(ids)
            assert gate.uplink.sessions == 1  # no batch refused
        finally:
            await gate.stop()
            await server.stop(None)
            store.close()

    asyncio.run(asyncio.wait_for(replay(), 45))


@pytest.mark.parametrize("encoder", ["contract", "broken"])
def test_a_record_its_encoder_refuses_is_written_all_the_same_and_sent_from_its_columns(tmp_path, caplog, encoder):
    def broken(*_record):
        raise RuntimeError("a bug in the encoder")

    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journal.keep_wire(convert.journal_wire("gate-a") if encoder == "contract" else broken)
        with caplog.at_level("WARNING", logger="gated.journal"):
            first = journal.append("coffee_break" if encoder == "contract" else "decision", at=1.0, ticket_id=REG_NO)
            second = journal.append("decision", at=2.0, lane="in-1", ticket_id=HIGH_U64, reason="ok", payload={"zone": "hall-a"})
        assert (first.seq, second.seq) == (1, 2) and journal.backlog() == 2
        kept = journal.unacked_wire(0, 10)
        assert kept[0] == (1, journal.unacked_rows(0, 1)[0])
        warned = [r.getMessage() for r in caplog.records if "without its wire encoding" in r.getMessage()]
        assert len(warned) == 1 and "record 1" in warned[0]  # once, not per record
        if encoder == "contract":  # the unknown kind is refused when sent, as it always was
            assert type(kept[1][1]) is bytes  # noqa: E721
            with pytest.raises(ValueError, match="kind 'coffee_break' has no EventKind"):
                convert.stream_batch_bytes("gate-a", 0, kept, journal.epoch)
        else:
            assert kept[1] == (2, journal.unacked_rows(1, 1)[0])
            assert convert.stream_batch_bytes("gate-a", 0, kept, 5) == convert.event_batch(0, journal.unacked(), 5).SerializeToString()


def test_a_record_purged_between_the_two_reads_is_left_out(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journal.append("decision", at=1.0, ticket_id=7)
        journal.append("decision", at=2.0, ticket_id=8)
        row = journal.unacked_rows(0, 1)[0]
        assert journal._wire_or_rows([(1, None), (2, b"kept"), (3, None)]) == [(1, row), (2, b"kept")]
