"""The API for registration systems: HTTP JSON under /api/v1, described at /api/openapi.json.

A registration system authenticates with a bearer token (`gated registry
tokens add NAME --role desk`); a signed-in staff page may call it too. Rules:

- `PUT /api/v1/attendees` upserts a batch, idempotent by ticket id: every
  row gets the CSV importer's checks (`importer.check_row`), and the first
  bad one refuses the whole batch, naming the row (its index in
  `attendees`) and the field. A good batch is one transaction: a ticket
  already held with the same fields is left alone (a batch sent twice
  changes nothing), the others are stored with the caller as their actor.
  The gates get it as deltas through the service's publishing, in bounded
  steps: a large batch never pauses their streams (parsing and checks run
  in a worker thread, the commit on the writes connection).
- Ticket ids are u64: the API answers them as strings (a JSON number loses
  digits past 2^53 in JavaScript) and takes a string or a number.
- `GET /api/v1/checkins?after=CURSOR&limit=N`: every check-in and check-out
  stored after CURSOR, in the order stored; `next` is the cursor to send
  next time (a CRM follows without missing or repeating one).
- Roles: viewer reads, desk writes. Errors are JSON `{"error": one line}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gated.errors import RegistryError
from gated.registry.accounts import Principal
from gated.registry.importer import ALL_COLUMNS, RowError, check_row, zone_too_many
from gated.registry.importer import _phone as importer_phone, _ticket_id as importer_ticket_id
from gated.registry.store import CheckIn, RegistryStore
from gated.validation.cache import MAX_TICKET_ID, MAX_ZONES, TicketRecord, TicketState, _check_record

MAX_BATCH = 100_000
MAX_BODY_BYTES = 64 << 20
CHECKINS_LIMIT = 1000
CHECKINS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    role: str
    summary: str
    handler: Callable[..., Awaitable[web.StreamResponse]]


class BatchError(ValueError):
    """A batch refused: one line, with the row and field when one is to blame."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.row, self.field, self.status = row, field, status

    def response(self) -> web.Response:
        body: dict = {"error": str(self)}
        if self.row is not None:
            body["row"] = self.row
        if self.field is not None:
            body["field"] = self.field
        return web.json_response(body, status=self.status)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def parse_ticket_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= MAX_TICKET_ID else None


def attendee_json(rec: TicketRecord, phone: str | None, *, with_phone: bool) -> dict:
    out = {
        "ticket_id": str(rec.ticket_id), "name": rec.name, "company": rec.company, "category": rec.category,
        "ticket_type": rec.ticket_type, "zones": list(rec.zones), "validity": [list(w) for w in rec.windows],
        "max_entries": rec.max_entries, "entries_used": rec.entries_used, "inside": list(rec.inside),
        "badge_serial": rec.badge_serial, "state": "revoked" if rec.state == TicketState.REVOKED else "active",
        "benefits": dict(rec.benefits), "phone_last4": rec.phone_last4,
    }
    if with_phone:
        out["phone"] = phone or ""
    return out


def checkin_json(c: CheckIn) -> dict:
    return {"cursor": c.cursor, "event_id": c.event_id, "at": c.at, "gate": c.gate_id, "lane": c.lane,
            "zone": c.zone, "direction": c.direction, "ticket_id": None if c.ticket_id is None else str(c.ticket_id),
            "category": c.category, "outcome": c.outcome}


# ------------------------------------------------------------------ batches

def _text(value, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise RowError(field, "not valid Unicode text (a lone surrogate)") from None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RowError(field, f"expected text or a whole number, not {type(value).__name__}")


def _joined(value, field: str, item: Callable) -> str:
    if isinstance(value, list):
        return ";".join(item(v) for v in value)
    return _text(value, field)


def _row_cells(row: object) -> tuple[dict[str, str], bool]:
    """A JSON attendee as the importer's text cells, and whether it uses `validity`."""
    if not isinstance(row, dict):
        raise RowError("row", "expected an object")
    for key in row:
        if key not in ALL_COLUMNS:
            raise RowError(str(key)[:64], f"unknown field (fields: {', '.join(ALL_COLUMNS)})")
    for key in ("ticket_id", "category", "zones"):
        if row.get(key) in (None, "", []):
            raise RowError(key, "missing")
    has_validity = "validity" in row
    if has_validity and ("valid_from" in row or "valid_until" in row):
        raise RowError("validity", "use validity or valid_from/valid_until, not both")

    def zone(z) -> str:
        if not isinstance(z, str) or ";" in z:
            raise RowError("zones", f"{z!r} is not a zone name")
        return z

    def window(w) -> str:
        if not (isinstance(w, list) and len(w) == 2):
            raise RowError("validity", f"{w!r} is not [from, until]")
        return f"{_text(w[0], 'validity')}/{_text(w[1], 'validity')}"

    benefits = row.get("benefits")
    if isinstance(benefits, dict):
        for name, count in benefits.items():
            if not isinstance(count, int) or isinstance(count, bool) or ";" in name or "=" in name:
                raise RowError("benefits", f"{name}: expected a whole number of uses")
        benefits = ";".join(f"{name}={count}" for name, count in benefits.items())
    cells = {
        "ticket_id": _text(row["ticket_id"], "ticket_id"),
        "zones": _joined(row["zones"], "zones", zone),
        "benefits": _text(benefits, "benefits"),
        **{k: _text(row.get(k), k) for k in ("name", "company", "category", "ticket_type", "max_entries", "phone")},
    }
    if has_validity:
        cells["validity"] = _joined(row["validity"], "validity", window)
    else:
        cells["valid_from"], cells["valid_until"] = _text(row.get("valid_from"), "valid_from"), _text(row.get("valid_until"), "valid_until")
    return cells, has_validity


def parse_batch(body: bytes) -> list[tuple[TicketRecord, str]]:
    """Every attendee of a PUT body, checked, or `BatchError` for the first bad one (worker thread)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BatchError(f"the body is not JSON: {exc}"[:300]) from None
    rows = doc.get("attendees") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise BatchError('expected {"attendees": [ ... ]}')
    if len(rows) > MAX_BATCH:
        raise BatchError(f"{len(rows)} attendees in one batch; at most {MAX_BATCH}", status=413)
    out: list[tuple[TicketRecord, str]] = []
    seen: dict[int, int] = {}
    shared: dict[str, tuple] = {}  # what many rows share, as sent -> as checked
    for index, row in enumerate(rows):
        try:
            checked = _known_shape(row, shared)
            if checked is None:
                checked = check_row(*_row_cells(row))
                _learn_shape(row, checked[0], shared)
            rec, phone = checked
            if rec.ticket_id in seen:
                raise RowError("ticket_id", f"{rec.ticket_id} is already row {seen[rec.ticket_id]}")
        except RowError as exc:
            raise BatchError(f"attendees[{index}].{exc.column}: {exc.problem}", index, exc.column) from None
        seen[rec.ticket_id] = index
        out.append((rec, phone))
    return out


# A batch's rows share their category, ticket type, zones, validity, entries and benefits: those
# are parsed and checked once per distinct form, and each row's own fields (ticket id, name,
# company, phone) checked as `check_row` checks them. Any row that does not fit this (a new form,
# an odd type, a bad field) takes the whole `check_row` path, so a bad row is named exactly as
# that path names it.
_SHARED = ("category", "ticket_type", "zones", "validity", "valid_from", "valid_until", "max_entries", "benefits")
_FIELDS = frozenset(("ticket_id", "name", "company", "phone", *_SHARED))  # a row's own fields, then the shared ones


def _shape_key(row: dict) -> str:
    """The shared fields as sent, as a key that tells apart every value `_row_cells` treats
    apart (True from 1, 1.0 from 1, "1" from 1, an object from a list; ... for absent)."""
    get = row.get
    return repr((get("category", ...), get("ticket_type", ...), get("zones", ...), get("validity", ...),
                 get("valid_from", ...), get("valid_until", ...), get("max_entries", ...), get("benefits", ...)))


def _learn_shape(row: object, rec: TicketRecord, shared: dict[str, tuple]) -> None:
    if not isinstance(row, dict) or len(shared) >= 4096:
        return
    try:
        key = _shape_key(row)
    except RecursionError:
        return
    shared[key] = (rec.category, rec.ticket_type, rec.zones, rec.windows, rec.max_entries, rec.benefits)


def _known_shape(row: object, shared: dict[str, tuple]) -> tuple[TicketRecord, str] | None:
    """The row checked through its known shared form, or None: check it the whole way."""
    if type(row) is not dict or not shared:
        return None
    try:
        form = shared.get(_shape_key(row))
    except RecursionError:
        return None
    if form is None or not _FIELDS.issuperset(row):
        return None
    tid, name, company, phone = row.get("ticket_id"), row.get("name", ""), row.get("company", ""), row.get("phone", "")
    if type(tid) is int:
        tid = str(tid)
    if not (type(tid) is str and type(name) is str and type(company) is str and type(phone) is str):
        return None
    try:
        ticket_id = importer_ticket_id(tid)
        phone = importer_phone(phone)
    except RowError:
        return None
    name, company = name.strip(), company.strip()
    if not (name.isascii() and company.isascii()):
        try:
            if len((name + company).encode("utf-8")) > 4000:
                return None
        except UnicodeEncodeError:
            return None
    elif len(name) + len(company) > 4000:
        return None
    category, ticket_type, zones, windows, max_entries, benefits = form
    rec = TicketRecord(ticket_id=ticket_id, category=category, ticket_type=ticket_type, zones=zones, windows=windows,
                       max_entries=max_entries, benefits=benefits, name=name, company=company, phone_last4=phone[-4:])
    try:
        _check_record(rec, "record", shared_checked=True)
    except ValueError:
        return None
    return rec, phone


def store_batch(store: RegistryStore, batch: list[tuple[TicketRecord, str]], actor: str) -> tuple[int, int, int]:
    """One transaction (writes connection): refused whole when its zones would not fit a gate."""
    too_many = zone_too_many(store, [rec for rec, _phone in batch])
    if too_many is not None:
        index, zone, in_db = too_many
        raise BatchError(f"attendees[{index}].zones: {zone!r} would be zone number {MAX_ZONES + 1} "
                         f"({in_db} already registered); a gate holds at most {MAX_ZONES}", index, "zones")
    return store.upsert_attendees(batch, actor)


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BatchError(f"the body is over {MAX_BODY_BYTES >> 20} MiB; send smaller batches", status=413)
    chunks, size = [], 0
    while chunk := await request.content.read(1 << 20):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BatchError(f"the body is over {MAX_BODY_BYTES >> 20} MiB; send smaller batches", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ routes

def add_routes(app: web.Application, registry) -> None:
    """The API's routes, each behind its role (see ROUTES)."""
    from gated.registry.http import require

    def guarded(route: Route):
        async def handler(request: web.Request) -> web.StreamResponse:
            who = require(request, route.role)
            try:
                return await route.handler(request, registry, who)
            except BatchError as exc:
                return exc.response()
        return handler

    for route in ROUTES:
        app.router.add_route(route.method, route.path, guarded(route))


async def put_attendees(request: web.Request, registry, who: Principal) -> web.Response:
    if request.content_type != "application/json":
        return _error(415, "send the batch as application/json")
    body = await _read_body(request)
    batch = await asyncio.to_thread(parse_batch, body)
    try:
        created, updated, unchanged = await registry.writes.run(store_batch, batch, who.actor)
    except RegistryError as exc:
        return _error(409, str(exc))
    if created or updated:
        registry.changed()
    return web.json_response({"received": len(batch), "created": created, "updated": updated, "unchanged": unchanged})


def _path_ticket(request: web.Request) -> int:
    ticket_id = parse_ticket_id(request.match_info["ticket_id"])
    if ticket_id is None:
        raise BatchError(f"{request.match_info['ticket_id'][:40]!r} is not a ticket id (a whole number 0..2^64-1)",
                         field="ticket_id")
    return ticket_id


async def _change(request: web.Request, registry, who: Principal, change) -> web.Response:
    ticket_id = _path_ticket(request)

    def run(store: RegistryStore):
        if store.ticket(ticket_id) is None:
            return None
        rec = change(store, ticket_id)
        return rec, store.phone(ticket_id)

    try:
        found = await registry.writes.run(run)
    except RegistryError as exc:
        return _error(409, str(exc))
    if found is None:
        return _error(404, f"ticket {ticket_id} is not registered")
    registry.changed()
    return web.json_response(attendee_json(found[0], found[1], with_phone=True))


async def revoke(request: web.Request, registry, who: Principal) -> web.Response:
    now = registry.clock()
    return await _change(request, registry, who, lambda store, tid: store.revoke(tid, at=now, actor=who.actor))


async def reissue(request: web.Request, registry, who: Principal) -> web.Response:
    return await _change(request, registry, who, lambda store, tid: store.reissue(tid, actor=who.actor))


async def get_attendee(request: web.Request, registry, who: Principal) -> web.Response:
    ticket_id = _path_ticket(request)
    found = await registry.reads.run(lambda store: (store.ticket(ticket_id), store.phone(ticket_id)))
    if found[0] is None:
        return _error(404, f"ticket {ticket_id} is not registered")
    return web.json_response(attendee_json(found[0], found[1], with_phone=who.may("desk")))


async def get_checkins(request: web.Request, registry, who: Principal) -> web.Response:
    after_text, limit_text = request.query.get("after", "0"), request.query.get("limit", str(CHECKINS_LIMIT))
    if not (after_text.isascii() and after_text.isdigit() and len(after_text) <= 18):
        raise BatchError(f"after={after_text[:40]!r}: a cursor is a whole number (0: from the start)", field="after")
    if not (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text[:6] or 0) <= CHECKINS_MAX):
        raise BatchError(f"limit={limit_text[:40]!r}: 1 to {CHECKINS_MAX}", field="limit")
    after, limit = int(after_text), int(limit_text)
    rows = await registry.reads.run(lambda store: store.checkins_after(after, limit))
    return web.json_response({"checkins": [checkin_json(c) for c in rows], "next": rows[-1].cursor if rows else after})


async def get_openapi(request: web.Request, registry, who: Principal) -> web.Response:
    from gated.registry.openapi import openapi

    return web.json_response(openapi())


ROUTES = (
    Route("PUT", "/api/v1/attendees", "desk", "Upsert a batch of attendees (all or nothing)", put_attendees),
    Route("GET", "/api/v1/attendees/{ticket_id}", "viewer", "One attendee", get_attendee),
    Route("POST", "/api/v1/attendees/{ticket_id}/revoke", "desk", "Revoke a ticket", revoke),
    Route("POST", "/api/v1/attendees/{ticket_id}/reissue", "desk", "Reprint a badge: the old one is superseded", reissue),
    Route("GET", "/api/v1/checkins", "viewer", "Check-ins and check-outs after a cursor", get_checkins),
    Route("GET", "/api/openapi.json", "viewer", "This API's OpenAPI 3.1 description", get_openapi),
)
