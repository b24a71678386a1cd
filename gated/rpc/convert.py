"""Between the wire (gated.v1 protobuf messages) and the gate's own values.

Pure: no I/O, no clock, no logging. Everything that arrives from the
registry passes through here before it may touch the cache or the key ring,
and is refused whole (`MalformedUpdate`) when any part of it is not what the
contract allows: an op with no known field set (a newer registry), an
unknown ticket state, a window that ends before it starts, a snapshot chunk
out of place. Range checks the cache already makes (badge serial, counts)
are left to `EntitlementCache.apply`, which also refuses whole.

Protobuf types stay inside `gated/rpc`: callers get `TicketRecord`, `Delta`,
`KeyChange` and plain bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gated.errors import MalformedUpdate
from gated.journal import Record, WireEncoder
from gated.validation.cache import (
    Delta,
    Op,
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
from gated.validation.keyring import KEY_BYTES
from gated.validation.token import Reason
from gated.redeem import RedeemAnswer
from gated.rpc.v1 import registry_pb2 as pb

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "MAX_UPDATE_BYTES",
    "SNAPSHOT_CHUNK_BYTES",
    "KeyChange",
    "MalformedUpdate",
    "SnapshotAssembler",
    "bulk_upserts",
    "delta_from_proto",
    "delta_to_proto",
    "EVENT_KINDS",
    "GateStatus",
    "gate_status_from_proto",
    "gate_status_to_proto",
    "MalformedEvent",
    "check_event",
    "event_batch",
    "event_batch_rows",
    "journal_wire",
    "stream_batch_bytes",
    "event_kind",
    "event_payload",
    "key_change_from_proto",
    "key_change_to_proto",
    "ops_that_fit",
    "record_to_event",
    "snapshot_updates",
    "ticket_from_proto",
    "ticket_to_proto",
]

#: Every WatchEntitlementsResponse the registry sends is at most this many bytes
#: serialized (registry.proto says so): a quarter of gRPC's 4 MiB default, so
#: a client in any language with default settings takes every message.
MAX_UPDATE_BYTES = 1 << 20
#: A chunk's data leaves room for its own fields (three varints and the
#: framing: under 40 bytes), so the whole message stays within MAX_UPDATE_BYTES.
SNAPSHOT_CHUNK_BYTES = MAX_UPDATE_BYTES - 64
#: What an WatchEntitlementsResponse{delta} holds besides its ops: the oneof's tag and
#: length, base_version and version (varints of at most 10 bytes each).
_DELTA_FRAME_BYTES = 32
#: A snapshot announcing more than this is refused before any byte is kept
#: (a million tickets take ~50 MB; this leaves room for ten times that).
MAX_SNAPSHOT_BYTES = 1 << 30

#: TICKET_STATE_UNSPECIFIED (0, what a peer that omits the field sends) is
#: deliberately absent: it is refused, never read as active.
_STATE_FROM_WIRE = {pb.TICKET_STATE_ACTIVE: TicketState.ACTIVE, pb.TICKET_STATE_REVOKED: TicketState.REVOKED}
_STATE_TO_WIRE = {v: k for k, v in _STATE_FROM_WIRE.items()}


# ---------------------------------------------------------------- tickets


def ticket_to_proto(rec: TicketRecord) -> pb.Ticket:
    return pb.Ticket(
        ticket_id=rec.ticket_id,
        category=rec.category,
        ticket_type=rec.ticket_type,
        zones=rec.zones,
        windows=[pb.Window(valid_from=a, valid_until=b) for a, b in rec.windows],
        max_entries=rec.max_entries,
        entries_used=rec.entries_used,
        badge_serial=rec.badge_serial,
        state=_STATE_TO_WIRE[rec.state],
        inside=rec.inside,
        benefits=[pb.Benefit(name=n, remaining=r) for n, r in rec.benefits],
        name=rec.name,
        company=rec.company,
        phone_last4=rec.phone_last4,
    )


def _state(value: int, where: str) -> TicketState:
    state = _STATE_FROM_WIRE.get(value)
    if state is None:
        if value == pb.TICKET_STATE_UNSPECIFIED:
            raise MalformedUpdate(f"{where}: ticket state missing (TICKET_STATE_UNSPECIFIED)")
        raise MalformedUpdate(f"{where}: unknown ticket state {value}")
    return state


def ticket_from_proto(msg: pb.Ticket, where: str = "ticket") -> TicketRecord:
    windows = tuple((w.valid_from, w.valid_until) for w in msg.windows)
    for start, until in windows:
        if start >= until:
            raise MalformedUpdate(f"{where}: ticket {msg.ticket_id}: window {start}..{until} is empty")
    return TicketRecord(
        ticket_id=msg.ticket_id,
        category=msg.category,
        ticket_type=msg.ticket_type,
        zones=tuple(msg.zones),
        windows=windows,
        max_entries=msg.max_entries,
        entries_used=msg.entries_used,
        badge_serial=msg.badge_serial,
        state=_state(msg.state, f"{where}: ticket {msg.ticket_id}"),
        inside=tuple(msg.inside),
        benefits=tuple((b.name, b.remaining) for b in msg.benefits),
        name=msg.name,
        company=msg.company,
        phone_last4=msg.phone_last4,
    )


# ----------------------------------------------------------------- deltas


def op_to_proto(op: Op) -> pb.DeltaOp:
    if isinstance(op, Upsert):
        return pb.DeltaOp(upsert=ticket_to_proto(op.record))
    if isinstance(op, SetState):
        return pb.DeltaOp(set_state=pb.SetState(ticket_id=op.ticket_id, state=_STATE_TO_WIRE[op.state]))
    if isinstance(op, Reissue):
        return pb.DeltaOp(reissue=pb.Reissue(ticket_id=op.ticket_id, badge_serial=op.badge_serial))
    if isinstance(op, SetUsage):
        return pb.DeltaOp(set_usage=pb.SetUsage(ticket_id=op.ticket_id, entries_used=op.entries_used, inside=op.inside))
    if isinstance(op, SetBenefit):
        return pb.DeltaOp(set_benefit=pb.SetBenefit(ticket_id=op.ticket_id, name=op.name, remaining=op.remaining))
    if isinstance(op, SetZone):
        return pb.DeltaOp(set_zone=pb.SetZone(name=op.name, capacity=op.capacity))
    raise TypeError(f"not a delta operation: {type(op).__name__}")


def op_from_proto(msg: pb.DeltaOp, where: str) -> Op:
    which = msg.WhichOneof("op")
    if which == "upsert":
        return Upsert(ticket_from_proto(msg.upsert, where))
    if which == "set_state":
        return SetState(msg.set_state.ticket_id, _state(msg.set_state.state, where))
    if which == "reissue":
        return Reissue(msg.reissue.ticket_id, msg.reissue.badge_serial)
    if which == "set_usage":
        return SetUsage(msg.set_usage.ticket_id, msg.set_usage.entries_used, tuple(msg.set_usage.inside))
    if which == "set_benefit":
        return SetBenefit(msg.set_benefit.ticket_id, msg.set_benefit.name, msg.set_benefit.remaining)
    if which == "set_zone":
        return SetZone(msg.set_zone.name, msg.set_zone.capacity)
    raise MalformedUpdate(f"{where}: no known operation set (from a newer registry?)")


def delta_to_proto(delta: Delta) -> pb.Delta:
    return pb.Delta(base_version=delta.base_version, version=delta.version, ops=[op_to_proto(op) for op in delta.ops])


def delta_update(delta: Delta) -> pb.WatchEntitlementsResponse:
    """The update that carries `delta` to a watching gate: `delta_to_proto` in it, the same bytes.

    The registry's side, for the usage its event batches count (a replayed backlog: a thousand
    ops a batch): usage ops are added as field values, not made as messages and then copied into
    the update, which takes twice as long."""
    update = pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=delta.base_version, version=delta.version))
    ops = update.delta.ops
    add = ops.add
    for op in delta.ops:
        kind = type(op)
        if kind is SetUsage:
            add(set_usage={"ticket_id": op.ticket_id, "entries_used": op.entries_used, "inside": op.inside})
        elif kind is SetBenefit:
            add(set_benefit={"ticket_id": op.ticket_id, "name": op.name, "remaining": op.remaining})
        else:
            ops.append(op_to_proto(op))
    return update


def _varint_bytes(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def ops_that_fit(ops: Sequence[pb.DeltaOp], limit: int = MAX_UPDATE_BYTES) -> int:
    """How many of `ops`, from the first, one WatchEntitlementsResponse of at most `limit` bytes holds.

    At least one when there is any: an op that alone is larger cannot be
    split, and the caller must send something else (a snapshot) instead.
    """
    budget = limit - _DELTA_FRAME_BYTES
    used = 0
    for n, op in enumerate(ops):
        size = op.ByteSize()
        used += 1 + _varint_bytes(size) + size
        if used > budget:
            return max(n, 1)
    return len(ops)


def delta_from_proto(msg: pb.Delta) -> Delta:
    """The cache's `Delta` for a wire delta; `MalformedUpdate` names the first bad op."""
    if msg.version <= msg.base_version:
        raise MalformedUpdate(f"delta {msg.base_version}->{msg.version}: version does not follow its base")
    where = f"delta {msg.base_version}->{msg.version}"
    return Delta(msg.base_version, msg.version, tuple(op_from_proto(op, f"{where} op {n}") for n, op in enumerate(msg.ops)))


def bulk_upserts(raw: bytes) -> bytes | str | None:
    """A serialized wire `Delta` of upserts only, each ticket once, as the
    columns `EntitlementCache.stage_bulk` takes (`encode_snapshot`'s layout):
    every record converted and checked here. None for any other delta (it
    goes the general way); a str, the one-line reason, for a delta refused.

    Meant for a builder process: all the per-ticket work of a large delta
    (parsing, conversion, checks, packing) runs where it holds no lane back."""
    try:
        msg = pb.Delta.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError
        return f"delta refused: not a readable delta ({exc})"
    where = f"delta {msg.base_version}->{msg.version}"
    ops = msg.ops
    if not all(op.WhichOneof("op") == "upsert" for op in ops):
        return None
    if len({op.upsert.ticket_id for op in ops}) != len(ops):
        return None  # a ticket upserted twice: the later wins, in order
    try:
        records = [ticket_from_proto(op.upsert, f"{where} op {n}") for n, op in enumerate(ops)]
        return encode_snapshot(0, records)
    except ValueError as exc:  # MalformedUpdate included
        return f"{where} refused: {exc}"


# -------------------------------------------------------------- snapshots


def snapshot_updates(version: int, data: bytes, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> Iterator[pb.WatchEntitlementsResponse]:
    """The stream messages that carry snapshot `data` (at least one, even when empty)."""
    view = memoryview(data)
    total = len(data)
    offset = 0
    while True:
        piece = bytes(view[offset : offset + chunk_bytes])
        yield pb.WatchEntitlementsResponse(snapshot=pb.SnapshotChunk(version=version, total_size=total, offset=offset, data=piece))
        offset += len(piece)
        if offset >= total:
            return


class SnapshotAssembler:
    """Collects snapshot chunks in order; `add` returns the whole snapshot once complete.

    Any chunk that does not continue the one before (other version or size,
    wrong offset, more bytes than announced) raises `MalformedUpdate` and
    drops what was collected. A chunk at offset 0 always starts over.
    """

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._version = 0
        self._total = 0

    @property
    def in_progress(self) -> bool:
        return self._buf is not None

    def add(self, chunk: pb.SnapshotChunk) -> tuple[int, bytes] | None:
        if chunk.offset == 0:
            if chunk.total_size > MAX_SNAPSHOT_BYTES:
                self._buf = None
                raise MalformedUpdate(f"snapshot {chunk.version}: {chunk.total_size} bytes is more than the {MAX_SNAPSHOT_BYTES} allowed")
            self._buf = bytearray()
            self._version, self._total = chunk.version, chunk.total_size
        buf = self._buf
        if buf is None:
            raise MalformedUpdate(f"snapshot {chunk.version}: chunk at offset {chunk.offset} without a start")
        if chunk.version != self._version or chunk.total_size != self._total or chunk.offset != len(buf):
            self._buf = None
            raise MalformedUpdate(
                f"snapshot {self._version}: chunk out of place (version {chunk.version}, "
                f"offset {chunk.offset}, size {chunk.total_size}; expected offset {len(buf)})"
            )
        if len(buf) + len(chunk.data) > self._total:
            self._buf = None
            raise MalformedUpdate(f"snapshot {self._version}: more bytes than the {self._total} announced")
        buf += chunk.data
        if len(buf) < self._total:
            if not chunk.data:
                self._buf = None
                raise MalformedUpdate(f"snapshot {self._version}: empty chunk before the end")
            return None
        self._buf = None
        return self._version, bytes(buf)


# ------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A key ring update. `complete`: `add` is the whole ring. Never printed with its keys."""

    complete: bool
    add: tuple[tuple[int, bytes], ...]
    retire: tuple[int, ...]

    def __repr__(self) -> str:
        return f"KeyChange(complete={self.complete}, add={[kid for kid, _ in self.add]}, retire={list(self.retire)})"


def key_change_to_proto(change: KeyChange) -> pb.WatchKeysResponse:
    return pb.WatchKeysResponse(
        complete=change.complete,
        add=[pb.EventKey(kid=kid, key=key) for kid, key in change.add],
        retire=change.retire,
    )


def key_change_from_proto(msg: pb.WatchKeysResponse) -> KeyChange:
    add = []
    for key in msg.add:
        if key.kid > 255:
            raise MalformedUpdate(f"key update: kid {key.kid} is not 0..255")
        if len(key.key) != KEY_BYTES:
            raise MalformedUpdate(f"key update: key for kid {key.kid} is not {KEY_BYTES} bytes")
        add.append((key.kid, bytes(key.key)))
    if len({kid for kid, _ in add}) != len(add):
        raise MalformedUpdate("key update: a kid appears twice")
    for kid in msg.retire:
        if kid > 255:
            raise MalformedUpdate(f"key update: retired kid {kid} is not 0..255")
    if msg.complete and msg.retire:
        raise MalformedUpdate("key update: a complete ring retires nothing")
    return KeyChange(msg.complete, tuple(add), tuple(msg.retire))


# ----------------------------------------------------------------- events


_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def _made_once(encoder: json.JSONEncoder):
    """`encoder.encode` for a dict, with the C encoder made once: `encode` makes a new one (and a
    closure) at every call, which costs more than encoding a small payload. The same text."""
    make = json.encoder.c_make_encoder
    if make is None or encoder.indent is not None or encoder.check_circular:
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    c_encoder = make(None, encoder.default, strings, None, encoder.key_separator, encoder.item_separator,
                     encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    join = "".join
    return lambda obj: join(c_encoder(obj, 0))


#: `_encode_json` for a dict (what a payload and its extra_json are), for the event hot paths.
payload_text = _made_once(json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False))
_scan_once = json.JSONDecoder().scan_once


def json_value(text: str):
    """`json.loads(text)` without its per-call set-up (two regular expressions, three calls):
    for a text that is one JSON value and nothing else, which is what the journal and gates
    write. Anything else (spaces around it, an error) goes to `json.loads` itself."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)

#: A journal kind and the wire's EventKind and payload case, both ways. The
#: journal's kinds (gated.journal.KINDS) are exactly these (a test keeps it so).
EVENT_KINDS: dict[str, tuple[int, str]] = {
    "decision": (pb.EVENT_KIND_DECISION, "decision"),
    "passage": (pb.EVENT_KIND_PASSAGE, "passage"),
    "not_passed": (pb.EVENT_KIND_NOT_PASSED, "not_passed"),
    "unexpected_passage": (pb.EVENT_KIND_UNEXPECTED_PASSAGE, "unexpected_passage"),
    "redemption": (pb.EVENT_KIND_REDEMPTION, "redemption"),
    "emergency": (pb.EVENT_KIND_EMERGENCY, "emergency"),
    "manual_open": (pb.EVENT_KIND_MANUAL_OPEN, "manual_open"),
    "badge_printed": (pb.EVENT_KIND_BADGE_PRINTED, "badge_printed"),
    "phone_lookup": (pb.EVENT_KIND_PHONE_LOOKUP, "phone_lookup"),
    "boot": (pb.EVENT_KIND_BOOT, "boot"),
}
_KIND_OF_WIRE = {wire: (kind, case) for kind, (wire, case) in EVENT_KINDS.items()}
#: Per payload case: its message class and {field name: repeated?}.
_PAYLOADS = {
    case: (cls, {f.name: f.is_repeated for f in cls.DESCRIPTOR.fields})
    for case, cls in (
        (f.name, getattr(pb, f.message_type.name)) for f in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
    )
}
#: Longest event_id the registry takes (registry.proto).
MAX_EVENT_ID_BYTES = 256


class MalformedEvent(ValueError):
    """An event the registry refuses (INVALID_ARGUMENT): the message names it."""


def _payload_message(case: str, payload: dict) -> tuple[object, dict]:
    """The typed payload for a journal payload, and the keys it has no field for (or no fitting value)."""
    cls, fields = _PAYLOADS[case]
    msg = cls()
    extra = {}
    for key, value in payload.items():
        repeated = fields.get(key)
        if repeated is None or value is None:  # null too: the registry stores exactly what was journaled
            extra[key] = value
            continue
        try:
            if repeated:
                getattr(msg, key).extend(value)
            else:
                setattr(msg, key, value)
        except (TypeError, ValueError):  # a value of another type than the field: kept, untyped
            msg.ClearField(key)
            extra[key] = value
    return msg, extra


def record_to_event(rec: Record) -> pb.Event:
    """A journal record on the wire: its payload as the kind's typed message.

    Raises ValueError for a kind the contract has no EventKind for (the daemon
    journals only gated.journal.KINDS)."""
    try:
        wire_kind, case = EVENT_KINDS[rec.kind]
    except KeyError:
        raise ValueError(f"journal record {rec.seq}: kind {rec.kind!r} has no EventKind in the contract") from None
    event = pb.Event(
        event_id=f"{rec.gate_id}:{rec.seq}",
        seq=rec.seq,
        at=rec.at,
        kind=wire_kind,
        lane=rec.lane or "",
        ticket_id=rec.ticket_id,  # None leaves the optional field unset
        reason=rec.reason or "",
    )
    if rec.payload:
        msg, extra = _payload_message(case, rec.payload)
        if len(extra) < len(rec.payload):  # a key went typed; none did: no payload case, only extra_json
            getattr(event, case).CopyFrom(msg)
        if extra:
            event.extra_json = _encode_json(extra)
    return event


def event_kind(event: pb.Event) -> str:
    """The journal kind of a wire event; MalformedEvent when unspecified, unknown or at odds with its payload."""
    known = _KIND_OF_WIRE.get(event.kind)
    if known is None:
        raise MalformedEvent(f"event {event.event_id!r} (seq {event.seq}): kind {event.kind} is not an EventKind this registry knows")
    kind, case = known
    carried = event.WhichOneof("payload")
    if carried is not None and carried != case:
        raise MalformedEvent(f"event {event.event_id!r} (seq {event.seq}): kind {kind} with a {carried} payload")
    return kind


def event_payload(event: pb.Event) -> dict:
    """The payload of a wire event as the gate's journal holds it (a JSON object).

    The typed fields that are set, then whatever `extra_json` adds (a typed field
    wins). MalformedEvent for an extra_json that is not a JSON object."""
    payload: dict = {}
    if event.extra_json:
        try:
            extra = json.loads(event.extra_json)
        except (ValueError, RecursionError):
            extra = None
        if not isinstance(extra, dict):
            raise MalformedEvent(f"event {event.event_id!r} (seq {event.seq}): extra_json is not a JSON object")
        payload.update(extra)
    case = event.WhichOneof("payload")
    if case is not None:
        for field, value in getattr(event, case).ListFields():
            payload[field.name] = list(value) if field.is_repeated else value
    return payload


def check_event(event: pb.Event) -> tuple[str, dict]:
    """What the registry checks of one event before storing any of its batch: (kind, payload)."""
    if len(event.event_id.encode("utf-8")) > MAX_EVENT_ID_BYTES:
        raise MalformedEvent(f"event seq {event.seq}: event_id is over {MAX_EVENT_ID_BYTES} bytes")
    kind = event_kind(event)
    payload = event_payload(event)
    if kind == "passage" and not payload.get("zone"):
        raise MalformedEvent(f"event {event.event_id!r} (seq {event.seq}): a passage with no zone")
    return kind, payload


def event_batch(after_seq: int, records: Sequence[Record], journal_epoch: int = 0) -> pb.StreamEventsRequest:
    """Journal records that directly follow `after_seq` in the journal `journal_epoch`, as one stream message."""
    return pb.StreamEventsRequest(after_seq=after_seq, events=[record_to_event(r) for r in records], journal_epoch=journal_epoch)


#: Per payload case: the names of its typed fields.
_FIELD_NAMES = {case: frozenset(fields) for case, (_cls, fields) in _PAYLOADS.items()}
#: Per payload case: finds any of its typed fields' names as a JSON string ("zone") in a text. In
#: a text with no backslash, a key is written exactly so: where none is found, no key is typed.
_TYPED_NAME_SEARCH = {case: re.compile("|".join(re.escape(json.dumps(name)) for name in sorted(names))).search
                      for case, names in _FIELD_NAMES.items()}
#: Journaled payload texts lately seen -> the Event keyword arguments that carry them (a door's
#: decisions repeat the same few payloads all day: read once). Bounded; dropped whole when full.
_SEEN_LIMIT = 4096
_payload_kwargs_seen: dict[tuple[str, str], dict] = {}
#: A batch whose payloads do not repeat (passages, each naming its decision) stops looking them
#: up once this many missed with under a quarter as many found.
_SEEN_TRIAL = 64


def _payload_kwargs(case: str, payload_json: str) -> dict:
    """The keyword arguments that put a journaled payload on an Event: {case: its typed fields, "extra_json": the rest}
    (no case when no field is typed: an empty message would carry nothing but its tag).

    What `record_to_event` makes of it, in one step: typed fields as a dict the message takes
    whole, the rest (and null values) as extra_json. A value the field does not take is found
    by the caller (the message refuses the dict); `_payload_kwargs_field_by_field` then decides."""
    if ("\\" not in payload_json and payload_json[:1] == "{" and payload_json[-1:] == "}"
            and payload_json != "{}" and _TYPED_NAME_SEARCH[case](payload_json) is None):
        # No typed field's name anywhere in the text, so none of its keys: all of it is extra, as
        # written (the journal's text of an object; nothing in it is escaped). Found without
        # reading the JSON: a backlog of decisions each unlike the last spent 0.4 µs an event on it.
        return {"extra_json": payload_json}
    return _payload_kwargs_read(case, payload_json)


def _payload_kwargs_read(case: str, payload_json: str) -> dict:
    """`_payload_kwargs` for a text not found all extra by its first test: the JSON read."""
    payload = json_value(payload_json)
    if not payload:
        return {}
    names = _FIELD_NAMES[case]
    if payload.keys() <= names and None not in payload.values():
        return {case: payload}
    if names.isdisjoint(payload) and "\\" not in payload_json:
        # All of it is extra, and the journal's text is already that object's text (its
        # encoder differs from ours only in how it escapes, and there is nothing to escape).
        return {"extra_json": payload_json}
    typed, extra = {}, {}
    for key, value in payload.items():
        if value is None or key not in names:
            extra[key] = value
        else:
            typed[key] = value
    return {case: typed, "extra_json": payload_text(extra)} if typed else {"extra_json": payload_text(extra)}


def _payload_kwargs_field_by_field(case: str, payload_json: str) -> dict:
    payload = json.loads(payload_json)
    msg, extra = _payload_message(case, payload)
    kwargs = {case: msg} if len(extra) < len(payload) else {}
    if extra:
        kwargs["extra_json"] = _encode_json(extra)
    return kwargs


def event_batch_rows(gate_id: str, after_seq: int, rows: Sequence[tuple], journal_epoch: int = 0) -> pb.StreamEventsRequest:
    """`event_batch` for journal rows as `Journal.unacked_rows` reads them: the same message, built
    with no Record and no payload message made per event.

    Each event is added empty and its fields set one by one, a field left unset where its value
    is the default (no ticket, an empty lane or reason: not on the wire either way): upb's `add`
    with keyword arguments takes its keywords as a dict and looks each up by name, 0.75 µs an
    event of eight where setting them takes 0.55 (a backlog's build, a fifth of it). A payload
    with typed fields still goes through `add`'s keywords (the message takes the dict whole).

    Raises ValueError for a kind the contract has no EventKind for."""
    batch = pb.StreamEventsRequest(after_seq=after_seq, journal_epoch=journal_epoch)
    add = batch.events.add
    seen = _payload_kwargs_seen
    looking, found, missed = True, 0, 0
    prefix = f"{gate_id}:"
    typed_name_search = _TYPED_NAME_SEARCH
    for seq, at, kind, lane, ticket_id, reason, payload_json in rows:
        try:
            wire_kind, case = EVENT_KINDS[kind]
        except KeyError:
            raise ValueError(f"journal record {seq}: kind {kind!r} has no EventKind in the contract") from None
        if looking:
            key = (case, payload_json)
            kwargs = seen.get(key)
            if kwargs is None:
                kwargs = _payload_kwargs(case, payload_json)
                missed += 1
                if missed >= _SEEN_TRIAL and found * 4 < missed:
                    looking = False
                if len(seen) >= _SEEN_LIMIT:
                    seen.clear()
                seen[key] = kwargs
            else:
                found += 1
        elif ("\\" not in payload_json and payload_json[:1] == "{" and payload_json[-1:] == "}"
                and payload_json != "{}" and typed_name_search[case](payload_json) is None):
            # `_payload_kwargs`'s first test, here: all of it extra_json, as written. Once payloads
            # are no longer looked up (a backlog whose payloads do not repeat), the call and the
            # dict it answers with were 0.1 µs an event.
            kwargs = None
        else:
            kwargs = _payload_kwargs_read(case, payload_json)
        if kwargs is None:
            event = add()
            event.extra_json = payload_json
        elif case not in kwargs:  # extra_json alone, or nothing: a str field, set as any other
            event = add()
            if kwargs:
                event.extra_json = kwargs["extra_json"]
        else:
            try:
                event = add(**kwargs)
            except (TypeError, ValueError):  # a value of another type than its field: kept, untyped (the message added nothing)
                kwargs = seen[(case, payload_json)] = _payload_kwargs_field_by_field(case, payload_json)
                event = add(**kwargs)
        event.event_id = prefix + str(seq)
        event.seq = seq
        event.at = at
        event.kind = wire_kind
        if lane:
            event.lane = lane
        if ticket_id is not None:
            event.ticket_id = ticket_id
        if reason:
            event.reason = reason
    return batch



def journal_wire(gate_id: str) -> WireEncoder:
    """The `wire` encoder a gate's `Journal` keeps with each record (`gated.journal.WireEncoder`):
    the record's entry in a `StreamEventsRequest` (its field's tag and length, then the Event),
    exactly the bytes `event_batch_rows` makes of it. A batch is then its header's bytes followed
    by its records' (`stream_batch_bytes`): a repeated field's entries concatenate. ValueError for a kind the contract has no EventKind for."""

    def encode(seq: int, at: float, kind: str, lane: str | None, ticket_id: int | None, reason: str | None,
               payload_json: str) -> bytes:
        return event_batch_rows(gate_id, 0, ((seq, at, kind, lane, ticket_id, reason, payload_json),)).SerializeToString()

    return encode


def stream_batch_bytes(gate_id: str, after_seq: int, records: Sequence[tuple[int, bytes | tuple]],
                       journal_epoch: int = 0) -> bytes:
    """A serialized `StreamEventsRequest` of journal records as `Journal.unacked_wire` reads them:
    the bytes of `event_batch_rows` of the same records, byte for byte. A record with its wire encoding is sent
    as kept (`journal_wire`); one without (its row) is built here."""
    # Fields in number order, as the message itself writes them: after_seq (1), events (2), journal_epoch (3).
    head = pb.StreamEventsRequest(after_seq=after_seq).SerializeToString()
    tail = pb.StreamEventsRequest(journal_epoch=journal_epoch).SerializeToString()
    pieces = [w for _seq, w in records]
    if all(type(w) is bytes for w in pieces):  # noqa: E721 - the usual: every record has one
        return b"".join((head, *pieces, tail))
    out, rows = [head], []
    for w in pieces:
        if type(w) is bytes:  # noqa: E721
            if rows:
                out.append(event_batch_rows(gate_id, 0, rows).SerializeToString())
                rows = []
            out.append(w)
        else:
            rows.append(w)
    if rows:
        out.append(event_batch_rows(gate_id, 0, rows).SerializeToString())
    out.append(tail)
    return b"".join(out)


# ----------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class GateStatus:
    """A gate's ReportStatus as the registry keeps it (`received_at`: the registry's clock)."""

    backlog: int
    cache_version: int
    cache_tickets: int
    clock_offset_ms: int | None
    clock_trusted: bool
    at: float
    received_at: float = 0.0


def gate_status_to_proto(status: GateStatus) -> pb.ReportStatusRequest:
    return pb.ReportStatusRequest(status=pb.GateStatus(
        backlog=status.backlog, cache_version=status.cache_version, cache_tickets=status.cache_tickets,
        clock_offset_ms=status.clock_offset_ms, clock_trusted=status.clock_trusted, at=status.at,
    ))


def gate_status_from_proto(msg: pb.GateStatus, *, received_at: float) -> GateStatus:
    return GateStatus(
        backlog=msg.backlog, cache_version=msg.cache_version, cache_tickets=msg.cache_tickets,
        clock_offset_ms=msg.clock_offset_ms if msg.HasField("clock_offset_ms") else None,
        clock_trusted=msg.clock_trusted, at=msg.at, received_at=received_at,
    )


# ----------------------------------------------------------- redemption

#: A redemption's outcome on the wire, by the decision reason it stands for.
REDEEM_OUTCOMES = {
    Reason.OK: pb.REDEEM_OUTCOME_OK,
    Reason.NO_BENEFIT: pb.REDEEM_OUTCOME_NO_BENEFIT,
    Reason.BENEFIT_EXHAUSTED: pb.REDEEM_OUTCOME_BENEFIT_EXHAUSTED,
    Reason.UNKNOWN_TICKET: pb.REDEEM_OUTCOME_UNKNOWN_TICKET,
    Reason.REVOKED: pb.REDEEM_OUTCOME_REVOKED,
}
_REASON_OF_OUTCOME = {outcome: reason for reason, outcome in REDEEM_OUTCOMES.items()}


def redeem_answer(msg: pb.RedeemResponse) -> RedeemAnswer | None:
    """The registry's answer; None for an outcome this gate does not know (it decides as if offline)."""
    reason = _REASON_OF_OUTCOME.get(msg.outcome)
    if reason is None or msg.remaining > 0xFFFF:
        return None
    return RedeemAnswer(reason, msg.remaining, msg.replayed, msg.version)
