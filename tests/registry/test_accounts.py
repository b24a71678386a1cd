"""Staff accounts at the registry: sign-in, the seed's three-strikes lock, roles, tokens kept hashed.

The clock is injected: fifteen minutes pass in a line.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import aiohttp
import pytest

from gated.errors import RegistryError
from gated.registry.accounts import LOCK_S, Accounts, Principal
from gated.registry.http import RegistryWeb, require
from gated.registry.store import SCHEMA_VERSION, RegistryStore
from gated.web import WebSettings
from tests.rpc_helpers import start_registry

pytestmark = pytest.mark.timeout(120)
MORNING = 1_750_000_000.0  # 2025-06-15, doors open


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_three_wrong_passwords_lock_the_account_for_fifteen_minutes(tmp_path, registry_db):
    with RegistryStore(registry_db) as store:
        accounts = Accounts(store)
        accounts.add_user("li.wei", "desk", "correct horse")
        assert accounts.verify("li.wei", "correct horse", MORNING).principal == Principal("li.wei", "desk")
        for n in range(2):
            assert accounts.verify("li.wei", f"guess {n}", MORNING + n).principal is None
        third = accounts.verify("li.wei", "guess 3", MORNING + 2)
        assert third.principal is None and third.locked_until == MORNING + 2 + LOCK_S and "locked" in third.refusal
        during = accounts.verify("li.wei", "correct horse", MORNING + 2 + LOCK_S - 1)
        assert during.principal is None and "1 minute" in during.refusal  # even the right password waits
        assert accounts.verify("li.wei", "correct horse", MORNING + 2 + LOCK_S).principal == Principal("li.wei", "desk")
        # the count starts afresh after the lock, and a right password clears it
        for n in range(2):
            accounts.verify("li.wei", "wrong", MORNING + 2000 + n)
        assert accounts.verify("li.wei", "correct horse", MORNING + 2010).principal is not None
        for n in range(2):
            assert accounts.verify("li.wei", "wrong", MORNING + 2020 + n).locked_until is None
        # an unknown name answers like a wrong password, and locks nothing
        assert accounts.verify("nobody", "correct horse", MORNING).refusal == "Wrong name or password."
        with pytest.raises(RegistryError, match="exists already"):
            accounts.add_user("li.wei", "admin", "another password")
        with pytest.raises(RegistryError, match="role"):
            accounts.add_user("zhao", "owner", "another password")
        with pytest.raises(RegistryError, match="8 to 256"):
            accounts.add_user("zhao", "viewer", "short")
        stored = store.conn.execute("SELECT hash FROM users WHERE username = 'li.wei'").fetchone()[0]
        assert stored.startswith("$argon2id$") and "correct horse" not in stored


def test_an_admin_disables_and_enables_an_account_and_unlocks_one_before_its_time(registry_db):
    with RegistryStore(registry_db) as store:
        accounts = Accounts(store)
        accounts.add_user("chen.desk", "desk", "correct horse")
        accounts.set_disabled("chen.desk", True)
        refused = accounts.verify("chen.desk", "correct horse", MORNING)
        assert refused.principal is None and refused.refusal == "This account is disabled: ask an admin."
        accounts.set_password("chen.desk", "a new battery")  # a reset keeps it disabled
        assert accounts.verify("chen.desk", "a new battery", MORNING).principal is None
        assert [(a.name, a.disabled) for a in accounts.accounts()] == [("chen.desk", True)]
        accounts.set_disabled("chen.desk", False)
        assert accounts.verify("chen.desk", "a new battery", MORNING).principal == Principal("chen.desk", "desk")
        for n in range(3):
            accounts.verify("chen.desk", "wrong", MORNING + n)
        assert accounts.verify("chen.desk", "a new battery", MORNING + 10).principal is None
        accounts.unlock("chen.desk")
        assert accounts.verify("chen.desk", "a new battery", MORNING + 11).principal is not None
        with pytest.raises(RegistryError, match="no user"):
            accounts.set_disabled("nobody", True)


def test_roles_include_the_ones_below_and_tokens_are_kept_only_as_hashes(tmp_path, registry_db):
    viewer, desk, admin = (Principal("x", r) for r in ("viewer", "desk", "admin"))
    assert [p.may("desk") for p in (viewer, desk, admin)] == [False, True, True]
    assert admin.may("viewer") and not desk.may("admin")
    with RegistryStore(registry_db) as store:
        accounts = Accounts(store)
        token = accounts.add_token("crm", "desk", MORNING)
        assert accounts.token_principal(token) == Principal("crm", "desk", "token")
        assert accounts.token_principal(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert accounts.tokens() == [("crm", "desk", MORNING)]
        with pytest.raises(RegistryError, match="exists already"):
            accounts.add_token("crm", "viewer", MORNING)
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("registry.db*"))  # the file and its WAL, as written
        assert token[4:].encode() not in raw


def test_an_older_registry_file_gains_accounts_and_a_checkin_cursor_over_its_passages(tmp_path):
    db = tmp_path / "r.db"
    with RegistryStore(db) as store:  # made as schema 4 had it: no accounts, no cursor
        store.conn.executescript(
            "DROP TABLE checkin_log; DROP TABLE users; DROP TABLE api_tokens;"
            "ALTER TABLE changes DROP COLUMN actor; UPDATE meta SET value = 4 WHERE key = 'schema';")
        for seq, kind in enumerate(("decision", "passage", "decision", "passage"), 1):
            store.conn.execute("INSERT INTO events(event_id, gate_id, seq, at, kind, lane, ticket_id, reason, payload, received_at, epoch) "
                               "VALUES (?, 'gate-a', ?, ?, ?, 'in-1', 5205320758, 'ok', ?, ?, 7)",
                               (f"gate-a:{seq}", seq, MORNING + seq, kind, '{"zone": "hall", "direction": "in"}', MORNING + seq))
    with RegistryStore(db) as store:
        assert store._meta("schema") == SCHEMA_VERSION == 7
        assert [(c.cursor, c.event_id, c.direction) for c in store.checkins_after(0, 10)] == [(1, "gate-a:2", "in"), (2, "gate-a:4", "in")]
        Accounts(store).add_user("admin", "admin", "a long password")


def test_the_pages_sign_in_with_an_account_and_lock_after_three_wrong_passwords(registry_db):
    clock = Clock(MORNING)

    async def day():
        registry = await start_registry(registry_db, None)
        Accounts(registry.store).add_user("wang.fang", "viewer", "registration desk 1")

        def who_am_i(app, _registry):
            async def page(request):
                who = require(request, "viewer")
                return aiohttp.web.Response(text=f"{who.name} {who.role}")
            app.router.add_get("/whoami", page)

        web = RegistryWeb(registry, WebSettings("127.0.0.1", 0, title="registry"), pages=[who_am_i], clock=clock)
        await web.start()
        origin = web.url.rstrip("/")
        try:
            async with aiohttp.ClientSession(base_url=web.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                async def sign_in(password: str) -> tuple[int, str]:
                    async with browser.post("/signin", data={"username": "wang.fang", "password": password, "next": "/whoami"},
                                            headers={"Origin": origin}, allow_redirects=True) as r:
                        return r.status, await r.text()

                async with browser.get("/whoami", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"].startswith("/signin")
                async with browser.get("/signin") as r:
                    assert 'name="username"' in await r.text()
                for n in range(3):
                    status, text = await sign_in(f"wrong {n}")
                    assert status == 401
                assert "locked for 15 minutes" in text
                clock.now += LOCK_S - 60
                status, text = await sign_in("registration desk 1")
                assert status == 401 and "try again in 1 minute" in text
                clock.now += 60
                status, text = await sign_in("registration desk 1")
                assert status == 200 and text == "wang.fang viewer"
                async with browser.get("/") as r:  # the default page until the staff pages are added
                    assert r.status == 200 and "wang.fang" in await r.text()
                # a viewer's session reads the API but cannot write to it
                async with browser.get("/api/v1/attendees/1001") as r:
                    assert r.status == 200 and (await r.json())["name"] == "Alice Zhang"
                async with browser.post("/api/v1/attendees/1001/revoke", headers={"Origin": origin}) as r:
                    assert r.status == 403
                async with browser.post("/api/v1/attendees/1001/revoke", headers={"Origin": "http://evil.example"}) as r:
                    assert r.status == 403  # another site's page, with this browser's cookie
        finally:
            await web.stop()
            await registry.stop()

    asyncio.run(asyncio.wait_for(day(), 60))


def test_the_commands_add_users_and_tokens_and_serve_prints_the_address_of_its_pages(registry_db):
    db = str(registry_db)
    gated = [sys.executable, "-m", "gated", "registry"]
    first = subprocess.Popen([*gated, "serve", "--plaintext", "--db", db, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:  # a new registry says how to make its first admin
        said = [first.stdout.readline()]
        while said[-1] and not said[-1].startswith("registry pages at"):
            said.append(first.stdout.readline())
        said.append(first.stdout.readline())
        assert said[-1].startswith("no accounts yet: create the first admin with `gated registry users add NAME --role admin"), said
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
    added = subprocess.run([*gated, "users", "add", "anna", "--role", "admin", "--db", db], input="a long password\n",
                           capture_output=True, text=True)
    assert added.returncode == 0 and "a long password" not in added.stdout + added.stderr, added.stderr
    short = subprocess.run([*gated, "users", "add", "bo", "--role", "desk", "--db", db], input="short\n",
                           capture_output=True, text=True)
    assert short.returncode == 2 and short.stderr.strip().count("\n") == 0 and "8 to 256" in short.stderr
    made = subprocess.run([*gated, "tokens", "add", "crm", "--role", "desk", "--db", db], capture_output=True, text=True)
    token = made.stdout.strip()
    assert made.returncode == 0 and re.fullmatch(r"gtd_[A-Za-z0-9_-]{43}", token), made
    wide = subprocess.run([*gated, "serve", "--plaintext", "--db", db, "--http", "0.0.0.0:0"], capture_output=True, text=True, timeout=30)
    assert wide.returncode == 2 and "not a loopback address" in wide.stderr and "Traceback" not in wide.stderr

    serve = subprocess.Popen([*gated, "serve", "--plaintext", "--db", db, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = grpc_port = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = serve.stdout.readline()
            if match := re.match(r"registry listening on 127\.0\.0\.1:(\d+) \(plaintext\)", line):
                grpc_port = int(match.group(1))
            if match := re.match(r"registry pages at (http://127\.0\.0\.1:\d+/)", line):
                url = match.group(1)

        async def ask() -> tuple:
            async with aiohttp.ClientSession(base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
                async with client.get("/api/openapi.json") as anonymous:
                    pass
                async with client.get("/api/openapi.json", headers={"Authorization": f"Bearer {token}"}) as described:
                    openapi = (await described.json())["openapi"]
                async with client.get("/dashboard") as page:  # the staff pages: sign in first
                    form = await page.text()
                    assert page.url.path == "/signin" and 'name="username"' in form and 'name="pin"' not in form
                async with client.post("/signin", data={"username": "anna", "password": "a long password", "next": "/accounts"},
                                       headers={"Origin": url.rstrip("/")}) as signed_in:
                    accounts = await signed_in.text()
                return anonymous.status, openapi, signed_in.url.path, 'id="account-anna"' in accounts

        assert url is not None and asyncio.run(ask()) == (401, "3.1.0", "/accounts", True)
        # The same process answers the gates over gRPC.
        from gated.rpc.v1 import registry_pb2 as pb
        from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = pb_grpc.RegistryServiceStub(channel).GetTime(pb.GetTimeRequest(), timeout=10)
        assert abs(reply.unix_nanos / 1e9 - time.time()) < 5
    finally:
        serve.terminate()
        assert serve.wait(timeout=30) == 0
    with RegistryStore(db) as store:
        assert [name for name, _role, _locked in Accounts(store).users()] == ["anna"]
        assert store.conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0] == 1
    if store.dialect == "sqlite":
        assert os.stat(db).st_mode & 0o077 == 0
