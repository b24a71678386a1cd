"""The entitlement cache: snapshots, deltas all-or-nothing, compact storage."""

import struct
import zlib

import pytest

from gated.errors import DeltaRefused, SnapshotError
from gated.validation import (
    Delta,
    EntitlementCache,
    Reissue,
    SetBenefit,
    SetState,
    SetUsage,
    SetZone,
    TicketRecord,
    TicketState,
    Upsert,
    encode_snapshot,
)

ALICE = TicketRecord(
    ticket_id=1001, category="vip", ticket_type="3-day", zones=("hall-a", "lounge"),
    windows=((1_700_000_000, 1_700_086_400), (1_700_172_800, 1_700_259_200)), max_entries=3,
    benefits=(("lunch_day1", 1), ("dinner", 2)), name="Alice Zhang", company="Acme 股份有限公司", phone_last4="0420",
)
BOB = TicketRecord(ticket_id=2**64 - 1, category="guest", zones=("hall-a",), name="Bob", phone_last4="0420")
CAROL = TicketRecord(ticket_id=0, category="media", zones=("hall-a", "press"), inside=("hall-a",), entries_used=1)


def loaded(*records, version=5, zones=None):
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(version, records, zones))
    return cache


def test_snapshot_round_trips_every_field():
    cache = loaded(ALICE, BOB, CAROL, zones={"hall-a": 500})
    assert cache.version == 5 and len(cache) == 3
    assert cache.get(1001) == ALICE
    assert cache.get(2**64 - 1) == BOB
    assert cache.get(0) == CAROL
    assert cache.get(7) is None
    assert cache.zone_capacity("hall-a") == 500 and cache.occupancy("hall-a") == 1
    again = EntitlementCache()
    again.load_snapshot(cache.to_snapshot())
    assert list(again.records()) == list(cache.records())


def test_many_tickets_are_all_found():
    records = [TicketRecord(ticket_id=i * 1_000_003, category="guest", zones=("a",)) for i in range(20_000)]
    cache = loaded(*records)
    assert all(cache.row_of(r.ticket_id) >= 0 for r in records)
    assert cache.row_of(5) == -1


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[:-1],
        lambda s: b"NOTSNAP!" + s[8:],
        lambda s: s[:12] + b"[" + s[13:],
        lambda s: s[: len(s) // 2] + bytes([s[len(s) // 2] ^ 4]) + s[len(s) // 2 + 1 :],
        lambda s: s + b"x",
        lambda s: s[: len(s) // 2],
        lambda s: b"",
    ],
)
def test_a_damaged_snapshot_is_refused_and_the_cache_kept(damage):
    cache = loaded(ALICE, BOB)
    data = encode_snapshot(9, [CAROL])
    with pytest.raises(SnapshotError):
        cache.load_snapshot(damage(data))
    assert cache.version == 5 and cache.get(1001) == ALICE and cache.get(0) is None


def snapshot_with_header(header: bytes) -> bytes:
    """A snapshot whose CRC is right and whose header is `header` (the JSON part)."""
    body = b"GTSNAP\x00\x01" + struct.pack("<I", len(header)) + header
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("open_, close", [(b"[", b"]"), (b'{"a":', b"}")])
def test_a_snapshot_header_nested_any_depth_is_refused_and_the_cache_kept(depth, open_, close):
    cache = loaded(ALICE)
    with pytest.raises(SnapshotError, match="nest"):
        cache.load_snapshot(snapshot_with_header(open_ * depth + b"1" + close * depth))
    with pytest.raises(SnapshotError, match="nest"):
        cache.load_snapshot(snapshot_with_header(open_ * depth))  # unclosed
    assert cache.version == 5 and cache.get(1001) == ALICE


def test_snapshot_with_a_duplicate_ticket_is_refused():
    with pytest.raises(ValueError, match="twice"):
        encode_snapshot(1, [ALICE, ALICE])


def test_delta_applies_on_its_base_version_only():
    cache = loaded(ALICE)
    with pytest.raises(DeltaRefused, match="version 4"):
        cache.apply(Delta(4, 6, (SetState(1001, TicketState.REVOKED),)))
    with pytest.raises(DeltaRefused):
        cache.apply(Delta(5, 5, ()))
    assert cache.get(1001).state is TicketState.ACTIVE and cache.version == 5
    cache.apply(Delta(5, 6, (SetState(1001, TicketState.REVOKED),)))
    assert cache.get(1001).state is TicketState.REVOKED and cache.version == 6


def test_a_delta_with_one_bad_operation_changes_nothing():
    cache = loaded(ALICE, BOB)
    before = cache.to_snapshot()
    bad_ops = [
        SetState(999, TicketState.REVOKED),  # unknown ticket
        Reissue(1001, 70000),
        SetBenefit(1001, "spa", 1),
        SetUsage(1001, -1, ()),
        Upsert(TicketRecord(ticket_id=5, category="")),
        "not an op",
    ]
    for bad in bad_ops:
        delta = Delta(5, 6, (Upsert(CAROL), Reissue(1001, 1), bad))
        with pytest.raises(DeltaRefused):
            cache.apply(delta)
        assert cache.to_snapshot() == before


def test_delta_operations():
    cache = loaded(ALICE, BOB, zones={"hall-a": 2})
    new = TicketRecord(ticket_id=77, category="exhibitor", zones=("hall-a",), benefits=(("coffee", 3),))
    cache.apply(Delta(5, 6, (
        Upsert(new),
        Reissue(1001, 1),
        SetUsage(2**64 - 1, 1, ("hall-a",)),
        SetBenefit(77, "coffee", 2),
        SetBenefit(1001, "dinner", 0),
        SetZone("press", 40),
    )))
    assert cache.get(77).benefits == (("coffee", 2),)
    assert cache.get(1001).badge_serial == 1
    assert cache.get(1001).benefits == (("lunch_day1", 1), ("dinner", 0))
    assert cache.get(2**64 - 1).inside == ("hall-a",) and cache.occupancy("hall-a") == 1
    assert cache.zone_capacity("press") == 40
    # absolute values: applying the registry's view twice is harmless
    cache.apply(Delta(6, 7, (SetUsage(2**64 - 1, 1, ("hall-a",)),)))
    assert cache.occupancy("hall-a") == 1
    # an upsert may change a record entirely, display text included
    changed = TicketRecord(ticket_id=1001, category="staff", zones=("backstage",), name="Alice Z.", company="")
    cache.apply(Delta(7, 8, (Upsert(changed),)))
    assert cache.get(1001) == changed


def test_usage_counters_keep_occupancy():
    cache = loaded(ALICE, BOB)
    row = cache.row_of(1001)
    cache.count_entry(row, "hall-a")
    cache.count_entry(cache.row_of(2**64 - 1), "hall-a")
    assert cache.occupancy("hall-a") == 2 and cache.get(1001).entries_used == 1
    cache.count_exit(row, "hall-a")
    assert cache.occupancy("hall-a") == 1 and cache.get(1001).inside == ()
    assert cache.redeem(row, "dinner") == 1
    assert cache.redeem(row, "dinner") == 0
    assert cache.redeem(row, "dinner") is None
    assert cache.redeem(row, "spa") is None


def test_find_by_phone_last_four_digits():
    cache = loaded(ALICE, BOB, CAROL)
    assert {r.ticket_id for r in cache.find_by_phone("0420")} == {1001, 2**64 - 1}
    assert cache.find_by_phone("9999") == [] and cache.find_by_phone("42") == []


def test_record_validation_names_the_ticket():
    with pytest.raises(ValueError, match="ticket 3: each validity window"):
        encode_snapshot(1, [TicketRecord(ticket_id=3, category="guest", windows=((10, 5),))])
    with pytest.raises(ValueError, match="phone_last4"):
        encode_snapshot(1, [TicketRecord(ticket_id=3, category="guest", phone_last4="12a4")])
