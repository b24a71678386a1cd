"""A venue for the desk pages and the dashboard: the registry, two gates with real
gRPC uplinks, and the staff pages on loopback (`RegistryWeb` with `staff_pages()`,
as `gated registry serve` runs them), all on one event loop in a thread (so a
blocking browser can drive the pages while the gates run).

Staff sign in with real accounts (argon2id, the registry's file): one per role,
`STAFF[role]`, each with `PASSWORD`; `get`/`post` sign in once per role over HTTP
and send that session's cookie.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gated.bench.screen import free_port
from gated.registry.accounts import Accounts
from gated.registry.http import RegistryWeb
from gated.registry.pages import staff_pages
from gated.validation import Lane, TicketRecord
from gated.validation import Validator
from gated.validation.policy import Direction, Policy
from gated.web import WebSettings
from tests.conftest import POSTGRES_ENV, fresh_postgres_db
from tests.rpc_helpers import Gate, start_registry

HALL_IN = Lane("in-1", "hall")
HALL_OUT = Lane("out-1", "hall", Direction.OUT)
LOUNGE_IN = Lane("vip-1", "lounge")

WANG = 5205320758  # a 10-digit registration number, phone ending 0758
BLOCK = 3_000_042  # ids in blocks of 1,000,000
BIG = 0x5DEECE66D1234567  # a random 63-bit id
HUGE = 0xF00D_0000_0000_0001  # an id of 2^63 and above (stored negative in SQLite)
TICKETS = [
    TicketRecord(ticket_id=WANG, category="guest", ticket_type="3-day", zones=("hall",), name="Wang Fang",
                 company="Acme Robotics", benefits=(("lunch_day1", 1),), phone_last4="0758"),
    TicketRecord(ticket_id=BLOCK, category="media", ticket_type="press", zones=("hall",), name="Chen Jing", company="Daily News"),
    TicketRecord(ticket_id=HUGE, category="staff", ticket_type="crew", zones=("hall",), name="Ma Chao", company="Venue Crew"),
    TicketRecord(ticket_id=BIG, category="vip", ticket_type="vip", zones=("hall", "lounge"), name="Zhang Wei", company="Acme Capital"),
] + [TicketRecord(ticket_id=1_000_000 * k + n, category="guest", zones=("hall",), name=f"Guest {k}-{n}")
     for k in (1, 2) for n in range(1, 31)]
PHONES = {WANG: "+86 138 5205 0758"}
STAFF = {"viewer": "lead", "desk": "li.desk", "admin": "anna"}  # role -> the account signed in with it
PASSWORD = "registration desk 1"


ENGINES = ["sqlite", "postgres"]


def venue_db(engine: str, root: Path) -> Iterator[Path | str]:
    """`registry_db` for a module's venue: an SQLite file under `root`, or a fresh PostgreSQL database
    (skipped, saying why, without GATED_TEST_POSTGRES)."""
    if engine == "sqlite":
        yield root / "registry.db"
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (.ci/postgres.sh starts one)")
    yield from fresh_postgres_db(admin_url)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class DeskVenue:
    def __init__(self, root: Path, db: Path | str | None = None) -> None:
        self.root = root
        self.db = root / "registry.db" if db is None else db
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="venue", daemon=True)
        self.gates: dict[str, Gate] = {}
        self._cookies: dict[str, str] = {}

    def call(self, coro, timeout: float = 15.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args):
        async def wrapped():
            return fn(*args)
        return self.call(wrapped())

    def __enter__(self) -> DeskVenue:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.registry = await start_registry(self.db, None, tickets=())
        self.registry.store.put_tickets([(t, PHONES.get(t.ticket_id, "")) for t in TICKETS])
        self.registry.service.wake()
        for gate_id in ("gate-a", "gate-b"):
            gate = Gate(self.root, gate_id, self.registry.port, None)
            gate.validator = Validator(gate.keyring, gate.cache, Policy(rate_burst=1000, rate_per_s=1000.0))
            self.gates[gate_id] = gate.start()
        start = time.monotonic()
        while any(len(g.cache) < len(TICKETS) or not g.keyring for g in self.gates.values()):
            if time.monotonic() - start > 10:
                raise AssertionError("the gates never got the tickets and keys")
            await asyncio.sleep(0.02)
        accounts = Accounts(self.registry.store)
        for role, name in STAFF.items():
            accounts.add_user(name, role, PASSWORD)
        self.web = RegistryWeb(self.registry, WebSettings(host="127.0.0.1", port=free_port(), title="registry"),
                               pages=staff_pages())
        await self.web.start()

    def __exit__(self, *exc) -> None:
        async def stop():
            await self.web.stop()
            for gate in self.gates.values():
                await gate.stop()
            await self.registry.stop()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return self.web.url

    def scan(self, gate_id: str, code: str, lane: Lane = HALL_IN):
        """A person at a lane of this gate: decide, journal, through if admitted, uplink woken."""
        return self.call(self.gates[gate_id].pass_through(code, lane))

    def sign_in(self, username: str, password: str) -> tuple[int, str]:
        """POST the sign-in form: (status, the session cookie "name=value" or the page's text)."""
        import urllib.parse

        request = urllib.request.Request(
            self.url + "signin", method="POST", headers={"Origin": self.url.rstrip("/")},
            data=urllib.parse.urlencode({"username": username, "password": password, "next": "/"}).encode())
        try:
            with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            cookie = exc.headers.get("Set-Cookie", "").partition(";")[0]
            return exc.code, cookie or exc.read().decode()

    def cookie(self, role: str) -> str:
        """The session cookie of the account with this role ("": nobody signed in)."""
        if role and role not in self._cookies:
            status, cookie = self.sign_in(STAFF[role], PASSWORD)
            assert status == 303 and cookie.startswith("gated_session_"), (status, cookie)
            self._cookies[role] = cookie
        return self._cookies.get(role, "")

    def get(self, path: str, role: str = "viewer") -> tuple[int, bytes, str]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Cookie": self.cookie(role)})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "")

    def post(self, path: str, form: dict[str, str], role: str = "desk") -> tuple[int, str]:
        """A form POST from this server's own page (its Origin), not following the redirect."""
        import urllib.parse

        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Cookie": self.cookie(role), "Origin": self.url.rstrip("/")})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.headers.get("Location", "") or response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "") or exc.read().decode()
