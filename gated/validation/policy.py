"""Policy: from the text a scanner read, the lane and the time, to a `Decision`.

Owns the order of checks, per-lane debounce and rate limiting, what the lane
should show, and committing an admitted entry or redemption to the cache.

The rules, in the order they are applied (the first that fails is the reason):

    repeat        same code at the same lane within `debounce_s` of its last
                  read: not a new decision (the previous one, `repeat=True`)
    rate_limited  the lane's token bucket (`rate_burst`, `rate_per_s`) is empty
    1-4           token format checks (`token.verify_code`): bad_format,
                  unknown_key, bad_signature; then, for dynamic, Wallet and
                  typed codes, clock_unsynced when the gate does not trust
                  its clock, else code_expired / code_not_yet_valid; a Wallet
                  code older than the newest one this gate has seen for its
                  ticket is code_expired too
    unknown_ticket
    exits         stop here (an `out` lane with no benefit named): leaving is
                  never refused to the holder of a genuine ticket
    cache_stale   `cache_stale` (the registry has not confirmed this cache for
                  [uplink] stale_after_s) and `when_stale` says deny: "deny"
                  every entry and redemption, "deny_static" those of codes
                  that never expire (printed badges, operator-identified
                  tickets); "admit" (the default) decides from the cache as is
    revoked, superseded_badge (static code, other serial)
    outside_validity  (clock_unsynced instead if the ticket has windows and
                  the clock is not trusted, unless `admit_static_when_unsynced`)
    redemption    (a benefit named, handheld) no_benefit, benefit_exhausted,
                  and nothing after
    wrong_zone    lane serves other categories, or the ticket lacks the zone
    check lanes   stop here (`Purpose.CHECK`, no benefit named): the ticket is
                  genuine, valid now and for this zone; nobody enters, so
                  neither anti-passback, entries left nor capacity apply
    already_inside  (anti-passback) inside this zone already
    entries_exhausted, zone_full (capacity: the policy's for the zone, else the
                  registry's)

A redemption this cache allows is not final while the registry can be asked:
the lane asks it (the registry is the authority for benefits across units)
and `settle_redemption()` turns its answer into the decision: its refusal
(no_benefit, benefit_exhausted, revoked, unknown_ticket) wins; with no answer
(offline, or past the deadline) the lane's offline policy says: "local"
keeps this cache's ok, "refuse" answers registry_unreachable.

A check lane (a meal hall's handheld: staff scan a badge to see it and
redeem its benefits) answers with `Decision.check` set: its `ok` says "valid
here", never "entered". `commit()` counts nothing for it and `reserve()`
holds nothing; only a benefit redeemed there is taken.

Deciding changes nothing but the lane's debounce and rate memory: an
admitted entry is counted only by `commit()`, which a turnstile calls when its
passage sensor sees the person go through. Between the two, a turnstile
`reserve()`s the entry: the ticket then answers `already_inside` at every
lane (a single-entry ticket cannot be let in twice while its holder is still
in the turnstile), until `commit()` counts it or `release()` says nobody
walked through.

Nothing here reads a clock or does I/O; `now` is unix time as the gate
believes it, `clock_trusted` says whether it believes it, `cache_stale`
whether the registry confirmed the cache recently enough (the gate's
`gated.gate.freshness` says).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping, NamedTuple

from gated.validation.cache import EntitlementCache, TicketState
from gated.validation.keyring import KeyRing
from gated.validation.token import (
    STEP_SECONDS,
    CodeKind,
    Reason,
    Verified,
    verify_code,
    verify_manual,
)

# The seed's lane colours; the config's [policy.colors] adds to and overrides them.
DEFAULT_COLORS: Mapping[str, str] = MappingProxyType({
    "guest": "#87CEEB",  # light blue
    "media": "#00008B",  # dark blue
    "staff": "#FF0000",  # red
})


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Mode(StrEnum):
    TURNSTILE = "turnstile"
    HANDHELD = "handheld"


class Purpose(StrEnum):
    """What an `ok` at a lane means: an entry (or exit) counted, or only a check."""

    ENTRY = "entry"
    CHECK = "check"  # attended only: shows validity and benefits, never counts an entry


@dataclass(frozen=True, slots=True)
class Lane:
    """What `decide()` needs to know about the lane a code was read at."""

    id: str
    zone: str
    direction: Direction = Direction.IN
    mode: Mode = Mode.TURNSTILE
    categories: frozenset[str] | None = None  # None: serves every category
    purpose: Purpose = Purpose.ENTRY


@dataclass(frozen=True)
class Policy:
    skew_steps: int = 1
    debounce_s: float = 2.0
    rate_burst: int = 10
    rate_per_s: float = 5.0
    anti_passback: bool = True
    admit_static_when_unsynced: bool = False
    colors: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLORS))
    # This gate's zone capacities (0 = unlimited). They win over the registry's
    # (which come and go with snapshots); zones not named here use the registry's.
    zone_capacity: Mapping[str, int] = field(default_factory=dict)
    default_color: str = "#FFFFFF"
    deny_color: str = "#FF0000"
    when_stale: str = "admit"  # "admit" | "deny_static" | "deny": see cache_stale above


class Signal(NamedTuple):
    """What the lane shows: a light color and pattern, a buzzer pattern."""

    color: str  # "#RRGGBB"
    pattern: str  # "admit" (steady) or "deny" (blinking)
    buzzer: str  # "ok" or "deny"


class Attendee(NamedTuple):
    """Shown on the attended handheld's screen only."""

    name: str
    company: str
    phone_last4: str
    ticket_type: str
    benefits: tuple[tuple[str, int], ...]
    entries_used: int
    max_entries: int


class Decision(NamedTuple):
    reason: Reason
    lane_id: str
    at: float
    ticket_id: int | None
    category: str | None
    kind: CodeKind | None
    signal: Signal
    zone: str
    direction: Direction
    benefit: str | None = None
    repeat: bool = False
    attendee: Attendee | None = None
    check: bool = False  # decided at a check lane, no benefit named: an ok counts nothing

    @property
    def admitted(self) -> bool:
        return self.reason is Reason.OK


class Usage(NamedTuple):
    """What `commit()` changed: journaled and sent to the registry."""

    ticket_id: int
    zone: str
    direction: Direction
    entries_used: int
    inside: tuple[str, ...]
    benefit: str | None
    benefit_remaining: int | None


# The hot path reads these as module globals: one lookup, not a class attribute each time.
_OK = Reason.OK
_IN = Direction.IN
_HANDHELD = Mode.HANDHELD
_CHECK = Purpose.CHECK
_STATIC = CodeKind.STATIC
_WALLET = CodeKind.WALLET
_ACTIVE = TicketState.ACTIVE
_new_tuple = tuple.__new__


def _decision(*fields) -> Decision:
    """Decision(...) without NamedTuple's 13-argument Python frame (fields in declared order)."""
    return _new_tuple(Decision, fields)


class _LaneMemory:
    __slots__ = ("last_text", "last_at", "last_decision", "tokens", "tokens_at")

    def __init__(self, burst: int, now: float):
        self.last_text: str | None = None
        self.last_at = float("-inf")
        self.last_decision: Decision | None = None
        self.tokens = float(burst)
        self.tokens_at = now


_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"

WHEN_STALE = ("admit", "deny_static", "deny")
# the code kinds each when_stale refuses on a stale cache (None: a ticket an operator identified)
_STALE_DENIES: Mapping[str, frozenset] = MappingProxyType({
    "admit": frozenset(),
    "deny_static": frozenset({CodeKind.STATIC, None}),
    "deny": frozenset({CodeKind.DYNAMIC, CodeKind.STATIC, CodeKind.MANUAL, CodeKind.WALLET, None}),
})


class Validator:
    """Decides for every lane of one gate, from one key ring and one cache."""

    def __init__(self, keyring: KeyRing, cache: EntitlementCache, policy: Policy | None = None):
        self.keyring = keyring
        self.cache = cache
        self.policy = policy or Policy()
        self._lanes: dict[str, _LaneMemory] = {}
        self._reserved: dict[int, int] = {}  # ticket id -> entries admitted, passage not yet seen
        self._wallet_newest: dict[int, int] = {}  # ticket id -> newest genuine Wallet code's step
        self._wallet_prune_at = 1024
        p = self.policy
        self._deny = Signal(p.deny_color, "deny", "deny")
        self._admit = {cat: Signal(color, "admit", "ok") for cat, color in p.colors.items()}
        self._admit_default = Signal(p.default_color, "admit", "ok")
        self._capacity = dict(p.zone_capacity)
        # the policy is frozen: its numbers are read once here, not on every scan
        self._debounce_s, self._skew_steps = p.debounce_s, p.skew_steps
        self._rate_burst, self._rate_per_s = float(p.rate_burst), p.rate_per_s
        self._anti_passback = p.anti_passback
        if p.when_stale not in WHEN_STALE:
            raise ValueError(f"when_stale: one of {', '.join(WHEN_STALE)}, got {p.when_stale!r}")
        self._stale_denies = _STALE_DENIES[p.when_stale]

    # ---- deciding ----

    def decide(
        self,
        code: str,
        lane: Lane,
        now: float,
        *,
        clock_trusted: bool = True,
        benefit: str | None = None,
        cache_stale: bool = False,
    ) -> Decision:
        """Decide on a scanned code. Never raises for any `code`."""
        if not isinstance(code, str):
            code = ""
        key = code.strip(_ASCII_WHITESPACE).upper() if len(code) <= 128 else code[:128]
        mem = self._lanes.get(lane.id) or self._memory(lane, now)
        last = mem.last_decision
        if last is not None and key == mem.last_text and now - mem.last_at < self._debounce_s:
            mem.last_at = now
            return last._replace(repeat=True, at=now)
        if not self._take_token(mem, now):
            verified = Verified(Reason.RATE_LIMITED)
        elif not clock_trusted:
            verified = verify_code(code, self.keyring.keys, now, self._skew_steps)
            if verified.kind is CodeKind.DYNAMIC or verified.kind is _WALLET:
                verified = verified._replace(reason=Reason.CLOCK_UNSYNCED)
        else:
            verified = verify_code(code, self.keyring.keys, now, self._skew_steps)
            if verified.kind is _WALLET and verified.reason is _OK:
                verified = self._only_the_newest(verified, now)
        decision = self._entitle(verified, lane, now, clock_trusted, benefit, cache_stale)
        mem.last_text, mem.last_at, mem.last_decision = key, now, decision
        return decision

    def decide_manual(
        self,
        ticket_id: int,
        digits: str,
        lane: Lane,
        now: float,
        *,
        clock_trusted: bool = True,
        benefit: str | None = None,
        cache_stale: bool = False,
    ) -> Decision:
        """Decide on a typed ticket id + 8-digit code (the keypad fallback)."""
        mem = self._memory(lane, now)
        if not self._take_token(mem, now):
            verified = Verified(Reason.RATE_LIMITED)
        else:
            verified = verify_manual(ticket_id, digits, self.keyring.keys, now, self._skew_steps)
            if verified.reason is Reason.OK and not clock_trusted:
                verified = verified._replace(reason=Reason.CLOCK_UNSYNCED)
        decision = self._entitle(verified, lane, now, clock_trusted, benefit, cache_stale)
        mem.last_text, mem.last_at, mem.last_decision = None, now, decision
        return decision

    def decide_ticket(
        self,
        ticket_id: int,
        lane: Lane,
        now: float,
        *,
        clock_trusted: bool = True,
        benefit: str | None = None,
        cache_stale: bool = False,
    ) -> Decision:
        """Decide for a ticket an operator identified without a code: a benefit redeemed
        for the holder just scanned, or the holder picked after a phone-digit search.

        Attended lanes only (a `ValueError` otherwise: nobody at a turnstile vouches for
        who is there). The entitlement checks are those of a static badge of the
        current serial; the lane journals how the ticket was identified."""
        if lane.mode is not _HANDHELD:
            raise ValueError(f"lane {lane.id}: a ticket is decided without a code on attended lanes only")
        mem = self._memory(lane, now)
        if not self._take_token(mem, now):
            verified = Verified(Reason.RATE_LIMITED)
        else:
            verified = Verified(_OK, None, None, ticket_id)
        decision = self._entitle(verified, lane, now, clock_trusted, benefit, cache_stale)
        mem.last_text, mem.last_at, mem.last_decision = None, now, decision
        return decision

    def _only_the_newest(self, v: Verified, now: float) -> Verified:
        """Google asks readers of rotating barcodes to accept only a ticket's most
        recent code: once a Wallet code of step s was genuine here, every code of
        an earlier step is a screenshot, `code_expired`, even inside the window.

        The memory is this gate's (a reboot forgets it; the skew window still
        bounds a screenshot's life), and it forgets steps that have left the
        window, so it holds only the Wallet tickets seen in the last minutes."""
        newest = self._wallet_newest
        seen = newest.get(v.ticket_id)
        if seen is not None and v.step < seen:
            return v._replace(reason=Reason.CODE_EXPIRED)
        if len(newest) >= self._wallet_prune_at:
            oldest = int(now // STEP_SECONDS) - self._skew_steps
            self._wallet_newest = newest = {t: s for t, s in newest.items() if s >= oldest}
            self._wallet_prune_at = max(1024, 2 * len(newest))
        newest[v.ticket_id] = v.step
        return v

    def _memory(self, lane: Lane, now: float) -> _LaneMemory:
        mem = self._lanes.get(lane.id)
        if mem is None:
            mem = self._lanes[lane.id] = _LaneMemory(self.policy.rate_burst, now)
        return mem

    def _take_token(self, mem: _LaneMemory, now: float) -> bool:
        elapsed = now - mem.tokens_at
        if elapsed > 0:
            mem.tokens = min(self._rate_burst, mem.tokens + elapsed * self._rate_per_s)
        mem.tokens_at = now
        if mem.tokens < 1.0:
            return False
        mem.tokens -= 1.0
        return True

    def _deny_with(self, reason: Reason, lane: Lane, now: float, v: Verified, category: str | None = None, benefit: str | None = None, attendee: Attendee | None = None) -> Decision:
        check = benefit is None and lane.purpose is _CHECK
        return _decision(reason, lane.id, now, v.ticket_id, category, v.kind, self._deny, lane.zone, lane.direction, benefit, False, attendee, check)

    def _entitle(self, v: Verified, lane: Lane, now: float, clock_trusted: bool, benefit: str | None,
                 cache_stale: bool = False) -> Decision:
        """Step 5 of the verifier order: the entitlement checks against the cache."""
        if v.reason is not _OK:
            return self._deny_with(v.reason, lane, now, v)
        cache = self.cache
        table = cache.table
        row = table.row_of(v.ticket_id)
        if row < 0:
            return self._deny_with(Reason.UNKNOWN_TICKET, lane, now, v)
        profile = table.profiles[table.profile[row]]
        category = profile.category
        attendee = self._attendee(row, profile) if lane.mode is _HANDHELD else None
        if lane.direction is _IN or benefit is not None:
            if cache_stale and v.kind in self._stale_denies:
                return self._deny_with(Reason.CACHE_STALE, lane, now, v, category, benefit, attendee)
            if table.state[row] != _ACTIVE:
                return self._deny_with(Reason.REVOKED, lane, now, v, category, benefit, attendee)
            if v.kind is _STATIC and v.serial != table.serial[row]:
                return self._deny_with(Reason.SUPERSEDED_BADGE, lane, now, v, category, benefit, attendee)
            windows = profile.windows
            if windows:
                if not clock_trusted:
                    if not self.policy.admit_static_when_unsynced:
                        return self._deny_with(Reason.CLOCK_UNSYNCED, lane, now, v, category, benefit, attendee)
                else:
                    for start, until in windows:
                        if start <= now < until:
                            break
                    else:
                        return self._deny_with(Reason.OUTSIDE_VALIDITY, lane, now, v, category, benefit, attendee)
            if benefit is not None:
                names = profile.benefit_names
                if benefit not in names:
                    return self._deny_with(Reason.NO_BENEFIT, lane, now, v, category, benefit, attendee)
                if table.ben[table.ben_off[row] + names.index(benefit)] == 0:
                    return self._deny_with(Reason.BENEFIT_EXHAUSTED, lane, now, v, category, benefit, attendee)
            else:
                if lane.categories is not None and category not in lane.categories:
                    return self._deny_with(Reason.WRONG_ZONE, lane, now, v, category, None, attendee)
                zone = lane.zone
                if zone not in profile.zones:
                    return self._deny_with(Reason.WRONG_ZONE, lane, now, v, category, None, attendee)
                if lane.purpose is _CHECK:
                    signal = self._admit.get(category, self._admit_default)
                    return _decision(_OK, lane.id, now, v.ticket_id, category, v.kind, signal, zone, lane.direction, None, False, attendee, True)
                bit = table.zone_bit[zone]
                if self._reserved and v.ticket_id in self._reserved:
                    return self._deny_with(Reason.ALREADY_INSIDE, lane, now, v, category, None, attendee)
                if self._anti_passback and table.inside[row] >> bit & 1:
                    return self._deny_with(Reason.ALREADY_INSIDE, lane, now, v, category, None, attendee)
                if profile.max_entries and table.used[row] >= profile.max_entries:
                    return self._deny_with(Reason.ENTRIES_EXHAUSTED, lane, now, v, category, None, attendee)
                capacity = self._capacity.get(zone)  # as zone_capacity(), inline on the hot path
                if capacity is None:
                    capacity = table.capacity.get(zone, 0)
                if capacity and table.occupancy[bit] >= capacity:
                    return self._deny_with(Reason.ZONE_FULL, lane, now, v, category, None, attendee)
        signal = self._admit.get(category, self._admit_default)
        return _decision(_OK, lane.id, now, v.ticket_id, category, v.kind, signal, lane.zone, lane.direction, benefit, False, attendee, False)

    def limited_entry(self, decision: Decision) -> bool:
        """An admitted entry of a ticket with a limited number of entries: what usage a gate
        may have lost (a journal tail) changes."""
        if decision.reason is not _OK or decision.benefit is not None or decision.direction is not _IN:
            return False
        table = self.cache.table
        row = -1 if decision.ticket_id is None else table.row_of(decision.ticket_id)
        return row >= 0 and table.profiles[table.profile[row]].max_entries > 0

    def decide_again(self, decision: Decision, lane: Lane, clock_trusted: bool = True) -> Decision:
        """The entitlement checks of an admission run again on the cache as it is now (the code was
        verified already), at the decision's own time: for an admission held while the cache caught up
        with the registry. The lane's memory keeps the new answer."""
        if decision.reason is not _OK or decision.ticket_id is None:
            return decision
        table = self.cache.table
        row = table.row_of(decision.ticket_id)
        serial = table.serial[row] if row >= 0 else None
        again = self._entitle(Verified(_OK, decision.kind, None, decision.ticket_id, None, serial), lane, decision.at,
                              clock_trusted, decision.benefit)
        mem = self._lanes.get(decision.lane_id)
        if mem is not None and mem.last_decision is decision:
            mem.last_decision = again
        return again

    def zone_capacity(self, zone: str) -> int:
        """The capacity `zone_full` checks: this gate's policy, else the registry's (0 = unlimited)."""
        capacity = self._capacity.get(zone)
        return self.cache.zone_capacity(zone) if capacity is None else capacity

    def _attendee(self, row: int, profile) -> Attendee:
        table = self.cache.table
        name, company = table.display_text(row)
        phone = table.phone[row]
        off = table.ben_off[row]
        benefits = tuple(zip(profile.benefit_names, table.ben[off : off + len(profile.benefit_names)]))
        return Attendee(name, company, "" if phone == 0xFFFF else f"{phone:04d}", profile.ticket_type, benefits, table.used[row], profile.max_entries)

    # ---- committing ----

    def reserve(self, decision: Decision) -> None:
        """An admitted entry is on its way through a turnstile: hold the ticket until
        `commit()` or `release()`."""
        if decision.reason is _OK and not decision.repeat and not decision.check and decision.ticket_id is not None and decision.direction is _IN and decision.benefit is None:
            self._reserved[decision.ticket_id] = self._reserved.get(decision.ticket_id, 0) + 1

    def release(self, decision: Decision) -> None:
        """Nobody walked through for a reserved entry: the ticket may be used again."""
        count = self._reserved.get(decision.ticket_id, 0) if decision.ticket_id is not None else 0
        if count > 1:
            self._reserved[decision.ticket_id] = count - 1
        elif count == 1:
            del self._reserved[decision.ticket_id]

    def adopt_lane_memory(self, other: "Validator") -> None:
        """Carry debounce, rate and reservations over from the validator this one replaces
        (a config reload must not decide again on a code still held up to a scanner)."""
        self._lanes = other._lanes
        self._reserved = other._reserved

    def settle_redemption(self, decision: Decision, answer: Reason | None, *, offline_local: bool) -> Decision:
        """The decision on a redemption this cache allowed, given the registry's answer
        (None: no answer). A repeat read within the debounce window returns it."""
        if decision.reason is not _OK or decision.benefit is None or decision.repeat:
            return decision
        if answer is None:
            answer = _OK if offline_local else Reason.REGISTRY_UNREACHABLE
        if answer == _OK:
            return decision
        settled = decision._replace(reason=answer, signal=self._deny)
        mem = self._lanes.get(decision.lane_id)
        if mem is not None and mem.last_decision is decision:
            mem.last_decision = settled
        return settled

    def commit(self, decision: Decision) -> Usage | None:
        """Count an admitted decision: an entry, an exit, or a redemption.

        A turnstile calls this when the passage sensor confirms the person
        went through; a handheld when the operator confirms the redemption.
        Returns None (nothing counted) for a denial, a repeat, a check, or a
        ticket that has left the cache since.
        """
        if decision.reason is not Reason.OK or decision.repeat or decision.check or decision.ticket_id is None:
            return None
        if decision.direction is _IN and decision.benefit is None:
            self.release(decision)
        cache = self.cache
        row = cache.row_of(decision.ticket_id)
        if row < 0:
            return None
        remaining = None
        if decision.benefit is not None:
            remaining = cache.redeem(row, decision.benefit)
            if remaining is None:
                return None
        elif decision.direction is Direction.IN:
            cache.count_entry(row, decision.zone)
        else:
            cache.count_exit(row, decision.zone)
        table = cache.table
        return Usage(decision.ticket_id, decision.zone, decision.direction, table.used[row], table.zones_of(table.inside[row]), decision.benefit, remaining)
