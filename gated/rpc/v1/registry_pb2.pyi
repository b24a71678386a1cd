from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("event_id", "seq", "at", "kind", "lane", "ticket_id", "reason", "payload_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    seq: int
    at: float
    kind: str
    lane: str
    ticket_id: int
    reason: str
    payload_json: str
    def __init__(self, event_id: _Optional[str] = ..., seq: _Optional[int] = ..., at: _Optional[float] = ..., kind: _Optional[str] = ..., lane: _Optional[str] = ..., ticket_id: _Optional[int] = ..., reason: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("after_seq", "events", "journal_epoch")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    events: _containers.RepeatedCompositeFieldContainer[Event]
    journal_epoch: int
    def __init__(self, after_seq: _Optional[int] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., journal_epoch: _Optional[int] = ...) -> None: ...

class EventAck(_message.Message):
    __slots__ = ("up_to_seq",)
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    up_to_seq: int
    def __init__(self, up_to_seq: _Optional[int] = ...) -> None: ...

class WatchEntitlementsRequest(_message.Message):
    __slots__ = ("have_version", "current_every_s")
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EVERY_S_FIELD_NUMBER: _ClassVar[int]
    have_version: int
    current_every_s: float
    def __init__(self, have_version: _Optional[int] = ..., current_every_s: _Optional[float] = ...) -> None: ...

class EntitlementUpdate(_message.Message):
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

class KeyUpdate(_message.Message):
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

class RedeemReply(_message.Message):
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

class TimeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TimeReply(_message.Message):
    __slots__ = ("unix_nanos",)
    UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    unix_nanos: int
    def __init__(self, unix_nanos: _Optional[int] = ...) -> None: ...
