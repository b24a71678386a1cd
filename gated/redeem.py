"""A handheld lane's redemption: the registry decides while it can be asked.

A benefit (a lunch, a dinner, a hotel night) must not go below zero across
units, and each unit's cache only knows what the registry last told it. So
when `decide()` on this gate's cache allows a redemption, the lane asks the
registry (`Redeem` on the contract: checked and taken in one transaction
there, idempotent by the redemption id) before it journals its decision,
and the answer is the decision:

    registry answers ok                 -> ok (the count left is the registry's)
    registry answers a refusal          -> that reason: benefit_exhausted,
                                           no_benefit, revoked, unknown_ticket
    no answer within REDEEM_DEADLINE_S  -> the lane's `offline_redemption`:
    (not connected, timeout, an error)     "local"  ok from this cache; the registry
                                                    counts it when the record arrives
                                                    and reports an overdraw
                                           "refuse" registry_unreachable

The default comes from `[gate] offline_policy`: strict refuses, lenient
redeems locally. Every redemption the cache allows gets a fresh random
`redemption_id`, sent with the request and written in the decision's and the
"redemption" record's payloads, so the registry pairs the journal record
with its grant and never takes the benefit twice; a request that timed out
here but was granted there is paired the same way when this unit redeemed
locally. (A grant whose answer came too late to a unit that then refused
is given back by the registry when that refusal arrives: see
`gated.registry.redeem`, "Late grants".)

The operator waits for the answer: the deadline is short, and a unit that
knows it is offline does not wait at all.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gated.validation import Decision, Validator
from gated.validation.token import Reason

log = structlog.get_logger("gated.redeem")

REDEEM_DEADLINE_S = 1.0


@dataclass(frozen=True, slots=True)
class RedeemAsk:
    """What the lane asks the registry: take one `benefit` of `ticket_id`."""

    redemption_id: str
    ticket_id: int
    benefit: str
    lane: str
    at: float


@dataclass(frozen=True, slots=True)
class RedeemAnswer:
    """The registry's answer: ok, or the reason it refused; what is left there."""

    reason: Reason
    remaining: int
    replayed: bool = False
    version: int = 0  # a grant: the entitlement version whose delta carries it


#: The registry behind the uplink: None when it gave no answer (offline, timeout, error).
Redeemer = Callable[[RedeemAsk], Awaitable[RedeemAnswer | None]]


@dataclass(frozen=True, slots=True)
class Redemption:
    """How a redemption was decided, for the journal records."""

    redemption_id: str
    authority: str  # "registry" (its answer decided) | "local" (offline, this cache) | "none" (offline, refused)
    registry_remaining: int | None  # what the registry has left, when it answered
    registry_version: int = 0  # a grant: the entitlement version whose delta carries it

    def payload(self) -> dict:
        fields = {"redemption_id": self.redemption_id, "authority": self.authority}
        if self.registry_remaining is not None:
            fields["registry_remaining"] = self.registry_remaining
        return fields


def new_redemption_id() -> str:
    return secrets.token_hex(16)


async def settle(decision: Decision, validator: Validator, redeem: Redeemer | None, *, offline_local: bool,
                 deadline_s: float = REDEEM_DEADLINE_S) -> tuple[Decision, Redemption | None]:
    """The final decision on `decision` (a redemption this cache allowed), and how it was made.

    Anything else (an entry, a refusal, a repeat) comes back unchanged, with None."""
    if decision.reason is not Reason.OK or decision.benefit is None or decision.repeat or decision.ticket_id is None:
        return decision, None
    rid = new_redemption_id()
    answer = None
    if redeem is not None:
        ask = RedeemAsk(rid, decision.ticket_id, decision.benefit, decision.lane_id, decision.at)
        try:
            answer = await asyncio.wait_for(redeem(ask), deadline_s)
        except TimeoutError:
            log.warning("redeem_timeout", lane=decision.lane_id, ticket_id=decision.ticket_id, benefit=decision.benefit,
                        deadline_s=deadline_s, offline_redemption="local" if offline_local else "refuse")
    settled = validator.settle_redemption(decision, None if answer is None else answer.reason, offline_local=offline_local)
    if answer is not None:
        return settled, Redemption(rid, "registry", answer.remaining, answer.version)
    return settled, Redemption(rid, "local" if offline_local else "none", None)
