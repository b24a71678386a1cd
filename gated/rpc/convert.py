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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gated.errors import MalformedUpdate
from gated.journal import Record
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
    "event_batch",
    "key_change_from_proto",
    "key_change_to_proto",
    "ops_that_fit",
    "record_to_event",
    "snapshot_updates",
    "ticket_from_proto",
    "ticket_to_proto",
]

#: Every EntitlementUpdate the registry sends is at most this many bytes
#: serialized (registry.proto says so): a quarter of gRPC's 4 MiB default, so
#: a client in any language with default settings takes every message.
MAX_UPDATE_BYTES = 1 << 20
#: A chunk's data leaves room for its own fields (three varints and the
#: framing: under 40 bytes), so the whole message stays within MAX_UPDATE_BYTES.
SNAPSHOT_CHUNK_BYTES = MAX_UPDATE_BYTES - 64
#: What an EntitlementUpdate{delta} holds besides its ops: the oneof's tag and
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


def _varint_bytes(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def ops_that_fit(ops: Sequence[pb.DeltaOp], limit: int = MAX_UPDATE_BYTES) -> int:
    """How many of `ops`, from the first, one EntitlementUpdate of at most `limit` bytes holds.

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


def snapshot_updates(version: int, data: bytes, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> Iterator[pb.EntitlementUpdate]:
    """The stream messages that carry snapshot `data` (at least one, even when empty)."""
    view = memoryview(data)
    total = len(data)
    offset = 0
    while True:
        piece = bytes(view[offset : offset + chunk_bytes])
        yield pb.EntitlementUpdate(snapshot=pb.SnapshotChunk(version=version, total_size=total, offset=offset, data=piece))
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


def key_change_to_proto(change: KeyChange) -> pb.KeyUpdate:
    return pb.KeyUpdate(
        complete=change.complete,
        add=[pb.EventKey(kid=kid, key=key) for kid, key in change.add],
        retire=change.retire,
    )


def key_change_from_proto(msg: pb.KeyUpdate) -> KeyChange:
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


def record_to_event(rec: Record) -> pb.Event:
    # On the replay path (~5 µs a record): one constructor call, no property lookups.
    return pb.Event(
        event_id=f"{rec.gate_id}:{rec.seq}",
        seq=rec.seq,
        at=rec.at,
        kind=rec.kind,
        lane=rec.lane or "",
        ticket_id=rec.ticket_id,  # None leaves the optional field unset
        reason=rec.reason or "",
        payload_json=_encode_json(rec.payload) if rec.payload else "{}",
    )


def event_batch(after_seq: int, records: Sequence[Record], journal_epoch: int = 0) -> pb.EventBatch:
    """Journal records that directly follow `after_seq` in the journal `journal_epoch`, as one stream message."""
    return pb.EventBatch(after_seq=after_seq, events=[record_to_event(r) for r in records], journal_epoch=journal_epoch)



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


def redeem_answer(msg: pb.RedeemReply) -> RedeemAnswer | None:
    """The registry's answer; None for an outcome this gate does not know (it decides as if offline)."""
    reason = _REASON_OF_OUTCOME.get(msg.outcome)
    if reason is None or msg.remaining > 0xFFFF:
        return None
    return RedeemAnswer(reason, msg.remaining, msg.replayed, msg.version)
