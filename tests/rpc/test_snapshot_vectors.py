"""The snapshot's known-answer vectors (docs/snapshot-vectors.json), as another vendor's registry or gate uses them.

Decoding each vector gives its tickets; encoding the tickets, in the file's order, gives its bytes; a
format-1 snapshot a gate saved before the state column took TicketState's numbers still loads, and is
saved again in format 2.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from gated.errors import SnapshotError
from gated.gate.state import StateStore
from gated.rpc.v1 import registry_pb2 as pb
from gated.validation.cache import EntitlementCache, TicketRecord, TicketState, encode_snapshot

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "docs" / "snapshot-vectors.json").read_text("utf-8"))


def record(t: dict) -> TicketRecord:
    return TicketRecord(
        ticket_id=int(t["ticket_id"]), category=t["category"], ticket_type=t["ticket_type"], zones=tuple(t["zones"]),
        windows=tuple(tuple(w) for w in t["windows"]), max_entries=t["max_entries"], entries_used=t["entries_used"],
        badge_serial=t["badge_serial"], state=TicketState[t["state"].removeprefix("TICKET_STATE_")],
        inside=tuple(t["inside"]), benefits=tuple((n, c) for n, c in t["benefits"]), name=t["name"],
        company=t["company"], phone_last4=t["phone_last4"],
    )


def decoded(data: bytes) -> tuple[int, list[TicketRecord]]:
    cache = EntitlementCache()
    cache.load_snapshot(data)
    return cache.version, sorted(cache.records(), key=lambda r: r.ticket_id)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_each_vector_decodes_to_its_tickets_and_encoding_them_gives_its_bytes(vector):
    tickets = [record(t) for t in vector["tickets"]]
    data = bytes.fromhex(vector["snapshot_hex"])
    assert decoded(data) == (vector["version"], sorted(tickets, key=lambda r: r.ticket_id))
    assert encode_snapshot(vector["version"], tickets, dict(vector["zones"])).hex() == vector["snapshot_hex"]


def test_the_state_column_holds_the_wire_numbers_of_ticket_state():
    vector = VECTORS["vectors"][2]
    data = bytes.fromhex(vector["snapshot_hex"])
    assert data[:8] == b"GTSNAP\x00\x02"
    (head_len,) = struct.unpack_from("<I", data, 8)
    rows = json.loads(data[12 : 12 + head_len])["rows"]
    start = 12 + head_len + rows * (8 + 4 + 4 + 2)  # after tid u64, profile u32, used u32, serial u16
    states = list(data[start : start + rows])
    assert states == [pb.TicketState.Value(t["state"]) for t in vector["tickets"]]
    assert set(states) == {pb.TICKET_STATE_ACTIVE, pb.TICKET_STATE_REVOKED}


@pytest.mark.parametrize("state_byte", [0, 3, 0xFF])
def test_a_state_byte_that_is_no_ticket_state_refuses_the_snapshot(state_byte):
    data = bytearray(bytes.fromhex(VECTORS["vectors"][1]["snapshot_hex"]))[:-4]
    (head_len,) = struct.unpack_from("<I", data, 8)
    data[12 + head_len + 18] = state_byte  # the one row's state
    data += struct.pack("<I", zlib.crc32(data))
    with pytest.raises(SnapshotError, match="unknown state"):
        EntitlementCache().load_snapshot(bytes(data))


def test_a_cache_a_gate_saved_in_format_1_loads_with_its_revocations_and_is_saved_in_format_2(tmp_path):
    old = VECTORS["format_1"]
    data = bytes.fromhex(old["snapshot_hex"])
    assert data[:8] == b"GTSNAP\x00\x01"
    store = StateStore(tmp_path / "state")
    store.save_cache(data, 17)  # what the gate wrote before the upgrade
    cache, seq = store.load_cache()
    tickets = sorted((record(t) for t in old["tickets"]), key=lambda r: r.ticket_id)
    assert seq == 17 and sorted(cache.records(), key=lambda r: r.ticket_id) == tickets
    assert cache.get(3_000_017).state is TicketState.REVOKED and cache.get(5205320758).state is TicketState.ACTIVE
    assert cache.to_snapshot().hex() == VECTORS["vectors"][2]["snapshot_hex"]
