"""The operator screen of a handheld lane: a web page the gate serves
(`[lane.screen]`), on the stack of `gated.web`.

What it shows, pushed by server-sent events the moment a decision is
journaled (from the lane's scanners, or typed into the page): the decision
in words, the attendee (name, company, category, ticket type, zones, entries
used / allowed, inside or not) and each benefit with what remains, the
header filled with the category's colour; and always the unit's state
(online, journal backlog, cache version and age, clock trusted).

What it does, each through the lane's normal path and journaled like any
decision: a typed code (PDA scanners type the code and Enter), the ticket
number with its 8-digit manual code (`handle_manual`), a benefit redeemed
(`LaneRunner.redeem`, only for a ticket this unit identified within
`IDENTIFIED_FOR_S`), the last four digits of a phone and the operator's pick
(`gated.gate.attended`), and at a desk lane (`[lane.printer]`) the badge of
that ticket printed (`gated.gate.badge_print.print_badge`), its result pushed
to every open page.

JSON API (POST, same origin; a session when a PIN is configured):
`/api/scan {code}`, `/api/manual {ticket, code}`, `/api/redeem {ticket,
benefit}`, `/api/phone {digits}`, `/api/pick {lookup, ticket}`, `/api/print {ticket}`; ticket ids
travel as decimal strings (JavaScript numbers stop at 2^53).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from gated.config import ScreenConfig
from gated.drivers.base import Read
from gated.drivers.keypad import ManualEntry
from gated.errors import BadgeError, PrinterError
from gated.gate.attended import LookupRefused, PhoneSearch
from gated.gate.badge_print import print_badge
from gated.gate.lane import LaneRunner
from gated.validation import Decision, Direction
from gated.web import Broadcast, WebServer, WebSettings, make_app
from gated.web.server import STATIC_DIR

log = structlog.get_logger("gated.gate.screen")

IDENTIFIED_FOR_S = 600.0  # a redemption needs the ticket shown on this unit this recently
UNIT_EVERY_S = 2.0
MAX_CODE = 512
U64_MAX = 2**64 - 1

WORDS = {
    "ok": "Admitted", "bad_format": "Not a ticket code", "unknown_key": "Code from an unknown key",
    "bad_signature": "Forged or damaged code", "code_expired": "Code expired (old screenshot?)",
    "code_not_yet_valid": "Code not yet valid (check the phone's clock)", "unknown_ticket": "Unknown ticket",
    "revoked": "Ticket revoked", "superseded_badge": "Old badge: a newer one was printed",
    "outside_validity": "Not valid at this time", "wrong_zone": "Not for this zone",
    "already_inside": "Already inside", "entries_exhausted": "No entries left", "zone_full": "Zone full",
    "no_benefit": "Not included in this ticket", "benefit_exhausted": "Already used up",
    "rate_limited": "Too fast: wait a second", "clock_unsynced": "Clock not synced: code cannot be checked",
    "registry_unreachable": "Registry unreachable: this unit may not redeem alone (strict policy)",
}


def decision_words(d: Decision) -> str:
    if d.check:  # a check lane: nobody enters here, so never "Admitted"
        return "Checked: valid" if d.admitted else f"Checked: {WORDS.get(str(d.reason), str(d.reason))}"
    if d.admitted:
        if d.benefit is not None:
            return f"Redeemed: {d.benefit}"
        return "Exit recorded" if d.direction is Direction.OUT else "Admitted"
    words = WORDS.get(str(d.reason), str(d.reason))
    return f"{d.benefit}: {words}" if d.benefit is not None else words


def text_color(background: str) -> str:
    """Black or white, whichever reads better on `background` ("#RRGGBB")."""
    r, g, b = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if luminance > 0.179 else "#FFFFFF"


def parse_ticket(value: Any) -> int:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) > U64_MAX:
        raise LookupRefused("a ticket number is decimal digits (0 to 18446744073709551615)")
    return int(text)


class OperatorScreen:
    """One lane's page: start() listens (refused with one line where the listen rule
    says no), stop() closes every open page's stream."""

    def __init__(self, lane: LaneRunner, config: ScreenConfig, *, unit_status: Callable[[], dict[str, Any]],
                 color_for: Callable[[str], str], gate_id: str = ""):
        self.lane = lane
        self.config = config
        self._unit_status = unit_status
        self._color_for = color_for
        self.events = Broadcast()
        self.phone = PhoneSearch(lane, config.phone_lookups_per_min)
        self.settings = WebSettings(
            host=config.host, port=config.port, tls_cert=config.tls_cert, tls_key=config.tls_key,
            pin_hash=config.pin_hash, session_minutes=config.session_minutes, title=f"{gate_id} {lane.id}".strip(),
        )
        self._identified: dict[int, float] = {}
        self._prints: dict[tuple[int, int], int] = {}  # (ticket, serial) -> badges printed by this unit since it started
        self._last_view: dict[str, Any] | None = None
        self._shown = 0
        self._page = (STATIC_DIR / "screen.html").read_text(encoding="utf-8")
        self.server = WebServer(self._app(), self.settings)
        self._ticker: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()
        self.lane.observers.append(self._on_decision)
        self._ticker = asyncio.create_task(self._tick(), name=f"screen-{self.lane.id}")
        log.info("screen_listening", lane=self.lane.id, url=self.url, sign_in=self.settings.pin_hash is not None)

    async def stop(self) -> None:
        if self._on_decision in self.lane.observers:
            self.lane.observers.remove(self._on_decision)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self.events.close()
        await self.server.stop()

    # ---- what the page shows ----

    def unit(self) -> dict[str, Any]:
        return {"lane": self.lane.id, "zone": self.lane.spec.zone, "direction": str(self.lane.spec.direction),
                "purpose": str(self.lane.spec.purpose),
                "printer": self.printer_kind, **self._unit_status()}

    @property
    def printer_kind(self) -> str | None:
        printer = self.lane.config.printer
        return None if printer is None else printer.kind

    def view(self, d: Decision) -> dict[str, Any]:
        cache = self.lane.services.validator.cache
        record = cache.get(d.ticket_id) if d.ticket_id is not None else None  # after commit(): what remains now
        color = self._color_for(d.category) if d.category else "#5A5A5A"
        self._shown += 1
        view: dict[str, Any] = {
            "shown": self._shown, "lane": d.lane_id, "at": d.at, "reason": str(d.reason), "admitted": d.admitted,
            "check": d.check,
            "words": decision_words(d), "benefit": d.benefit, "kind": None if d.kind is None else str(d.kind),
            "ticket": None if d.ticket_id is None else str(d.ticket_id), "category": d.category,
            "color": color, "text_color": text_color(color),
        }
        if record is not None:
            view.update(
                name=record.name, company=record.company, ticket_type=record.ticket_type, zones=list(record.zones),
                entries_used=record.entries_used, max_entries=record.max_entries,
                inside=d.zone in record.inside, inside_zones=list(record.inside),
                benefits=[{"name": n, "remaining": r} for n, r in record.benefits],
                state="revoked" if record.state else "active",
                can_print=self.printer_kind is not None,
            )
        return view

    def _on_decision(self, d: Decision) -> None:
        if d.ticket_id is not None:
            now = self.lane.services.monotonic()
            self._identified = {t: at for t, at in self._identified.items() if now - at < IDENTIFIED_FOR_S}
            self._identified[d.ticket_id] = now
        self._last_view = self.view(d)
        self.events.publish("decision", self._last_view)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(UNIT_EVERY_S)
            if len(self.events):
                try:
                    self.events.publish("unit", self.unit())
                except Exception as exc:  # the page's status bar must not take the lane down
                    log.error("screen_status_failed", lane=self.lane.id, error=repr(exc))

    # ---- the application ----

    def _app(self) -> web.Application:
        app = make_app(self.settings)
        app.router.add_get("/", self._index)
        app.router.add_get("/events", self._stream)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/scan", self._scan)
        app.router.add_post("/api/manual", self._manual)
        app.router.add_post("/api/redeem", self._redeem)
        app.router.add_post("/api/phone", self._phone)
        app.router.add_post("/api/pick", self._pick)
        app.router.add_post("/api/print", self._print)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        def initial():
            yield "unit", self.unit()
            if self._last_view is not None:
                yield "decision", self._last_view
        return await self.events.respond(request, initial)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response({"unit": self.unit(), "decision": self._last_view})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise LookupRefused("the request was not JSON") from None
        if not isinstance(body, dict):
            raise LookupRefused("the request was not a JSON object")
        return body

    async def _run(self, coro) -> Any:
        """Run on the lane's spawn, so a stopping gate waits for it like any scan."""
        return await self.lane.services.spawn(coro)

    def _answer(self, decision: Decision | None) -> web.Response:
        if decision is None:
            return web.json_response({"error": "the typed entry could not be read"}, status=400)
        return web.json_response({"reason": str(decision.reason), "words": decision_words(decision),
                                  "repeat": decision.repeat})

    @staticmethod
    def _refused(exc: Exception, status: int = 400) -> web.Response:
        return web.json_response({"error": str(exc)}, status=status)

    async def _scan(self, request: web.Request) -> web.Response:
        try:
            code = (await self._body(request)).get("code")
            if not isinstance(code, str) or not code.strip():
                raise LookupRefused("scan or type a code")
            if len(code) > MAX_CODE:
                raise LookupRefused(f"a code is at most {MAX_CODE} characters")
        except LookupRefused as exc:
            return self._refused(exc)
        read = Read("screen", code.strip(), self.lane.services.monotonic())
        decision = await self._run(self.lane.handle_read(read))
        if decision.repeat and self._last_view is not None:
            self.events.publish("decision", self._last_view)  # the same code again: show it again
        return self._answer(decision)

    async def _manual(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            ticket = parse_ticket(body.get("ticket"))
            digits = str(body.get("code", "")).strip()
            if not (len(digits) == 8 and digits.isascii() and digits.isdigit()):
                raise LookupRefused("the manual code is 8 digits")
        except LookupRefused as exc:
            return self._refused(exc)
        entry = ManualEntry("screen", ticket, digits, self.lane.services.monotonic())
        return self._answer(await self._run(self.lane.handle_manual(entry)))

    async def _redeem(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            ticket = parse_ticket(body.get("ticket"))
            benefit = body.get("benefit")
            if not isinstance(benefit, str) or not 0 < len(benefit) <= 64:
                raise LookupRefused("name the benefit to redeem")
            if not self._identified_recently(ticket):
                raise LookupRefused("scan the badge first: a benefit is redeemed for the person in front of you")
        except LookupRefused as exc:
            return self._refused(exc)
        return self._answer(await self._run(self.lane.redeem(ticket, benefit)))

    def _identified_recently(self, ticket: int) -> bool:
        seen = self._identified.get(ticket)
        return seen is not None and self.lane.services.monotonic() - seen < IDENTIFIED_FOR_S

    async def _print(self, request: web.Request) -> web.Response:
        try:
            if self.printer_kind is None:
                raise LookupRefused(f"lane {self.lane.id} has no badge printer")
            ticket = parse_ticket((await self._body(request)).get("ticket"))
            if not self._identified_recently(ticket):
                raise LookupRefused("scan the badge first: a badge is printed for the person in front of you")
        except LookupRefused as exc:
            return self._refused(exc)
        try:
            printed = await self._run(print_badge(self.lane, ticket))
        except (BadgeError, PrinterError) as exc:
            message = " ".join(str(exc).split())  # one line, whatever the printer said
            log.warning("badge_not_printed", lane=self.lane.id, ticket_id=ticket, error=message)
            self.events.publish("printed", {"ticket": str(ticket), "ok": False, "words": message})
            return web.json_response({"error": message}, status=502 if isinstance(exc, PrinterError) else 400)
        key = (printed.ticket_id, printed.serial)
        self._prints[key] = count = self._prints.get(key, 0) + 1
        words = f"Badge printed (serial {printed.serial})"
        if count > 1:
            words += f": printed before, {count - 1} time{'s' if count > 2 else ''} on this unit"
        result = {"ticket": str(ticket), "ok": True, "words": words, "serial": printed.serial, "count": count,
                  "seq": printed.seq}
        self.events.publish("printed", result)
        return web.json_response(result)

    async def _phone(self, request: web.Request) -> web.Response:
        try:
            digits = str((await self._body(request)).get("digits", "")).strip()
            lookup = await self._run(self.phone.search(digits))
        except LookupRefused as exc:
            return self._refused(exc, 429 if "too many" in str(exc) else 400)
        return web.json_response({"lookup": lookup.seq, "matches": [
            {"ticket": str(m.ticket_id), "name": m.name, "company": m.company, "category": m.category,
             "ticket_type": m.ticket_type, "color": self._color_for(m.category)} for m in lookup.matches]})

    async def _pick(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            ticket = parse_ticket(body.get("ticket"))
            lookup = body.get("lookup")
            if isinstance(lookup, bool) or not isinstance(lookup, int):
                raise LookupRefused("which search? search again")
            decision = await self._run(self.phone.pick(lookup, ticket))
        except LookupRefused as exc:
            return self._refused(exc)
        return self._answer(decision)


def unit_status_of(gate: Any) -> Callable[[], dict[str, Any]]:
    """What the status bar shows, read from a running `Gate`."""

    def status() -> dict[str, Any]:
        cache = gate.validator.cache
        uplink = gate.uplink
        changed = getattr(gate, "cache_changed_at", None)
        try:
            backlog = gate.journal.backlog()
        except Exception:
            backlog = None
        return {
            "gate_id": gate.gate_id,
            "online": bool(uplink is not None and uplink.connected),
            "uplink_configured": uplink is not None,
            "backlog": backlog,
            "cache_version": cache.version,
            "cache_tickets": len(cache),
            "cache_age_s": None if changed is None else max(0.0, round(time.time() - changed, 1)),
            "clock_trusted": gate.clock.trusted(),
            "cache_stale": bool(getattr(gate, "freshness", None) is not None and gate.freshness.check()),
            "fault": gate.fault,
        }

    return status
