"""A batch of a gate's events as the registry takes it in: checked, parsed, ready to store.

`parse_batch(batch, gate_id)` turns one `StreamEventsRequest` into the
`IncomingEvent`s `RegistryStore.store_events` takes, or refuses the batch
whole with `MalformedEvent` (the server answers INVALID_ARGUMENT with its
message). Rules it keeps:

- Exactly what the contract's checks say, event by event, in order: seqs
  strictly increasing after the batch's `after_seq`, then for each event
  `gated.rpc.convert.check_event` (event_id length, kind, payload case,
  extra_json, a passage's zone). The first event that fails names the error,
  as it always did; a refused event is logged (`registry_event_refused`).
- The stored payload is the text `_encode_payload` makes of what
  `check_event` reads (extra_json's keys, then the typed fields), except that
  an event carrying no typed field keeps the gate's extra_json text as sent
  (`_stored_text` says when): the same text whichever way it was reached.
- Most of a show's events look alike: the same typed decision payloads over
  and over. Those are read once (keyed by their wire bytes) and their text
  reused; anything out of the ordinary (an error, a payload that is not a
  plain object) goes the event-by-event way above, so errors and their order
  never depend on the shortcut.

Pure apart from its log line: no I/O, no clock. Safe from any thread.
"""

from __future__ import annotations

import asyncio
import json

import structlog

from gated.registry.store import IncomingEvent
from gated.rpc.convert import EVENT_KINDS, MAX_EVENT_ID_BYTES, MalformedEvent, check_event, json_value, payload_text
from gated.rpc.v1 import registry_pb2 as pb

__all__ = ["MalformedEvent", "parse_batch"]

log = structlog.get_logger()

_scan_once = json.JSONDecoder().scan_once
_encode_payload = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode

#: wire EventKind -> (journal kind, payload case)
_KINDS = {wire: (kind, case) for kind, (wire, case) in EVENT_KINDS.items()}
#: The payload cases whose messages repeat from event to event (a door's decisions): read once.
_REPEATING = frozenset({"decision", "unexpected_passage", "emergency", "manual_open"})
#: Payloads read once, by (case, extra_json, typed payload bytes): bounded, dropped whole when full.
_SEEN_LIMIT = 4096
_seen: dict[tuple[str | None, str, bytes], tuple[dict, str]] = {}
#: A typed field (by its descriptor) -> (its name, repeated?).
_FIELDS: dict[object, tuple[str, bool]] = {
    f: (f.name, f.is_repeated)
    for case in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
    for f in case.message_type.fields
}
#: Kinds whose stored payload text SQL reads (json_extract: the dashboard, reports, conflicts):
#: always the encoder's text, one object however the gate wrote it.
_READ_BY_SQL = frozenset({"passage", "redemption"})
#: A batch of at most this many events is parsed on the loop, not in a worker thread: a live
#: gate's batch (a scan's decision and passage) parses in tens of microseconds, less than the
#: two loop wake-ups a thread costs, and those wake-ups wait behind the fan-out of a busy registry.
INLINE_EVENTS = 64
#: A batch whose payloads do not repeat stops looking them up once this many missed with under
#: a quarter as many found.
_SEEN_TRIAL = 64


class _Unusual(Exception):
    """Something the shortcut does not judge: the batch goes event by event."""


def parse_batch(batch: pb.StreamEventsRequest, gate_id: str) -> list[IncomingEvent]:
    """The batch's events as the store takes them; `MalformedEvent` for the first that breaks the contract."""
    try:
        return _parse(batch)
    except _Unusual:
        return _parse_event_by_event(batch, gate_id)


def _parse_or_refusal(batch: pb.StreamEventsRequest, gate_id: str) -> list[IncomingEvent] | MalformedEvent:
    try:
        return parse_batch(batch, gate_id)
    except MalformedEvent as exc:
        return exc


class parse_ahead:  # noqa: N801 - used as the iterator of an `async for`, like a function
    """`async for batch, parsed in parse_ahead(requests, gate_id)`: a stream's batches with their
    `parse_batch` (the events, or the `MalformedEvent` to answer with), in order. While the caller
    stores one batch, the next is received and parsed, in a worker thread unless it is small
    (`INLINE_EVENTS`): the registry's parse and its store (SQLite or PostgreSQL at work, a
    commit's fsync) overlap. At most one batch is read ahead; nothing is refused before the
    caller reaches it."""

    def __init__(self, requests, gate_id: str) -> None:
        self._requests = requests.__aiter__()
        self._gate_id = gate_id
        self._next: asyncio.Future | None = None
        self._ended = False

    def __aiter__(self) -> parse_ahead:
        return self

    async def __anext__(self) -> tuple[pb.StreamEventsRequest, list[IncomingEvent] | MalformedEvent]:
        if self._ended:
            raise StopAsyncIteration
        fetching = self._next if self._next is not None else self._fetch()
        self._next = None
        item = await fetching
        if item is None:
            self._ended = True
            raise StopAsyncIteration
        self._next = asyncio.ensure_future(self._fetch())
        self._next.add_done_callback(_retrieve)  # a stream that ended meanwhile: nobody asks for it
        return item

    async def _fetch(self) -> tuple[pb.StreamEventsRequest, list[IncomingEvent] | MalformedEvent] | None:
        try:
            batch = await self._requests.__anext__()
        except StopAsyncIteration:
            return None
        if not batch.events:
            return batch, []
        if len(batch.events) <= INLINE_EVENTS:
            return batch, _parse_or_refusal(batch, self._gate_id)
        return batch, await asyncio.to_thread(_parse_or_refusal, batch, self._gate_id)

    def close(self) -> None:
        """Stop reading ahead (the stream is over for the caller)."""
        self._ended = True
        if self._next is not None:
            self._next.cancel()
            self._next = None


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _parse_event_by_event(batch: pb.StreamEventsRequest, gate_id: str) -> list[IncomingEvent]:
    """The reference: each event checked by `check_event`, in order."""
    events = []
    previous = batch.after_seq
    for ev in batch.events:
        # A record is (this caller's gate id, epoch, seq): event_id is opaque, never parsed.
        if ev.seq <= previous:
            raise MalformedEvent(f"event {ev.event_id!r}: seq {ev.seq} does not follow {previous}")
        try:
            kind, payload = check_event(ev)
        except MalformedEvent as exc:
            log.warning("registry_event_refused", gate=gate_id, event_id=ev.event_id, seq=ev.seq, error=str(exc))
            raise
        previous = ev.seq
        carried = ev.WhichOneof("payload")
        typed = carried is not None and bool(getattr(ev, carried).ListFields())
        events.append(IncomingEvent(
            ev.event_id, ev.seq, ev.at, kind, ev.lane,
            ev.ticket_id if ev.HasField("ticket_id") else None, ev.reason,
            _stored_text(kind, payload, ev.extra_json, typed, _encode_payload), payload,
        ))
    return events


def _stored_text(kind: str, payload: dict, extra: str, typed: bool, encode=payload_text) -> str:
    """The payload text stored for an event whose payload reads as `payload`: the gate's `extra`
    (extra_json) as sent when it is the whole payload (no typed field) and has no escapes, unless
    SQL reads its kind's text (`_READ_BY_SQL`); otherwise `encode(payload)`.

    Why: re-encoding an object the gate sent as text costs 0.5 µs an event, a fifth of the parse of
    a backlog of decisions whose payloads are all extra. Either text is the same JSON object: a
    resend is compared as JSON when the texts differ (`RegistryStore._check_same`), and nothing
    reads these kinds' text but a JSON parser. No escapes: a key is found in the text as written
    (`"redemption_id" in payload_json`, gated.registry.redeem)."""
    if typed or not extra or kind in _READ_BY_SQL or "\\" in extra:
        return encode(payload)
    return extra


def _extra(text: str) -> dict:
    """extra_json as a dict; _Unusual unless a JSON object."""
    try:
        parsed = json_value(text)
    except (ValueError, RecursionError):
        raise _Unusual from None
    if type(parsed) is not dict:
        raise _Unusual
    return parsed


def _payload(kind: str, carried: str | None, message, extra: str) -> tuple[dict, str]:
    """What `event_payload` reads of one event, and its text (`_stored_text`); _Unusual for
    anything it would refuse."""
    payload = _extra(extra) if extra else {}
    typed = False
    if carried is not None:
        fields = _FIELDS
        for field, value in message.ListFields():
            info = fields.get(field)
            if info is None:  # a descriptor object not seen before (the same field): noted
                info = fields[field] = (field.name, field.is_repeated)
            name, repeated = info
            payload[name] = list(value) if repeated else value
            typed = True
    if kind == "passage" and not payload.get("zone"):
        raise _Unusual
    return payload, _stored_text(kind, payload, extra, typed)

def _parse(batch: pb.StreamEventsRequest) -> list[IncomingEvent]:
    """`_parse_event_by_event`'s events, or _Unusual. The usual event's steps are written out in
    the loop (a backlog's is all extra_json: read by the scanner, kept as sent), and its
    ticket_id's presence asked only when it reads 0: each a call an event, 0.2 µs of the 1.6."""
    kinds, seen, repeating, read_by_sql = _KINDS, _seen, _REPEATING, _READ_BY_SQL
    scan = _scan_once
    looking, found, missed = True, 0, 0
    out: list[IncomingEvent] = []
    append = out.append
    previous = batch.after_seq
    for ev in batch.events:
        seq = ev.seq
        if seq <= previous:
            raise _Unusual
        previous = seq
        event_id = ev.event_id
        if len(event_id) * 4 > MAX_EVENT_ID_BYTES and len(event_id.encode("utf-8")) > MAX_EVENT_ID_BYTES:
            raise _Unusual
        known = kinds.get(ev.kind)
        if known is None:
            raise _Unusual
        kind, case = known
        carried = ev.WhichOneof("payload")
        extra = ev.extra_json
        if carried is None:
            if not extra:
                if kind == "passage":
                    raise _Unusual
                payload, text = {}, "{}"
            else:
                # `_payload(kind, None, None, extra)`: anything `json_value` would hand to
                # `json.loads` (spaces around the object, an error) is left to the reference.
                try:
                    payload, end = scan(extra, 0)
                except (StopIteration, ValueError, RecursionError):
                    raise _Unusual from None
                if end != len(extra) or type(payload) is not dict:
                    raise _Unusual
                if kind in read_by_sql:
                    if kind == "passage" and not payload.get("zone"):
                        raise _Unusual
                    text = payload_text(payload)
                else:
                    text = extra if "\\" not in extra else payload_text(payload)
        elif carried != case:
            raise _Unusual
        elif looking and case in repeating:
            message = getattr(ev, case)
            key = (case, extra, message.SerializeToString())
            hit = seen.get(key)
            if hit is not None:
                found += 1
                payload, text = dict(hit[0]), hit[1]
            else:
                payload, text = _payload(kind, case, message, extra)
                missed += 1
                if missed >= _SEEN_TRIAL and found * 4 < missed:
                    looking = False  # this batch's payloads do not repeat: no more lookups
                if not extra or not any(type(v) in (list, dict) for v in payload.values()):  # plain values only
                    if len(seen) >= _SEEN_LIMIT:
                        seen.clear()
                    seen[key] = (payload, text)
                    payload = dict(payload)
        else:
            payload, text = _payload(kind, case, getattr(ev, case), extra)
        ticket_id = ev.ticket_id
        if not ticket_id and not ev.HasField("ticket_id"):
            ticket_id = None
        append(IncomingEvent(event_id, seq, ev.at, kind, ev.lane, ticket_id, ev.reason, text, payload))
    return out
