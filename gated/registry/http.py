"""The registry's HTTP side: one aiohttp application for the staff pages and the API.

Built on the one web stack (`gated.web.make_app`: static files, sessions,
the same-origin rule, the listen rule, TLS), with the registry's accounts as
its sign-in (`gated.registry.accounts`: name and password, roles) and bearer
tokens for registration systems (`gated.registry.api`).

    registry = RegistryServer(db, "127.0.0.1:7443", tls=...)
    await registry.start()
    web = RegistryWeb(registry, WebSettings("127.0.0.1", 8443, title="registry"), pages=[add_pages])
    await web.start()          # WebError, one line, when the listen rule refuses
    print(web.url)

A page module adds its routes with one function, given the application and
the `Registry` (below): `def add_pages(app, registry): app.router.add_get(...)`.
A handler learns who is asking with `principal(request)` and refuses with
`require(request, "desk")` (403 unless the role includes desk).

Nothing heavy runs on the loop the gates' streams run on: the store is used
from worker threads, each with a connection of its own (`Worker`): `writes`
(one at a time, like `gated registry import`: a commit is then published to
the gates by the service's change poll, which `Registry.changed()` wakes),
`reads` (pages and API reads; WAL: never waits for a write), and `accounts`
(argon2 costs some 50 ms a sign-in).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from gated.registry import dashdata
from gated.registry.accounts import Accounts, Principal
from gated.registry.server import RegistryServer, RegistryService
from gated.registry.store import RegistryStore
from gated.web import PRINCIPAL, SignIn, WebServer, WebSettings, make_app
from gated.web.server import SESSIONS

T = TypeVar("T")
REGISTRY: web.AppKey["Registry"] = web.AppKey("registry")
#: A page module's hook: add routes to the application.
PageRoutes = Callable[[web.Application, "Registry"], None]

_ACCOUNT_FIELDS = """  <label for="username">Name</label>
  <input id="username" name="username" type="text" autocomplete="username" autofocus required maxlength="64">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required maxlength="256">"""


class Worker:
    """One thread with its own connection to the registry's file: `await run(fn, *args)` calls
    `fn(store, *args)` there, one call at a time, off the event loop."""

    def __init__(self, db: Path, name: str) -> None:
        self.db = db
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"registry-{name}")
        self._local = threading.local()
        self._stores: list[RegistryStore] = []

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = RegistryStore(self.db, create=False)
            self._stores.append(store)
        return fn(store, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def close(self) -> None:
        def close_all() -> None:
            for store in self._stores:
                store.close()
        self._pool.submit(close_all).result()
        self._pool.shutdown()


@dataclass
class Registry:
    """What the pages and the API share: the gRPC service, the store workers, the clock."""

    service: RegistryService
    db: Path
    writes: Worker
    reads: Worker
    accounts: Worker
    clock: Callable[[], float] = time.time  # unix seconds: account locks, revocation times

    def changed(self) -> None:
        """A write committed: have the service publish it to the gates now, not at its next poll."""
        self.service.wake()

    def close(self) -> None:
        for worker in (self.writes, self.reads, self.accounts):
            worker.close()


API_CERT_PREFIX = "api:"  # the subject CN of an API integration's client certificate (gated certs make --api-clients)


def principal(request: web.Request) -> Principal | None:
    """Who is asking: the signed-in account, or the API token's integration."""
    who = request.get(PRINCIPAL)
    return who if isinstance(who, Principal) else None


def require(request: web.Request, role: str) -> Principal:
    """The principal, when its role includes `role`; otherwise 401 / 403 (JSON under /api/; a page
    without a sign-in is sent to sign in and comes back)."""
    who = principal(request)
    api = request.path.startswith("/api/")
    if who is None:
        if api:
            raise web.HTTPUnauthorized(text='{"error": "sign in or send a bearer token"}', content_type="application/json")
        raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
    if not who.may(role):
        message = f"{who.actor} is a {who.role}; this needs the {role} role"
        if api:
            raise web.HTTPForbidden(text=json.dumps({"error": message}), content_type="application/json")
        raise web.HTTPForbidden(text=message)
    return who


def end_sessions(request: web.Request, username: str) -> int:
    """Sign out every browser signed in as this account (disabled, its role or password changed)."""
    return request.app[SESSIONS].close_where(lambda who: isinstance(who, Principal) and who.kind == "user"
                                             and who.name == username)


def make_registry_app(registry: Registry, settings: WebSettings, *, pages: Sequence[PageRoutes] = ()) -> web.Application:
    """The registry's application: sign-in with accounts, the API, then each page module's routes."""
    from gated.registry import api

    async def check(form) -> tuple[Principal | None, str]:
        username, password = form.get("username", "").strip(), form.get("password", "")
        now = registry.clock()
        result = await registry.accounts.run(lambda store: Accounts(store).verify(username, password, now))
        return result.principal, result.refusal or ""

    async def bearer(token: str) -> Principal | None:
        return await registry.accounts.run(lambda store: Accounts(store).token_principal(token))

    async def client_cert(cn: str) -> Principal | None:
        """A venue CA's certificate with CN "api:NAME" signs in API integration NAME (made with
        `gated registry tokens add NAME --role R`); gates' certificates name no integration."""
        name = cn.removeprefix(API_CERT_PREFIX)
        if name == cn or not name:
            return None
        return await registry.accounts.run(lambda store: Accounts(store).integration(name))

    app = make_app(settings, accounts=SignIn(_ACCOUNT_FIELDS, check, bearer, client_cert))
    app[REGISTRY] = registry
    api.add_routes(app, registry)
    app.router.add_get("/metrics", _metrics)
    for add in pages:
        add(app, registry)
    if not any(getattr(r, "canonical", None) == "/" for r in app.router.resources()):
        app.router.add_get("/", _index)
    return app


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text (`gated.registry.metrics`) for a viewer: a session, or an API token a scraper sends
    as `Authorization: Bearer` (these pages may face the staff network; `serve --metrics` is the loopback one)."""
    if principal(request) is None:
        raise web.HTTPUnauthorized(text="send an API token: Authorization: Bearer TOKEN\n", headers={"WWW-Authenticate": "Bearer"})
    require(request, "viewer")
    from prometheus_client import CONTENT_TYPE_LATEST

    body = await request.app[REGISTRY].service.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _index(request: web.Request) -> web.Response:
    who = require(request, "viewer")
    return web.Response(content_type="text/html", text=(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>registry</title>'
        '<link rel="stylesheet" href="/static/gated.css"></head><body><main class="card">'
        f"<p>Signed in as {who.name} ({who.role}).</p>"
        '<p>The API for registration systems is described at <a href="/api/openapi.json">/api/openapi.json</a>.</p>'
        '<form method="post" action="/signout"><button type="submit">Sign out</button></form>'
        "</main></body></html>"))


class RegistryWeb:
    """The registry's pages and API on one address, beside a running `RegistryServer`."""

    def __init__(self, server: RegistryServer, settings: WebSettings, *, pages: Sequence[PageRoutes] = (),
                 clock: Callable[[], float] = time.time) -> None:
        db = server.db
        self.registry = Registry(server.service, db, Worker(db, "writes"), Worker(db, "reads"), Worker(db, "accounts"), clock)
        self.app = make_registry_app(self.registry, settings, pages=pages)
        self._web = WebServer(self.app, settings)

    @property
    def url(self) -> str:
        return self._web.url

    @property
    def port(self) -> int:
        return self._web.port

    async def start(self) -> None:
        try:
            # The dashboard's figures, the search's indexes and the time of each change (once per file).
            await self.registry.writes.run(lambda store: dashdata.install(store.conn))
            await self._web.start()
        except BaseException:
            await asyncio.to_thread(self.registry.close)
            raise

    async def stop(self) -> None:
        await self._web.stop()
        await asyncio.to_thread(self.registry.close)

    async def __aenter__(self) -> RegistryWeb:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
