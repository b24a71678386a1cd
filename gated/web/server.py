"""The aiohttp application every gated page runs in: static files from the
package, the sign-in page and its middleware, the same-origin rule, TLS, and
the listen rule checked before a socket opens (see `gated.web`)."""

from __future__ import annotations

import asyncio
import html
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlsplit

from aiohttp import web

from gated.errors import GatedError
from gated.web.security import Sessions, listen_problem, same_origin, verify_pin

STATIC_DIR = Path(__file__).resolve().parent / "static"
PUBLIC_PATHS = ("/signin", "/static/")
SETTINGS: web.AppKey["WebSettings"] = web.AppKey("settings")
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
ACCOUNTS: web.AppKey["SignIn | None"] = web.AppKey("accounts")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: request[PRINCIPAL]: who an accounts sign-in or a bearer token says is asking (None with a PIN).
PRINCIPAL = web.RequestKey("principal", object) if hasattr(web, "RequestKey") else "gated_principal"


class WebError(GatedError, ValueError):
    """A web page cannot be served as configured; the message is one line."""


@dataclass(frozen=True, slots=True)
class WebSettings:
    """Where a page listens and who may use it (a config table maps onto this)."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # set (with TLS): a client certificate signed by this CA may be presented (browsers need none);
    # `SignIn.client_cert` says whom a verified one names (a registration system's mTLS)
    tls_client_ca: Path | None = None
    pin_hash: str | None = None  # set: every page but /signin and /static needs a session
    session_minutes: float = 480.0
    title: str = "gated"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"


@dataclass(frozen=True, slots=True)
class SignIn:
    """A sign-in with accounts instead of the unit's PIN (the registry's staff pages).

    `fields` is the HTML of the form's inputs; `check(form)` (awaited on the
    loop: it runs its slow work off it) returns who signed in, kept with the
    session and set as request[PRINCIPAL], or (None, the one-line refusal).
    `bearer(token)`, when set, admits a request with `Authorization: Bearer
    TOKEN` without a session or an Origin (a registration system's API call;
    a browser cannot send that header across sites without a preflight we
    never answer): its principal, or None for 401."""

    fields: str
    check: Callable[[Mapping[str, str]], Awaitable[tuple[Any, str]]]
    bearer: Callable[[str], Awaitable[Any]] | None = None
    # `client_cert(cn)`: whom a verified client certificate names (None: 401), for a request to /api/
    # with no Authorization header and no Origin or Referer (a program, not a browser page)
    client_cert: Callable[[str], Awaitable[Any]] | None = None


def check_settings(settings: WebSettings, *, sign_in: bool = False) -> None:
    """The listen rule, as a `WebError` (the config loader checks it earlier, with file and line)."""
    problem = listen_problem(settings.host, tls=settings.tls, sign_in=sign_in or settings.pin_hash is not None)
    if problem:
        raise WebError(problem)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise WebError("set both tls_cert and tls_key, or neither")


def _cookie_name(settings: WebSettings) -> str:
    # Browsers share cookies across the ports of one host: one name per server keeps
    # two units' pages on one machine from signing each other out.
    return f"gated_session_{settings.port}"


def make_app(settings: WebSettings, *, sessions: Sessions | None = None, accounts: SignIn | None = None) -> web.Application:
    """An application with static files, sign-in (when `pin_hash` or `accounts` is set) and
    the same-origin rule for every POST. Add routes with `app.router.add_*`."""
    check_settings(settings, sign_in=accounts is not None)
    sessions = sessions or Sessions(settings.session_minutes * 60.0)
    cookie = _cookie_name(settings)
    signs_in = settings.pin_hash is not None or accounts is not None

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        request[PRINCIPAL] = None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if accounts is not None and accounts.bearer is not None and scheme.lower() == "bearer":
            request[PRINCIPAL] = await accounts.bearer(token.strip())
            if request[PRINCIPAL] is None:
                return web.json_response({"error": "unknown or revoked token"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            return _secured(await handler(request))
        if (accounts is not None and accounts.client_cert is not None and request.path.startswith("/api/")
                and not request.headers.get("Origin") and not request.headers.get("Referer")
                and (cn := client_cert_cn(request)) is not None):
            # A browser sends Origin on every cross-site POST and could send a client certificate on
            # its own: a program's request carries neither Origin nor Referer.
            request[PRINCIPAL] = await accounts.client_cert(cn)
            if request[PRINCIPAL] is None:
                return web.json_response({"error": f"the client certificate {cn!r} names no API integration"}, status=401)
            return _secured(await handler(request))
        if request.method not in SAFE_METHODS and not same_origin(
            request.headers.get("Origin"), request.headers.get("Referer"), request.scheme, request.host
        ):
            return web.json_response({"error": "refused: this request did not come from this page"}, status=403)
        public = any(request.path == p or (p.endswith("/") and request.path.startswith(p)) for p in PUBLIC_PATHS)
        if signs_in and not public and not sessions.valid(request.cookies.get(cookie)):
            if request.path.startswith("/api/") or request.path in ("/events", "/metrics"):  # a program: 401, no page
                return web.json_response({"error": "sign in first", "signin": True}, status=401)
            raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
        request[PRINCIPAL] = sessions.principal(request.cookies.get(cookie))
        return _secured(await handler(request))

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[SETTINGS], app[SESSIONS], app[ACCOUNTS] = settings, sessions, accounts

    async def signin(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        target = _safe_next(str(form.get("next", "/")))
        client = request.remote or "?"
        principal = None
        if accounts is not None:
            if sessions.locked_out(client):
                return signin_form(target, "Too many failed sign-ins from here: wait a minute and try again.", 429)
            principal, refusal = await accounts.check({k: str(v) for k, v in form.items()})
            if principal is None:
                sessions.failed(client)
                return signin_form(target, refusal, 401)
        elif settings.pin_hash is None:
            raise web.HTTPSeeOther(target)
        elif sessions.locked_out(client):
            return signin_form(target, "Too many wrong PINs: wait a minute and try again.", 429)
        # scrypt takes tens of ms: off the loop that decides.
        elif not await asyncio.to_thread(verify_pin, str(form.get("pin", "")), settings.pin_hash):
            sessions.failed(client)
            return signin_form(target, "Wrong PIN.", 401)
        response = web.HTTPSeeOther(target)
        response.set_cookie(cookie, sessions.open(principal), max_age=int(sessions.lifetime_s), httponly=True,
                            secure=settings.tls, samesite="Strict", path="/")
        raise response

    def signin_form(target: str, message: str = "", status: int = 200) -> web.Response:
        body = (_SIGNIN_HTML.replace("{fields}", _PIN_FIELDS if accounts is None else accounts.fields)
                .replace("{title}", html.escape(settings.title))
                .replace("{next}", html.escape(target, quote=True))
                .replace("{message}", html.escape(message)))
        return web.Response(text=body, content_type="text/html", status=status)

    async def signin_get(request: web.Request) -> web.Response:
        return signin_form(_safe_next(request.query.get("next", "/")))

    async def signout(request: web.Request) -> web.StreamResponse:
        sessions.close(request.cookies.get(cookie))
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(cookie, path="/")
        raise response

    app.router.add_get("/signin", signin_get)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
    )
    return response


def _safe_next(target: str) -> str:
    """Only a path on this server: never an open redirect to another site."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def ssl_context(settings: WebSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise WebError(f"{settings.tls_cert}: cannot load the TLS certificate and key: {exc}") from None
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise WebError(f"{settings.tls_client_ca}: cannot load the client CA: {exc}") from None
        context.verify_mode = ssl.CERT_OPTIONAL  # a certificate presented must verify; none is fine (a browser)
    return context


def client_cert_cn(request: web.Request) -> str | None:
    """The subject CN of the client certificate this TLS connection verified, if any."""
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


async def serve_app(app: web.Application, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: the system picks one); the runner (`cleanup()` stops it) and
    the port it listens on. OSError, with nothing left listening, when it cannot bind."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or ()
    return runner, sockets[0].getsockname()[1] if sockets else port


class WebServer:
    """One application on one address; `start()` refuses what the listen rule refuses."""

    def __init__(self, app: web.Application, settings: WebSettings):
        self.app, self.settings = app, settings
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"{'https' if self.settings.tls else 'http'}://{host}:{self.port}/"

    async def start(self) -> None:
        check_settings(self.settings, sign_in=self.app.get(ACCOUNTS) is not None)
        try:
            self._runner, self.port = await serve_app(self.app, self.settings.host, self.settings.port,
                                                      ssl_context(self.settings))
        except OSError as exc:
            raise WebError(f"cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


_SIGNIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · {title}</title>
<link rel="stylesheet" href="/static/gated.css">
</head><body class="signin">
<header class="bar"><h1>{title}</h1></header>
<main>
<form method="post" action="/signin" class="card">
{fields}
  <input type="hidden" name="next" value="{next}">
  <button type="submit" id="signin">Sign in</button>
  <p class="message" role="alert">{message}</p>
</form>
</main></body></html>
"""

_PIN_FIELDS = """  <label for="pin">Operator PIN</label>
  <input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="current-password" autofocus required>"""
