"""The typed fallbacks of an attended lane that are not a code: the last four
digits of a phone number, and the operator's pick among the matches.

A search is refused on turnstile lanes (nobody there checks who is in front
of the scanner), limited per unit (`phone_lookups_per_min`, a token bucket on
the lane's monotonic clock) and journaled: a "phone_lookup" record with how
many tickets matched and which (never the digits), or with `refused` when the
limit held. The operator's pick, after checking identity, is decided like a
badge of the current serial (`LaneRunner.decide_identified`, source "phone")
and journaled with the lookup's seq; only a ticket the lookup offered, within
`PICK_WITHIN_S`, can be picked.
"""

from __future__ import annotations

from dataclasses import dataclass

from gated.gate.lane import LaneRunner
from gated.validation import Decision, Mode

PICK_WITHIN_S = 600.0
MAX_MATCHES = 20


class LookupRefused(Exception):
    """A phone search or pick that was not done; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class Match:
    ticket_id: int
    name: str
    company: str
    category: str
    ticket_type: str


@dataclass(frozen=True, slots=True)
class Lookup:
    seq: int  # the phone_lookup record's journal seq: the pick names it
    matches: tuple[Match, ...]


class PhoneSearch:
    def __init__(self, lane: LaneRunner, per_minute: int):
        if lane.spec.mode is not Mode.HANDHELD:
            raise LookupRefused(f"lane {lane.id} is a turnstile: the phone search is for attended lanes only")
        self.lane = lane
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._tokens_at: float | None = None
        self._offered: dict[int, tuple[float, frozenset[int]]] = {}  # lookup seq -> (at, ticket ids)

    def _take_token(self, now: float) -> bool:
        if self._tokens_at is not None:
            self._tokens = min(float(self.per_minute), self._tokens + (now - self._tokens_at) * self.per_minute / 60.0)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def search(self, digits: str) -> Lookup:
        lane, s = self.lane, self.lane.services
        if lane.spec.mode is not Mode.HANDHELD:
            raise LookupRefused("the phone search is for attended lanes only")
        if not (len(digits) == 4 and digits.isascii() and digits.isdigit()):
            raise LookupRefused("type the last 4 digits of the phone number")
        now = s.monotonic()
        if not self._take_token(now):
            await s.journal.append_async("phone_lookup", at=s.clock.now(), lane=lane.id, reason="rate_limited",
                                         payload={"refused": "rate_limited", "per_minute": self.per_minute})
            s.on_record()
            raise LookupRefused(f"too many phone searches: at most {self.per_minute} a minute on this unit; wait a moment")
        records = s.validator.cache.find_by_phone(digits, limit=MAX_MATCHES)
        matches = tuple(Match(r.ticket_id, r.name, r.company, r.category, r.ticket_type) for r in records)
        record = await s.journal.append_async(
            "phone_lookup", at=s.clock.now(), lane=lane.id, reason="ok",
            payload={"matches": len(matches), "ticket_ids": [m.ticket_id for m in matches]},
        )
        s.on_record()
        self._offered = {seq: v for seq, v in self._offered.items() if now - v[0] < PICK_WITHIN_S}
        self._offered[record.seq] = (now, frozenset(m.ticket_id for m in matches))
        return Lookup(record.seq, matches)

    async def pick(self, lookup_seq: int, ticket_id: int) -> Decision:
        """The operator checked identity and picked `ticket_id` from lookup `lookup_seq`."""
        offered = self._offered.get(lookup_seq)
        if offered is None or self.lane.services.monotonic() - offered[0] >= PICK_WITHIN_S:
            raise LookupRefused("that search is too old or unknown: search again")
        if ticket_id not in offered[1]:
            raise LookupRefused("that ticket was not among the matches of this search")
        return await self.lane.decide_identified(ticket_id, source="phone", extra={"lookup_seq": lookup_seq})
