"""The registry's desk pages, on the one web stack (`gated.web`): find an
attendee, see where they went, register a walk-in and download the badge,
reprint a lost badge, revoke, change a category, add a benefit.

    desk = DeskContext(db, service=registry.service)   # the registry's own file, and its gRPC service
    app[STAFF_OF] = who_is_signed_in                    # request -> Staff | None (the accounts' sign-in)
    add_desk_routes(app, desk)
    add_dashboard_routes(app, desk)                     # gated.registry.dashboard

Roles: `viewer` reads; `desk` also registers walk-ins, reprints and
revokes; `admin` also changes categories and adds benefits. A page asked
for without a sign-in redirects to `/signin`; with too small a role, 403.

Every change goes through `RegistryStore` (one transaction with its row in
`changes`, so the gates get it as a delta, all or nothing) and then wakes
the service, so the gates have it within a poll, not at the next tick. The
signed-in user is passed as the change's `actor` where the store takes one.
Pages are rendered on the server (no inline script: the CSP forbids it);
every value written into them is escaped.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from gated.errors import GatedError
from gated.journal import u64_to_sqlite
from gated.registry import dashdata
from gated.registry.store import RegistryStore
from gated.validation.cache import TicketState

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/registry/static/"
ROLES = ("viewer", "desk", "admin")


@dataclass(frozen=True, slots=True)
class Staff:
    name: str
    role: str  # one of ROLES


STAFF_OF: web.AppKey[Callable[[web.Request], Staff | None]] = web.AppKey("staff_of")


def staff(request: web.Request) -> Staff | None:
    who = request.app.get(STAFF_OF)
    return None if who is None else who(request)


def require(request: web.Request, role: str) -> Staff:
    """The signed-in staff member, if their role reaches `role`; else a redirect to sign in, or 403."""
    member = staff(request)
    if member is None:
        raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
    if member.role not in ROLES or ROLES.index(member.role) < ROLES.index(role):
        raise web.HTTPForbidden(text=f"{member.name} ({member.role}) may not do this: it needs the {role} role")
    return member


def _with_actor(fn, *args, actor: str):
    """Call a store method, naming who did it when the store records that."""
    if "actor" in inspect.signature(fn).parameters:
        return fn(*args, actor=actor)
    return fn(*args)


class DeskContext:
    """The pages' connection to the registry's file, one use at a time, in a worker thread."""

    def __init__(self, db: str | Path, *, service=None, colors: dict[str, str] | None = None) -> None:
        self.db = Path(db)
        self.store = RegistryStore(self.db, create=False)
        dashdata.install(self.store.conn)
        self.service = service
        self.colors = colors or {}
        self._lock: asyncio.Lock | None = None

    def close(self) -> None:
        self.store.close()

    async def _run(self, fn, *args, **kwargs):
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def read(self, fn, *args, **kwargs):
        """`fn(conn, *args)` on the pages' connection."""
        return await self._run(fn, self.store.conn, *args, **kwargs)

    async def change(self, fn, *args, **kwargs):
        """`fn(store, *args)`, then the gates are told at once."""
        result = await self._run(fn, self.store, *args, **kwargs)
        if self.service is not None:
            self.service.wake()
        return result

    def connected_gates(self) -> frozenset[str]:
        return frozenset() if self.service is None else self.service.watching_gates()

    def gate_reports(self) -> dict:
        """Each gate's latest status report (backlog, cache version, clock), for the dashboard."""
        return {} if self.service is None else self.service.gate_states()

    def version(self) -> int | None:
        return None if self.service is None else self.service.cache.version

    def open_reader(self):
        """A connection of its own and the check-in CSV's chunks (for a long export)."""
        conn = sqlite3.connect(str(self.db), check_same_thread=False)
        return conn, dashdata.checkins_csv(conn)


# ------------------------------------------------------------------ rendering


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def layout(request: web.Request, title: str, body: str, *, status: int = 200) -> web.Response:
    member = staff(request)
    who = "" if member is None else (
        f'<span class="pill">{_e(member.name)} · {_e(member.role)}</span>'
        '<form method="post" action="/signout" class="inline"><button type="submit">Sign out</button></form>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · gated registry</title>
<link rel="stylesheet" href="/static/gated.css">
<link rel="stylesheet" href="{STATIC_PREFIX}registry.css">
</head><body class="registry">
<header class="bar"><h1>{_e(title)}</h1>
<nav><a href="/attendees">Attendees</a> <a href="/walkin">Walk-in</a> <a href="/dashboard">Dashboard</a> {who}</nav></header>
<main>{body}</main></body></html>"""
    return web.Response(text=page, content_type="text/html", status=status)


def _notice(text: str) -> str:
    return f'<p class="notice" role="alert" id="notice">{_e(text)}</p>' if text else '<p class="notice" id="notice"></p>'


# ------------------------------------------------------------------ reads


def _ticket(conn: sqlite3.Connection, ticket_id: int) -> dict | None:
    row = conn.execute(
        "SELECT category, ticket_type, zones, windows, max_entries, entries_used, inside, badge_serial, state, benefits, "
        "name, company, phone FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()
    if row is None:
        return None
    import json

    (category, ticket_type, zones, windows, max_entries, used, inside, serial, state, benefits, name, company, phone) = row
    return {
        "ticket_id": ticket_id, "category": category, "ticket_type": ticket_type, "zones": json.loads(zones),
        "windows": json.loads(windows), "max_entries": max_entries, "entries_used": used, "inside": json.loads(inside),
        "badge_serial": serial, "revoked": state == TicketState.REVOKED, "benefits": json.loads(benefits),
        "name": name, "company": company, "phone": phone,
        "movements": dashdata.movements(conn, ticket_id),
    }


def _ticket_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) >= 1 << 64:
        raise web.HTTPNotFound(text=f"{text[:40]!r} is not a ticket number")
    return int(text)


# ------------------------------------------------------------------ changes (worker thread)


def _walk_in(store: RegistryStore, form: dict[str, str], actor: str) -> int:
    from gated.registry.importer import _record, _RowError
    from gated.validation.cache import _check_record

    row = {key: form.get(key, "") for key in ("name", "company", "category", "ticket_type", "zones", "max_entries",
                                               "benefits", "phone", "valid_from", "valid_until")}
    number = form.get("ticket_id", "").strip()
    if not number:
        while True:  # a 10-digit registration number nobody holds
            candidate = 1_000_000_000 + secrets.randbelow(9_000_000_000)
            if store.ticket(candidate) is None:
                break
        number = str(candidate)
    row["ticket_id"] = number
    try:
        record, phone = _record(row, False)
        _check_record(record, "walk-in")
    except _RowError as exc:
        raise GatedError(str(exc)) from None
    except ValueError as exc:
        raise GatedError(str(exc)) from None
    if not record.name:
        raise GatedError("name: a walk-in's badge needs a name")
    if store.ticket(record.ticket_id) is not None:
        raise GatedError(f"ticket_id: {record.ticket_id} is already registered")
    _with_actor(store.put_tickets, [(record, phone)], actor=actor)
    return record.ticket_id


def _phone_of(store: RegistryStore, ticket_id: int) -> str:
    return store.conn.execute("SELECT phone FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()[0]


def _set_category(store: RegistryStore, ticket_id: int, category: str, actor: str) -> None:
    category = category.strip()
    if not category or len(category) > 64 or not category.isprintable():
        raise GatedError("category: 1 to 64 printable characters")
    record = store._require(ticket_id)
    _with_actor(store.put_tickets, [(replace(record, category=category), _phone_of(store, ticket_id))], actor=actor)


def _add_benefit(store: RegistryStore, ticket_id: int, name: str, count: str, actor: str) -> None:
    from gated.registry.importer import _benefits, _RowError

    try:
        ((benefit, amount),) = _benefits(f"{name.strip()}={count.strip()}")
    except (_RowError, ValueError) as exc:
        raise GatedError(f"benefit: {exc}") from None
    record = store._require(ticket_id)
    benefits = dict(record.benefits)
    benefits[benefit] = min(0xFFFF, benefits.get(benefit, 0) + amount)
    _with_actor(store.put_tickets, [(replace(record, benefits=tuple(benefits.items())), _phone_of(store, ticket_id))],
                actor=actor)


def _badge_pdf(store: RegistryStore, ticket_id: int, colors: dict[str, str]) -> bytes:
    from gated.badge import make_badge, render

    record = store._require(ticket_id)
    keys = store.keys()
    if not keys:
        raise GatedError("the registry holds no signing key: add one with `gated registry keys add`")
    kid = max(keys)
    badge = make_badge(keys[kid], kid, ticket_id, record.badge_serial, name=record.name or str(ticket_id),
                       company=record.company, category=record.category, colors=colors)
    return render(badge, "pdf")


# ------------------------------------------------------------------ routes


def add_desk_routes(app: web.Application, desk: DeskContext) -> None:
    async def home(request: web.Request) -> web.StreamResponse:
        require(request, "viewer")
        raise web.HTTPSeeOther("/dashboard")

    async def attendees(request: web.Request) -> web.Response:
        require(request, "viewer")
        query = request.query.get("q", "")
        found = await desk.read(dashdata.search, query) if query.strip() else []
        rows = "".join(
            f'<tr><td><a href="/attendees/{t["ticket_id"]}">{_e(t["ticket_id"])}</a></td><td>{_e(t["name"])}</td>'
            f'<td>{_e(t["company"])}</td><td>{_e(t["category"])}</td><td>{_e(t["ticket_type"])}</td>'
            f'<td>{"revoked" if t["revoked"] else ""}</td></tr>' for t in found)
        result = ("" if not query.strip() else
                  f'<p id="count">{len(found)} found{" (first " + str(dashdata.SEARCH_LIMIT) + ")" if len(found) >= dashdata.SEARCH_LIMIT else ""}</p>'
                  f'<table class="list" id="results"><tr><th>ticket</th><th>name</th><th>company</th><th>category</th>'
                  f'<th>type</th><th></th></tr>{rows}</table>')
        body = f"""<form method="get" action="/attendees" class="row">
<label for="q">Name, company, ticket number or last four phone digits</label>
<input id="q" name="q" value="{_e(query)}" autofocus><button type="submit" id="search">Search</button></form>{result}"""
        return layout(request, "Attendees", body)

    async def attendee(request: web.Request) -> web.Response:
        member = require(request, "viewer")
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        t = await desk.read(_ticket, ticket_id)
        if t is None:
            return layout(request, "Attendee", _notice(f"ticket {ticket_id} is not registered"), status=404)
        windows = ", ".join(f"{_when(a)} – {_when(b)}" for a, b in t["windows"]) or "any time"
        benefits = "".join(f'<li><span>{_e(n)}</span><span class="left">{r} left</span></li>' for n, r in t["benefits"]) or "<li>none</li>"
        moves = "".join(
            f'<tr><td>{_when(m["at"])}</td><td>{_e(m["what"])}</td><td>{_e(m["zone"])}</td><td>{_e(m["gate"])}</td>'
            f'<td>{_e(m["lane"])}</td></tr>' for m in t["movements"]) or '<tr><td colspan="5">no check-in yet</td></tr>'
        can_desk = ROLES.index(member.role) >= ROLES.index("desk")
        can_admin = member.role == "admin"
        base = f"/attendees/{ticket_id}"
        actions = ""
        if can_desk:
            actions += (f'<form method="post" action="{base}/reprint" class="inline"><button id="reprint" type="submit">Reprint badge</button></form>'
                        + ("" if t["revoked"] else f'<form method="post" action="{base}/revoke" class="inline"><button id="revoke" type="submit">Revoke</button></form>'))
        if can_admin:
            actions += (f'<form method="post" action="{base}/category" class="row"><label for="category">Category</label>'
                        f'<input id="category" name="category" value="{_e(t["category"])}"><button type="submit" id="set-category">Change</button></form>'
                        f'<form method="post" action="{base}/benefit" class="row"><label for="benefit">Add benefit</label>'
                        f'<input id="benefit" name="benefit" placeholder="dinner"><input id="count" name="count" value="1" size="4">'
                        f'<button type="submit" id="add-benefit">Add</button></form>')
        body = f"""{_notice(request.query.get("notice", ""))}
<h2 id="name">{_e(t["name"])} <small>{_e(t["company"])}</small></h2>
<dl class="facts">
<div><dt>Ticket</dt><dd id="ticket">{ticket_id}</dd></div>
<div><dt>Category</dt><dd id="category-now">{_e(t["category"])}</dd></div>
<div><dt>Ticket type</dt><dd>{_e(t["ticket_type"])}</dd></div>
<div><dt>Zones</dt><dd>{_e(", ".join(t["zones"]))}</dd></div>
<div><dt>Valid</dt><dd>{_e(windows)}</dd></div>
<div><dt>Entries</dt><dd>{t["entries_used"]}{"" if not t["max_entries"] else " of " + str(t["max_entries"])}</dd></div>
<div><dt>Inside</dt><dd>{_e(", ".join(t["inside"]) or "no")}</dd></div>
<div><dt>Badge</dt><dd id="serial">serial {t["badge_serial"]}</dd></div>
<div><dt>State</dt><dd id="state">{"revoked" if t["revoked"] else "active"}</dd></div>
<div><dt>Phone</dt><dd>{_e(t["phone"])}</dd></div>
</dl>
<h2>Benefits left</h2><ul class="benefits" id="benefits">{benefits}</ul>
<p><a id="badge" href="{base}/badge.pdf">Badge (PDF, serial {t["badge_serial"]})</a></p>
<div class="actions">{actions}</div>
<h2>Check-ins and check-outs</h2>
<table class="list" id="movements"><tr><th>time</th><th>what</th><th>zone</th><th>gate</th><th>lane</th></tr>{moves}</table>"""
        return layout(request, f"Attendee {ticket_id}", body)

    async def act(request: web.Request, role: str, fn, *args) -> web.StreamResponse:
        member = require(request, role)
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        try:
            await desk.change(fn, ticket_id, *args, actor=member.name)
        except GatedError as exc:
            return layout(request, f"Attendee {ticket_id}", _notice(str(exc)) + f'<p><a href="/attendees/{ticket_id}">back</a></p>', status=400)
        raise web.HTTPSeeOther(f"/attendees/{ticket_id}")

    def _reissue(store: RegistryStore, ticket_id: int, actor: str) -> None:
        _with_actor(store.reissue, ticket_id, actor=actor)

    def _revoke(store: RegistryStore, ticket_id: int, actor: str) -> None:
        _with_actor(store.revoke, ticket_id, actor=actor)

    async def reprint(request: web.Request) -> web.StreamResponse:
        return await act(request, "desk", _reissue)

    async def revoke(request: web.Request) -> web.StreamResponse:
        return await act(request, "desk", _revoke)

    async def category(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        return await act(request, "admin", _set_category, str(form.get("category", "")))

    async def benefit(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        return await act(request, "admin", _add_benefit, str(form.get("benefit", "")), str(form.get("count", "")))

    async def badge_pdf(request: web.Request) -> web.Response:
        require(request, "desk")
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        try:
            body = await desk.read(lambda _conn: _badge_pdf(desk.store, ticket_id, desk.colors))
        except GatedError as exc:
            return web.Response(status=409, text=str(exc))
        except ImportError as exc:
            return web.Response(status=501, text=f"badges need the print extra ({exc.name} is missing): pip install 'gated[print]'")
        return web.Response(body=body, content_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="badge-{ticket_id}.pdf"'})

    def walkin_form(request: web.Request, values: dict[str, str], message: str = "", status: int = 200) -> web.Response:
        def field(name: str, label: str, hint: str = "", value: str = "") -> str:
            return (f'<div class="field"><label for="{name}">{label}</label><input id="{name}" name="{name}" '
                    f'value="{_e(values.get(name, value))}" placeholder="{_e(hint)}"></div>')

        body = f"""{_notice(message)}<form method="post" action="/walkin" class="card wide">
{field("name", "Name")}{field("company", "Company")}{field("phone", "Phone", "+86 138 0013 8000")}
{field("category", "Category", "guest, media, staff, exhibitor, vip", "guest")}{field("ticket_type", "Ticket type", "1-day")}
{field("zones", "Zones", "hall;lounge (separate with ;)", "hall")}
{field("valid_from", "Valid from", "2026-11-27T08:00:00+08:00 (empty: any time)")}{field("valid_until", "Valid until", "2026-11-27T20:00:00+08:00")}
{field("max_entries", "Entries allowed", "0 = unlimited", "0")}{field("benefits", "Benefits", "lunch_day1=1;dinner=1")}
{field("ticket_id", "Ticket number", "empty: the registry picks one")}
<button type="submit" id="register">Register and make the badge</button></form>"""
        return layout(request, "Register a walk-in", body, status=status)

    async def walkin_get(request: web.Request) -> web.Response:
        require(request, "desk")
        return walkin_form(request, {})

    async def walkin_post(request: web.Request) -> web.StreamResponse:
        member = require(request, "desk")
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            ticket_id = await desk.change(_walk_in, form, member.name)
        except GatedError as exc:
            return walkin_form(request, form, str(exc), status=400)
        raise web.HTTPSeeOther(f"/attendees/{ticket_id}?notice=Registered: download the badge below")

    app.router.add_get("/", home)
    app.router.add_get("/attendees", attendees)
    app.router.add_get("/attendees/{ticket_id}", attendee)
    app.router.add_get("/attendees/{ticket_id}/badge.pdf", badge_pdf)
    app.router.add_post("/attendees/{ticket_id}/reprint", reprint)
    app.router.add_post("/attendees/{ticket_id}/revoke", revoke)
    app.router.add_post("/attendees/{ticket_id}/category", category)
    app.router.add_post("/attendees/{ticket_id}/benefit", benefit)
    app.router.add_get("/walkin", walkin_get)
    app.router.add_post("/walkin", walkin_post)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, follow_symlinks=False)


def staff_app(desk: DeskContext, settings, staff_of: Callable[[web.Request], Staff | None]) -> web.Application:
    """The desk pages and the dashboard in one application of the web stack (`gated.web.make_app`)."""
    from gated.registry.dashboard import add_dashboard_routes
    from gated.web import make_app

    app = make_app(settings)
    app[STAFF_OF] = staff_of
    add_desk_routes(app, desk)
    add_dashboard_routes(app, desk)
    return app
