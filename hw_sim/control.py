"""The rehearsal's web console and its control API, on 127.0.0.1 only: what technicians, scripts and tests drive.

Built on gated's one web stack (`gated.web.make_app`), so it keeps its rules:
loopback only, and every POST must carry this server's own Origin (a page
of it, or a script saying `-H "Origin: http://127.0.0.1:PORT"`): another
site open in the same browser cannot cut the gate's power.

    GET  /                               the console (hw_sim/static/console.*: served from the package, no CDN,
                                         no build step), drawn from /api/events, every button a POST below
    GET  /api/state                      the whole picture, one JSON object (Rehearsal.state())
    GET  /api/events                     server-sent events: `state` (the same object, 4 a second),
                                         `record` (each journal record the gate wrote), `fault`
    GET  /api/kinds                      what /api/present and /api/fault/... accept; the lanes with a camera, the
                                         category colours, the registry's staff pages (what the console draws once)
    POST /api/present                    {lane, kind: valid|badge|forged|expired|...} or {lane, code}; optional
                                         ticket, via: "scanner" (default) | "camera" (the lane's IP camera)
                                         -> the decision: {lane, kind, via, ticket, reason, decided, seq, latency_ms, relay_ms}
    POST /api/fault/network_cut          {mode: "drop"|"blackhole"}     POST /api/fault/network_restore
    POST /api/fault/power_cut            {off_s: 3 | null (stay off)}   POST /api/fault/power_restore
    POST /api/fault/scanner_unplug       {lane}                         POST /api/fault/scanner_replug {lane}
    POST /api/fault/clock_jump           {offset_s, restart: true}
    POST /api/fault/emergency            {active: true|false}
    POST /api/fault/line_noise           {lane, bursts: 5}
    POST /api/fault/tailgate             {lane}
    POST /api/registry/revoke            {ticket}                       POST /api/registry/reprint {ticket}

Every answer is JSON: 200 with the result, 400 `{"error": "one line"}` for a
request the rehearsal cannot do, 404 for an unknown action.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from gated.web import Broadcast, WebServer, WebSettings, make_app
from hw_sim.rehearsal import BAD_KINDS, FAULTS, PRESENT_KINDS, Presentation, Rehearsal, RehearsalError
from hw_sim.sim import DEMO_USER

DEFAULT_API_PORT = 8091
_MAX_BODY = 16 * 1024
CONSOLE_DIR = Path(__file__).resolve().parent / "static"  # served at /console/; gated.web's own files at /static/


def _presentation(p: Presentation) -> dict[str, Any]:
    return {"lane": p.lane, "kind": p.kind, "via": p.via, "ticket": p.ticket, "reason": p.reason, "decided": p.reason is not None,
            "seq": p.seq, "latency_ms": None if p.latency_ms is None else round(p.latency_ms, 2),
            "relay_ms": None if p.relay_ms is None else round(p.relay_ms, 2)}


def _int(body: dict, key: str, *, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RehearsalError(f"{key} must be a ticket number")
    try:
        number = int(value)
    except ValueError:
        raise RehearsalError(f"{key} must be a ticket number, got {value!r}") from None
    if not 0 <= number < 1 << 64:
        raise RehearsalError(f"{key} must be between 0 and 2^64-1")
    return number


def _float(body: dict, key: str, default: float | None) -> float | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RehearsalError(f"{key} must be a number of seconds, got {value!r}")
    return float(value)


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RehearsalError(f"{key} must be true or false, got {value!r}")
    return value


def _lane(body: dict, rehearsal: Rehearsal) -> str:
    lane = body.get("lane")
    if not isinstance(lane, str):
        raise RehearsalError(f"lane is required: one of {', '.join(rehearsal.lane_ids())}")
    return lane


class ControlApi:
    """The HTTP API of one `Rehearsal`; `await start()` then `.url`."""

    def __init__(self, rehearsal: Rehearsal, *, port: int = DEFAULT_API_PORT) -> None:
        self.rehearsal = rehearsal
        self.settings = WebSettings(host="127.0.0.1", port=port, title="gated sim")
        self.events = Broadcast()
        app = make_app(self.settings)
        self._page = (CONSOLE_DIR / "console.html").read_text(encoding="utf-8")
        app.router.add_get("/", self._console)
        app.router.add_static("/console/", CONSOLE_DIR, follow_symlinks=False)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/kinds", self._kinds)
        app.router.add_post("/api/present", self._present)
        app.router.add_post("/api/fault/{name}", self._fault)
        app.router.add_post("/api/registry/{name}", self._registry)
        self.server = WebServer(app, self.settings)
        rehearsal.listeners.append(self.events.publish)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        self.events.close()
        if self.events.publish in self.rehearsal.listeners:
            self.rehearsal.listeners.remove(self.events.publish)
        await self.server.stop()

    # ---- handlers ----

    async def _console(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html")

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.rehearsal.state(), dumps=lambda o: json.dumps(o, default=str))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await self.events.respond(request, initial=lambda: [("state", json.loads(json.dumps(self.rehearsal.state(), default=str)))])

    async def _kinds(self, request: web.Request) -> web.Response:
        r = self.rehearsal
        config = getattr(r, "config", None)
        pages = r.staff_pages.url if r.staff_pages is not None else None
        return web.json_response({"present": PRESENT_KINDS, "bad": list(BAD_KINDS), "faults": list(FAULTS),
                                  "registry": ["revoke", "reprint"], "lanes": r.lane_ids(), "cameras": sorted(r.cameras),
                                  "colors": {} if config is None else {**config.policy.colors, "default": config.policy.default_color},
                                  "staff_pages": None if pages is None else {"desk": pages, "dashboard": pages + "dashboard",
                                                                             "account": DEMO_USER}})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_length and request.content_length > _MAX_BODY:
            raise RehearsalError("request body too large")
        text = await request.text()
        if not text.strip():
            return {}
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RehearsalError(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(body, dict):
            raise RehearsalError("the body must be a JSON object")
        return body

    async def _answer(self, request: web.Request, action) -> web.Response:
        try:
            if self.rehearsal.gate is None:
                raise RehearsalError("the rehearsal is still starting: try again in a few seconds")
            body = await self._body(request)
            result = await action(body)
        except RehearsalError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result, dumps=lambda o: json.dumps(o, default=str))

    async def _present(self, request: web.Request) -> web.Response:
        r = self.rehearsal

        async def act(body: dict) -> dict:
            lane = _lane(body, r)
            code = body.get("code")
            kind = body.get("kind", "valid")
            if not isinstance(kind, str):
                raise RehearsalError(f"kind must be one of {', '.join(PRESENT_KINDS)}")
            via = body.get("via", "scanner")
            if not isinstance(via, str):
                raise RehearsalError("via must be scanner or camera")
            p = await r.present(lane, kind=kind, ticket=_int(body, "ticket", required=False), code=code, via=via)
            return _presentation(p)

        return await self._answer(request, act)

    async def _fault(self, request: web.Request) -> web.Response:
        r = self.rehearsal
        name = request.match_info["name"]
        actions = {
            "network_cut": lambda b: r.network_cut(b.get("mode", "drop")),
            "network_restore": lambda b: r.network_restore(),
            "power_cut": lambda b: r.power_cut(_float(b, "off_s", 3.0)),
            "power_restore": lambda b: r.power_restore(),
            "scanner_unplug": lambda b: r.scanner_unplug(_lane(b, r)),
            "scanner_replug": lambda b: r.scanner_replug(_lane(b, r)),
            "clock_jump": lambda b: r.clock_jump(_float(b, "offset_s", 3600.0), restart=_bool(b, "restart", True)),
            "emergency": lambda b: r.set_emergency(_bool(b, "active", not r.emergency)),
            "line_noise": lambda b: r.line_noise(_lane(b, r), bursts=int(_float(b, "bursts", 5.0))),
            "tailgate": lambda b: r.tailgate(_lane(b, r)),
        }
        if name not in actions:
            return web.json_response({"error": f"no fault {name!r}; one of {', '.join(actions)}"}, status=404)
        return await self._answer(request, actions[name])

    async def _registry(self, request: web.Request) -> web.Response:
        r = self.rehearsal
        name = request.match_info["name"]
        actions = {"revoke": lambda b: r.revoke(_int(b, "ticket")), "reprint": lambda b: r.reprint(_int(b, "ticket"))}
        if name not in actions:
            return web.json_response({"error": f"no registry action {name!r}; one of {', '.join(actions)}"}, status=404)
        return await self._answer(request, actions[name])


async def start_api(rehearsal: Rehearsal, port: int = DEFAULT_API_PORT) -> ControlApi:
    """The API on `port`, or on a free port when that one is busy."""
    from gated.web import WebError

    api = ControlApi(rehearsal, port=port)
    try:
        await api.start()
    except WebError:
        rehearsal.listeners.remove(api.events.publish)
        if port == 0:
            raise
        api = ControlApi(rehearsal, port=0)
        await api.start()
    return api
