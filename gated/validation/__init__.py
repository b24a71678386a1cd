"""The pure core: token codec, key ring, entitlement cache, policy, decide().

No I/O, no clock reads, no globals: every function takes the time it needs.
"""

from gated.validation.cache import (
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
from gated.validation.keyring import KeyRing
from gated.validation.policy import Attendee, Decision, Direction, Lane, Mode, Policy, Purpose, Signal, Usage, Validator
from gated.validation.token import CodeKind, Reason

__all__ = [
    "Attendee", "CodeKind", "Decision", "Delta", "Direction", "EntitlementCache", "KeyRing", "Lane", "Mode", "Purpose",
    "Policy", "Reason", "Reissue", "SetBenefit", "SetState", "SetUsage", "SetZone", "Signal", "TicketRecord",
    "TicketState", "Upsert", "Usage", "Validator", "encode_snapshot",
]
