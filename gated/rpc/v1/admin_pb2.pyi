from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LaneStatus(_message.Message):
    __slots__ = ("id", "zone", "direction", "mode", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    zone: str
    direction: str
    mode: str
    state: str
    def __init__(self, id: _Optional[str] = ..., zone: _Optional[str] = ..., direction: _Optional[str] = ..., mode: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("gate_id", "lanes", "uplink_connected", "uplink_target", "cache_version", "cache_tickets", "clock_offset_s", "clock_trusted", "journal_backlog", "emergency", "details_json")
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    LANES_FIELD_NUMBER: _ClassVar[int]
    UPLINK_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    UPLINK_TARGET_FIELD_NUMBER: _ClassVar[int]
    CACHE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_TICKETS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    CLOCK_TRUSTED_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    gate_id: str
    lanes: _containers.RepeatedCompositeFieldContainer[LaneStatus]
    uplink_connected: bool
    uplink_target: str
    cache_version: int
    cache_tickets: int
    clock_offset_s: float
    clock_trusted: bool
    journal_backlog: int
    emergency: bool
    details_json: str
    def __init__(self, gate_id: _Optional[str] = ..., lanes: _Optional[_Iterable[_Union[LaneStatus, _Mapping]]] = ..., uplink_connected: _Optional[bool] = ..., uplink_target: _Optional[str] = ..., cache_version: _Optional[int] = ..., cache_tickets: _Optional[int] = ..., clock_offset_s: _Optional[float] = ..., clock_trusted: _Optional[bool] = ..., journal_backlog: _Optional[int] = ..., emergency: _Optional[bool] = ..., details_json: _Optional[str] = ...) -> None: ...

class OpenLaneRequest(_message.Message):
    __slots__ = ("lane_id",)
    LANE_ID_FIELD_NUMBER: _ClassVar[int]
    lane_id: str
    def __init__(self, lane_id: _Optional[str] = ...) -> None: ...

class OpenLaneResponse(_message.Message):
    __slots__ = ("opened",)
    OPENED_FIELD_NUMBER: _ClassVar[int]
    opened: bool
    def __init__(self, opened: _Optional[bool] = ...) -> None: ...

class SetEmergencyRequest(_message.Message):
    __slots__ = ("active",)
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    active: bool
    def __init__(self, active: _Optional[bool] = ...) -> None: ...

class SetEmergencyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class JournalStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JournalStatsResponse(_message.Message):
    __slots__ = ("path", "records", "unacked", "oldest_unacked_at", "last_seq", "file_size", "wal_size", "transactions")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_UNACKED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    path: str
    records: int
    unacked: int
    oldest_unacked_at: float
    last_seq: int
    file_size: int
    wal_size: int
    transactions: int
    def __init__(self, path: _Optional[str] = ..., records: _Optional[int] = ..., unacked: _Optional[int] = ..., oldest_unacked_at: _Optional[float] = ..., last_seq: _Optional[int] = ..., file_size: _Optional[int] = ..., wal_size: _Optional[int] = ..., transactions: _Optional[int] = ...) -> None: ...
