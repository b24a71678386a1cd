from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_DECISION: _ClassVar[EventKind]
    EVENT_KIND_PASSAGE: _ClassVar[EventKind]
    EVENT_KIND_NOT_PASSED: _ClassVar[EventKind]
    EVENT_KIND_UNEXPECTED_PASSAGE: _ClassVar[EventKind]
    EVENT_KIND_REDEMPTION: _ClassVar[EventKind]
    EVENT_KIND_EMERGENCY: _ClassVar[EventKind]
    EVENT_KIND_MANUAL_OPEN: _ClassVar[EventKind]
    EVENT_KIND_BADGE_PRINTED: _ClassVar[EventKind]
    EVENT_KIND_PHONE_LOOKUP: _ClassVar[EventKind]
    EVENT_KIND_BOOT: _ClassVar[EventKind]

class TicketState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TICKET_STATE_UNSPECIFIED: _ClassVar[TicketState]
    TICKET_STATE_ACTIVE: _ClassVar[TicketState]
    TICKET_STATE_REVOKED: _ClassVar[TicketState]

class RedeemOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDEEM_OUTCOME_UNSPECIFIED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_OK: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_NO_BENEFIT: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_BENEFIT_EXHAUSTED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_UNKNOWN_TICKET: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_REVOKED: _ClassVar[RedeemOutcome]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_DECISION: EventKind
EVENT_KIND_PASSAGE: EventKind
EVENT_KIND_NOT_PASSED: EventKind
EVENT_KIND_UNEXPECTED_PASSAGE: EventKind
EVENT_KIND_REDEMPTION: EventKind
EVENT_KIND_EMERGENCY: EventKind
EVENT_KIND_MANUAL_OPEN: EventKind
EVENT_KIND_BADGE_PRINTED: EventKind
EVENT_KIND_PHONE_LOOKUP: EventKind
EVENT_KIND_BOOT: EventKind
TICKET_STATE_UNSPECIFIED: TicketState
TICKET_STATE_ACTIVE: TicketState
TICKET_STATE_REVOKED: TicketState
REDEEM_OUTCOME_UNSPECIFIED: RedeemOutcome
REDEEM_OUTCOME_OK: RedeemOutcome
REDEEM_OUTCOME_NO_BENEFIT: RedeemOutcome
REDEEM_OUTCOME_BENEFIT_EXHAUSTED: RedeemOutcome
REDEEM_OUTCOME_UNKNOWN_TICKET: RedeemOutcome
REDEEM_OUTCOME_REVOKED: RedeemOutcome

class Event(_message.Message):
    __slots__ = ("event_id", "seq", "at", "kind", "lane", "ticket_id", "reason", "decision", "passage", "not_passed", "unexpected_passage", "redemption", "emergency", "manual_open", "badge_printed", "phone_lookup", "boot", "extra_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    NOT_PASSED_FIELD_NUMBER: _ClassVar[int]
    UNEXPECTED_PASSAGE_FIELD_NUMBER: _ClassVar[int]
    REDEMPTION_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    MANUAL_OPEN_FIELD_NUMBER: _ClassVar[int]
    BADGE_PRINTED_FIELD_NUMBER: _ClassVar[int]
    PHONE_LOOKUP_FIELD_NUMBER: _ClassVar[int]
    BOOT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    seq: int
    at: float
    kind: EventKind
    lane: str
    ticket_id: int
    reason: str
    decision: Decision
    passage: Passage
    not_passed: NotPassed
    unexpected_passage: UnexpectedPassage
    redemption: Redemption
    emergency: Emergency
    manual_open: ManualOpen
    badge_printed: BadgePrinted
    phone_lookup: PhoneLookup
    boot: Boot
    extra_json: str
    def __init__(self, event_id: _Optional[str] = ..., seq: _Optional[int] = ..., at: _Optional[float] = ..., kind: _Optional[_Union[EventKind, str]] = ..., lane: _Optional[str] = ..., ticket_id: _Optional[int] = ..., reason: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., passage: _Optional[_Union[Passage, _Mapping]] = ..., not_passed: _Optional[_Union[NotPassed, _Mapping]] = ..., unexpected_passage: _Optional[_Union[UnexpectedPassage, _Mapping]] = ..., redemption: _Optional[_Union[Redemption, _Mapping]] = ..., emergency: _Optional[_Union[Emergency, _Mapping]] = ..., manual_open: _Optional[_Union[ManualOpen, _Mapping]] = ..., badge_printed: _Optional[_Union[BadgePrinted, _Mapping]] = ..., phone_lookup: _Optional[_Union[PhoneLookup, _Mapping]] = ..., boot: _Optional[_Union[Boot, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("code_kind", "category", "zone", "direction", "mode", "source", "length", "truncated", "typed", "identified", "lookup_seq", "benefit", "redemption_id", "authority", "registry_remaining", "purpose")
    CODE_KIND_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TYPED_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIED_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_SEQ_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    REDEMPTION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_REMAINING_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    code_kind: str
    category: str
    zone: str
    direction: str
    mode: str
    source: str
    length: int
    truncated: bool
    typed: bool
    identified: bool
    lookup_seq: int
    benefit: str
    redemption_id: str
    authority: str
    registry_remaining: int
    purpose: str
    def __init__(self, code_kind: _Optional[str] = ..., category: _Optional[str] = ..., zone: _Optional[str] = ..., direction: _Optional[str] = ..., mode: _Optional[str] = ..., source: _Optional[str] = ..., length: _Optional[int] = ..., truncated: _Optional[bool] = ..., typed: _Optional[bool] = ..., identified: _Optional[bool] = ..., lookup_seq: _Optional[int] = ..., benefit: _Optional[str] = ..., redemption_id: _Optional[str] = ..., authority: _Optional[str] = ..., registry_remaining: _Optional[int] = ..., purpose: _Optional[str] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("ticket_id", "zone", "direction", "entries_used", "inside", "confirmed", "counted_locally", "decision_seq", "outcome")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_USED_FIELD_NUMBER: _ClassVar[int]
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    COUNTED_LOCALLY_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    zone: str
    direction: str
    entries_used: int
    inside: _containers.RepeatedScalarFieldContainer[str]
    confirmed: bool
    counted_locally: bool
    decision_seq: int
    outcome: str
    def __init__(self, ticket_id: _Optional[int] = ..., zone: _Optional[str] = ..., direction: _Optional[str] = ..., entries_used: _Optional[int] = ..., inside: _Optional[_Iterable[str]] = ..., confirmed: _Optional[bool] = ..., counted_locally: _Optional[bool] = ..., decision_seq: _Optional[int] = ..., outcome: _Optional[str] = ...) -> None: ...

class Redemption(_message.Message):
    __slots__ = ("ticket_id", "zone", "direction", "benefit", "benefit_remaining", "entries_used", "inside", "confirmed", "counted_locally", "decision_seq", "outcome", "redemption_id", "authority", "registry_remaining")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_REMAINING_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_USED_FIELD_NUMBER: _ClassVar[int]
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    COUNTED_LOCALLY_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REDEMPTION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_REMAINING_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    zone: str
    direction: str
    benefit: str
    benefit_remaining: int
    entries_used: int
    inside: _containers.RepeatedScalarFieldContainer[str]
    confirmed: bool
    counted_locally: bool
    decision_seq: int
    outcome: str
    redemption_id: str
    authority: str
    registry_remaining: int
    def __init__(self, ticket_id: _Optional[int] = ..., zone: _Optional[str] = ..., direction: _Optional[str] = ..., benefit: _Optional[str] = ..., benefit_remaining: _Optional[int] = ..., entries_used: _Optional[int] = ..., inside: _Optional[_Iterable[str]] = ..., confirmed: _Optional[bool] = ..., counted_locally: _Optional[bool] = ..., decision_seq: _Optional[int] = ..., outcome: _Optional[str] = ..., redemption_id: _Optional[str] = ..., authority: _Optional[str] = ..., registry_remaining: _Optional[int] = ...) -> None: ...

class NotPassed(_message.Message):
    __slots__ = ("zone", "direction", "decided_at", "gate_stopping", "decision_seq")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    GATE_STOPPING_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    zone: str
    direction: str
    decided_at: float
    gate_stopping: bool
    decision_seq: int
    def __init__(self, zone: _Optional[str] = ..., direction: _Optional[str] = ..., decided_at: _Optional[float] = ..., gate_stopping: _Optional[bool] = ..., decision_seq: _Optional[int] = ...) -> None: ...

class UnexpectedPassage(_message.Message):
    __slots__ = ("zone",)
    ZONE_FIELD_NUMBER: _ClassVar[int]
    zone: str
    def __init__(self, zone: _Optional[str] = ...) -> None: ...

class Emergency(_message.Message):
    __slots__ = ("active", "source")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    active: bool
    source: str
    def __init__(self, active: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class ManualOpen(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    def __init__(self, source: _Optional[str] = ...) -> None: ...

class BadgePrinted(_message.Message):
    __slots__ = ("serial", "kid", "printer", "size")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    PRINTER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    serial: int
    kid: int
    printer: str
    size: str
    def __init__(self, serial: _Optional[int] = ..., kid: _Optional[int] = ..., printer: _Optional[str] = ..., size: _Optional[str] = ...) -> None: ...

class PhoneLookup(_message.Message):
    __slots__ = ("matches", "ticket_ids", "refused", "per_minute")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    TICKET_IDS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    matches: int
    ticket_ids: _containers.RepeatedScalarFieldContainer[int]
    refused: str
    per_minute: int
    def __init__(self, matches: _Optional[int] = ..., ticket_ids: _Optional[_Iterable[int]] = ..., refused: _Optional[str] = ..., per_minute: _Optional[int] = ...) -> None: ...

class Boot(_message.Message):
    __slots__ = ("after", "catchup_wait_s")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    after: str
    catchup_wait_s: float
    def __init__(self, after: _Optional[str] = ..., catchup_wait_s: _Optional[float] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_seq", "events", "journal_epoch")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    events: _containers.RepeatedCompositeFieldContainer[Event]
    journal_epoch: int
    def __init__(self, after_seq: _Optional[int] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., journal_epoch: _Optional[int] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("up_to_seq", "version")
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    up_to_seq: int
    version: int
    def __init__(self, up_to_seq: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class GateStatus(_message.Message):
    __slots__ = ("backlog", "cache_version", "cache_tickets", "clock_offset_ms", "clock_trusted", "at")
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    CACHE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_TICKETS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_TRUSTED_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    backlog: int
    cache_version: int
    cache_tickets: int
    clock_offset_ms: int
    clock_trusted: bool
    at: float
    def __init__(self, backlog: _Optional[int] = ..., cache_version: _Optional[int] = ..., cache_tickets: _Optional[int] = ..., clock_offset_ms: _Optional[int] = ..., clock_trusted: _Optional[bool] = ..., at: _Optional[float] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: GateStatus
    def __init__(self, status: _Optional[_Union[GateStatus, _Mapping]] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchEntitlementsRequest(_message.Message):
    __slots__ = ("have_version", "current_every_s")
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EVERY_S_FIELD_NUMBER: _ClassVar[int]
    have_version: int
    current_every_s: float
    def __init__(self, have_version: _Optional[int] = ..., current_every_s: _Optional[float] = ...) -> None: ...

class WatchEntitlementsResponse(_message.Message):
    __slots__ = ("snapshot", "delta", "current_version")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    snapshot: SnapshotChunk
    delta: Delta
    current_version: int
    def __init__(self, snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., delta: _Optional[_Union[Delta, _Mapping]] = ..., current_version: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("version", "total_size", "offset", "data")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    version: int
    total_size: int
    offset: int
    data: bytes
    def __init__(self, version: _Optional[int] = ..., total_size: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("base_version", "version", "ops")
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    base_version: int
    version: int
    ops: _containers.RepeatedCompositeFieldContainer[DeltaOp]
    def __init__(self, base_version: _Optional[int] = ..., version: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[DeltaOp, _Mapping]]] = ...) -> None: ...

class DeltaOp(_message.Message):
    __slots__ = ("upsert", "set_state", "reissue", "set_usage", "set_benefit", "set_zone")
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    SET_STATE_FIELD_NUMBER: _ClassVar[int]
    REISSUE_FIELD_NUMBER: _ClassVar[int]
    SET_USAGE_FIELD_NUMBER: _ClassVar[int]
    SET_BENEFIT_FIELD_NUMBER: _ClassVar[int]
    SET_ZONE_FIELD_NUMBER: _ClassVar[int]
    upsert: Ticket
    set_state: SetState
    reissue: Reissue
    set_usage: SetUsage
    set_benefit: SetBenefit
    set_zone: SetZone
    def __init__(self, upsert: _Optional[_Union[Ticket, _Mapping]] = ..., set_state: _Optional[_Union[SetState, _Mapping]] = ..., reissue: _Optional[_Union[Reissue, _Mapping]] = ..., set_usage: _Optional[_Union[SetUsage, _Mapping]] = ..., set_benefit: _Optional[_Union[SetBenefit, _Mapping]] = ..., set_zone: _Optional[_Union[SetZone, _Mapping]] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("valid_from", "valid_until")
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    valid_from: int
    valid_until: int
    def __init__(self, valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ...) -> None: ...

class Benefit(_message.Message):
    __slots__ = ("name", "remaining")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    name: str
    remaining: int
    def __init__(self, name: _Optional[str] = ..., remaining: _Optional[int] = ...) -> None: ...

class Ticket(_message.Message):
    __slots__ = ("ticket_id", "category", "ticket_type", "zones", "windows", "max_entries", "entries_used", "badge_serial", "state", "inside", "benefits", "name", "company", "phone_last4")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TICKET_TYPE_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_USED_FIELD_NUMBER: _ClassVar[int]
    BADGE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    BENEFITS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPANY_FIELD_NUMBER: _ClassVar[int]
    PHONE_LAST4_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    category: str
    ticket_type: str
    zones: _containers.RepeatedScalarFieldContainer[str]
    windows: _containers.RepeatedCompositeFieldContainer[Window]
    max_entries: int
    entries_used: int
    badge_serial: int
    state: TicketState
    inside: _containers.RepeatedScalarFieldContainer[str]
    benefits: _containers.RepeatedCompositeFieldContainer[Benefit]
    name: str
    company: str
    phone_last4: str
    def __init__(self, ticket_id: _Optional[int] = ..., category: _Optional[str] = ..., ticket_type: _Optional[str] = ..., zones: _Optional[_Iterable[str]] = ..., windows: _Optional[_Iterable[_Union[Window, _Mapping]]] = ..., max_entries: _Optional[int] = ..., entries_used: _Optional[int] = ..., badge_serial: _Optional[int] = ..., state: _Optional[_Union[TicketState, str]] = ..., inside: _Optional[_Iterable[str]] = ..., benefits: _Optional[_Iterable[_Union[Benefit, _Mapping]]] = ..., name: _Optional[str] = ..., company: _Optional[str] = ..., phone_last4: _Optional[str] = ...) -> None: ...

class SetState(_message.Message):
    __slots__ = ("ticket_id", "state")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    state: TicketState
    def __init__(self, ticket_id: _Optional[int] = ..., state: _Optional[_Union[TicketState, str]] = ...) -> None: ...

class Reissue(_message.Message):
    __slots__ = ("ticket_id", "badge_serial")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    BADGE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    badge_serial: int
    def __init__(self, ticket_id: _Optional[int] = ..., badge_serial: _Optional[int] = ...) -> None: ...

class SetUsage(_message.Message):
    __slots__ = ("ticket_id", "entries_used", "inside")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_USED_FIELD_NUMBER: _ClassVar[int]
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    entries_used: int
    inside: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ticket_id: _Optional[int] = ..., entries_used: _Optional[int] = ..., inside: _Optional[_Iterable[str]] = ...) -> None: ...

class SetBenefit(_message.Message):
    __slots__ = ("ticket_id", "name", "remaining")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    ticket_id: int
    name: str
    remaining: int
    def __init__(self, ticket_id: _Optional[int] = ..., name: _Optional[str] = ..., remaining: _Optional[int] = ...) -> None: ...

class SetZone(_message.Message):
    __slots__ = ("name", "capacity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    capacity: int
    def __init__(self, name: _Optional[str] = ..., capacity: _Optional[int] = ...) -> None: ...

class WatchKeysRequest(_message.Message):
    __slots__ = ("have_kids",)
    HAVE_KIDS_FIELD_NUMBER: _ClassVar[int]
    have_kids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, have_kids: _Optional[_Iterable[int]] = ...) -> None: ...

class EventKey(_message.Message):
    __slots__ = ("kid", "key")
    KID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    kid: int
    key: bytes
    def __init__(self, kid: _Optional[int] = ..., key: _Optional[bytes] = ...) -> None: ...

class WatchKeysResponse(_message.Message):
    __slots__ = ("complete", "add", "retire")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    RETIRE_FIELD_NUMBER: _ClassVar[int]
    complete: bool
    add: _containers.RepeatedCompositeFieldContainer[EventKey]
    retire: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, complete: _Optional[bool] = ..., add: _Optional[_Iterable[_Union[EventKey, _Mapping]]] = ..., retire: _Optional[_Iterable[int]] = ...) -> None: ...

class RedeemRequest(_message.Message):
    __slots__ = ("redemption_id", "ticket_id", "benefit", "lane", "at")
    REDEMPTION_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    redemption_id: str
    ticket_id: int
    benefit: str
    lane: str
    at: float
    def __init__(self, redemption_id: _Optional[str] = ..., ticket_id: _Optional[int] = ..., benefit: _Optional[str] = ..., lane: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class RedeemResponse(_message.Message):
    __slots__ = ("outcome", "remaining", "replayed", "version")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    outcome: RedeemOutcome
    remaining: int
    replayed: bool
    version: int
    def __init__(self, outcome: _Optional[_Union[RedeemOutcome, str]] = ..., remaining: _Optional[int] = ..., replayed: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class GetTimeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTimeResponse(_message.Message):
    __slots__ = ("unix_nanos",)
    UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    unix_nanos: int
    def __init__(self, unix_nanos: _Optional[int] = ...) -> None: ...
