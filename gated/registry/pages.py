"""The registry's desk pages and its accounts page, on the registry's one
application (`gated.registry.http`): find an attendee, see where they went
and who changed them, register a walk-in and download the badge, reprint a
lost badge, revoke, change a category, add a benefit; an admin manages the
staff accounts.

    web = RegistryWeb(server, settings, pages=staff_pages())   # these pages and the dashboard

Who is asking is the signed-in account (`http.require`: the sign-in page
when nobody is, 403 when the role is too small). Roles, each including the
one before (the README's table):

| role   | may |
|---|---|
| viewer | attendees and their pages, the dashboard, the exports |
| desk   | also register walk-ins, download and reprint badges, revoke, change a category, add a benefit |
| admin  | also the accounts page: create, disable and enable, reset a password, unlock |

A page shows only the buttons its reader's role may use, and every POST
checks the role again. Every change to an attendee goes through
`RegistryStore` on the registry's writes worker (one transaction with its
row in `changes`, `actor` the account: "user:li.wei"), then wakes the
service, so the gates have it as a delta within a poll. Pages are rendered
on the server (no inline script: the CSP forbids it); every value written
into them is escaped.
"""

from __future__ import annotations

import html
import json
import secrets
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from gated.errors import GatedError
from gated.journal import u64_to_sqlite
from gated.registry import dashdata
from gated.registry.accounts import ROLES, Accounts, Principal, name_problem, password_problem, role_problem
from gated.registry.http import PageRoutes, Registry, end_sessions, principal, require
from gated.registry.store import RegistryStore
from gated.validation.cache import TicketState

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/registry/static/"


def staff_pages() -> tuple[PageRoutes, ...]:
    """The desk pages, the accounts page and the dashboard: what `gated registry serve` and `gated sim` serve."""
    from gated.registry.dashboard import add_dashboard_pages

    return (add_desk_pages, add_account_pages, add_dashboard_pages)


def allowed(request: web.Request, role: str) -> Principal:
    """`http.require` for a page: a refusal is a page saying which role it needs."""
    try:
        return require(request, role)
    except web.HTTPForbidden as refused:
        raise web.HTTPForbidden(text=_page(request, "Not allowed", _notice(refused.text or "")),
                                content_type="text/html") from None


# ------------------------------------------------------------------ rendering


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def nav(who: Principal | None) -> str:
    """The header's links for this reader's role, who is signed in, and the sign-out button."""
    if who is None:
        return ""
    links = ['<a href="/attendees">Attendees</a>']
    if who.may("desk"):
        links.append('<a href="/walkin" id="nav-walkin">Walk-in</a>')
    links.append('<a href="/dashboard">Dashboard</a>')
    if who.may("admin"):
        links.append('<a href="/accounts" id="nav-accounts">Accounts</a>')
    return (" ".join(links) + f' <span class="pill" id="who">{_e(who.name)} · {_e(who.role)}</span>'
            '<form method="post" action="/signout" class="inline"><button type="submit" id="signout">Sign out</button></form>')


def _page(request: web.Request, title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · gated registry</title>
<link rel="stylesheet" href="/static/gated.css">
<link rel="stylesheet" href="{STATIC_PREFIX}registry.css">
</head><body class="registry">
<header class="bar"><h1>{_e(title)}</h1>
<nav>{nav(principal(request))}</nav></header>
<main>{body}</main></body></html>"""


def layout(request: web.Request, title: str, body: str, *, status: int = 200) -> web.Response:
    return web.Response(text=_page(request, title, body), content_type="text/html", status=status)


def _notice(text: str) -> str:
    return f'<p class="notice" role="alert" id="notice">{_e(text)}</p>' if text else '<p class="notice" id="notice"></p>'


def _actor(actor: str | None) -> str:
    return "unknown (before who was kept)" if actor is None else actor


# ------------------------------------------------------------------ reads (worker thread)


def _ticket(store: RegistryStore, ticket_id: int) -> dict | None:
    conn = store.conn
    row = conn.execute(
        "SELECT category, ticket_type, zones, windows, max_entries, entries_used, inside, badge_serial, state, benefits, "
        "name, company, phone FROM tickets WHERE ticket_id = ?", (u64_to_sqlite(ticket_id),)).fetchone()
    if row is None:
        return None
    (category, ticket_type, zones, windows, max_entries, used, inside, serial, state, benefits, name, company, phone) = row
    return {
        "ticket_id": ticket_id, "category": category, "ticket_type": ticket_type, "zones": json.loads(zones),
        "windows": json.loads(windows), "max_entries": max_entries, "entries_used": used, "inside": json.loads(inside),
        "badge_serial": serial, "revoked": state == TicketState.REVOKED, "benefits": json.loads(benefits),
        "name": name, "company": company, "phone": phone,
        "movements": dashdata.movements(conn, ticket_id),
        "changes": dashdata.changes_of(conn, ticket_id),
    }


def _search(store: RegistryStore, query: str) -> list[dict]:
    return dashdata.search(store.conn, query)


def _ticket_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) >= 1 << 64:
        raise web.HTTPNotFound(text=f"{text[:40]!r} is not a ticket number")
    return int(text)


# ------------------------------------------------------------------ changes (writes worker)


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
    except (_RowError, ValueError) as exc:
        raise GatedError(str(exc)) from None
    if not record.name:
        raise GatedError("name: a walk-in's badge needs a name")
    if store.ticket(record.ticket_id) is not None:
        raise GatedError(f"ticket_id: {record.ticket_id} is already registered")
    store.put_tickets([(record, phone)], actor=actor)
    return record.ticket_id


def _set_category(store: RegistryStore, ticket_id: int, actor: str, category: str) -> None:
    category = category.strip()
    if not category or len(category) > 64 or not category.isprintable():
        raise GatedError("category: 1 to 64 printable characters")
    record = store._require(ticket_id)
    store.put_tickets([(replace(record, category=category), store.phone(ticket_id) or "")], actor=actor)


def _add_benefit(store: RegistryStore, ticket_id: int, actor: str, name: str, count: str) -> None:
    from gated.registry.importer import _benefits, _RowError

    try:
        ((benefit, amount),) = _benefits(f"{name.strip()}={count.strip()}")
    except (_RowError, ValueError) as exc:
        raise GatedError(f"benefit: {exc}") from None
    record = store._require(ticket_id)
    benefits = dict(record.benefits)
    benefits[benefit] = min(0xFFFF, benefits.get(benefit, 0) + amount)
    store.put_tickets([(replace(record, benefits=tuple(benefits.items())), store.phone(ticket_id) or "")], actor=actor)


def _reissue(store: RegistryStore, ticket_id: int, actor: str) -> None:
    store.reissue(ticket_id, actor=actor)


def _revoke(store: RegistryStore, ticket_id: int, actor: str, confirmed: str) -> None:
    if confirmed != "yes":
        raise GatedError("revoke: tick \"yes, revoke this ticket\" first (a revoked ticket stays revoked)")
    store.revoke(ticket_id, actor=actor)


def _badge_pdf(store: RegistryStore, ticket_id: int) -> bytes:
    from gated.badge import make_badge, render

    record = store._require(ticket_id)
    keys = store.keys()
    if not keys:
        raise GatedError("the registry holds no signing key: add one with `gated registry keys add`")
    kid = max(keys)
    badge = make_badge(keys[kid], kid, ticket_id, record.badge_serial, name=record.name or str(ticket_id),
                       company=record.company, category=record.category)
    return render(badge, "pdf")


# ------------------------------------------------------------------ desk routes


def add_desk_pages(app: web.Application, registry: Registry) -> None:
    async def home(request: web.Request) -> web.StreamResponse:
        allowed(request, "viewer")
        raise web.HTTPSeeOther("/dashboard")

    async def attendees(request: web.Request) -> web.Response:
        allowed(request, "viewer")
        query = request.query.get("q", "")
        found = await registry.reads.run(_search, query) if query.strip() else []
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
        who = allowed(request, "viewer")
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        t = await registry.reads.run(_ticket, ticket_id)
        if t is None:
            return layout(request, "Attendee", _notice(f"ticket {ticket_id} is not registered"), status=404)
        windows = ", ".join(f"{_when(a)} – {_when(b)}" for a, b in t["windows"]) or "any time"
        benefits = "".join(f'<li><span>{_e(n)}</span><span class="left">{r} left</span></li>' for n, r in t["benefits"]) or "<li>none</li>"
        moves = "".join(
            f'<tr><td>{_when(m["at"])}</td><td>{_e(m["what"])}</td><td>{_e(m["zone"])}</td><td>{_e(m["gate"])}</td>'
            f'<td>{_e(m["lane"])}</td></tr>' for m in t["movements"]) or '<tr><td colspan="5">no check-in yet</td></tr>'
        changes = "".join(
            f'<tr><td>{"time not kept" if c["at"] is None else _when(c["at"])}</td><td>{_e(c["what"])}</td>'
            f'<td>{_e(_actor(c["actor"]))}</td></tr>' for c in t["changes"]) or '<tr><td colspan="3">no change recorded</td></tr>'
        base = f"/attendees/{ticket_id}"
        actions = ""
        if who.may("desk"):
            actions = (
                f'<a id="badge" href="{base}/badge.pdf">Badge (PDF, serial {t["badge_serial"]})</a>'
                f'<form method="post" action="{base}/reprint" class="inline"><button id="reprint" type="submit">Reprint badge</button></form>'
                + ("" if t["revoked"] else
                   f'<form method="post" action="{base}/revoke" class="inline"><label><input type="checkbox" id="confirm-revoke" '
                   f'name="confirm" value="yes"> yes, revoke this ticket</label> <button id="revoke" type="submit">Revoke</button></form>')
                + f'<form method="post" action="{base}/category" class="row"><label for="category">Category</label>'
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
<div class="actions">{actions}</div>
<h2>Check-ins and check-outs</h2>
<table class="list" id="movements"><tr><th>time</th><th>what</th><th>zone</th><th>gate</th><th>lane</th></tr>{moves}</table>
<h2>Changes</h2>
<table class="list" id="changes"><tr><th>time</th><th>what</th><th>who</th></tr>{changes}</table>"""
        return layout(request, f"Attendee {ticket_id}", body)

    async def act(request: web.Request, fn, *fields: str) -> web.StreamResponse:
        """A desk change to one attendee: `fn(store, ticket_id, actor, *form fields)` on the writes worker."""
        who = allowed(request, "desk")
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        form = await request.post()
        try:
            await registry.writes.run(fn, ticket_id, who.actor, *(str(form.get(f, "")) for f in fields))
        except GatedError as exc:
            return layout(request, f"Attendee {ticket_id}", _notice(str(exc)) + f'<p><a href="/attendees/{ticket_id}">back</a></p>', status=400)
        registry.changed()
        raise web.HTTPSeeOther(f"/attendees/{ticket_id}")

    async def reprint(request: web.Request) -> web.StreamResponse:
        return await act(request, _reissue)

    async def revoke(request: web.Request) -> web.StreamResponse:
        return await act(request, _revoke, "confirm")

    async def category(request: web.Request) -> web.StreamResponse:
        return await act(request, _set_category, "category")

    async def benefit(request: web.Request) -> web.StreamResponse:
        return await act(request, _add_benefit, "benefit", "count")

    async def badge_pdf(request: web.Request) -> web.Response:
        allowed(request, "desk")
        ticket_id = _ticket_id(request.match_info["ticket_id"])
        try:
            body = await registry.reads.run(_badge_pdf, ticket_id)
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
        allowed(request, "desk")
        return walkin_form(request, {})

    async def walkin_post(request: web.Request) -> web.StreamResponse:
        who = allowed(request, "desk")
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            ticket_id = await registry.writes.run(_walk_in, form, who.actor)
        except GatedError as exc:
            return walkin_form(request, form, str(exc), status=400)
        registry.changed()
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


# ------------------------------------------------------------------ accounts (admin)


def _create_account(store: RegistryStore, name: str, role: str, password: str, again: str) -> None:
    for problem in (name_problem(name), role_problem(role), password_problem(password)):
        if problem:
            raise GatedError(problem)
    if password != again:
        raise GatedError("the two passwords differ")
    Accounts(store).add_user(name, role, password)


def _reset_password(store: RegistryStore, name: str, password: str) -> None:
    Accounts(store).set_password(name, password)


def _unlock(store: RegistryStore, name: str) -> None:
    Accounts(store).unlock(name)


def _set_disabled(store: RegistryStore, name: str, disabled: bool, by: str) -> None:
    accounts = Accounts(store)
    if disabled:
        if name == by:
            raise GatedError("you cannot disable the account you are signed in with")
        target = next((a for a in accounts.accounts() if a.name == name), None)
        if target is not None and target.role == "admin" and not target.disabled and accounts.admins() <= 1:
            raise GatedError(f"{name} is the last admin: make another admin first")
    accounts.set_disabled(name, disabled)


def add_account_pages(app: web.Application, registry: Registry) -> None:
    async def page(request: web.Request, message: str = "", status: int = 200, values: dict | None = None) -> web.Response:
        allowed(request, "admin")
        values = values or {}
        now = registry.clock()
        rows = []
        for a in await registry.accounts.run(lambda store: Accounts(store).accounts()):
            state = "disabled" if a.disabled else (
                f"locked until {time.strftime('%H:%M:%S', time.localtime(a.locked_until))}" if a.locked_until > now else "active")
            base = f"/accounts/{a.name}"
            buttons = ""
            if a.locked_until > now and not a.disabled:
                buttons += f'<form method="post" action="{base}/unlock" class="inline"><button type="submit" id="unlock-{_e(a.name)}">Unlock</button></form>'
            buttons += (f'<form method="post" action="{base}/{"enable" if a.disabled else "disable"}" class="inline">'
                        f'<button type="submit" id="{"enable" if a.disabled else "disable"}-{_e(a.name)}">'
                        f'{"Enable" if a.disabled else "Disable"}</button></form>'
                        f'<form method="post" action="{base}/password" class="inline">'
                        f'<input type="password" name="password" id="password-{_e(a.name)}" autocomplete="new-password" '
                        f'placeholder="new password" aria-label="new password for {_e(a.name)}" maxlength="256">'
                        f'<button type="submit" id="reset-{_e(a.name)}">Reset password</button></form>')
            rows.append(f'<tr id="account-{_e(a.name)}"><td>{_e(a.name)}</td><td>{_e(a.role)}</td>'
                        f'<td class="state">{_e(state)}</td><td>{buttons}</td></tr>')
        options = "".join(f'<option value="{r}"{" selected" if values.get("role", "desk") == r else ""}>{r}</option>' for r in ROLES)
        body = f"""{_notice(message)}
<table class="list" id="accounts"><tr><th>name</th><th>role</th><th>state</th><th></th></tr>{"".join(rows)}</table>
<h2>New account</h2>
<form method="post" action="/accounts" class="card wide" autocomplete="off">
<div class="field"><label for="new-name">Name</label><input id="new-name" name="name" value="{_e(values.get("name", ""))}" maxlength="64" required></div>
<div class="field"><label for="new-role">Role</label><select id="new-role" name="role">{options}</select></div>
<div class="field"><label for="new-password">Password (8 characters or more)</label><input id="new-password" name="password" type="password" autocomplete="new-password" maxlength="256" required></div>
<div class="field"><label for="new-again">Password again</label><input id="new-again" name="again" type="password" autocomplete="new-password" maxlength="256" required></div>
<button type="submit" id="create">Create the account</button></form>"""
        return layout(request, "Accounts", body, status=status)

    async def show(request: web.Request) -> web.Response:
        return await page(request, request.query.get("notice", ""))

    async def done(request: web.Request, what) -> web.StreamResponse:
        """Run an account change on the accounts worker; the page again with what happened."""
        allowed(request, "admin")
        try:
            said = await what()
        except GatedError as exc:
            return await page(request, str(exc), 400)
        raise web.HTTPSeeOther(f"/accounts?notice={_quote(said)}")

    async def create(request: web.Request) -> web.StreamResponse:
        allowed(request, "admin")
        form = {k: str(v) for k, v in (await request.post()).items()}
        name, role = form.get("name", "").strip(), form.get("role", "")
        try:
            await registry.accounts.run(_create_account, name, role, form.get("password", ""), form.get("again", ""))
        except GatedError as exc:
            return await page(request, str(exc), 400, {"name": name, "role": role})
        raise web.HTTPSeeOther(f"/accounts?notice={_quote(f'{name} ({role}) created')}")

    async def password(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        new = str((await request.post()).get("password", ""))

        async def run() -> str:
            if problem := password_problem(new):
                raise GatedError(f"{name}: {problem}")
            await registry.accounts.run(_reset_password, name, new)
            end_sessions(request, name)
            return f"{name}: new password set, account unlocked, signed out everywhere"
        return await done(request, run)

    async def unlock(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]

        async def run() -> str:
            await registry.accounts.run(_unlock, name)
            return f"{name} unlocked"
        return await done(request, run)

    def switch(disabled: bool):
        async def handler(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            who = allowed(request, "admin")

            async def run() -> str:
                await registry.accounts.run(_set_disabled, name, disabled, who.name)
                if disabled:
                    end_sessions(request, name)
                return f"{name} {'disabled' if disabled else 'enabled'}"
            return await done(request, run)
        return handler

    app.router.add_get("/accounts", show)
    app.router.add_post("/accounts", create)
    app.router.add_post("/accounts/{name}/password", password)
    app.router.add_post("/accounts/{name}/unlock", unlock)
    app.router.add_post("/accounts/{name}/disable", switch(True))
    app.router.add_post("/accounts/{name}/enable", switch(False))


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
