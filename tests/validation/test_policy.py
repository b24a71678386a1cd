"""decide() through a day at the door: every reason, in the contract's names."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gated.validation import (
    Delta,
    Direction,
    EntitlementCache,
    KeyRing,
    Lane,
    Mode,
    Policy,
    Reason,
    Reissue,
    SetState,
    TicketRecord,
    TicketState,
    Validator,
    encode_snapshot,
)
from gated.validation.token import manual_code, mint_dynamic, mint_static

KEY = bytes(range(32))
DAY1 = 1_763_000_000
NOW = DAY1 + 3600
HALL = Lane("north-in-1", "hall-a")
HALL_OUT = Lane("north-out-1", "hall-a", Direction.OUT)
STAFF_LANE = Lane("staff-in", "hall-a", categories=frozenset({"staff"}))
DESK = Lane("desk-1", "hall-a", mode=Mode.HANDHELD)

GUEST = TicketRecord(ticket_id=1, category="guest", zones=("hall-a",), windows=((DAY1, DAY1 + 86400),))
MEDIA = TicketRecord(ticket_id=2, category="media", zones=("hall-a", "press"), name="Li Wei", company="Daily News",
                     phone_last4="8812", benefits=(("lunch_day1", 1),))
STAFF = TicketRecord(ticket_id=3, category="staff", zones=("hall-a", "backstage"))
ONE_DAY = TicketRecord(ticket_id=4, category="guest", zones=("hall-a",), max_entries=1)
PRESS_ONLY = TicketRecord(ticket_id=5, category="media", zones=("press",))
EXHIBITOR = TicketRecord(ticket_id=6, category="exhibitor", zones=("hall-a",))


@pytest.fixture
def gate():
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [GUEST, MEDIA, STAFF, ONE_DAY, PRESS_ONLY, EXHIBITOR]))
    return Validator(KeyRing({1: KEY}), cache, Policy(colors={"guest": "#87CEEB", "media": "#00008B", "staff": "#FF0000", "exhibitor": "#00FF00"}))


def phone(ticket, at=NOW):
    return mint_dynamic(KEY, 1, ticket, at)


def badge(ticket, serial=0):
    return mint_static(KEY, 1, ticket, serial)


def test_admitted_codes_light_the_category_color(gate):
    for ticket, color in ((1, "#87CEEB"), (2, "#00008B"), (3, "#FF0000"), (6, "#00FF00")):
        d = gate.decide(phone(ticket), HALL, NOW)
        assert (d.reason, d.ticket_id, d.signal.color, d.signal.pattern, d.signal.buzzer) == (Reason.OK, ticket, color, "admit", "ok")
    assert gate.decide(badge(1), Lane("b", "hall-a"), NOW).kind == "static"


def test_denials_blink_and_buzz(gate):
    d = gate.decide("GT1:NOPE", HALL, NOW)
    assert (d.reason, d.ticket_id, d.signal.pattern, d.signal.buzzer) == (Reason.BAD_FORMAT, None, "deny", "deny")


def test_format_key_signature_and_time(gate):
    assert gate.decide(mint_dynamic(bytes(32), 1, 1, NOW), HALL, NOW).reason is Reason.BAD_SIGNATURE
    assert gate.decide(mint_dynamic(KEY, 2, 1, NOW), HALL, NOW).reason is Reason.UNKNOWN_KEY
    assert gate.decide(phone(1, NOW - 120), HALL, NOW).reason is Reason.CODE_EXPIRED
    assert gate.decide(phone(1, NOW + 120), HALL, NOW).reason is Reason.CODE_NOT_YET_VALID


def test_unknown_revoked_and_superseded(gate):
    assert gate.decide(phone(999), HALL, NOW).reason is Reason.UNKNOWN_TICKET
    gate.cache.apply(Delta(1, 2, (SetState(2, TicketState.REVOKED), Reissue(3, 1))))
    assert gate.decide(phone(2), HALL, NOW).reason is Reason.REVOKED
    assert gate.decide(badge(3, 0), HALL, NOW).reason is Reason.SUPERSEDED_BADGE
    assert gate.decide(badge(3, 1), Lane("x", "hall-a"), NOW).reason is Reason.OK


def test_validity_windows(gate):
    assert gate.decide(phone(1, DAY1 - 60), HALL, DAY1 - 60).reason is Reason.OUTSIDE_VALIDITY
    assert gate.decide(phone(1, DAY1 + 86400), Lane("l2", "hall-a"), DAY1 + 86400).reason is Reason.OUTSIDE_VALIDITY
    assert gate.decide(phone(1, DAY1), Lane("l3", "hall-a"), DAY1).reason is Reason.OK


def test_wrong_zone_and_lane_categories(gate):
    assert gate.decide(phone(5), HALL, NOW).reason is Reason.WRONG_ZONE
    assert gate.decide(phone(1), STAFF_LANE, NOW).reason is Reason.WRONG_ZONE
    assert gate.decide(phone(3), STAFF_LANE, NOW + 5).reason is Reason.OK


def test_entry_counts_only_when_committed_then_anti_passback(gate):
    first = gate.decide(phone(1), HALL, NOW)
    assert first.admitted
    # not yet through the turnstile: a second lane still admits
    other = Lane("north-in-2", "hall-a")
    assert gate.decide(phone(1), other, NOW + 1).admitted
    usage = gate.commit(first)
    assert usage.inside == ("hall-a",) and usage.entries_used == 1
    assert gate.decide(phone(1), other, NOW + 10).reason is Reason.ALREADY_INSIDE
    # leaving clears it; coming back in is fine
    out = gate.decide(phone(1), HALL_OUT, NOW + 20)
    assert out.admitted
    assert gate.commit(out).inside == ()
    assert gate.decide(phone(1, NOW + 40), other, NOW + 40).admitted


def test_an_entry_on_its_way_through_holds_the_ticket_until_counted_or_released(gate):
    first = gate.decide(badge(4), HALL, NOW)  # single-entry ticket, turnstile opens
    gate.reserve(first)
    other = Lane("north-in-2", "hall-a")
    assert gate.decide(badge(4), other, NOW + 1).reason is Reason.ALREADY_INSIDE  # a friend with a copy
    gate.release(first)  # nobody walked through
    again = gate.decide(badge(4), Lane("north-in-3", "hall-a"), NOW + 10)
    assert again.admitted
    gate.reserve(again)
    gate.commit(again)  # walked through: counted, no longer reserved
    assert gate.decide(badge(4), Lane("north-in-4", "hall-a"), NOW + 20).reason is Reason.ALREADY_INSIDE
    gate.commit(gate.decide(badge(4), HALL_OUT, NOW + 30))
    assert gate.decide(badge(4), Lane("north-in-5", "hall-a"), NOW + 40).reason is Reason.ENTRIES_EXHAUSTED


def test_entries_exhausted(gate):
    d = gate.decide(badge(4), HALL, NOW)
    gate.commit(d)
    gate.commit(gate.decide(badge(4), HALL_OUT, NOW + 5))
    assert gate.decide(badge(4), HALL, NOW + 60).reason is Reason.ENTRIES_EXHAUSTED


def test_zone_full():
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [GUEST, STAFF, EXHIBITOR], {"hall-a": 2}))
    gate = Validator(KeyRing({1: KEY}), cache)
    gate.commit(gate.decide(phone(1), HALL, NOW))
    gate.commit(gate.decide(phone(3), Lane("b", "hall-a"), NOW))
    assert gate.decide(phone(6), Lane("c", "hall-a"), NOW).reason is Reason.ZONE_FULL
    gate.commit(gate.decide(phone(1), HALL_OUT, NOW + 1))
    assert gate.decide(phone(6), Lane("d", "hall-a"), NOW + 2).admitted


def test_the_gates_own_zone_capacity_survives_a_registry_snapshot():
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [GUEST, STAFF, EXHIBITOR], {"hall-a": 100}))
    gate = Validator(KeyRing({1: KEY}), cache, Policy(zone_capacity={"hall-a": 1}))
    gate.commit(gate.decide(phone(1), HALL, NOW))
    cache.load_snapshot(cache.to_snapshot())  # the registry sends a fresh snapshot: its capacity, not ours
    assert cache.zone_capacity("hall-a") == 100
    assert gate.decide(phone(3), Lane("b", "hall-a"), NOW).reason is Reason.ZONE_FULL


def test_exits_never_refuse_a_genuine_ticket(gate):
    gate.cache.apply(Delta(1, 2, (SetState(1, TicketState.REVOKED), Reissue(3, 4))))
    late = DAY1 + 2 * 86400
    assert gate.decide(phone(1, late), HALL_OUT, late).admitted  # revoked and out of its window
    assert gate.decide(badge(3, 0), Lane("o2", "hall-a", Direction.OUT), late).admitted  # old badge
    assert gate.decide(phone(999, late), Lane("o3", "hall-a", Direction.OUT), late).reason is Reason.UNKNOWN_TICKET


def test_debounce_same_code_same_lane(gate):
    code = phone(1)
    first = gate.decide(code, HALL, NOW)
    again = gate.decide(code + "\r\n", HALL, NOW + 0.5)
    assert again.repeat and again.reason is Reason.OK and not first.repeat
    assert gate.commit(again) is None  # a repeat is never counted twice
    assert not gate.decide(code, Lane("other", "hall-a"), NOW + 0.6).repeat
    assert not gate.decide(code, HALL, NOW + 0.5 + 2.5).repeat


def test_rate_limit_per_lane():
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [GUEST]))
    gate = Validator(KeyRing({1: KEY}), cache, Policy(rate_burst=3, rate_per_s=1.0))
    reasons = [gate.decide(f"junk {i}", HALL, NOW).reason for i in range(5)]
    assert reasons == [Reason.BAD_FORMAT] * 3 + [Reason.RATE_LIMITED] * 2
    assert gate.decide(phone(1), Lane("other", "hall-a"), NOW).admitted
    assert gate.decide(phone(1), HALL, NOW + 1.0).admitted  # one token back after a second


def test_clock_unsynced(gate):
    d = gate.decide(phone(1), HALL, NOW, clock_trusted=False)
    assert (d.reason, d.ticket_id) == (Reason.CLOCK_UNSYNCED, 1)
    assert gate.decide(badge(1), Lane("b", "hall-a"), NOW, clock_trusted=False).reason is Reason.CLOCK_UNSYNCED  # has windows
    assert gate.decide(badge(3), Lane("c", "hall-a"), NOW, clock_trusted=False).admitted  # no windows: no clock needed
    assert gate.decide(mint_dynamic(bytes(32), 1, 1, NOW), Lane("d", "hall-a"), NOW, clock_trusted=False).reason is Reason.BAD_SIGNATURE
    lenient = Validator(gate.keyring, gate.cache, Policy(admit_static_when_unsynced=True))
    assert lenient.decide(badge(1), HALL, NOW, clock_trusted=False).admitted


def test_a_stale_cache_decides_as_the_venue_chose(gate):
    """The registry has not confirmed the cache for too long: "admit" decides from it as is,
    "deny_static" refuses the codes that never expire, "deny" every entry; leaving stays free."""
    assert gate.decide(phone(1), HALL, NOW, cache_stale=True).admitted  # the default: admit
    static_only = Validator(gate.keyring, gate.cache, Policy(when_stale="deny_static"))
    assert static_only.decide(phone(1), Lane("s1", "hall-a"), NOW, cache_stale=True).admitted  # a phone's code expires
    d = static_only.decide(badge(1), Lane("s2", "hall-a"), NOW, cache_stale=True)
    assert (d.reason, d.ticket_id, d.signal.pattern) == (Reason.CACHE_STALE, 1, "deny")
    assert static_only.decide_ticket(1, DESK, NOW, cache_stale=True).reason is Reason.CACHE_STALE  # picked by an operator
    assert static_only.decide(badge(1), Lane("s3", "hall-a"), NOW, cache_stale=False).admitted  # confirmed again
    deny = Validator(gate.keyring, gate.cache, Policy(when_stale="deny"))
    assert deny.decide(phone(1), Lane("d1", "hall-a"), NOW, cache_stale=True).reason is Reason.CACHE_STALE
    assert deny.decide(badge(2), DESK, NOW, benefit="lunch_day1", cache_stale=True).reason is Reason.CACHE_STALE
    assert deny.decide_manual(2, manual_code(KEY, 2, NOW), Lane("d2", "hall-a", mode=Mode.HANDHELD), NOW,
                              cache_stale=True).reason is Reason.CACHE_STALE
    assert deny.decide(phone(1, NOW + 10), HALL_OUT, NOW + 10, cache_stale=True).admitted  # leaving is never refused
    assert deny.decide("GT1:NOPE", Lane("d3", "hall-a"), NOW, cache_stale=True).reason is Reason.BAD_FORMAT  # forged stays forged
    assert deny.decide(phone(999), Lane("d4", "hall-a"), NOW, cache_stale=True).reason is Reason.UNKNOWN_TICKET
    with pytest.raises(ValueError):
        Validator(gate.keyring, gate.cache, Policy(when_stale="sometimes"))


def test_handheld_shows_the_attendee_and_redeems_benefits(gate):
    d = gate.decide(badge(2), DESK, NOW, benefit="lunch_day1")
    assert d.admitted and d.attendee.name == "Li Wei" and d.attendee.company == "Daily News"
    assert d.attendee.benefits == (("lunch_day1", 1),)
    assert gate.commit(d).benefit_remaining == 0
    assert gate.decide(badge(2), Lane("desk-2", "hall-a", mode=Mode.HANDHELD), NOW + 1, benefit="lunch_day1").reason is Reason.BENEFIT_EXHAUSTED
    assert gate.decide(badge(2), Lane("desk-3", "hall-a", mode=Mode.HANDHELD), NOW + 1, benefit="dinner").reason is Reason.NO_BENEFIT
    assert gate.decide(badge(1), HALL, NOW).attendee is None  # turnstiles show no personal data


def test_the_registry_settles_a_redemption_the_cache_allows(gate):
    """The cache says a lunch is left; the registry (another unit took it) or the offline policy decides."""
    allowed = gate.decide(badge(2), DESK, NOW, benefit="lunch_day1")
    taken_elsewhere = gate.settle_redemption(allowed, Reason.BENEFIT_EXHAUSTED, offline_local=True)
    assert taken_elsewhere.reason is Reason.BENEFIT_EXHAUSTED and taken_elsewhere.signal.pattern == "deny"
    assert gate.decide(badge(2), DESK, NOW + 0.5, benefit="lunch_day1") == taken_elsewhere._replace(repeat=True, at=NOW + 0.5)
    offline = gate.decide(badge(2), Lane("desk-4", "hall-a", mode=Mode.HANDHELD), NOW, benefit="lunch_day1")
    assert gate.settle_redemption(offline, None, offline_local=False).reason is Reason.REGISTRY_UNREACHABLE
    assert gate.settle_redemption(offline, None, offline_local=True) is offline
    assert gate.settle_redemption(offline, Reason.OK, offline_local=False) is offline
    refused = gate.decide(badge(2), Lane("desk-5", "hall-a", mode=Mode.HANDHELD), NOW, benefit="dinner")
    assert gate.settle_redemption(refused, Reason.OK, offline_local=True) is refused  # the cache's refusal stands
    assert gate.cache.get(2).benefits == (("lunch_day1", 1),)  # settling takes nothing: commit() does


def test_manual_fallback(gate):
    d = gate.decide_manual(2, manual_code(KEY, 2, NOW), DESK, NOW)
    assert (d.reason, d.ticket_id, d.kind) == (Reason.OK, 2, "manual")
    assert gate.decide_manual(2, "00000000", Lane("k2", "hall-a"), NOW).reason is Reason.BAD_SIGNATURE
    assert gate.decide_manual(2, manual_code(KEY, 2, NOW), Lane("k3", "hall-a"), NOW, clock_trusted=False).reason is Reason.CLOCK_UNSYNCED
    assert gate.decide("", Lane("k2", "hall-a"), NOW + 0.1).reason is Reason.BAD_FORMAT  # not a repeat of the typed code


def test_every_reason_is_reachable_by_these_scenarios():
    """The contract lists 20 reasons; this file exercises each by name."""
    source = open(__file__, encoding="utf-8").read()
    assert all(f"Reason.{r.name}" in source for r in Reason)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))), st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=2**40))
@settings(max_examples=300)
def test_decide_never_raises(text, now):
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [GUEST]))
    gate = Validator(KeyRing({1: KEY}), cache)
    assert gate.decide(text, HALL, now).reason in set(Reason)
    assert gate.decide("x" * 10_000, HALL, now).reason in (Reason.BAD_FORMAT, Reason.RATE_LIMITED)
