"""The web foundation and the attended fallbacks without a browser: the listen rule
(in the config and at start), PINs, sessions, the same-origin rule over real HTTP on
loopback, `decide_ticket`, and the phone search's refusals and limit."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gated.config import load_config
from gated.errors import ConfigError
from gated.gate.attended import LookupRefused, PhoneSearch
from gated.clock import GateClock
from gated.gate.control import policy_from_config
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.journal import Journal
from gated.validation import EntitlementCache, KeyRing, Lane, Mode, TicketRecord, TicketState, Validator, encode_snapshot
from gated.web import Broadcast, WebError, WebServer, WebSettings, make_app
from gated.web.security import Sessions, hash_pin, listen_problem, pin_hash_problem, same_origin, verify_pin
from tests.gatekit import KEY, make_gate_dir

REG = 5205320758
BIG = 0x6B1D_22A0_9C47_3E05
PIN_HASH = hash_pin("482916", salt=b"fixed-salt-16byt")


def handheld(screen: str, mode: str = "handheld") -> str:
    relay = '  [lane.relay]\n  pin = 12\n' if mode == "turnstile" else '  [lane.buzzer]\n  pin = 12\n'
    return f"""
[[lane]]
id = "desk-1"
zone = "hall"
direction = "in"
mode = "{mode}"
  [[lane.scanner]]
  kind = "serial"
  port = "scanner-desk"
{relay}  [lane.screen]
{screen}
"""


def config_error(tmp_path, screen: str, mode: str = "handheld") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(make_gate_dir(tmp_path, extra_lane=handheld(screen, mode), tickets=None))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_screen_listens_off_loopback_only_with_tls_and_a_pin(tmp_path):
    assert "lane[2].screen.listen" in config_error(tmp_path, 'listen = "0.0.0.0:8443"')
    assert "set tls_cert and tls_key and pin_hash" in config_error(tmp_path, 'listen = "192.168.1.20:8443"')
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "c.key").write_text("x")
    tls = 'tls_cert = "c.pem"\ntls_key = "c.key"\n'
    assert "(set pin_hash)" in config_error(tmp_path, 'listen = "0.0.0.0:8443"\n' + tls)
    assert "set both tls_cert and tls_key" in config_error(tmp_path, 'listen = "0.0.0.0:8443"\ntls_cert = "c.pem"')
    assert "gated web hash-pin" in config_error(tmp_path, 'pin_hash = "482916"')
    assert "a turnstile has nobody to read it" in config_error(tmp_path, 'listen = "127.0.0.1:8081"', mode="turnstile")
    ok = load_config(make_gate_dir(tmp_path, extra_lane=handheld(f'listen = "0.0.0.0:8443"\n{tls}pin_hash = "{PIN_HASH}"'), tickets=None))
    screen = ok.lanes[2].screen
    assert (screen.host, screen.port, screen.pin_hash, screen.session_minutes) == ("0.0.0.0", 8443, PIN_HASH, 480.0)
    default = load_config(make_gate_dir(tmp_path, extra_lane=handheld(""), tickets=None)).lanes[2].screen
    assert (default.host, default.port, default.pin_hash) == ("127.0.0.1", 8081, None)
    assert listen_problem("::1", tls=False, sign_in=False) is None and listen_problem("localhost", tls=False, sign_in=False) is None


def test_the_web_server_itself_refuses_what_the_listen_rule_refuses():
    with pytest.raises(WebError, match="not a loopback address"):
        make_app(WebSettings(host="10.0.0.5", port=8443, pin_hash=PIN_HASH))


def test_pins_are_hashed_salted_and_checked():
    assert verify_pin("482916", PIN_HASH) and not verify_pin("482917", PIN_HASH) and not verify_pin("", PIN_HASH)
    assert hash_pin("482916") != hash_pin("482916")  # salted
    assert "482916" not in PIN_HASH and pin_hash_problem(PIN_HASH) is None
    assert pin_hash_problem("scrypt$3$8$1$AAAA$AAAA") is not None
    assert not verify_pin("482916", "plain text")
    with pytest.raises(ValueError):
        hash_pin("12")


def test_sessions_expire_and_wrong_pins_lock_the_client_out_for_a_while():
    now = [1000.0]
    sessions = Sessions(30 * 60.0, monotonic=lambda: now[0])
    token = sessions.open()
    assert sessions.valid(token) and not sessions.valid(token[:-1] + "x") and not sessions.valid(None)
    now[0] += 29 * 60
    assert sessions.valid(token)
    now[0] += 2 * 60
    assert not sessions.valid(token)
    for _ in range(5):
        assert not sessions.locked_out("10.0.0.9")
        sessions.failed("10.0.0.9")
    assert sessions.locked_out("10.0.0.9") and not sessions.locked_out("10.0.0.10")
    now[0] += 61
    assert not sessions.locked_out("10.0.0.9")


def test_same_origin():
    assert same_origin("http://127.0.0.1:8081", None, "http", "127.0.0.1:8081")
    assert not same_origin("http://evil.example", None, "http", "127.0.0.1:8081")
    assert same_origin(None, "http://127.0.0.1:8081/", "http", "127.0.0.1:8081")
    assert not same_origin(None, "http://127.0.0.1:80810/", "http", "127.0.0.1:8081")
    assert not same_origin(None, None, "http", "127.0.0.1:8081")


def test_over_http_posts_from_elsewhere_are_refused_and_pages_ask_for_the_pin():
    from gated.bench.screen import free_port

    async def scenario():
        port = free_port()
        settings = WebSettings(host="127.0.0.1", port=port, pin_hash=PIN_HASH)
        app = make_app(settings)
        events = Broadcast()

        async def echo(request):
            return aiohttp.web.json_response({"ok": True})

        app.router.add_get("/", echo)
        app.router.add_post("/api/echo", echo)
        async def stream(request):
            return await events.respond(request, lambda: [("hello", {"n": 1})])

        app.router.add_get("/events", stream)
        server = WebServer(app, settings)
        await server.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
                async with http.get(base + "/", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"].startswith("/signin")
                async with http.get(base + "/static/gated.css") as r:
                    assert r.status == 200  # styles load on the sign-in page
                async with http.post(base + "/api/echo", json={}) as r:
                    assert r.status == 403  # no Origin: refused before anything else
                async with http.post(base + "/api/echo", json={}, headers={"Origin": "http://evil.example"}) as r:
                    assert r.status == 403
                async with http.post(base + "/api/echo", json={}, headers={"Origin": base}) as r:
                    assert r.status == 401
                async with http.post(base + "/signin", data={"pin": "000000", "next": "/"}, headers={"Origin": base}) as r:
                    assert r.status == 401 and "Wrong PIN" in await r.text()
                async with http.post(base + "/signin", data={"pin": "482916", "next": "https://evil.example/"},
                                     headers={"Origin": base}, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/"  # never an open redirect
                async with http.post(base + "/api/echo", json={}, headers={"Origin": base}) as r:
                    assert r.status == 200
                async with http.get(base + "/events") as r:
                    first = await r.content.readuntil(b"\n\n")
                    first += await r.content.readuntil(b"\n\n")
                    events.publish("decision", {"ticket": str(REG)})
                    pushed = await r.content.readuntil(b"\n\n")
                assert b'event: hello\ndata: {"n":1}' in first and str(REG).encode() in pushed
        finally:
            events.close()
            await server.stop()

    asyncio.run(scenario())


def _validator(records):
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, records))
    return Validator(KeyRing({1: KEY}), cache)


def test_decide_ticket_is_for_attended_lanes_and_checks_like_a_current_badge():
    v = _validator([
        TicketRecord(ticket_id=REG, category="guest", zones=("hall",), benefits=(("lunch", 1),), name="Wang Fang"),
        TicketRecord(ticket_id=BIG, category="staff", zones=("hall",), state=TicketState.REVOKED),
    ])
    desk = Lane("desk", "hall", mode=Mode.HANDHELD)
    now = 1_790_000_000.0
    admitted = v.decide_ticket(REG, desk, now)
    assert admitted.admitted and admitted.kind is None and admitted.attendee.name == "Wang Fang"
    assert v.decide_ticket(REG, desk, now + 1, benefit="lunch").admitted
    assert str(v.decide_ticket(REG, desk, now + 2, benefit="dinner").reason) == "no_benefit"
    assert str(v.decide_ticket(BIG, desk, now + 3).reason) == "revoked"
    assert str(v.decide_ticket(REG + 1, desk, now + 4).reason) == "unknown_ticket"
    with pytest.raises(ValueError):
        v.decide_ticket(REG, Lane("in-1", "hall"), now)


def test_the_phone_search_is_refused_on_turnstiles_limited_per_unit_and_journaled(tmp_path):
    config = load_config(make_gate_dir(tmp_path, extra_lane=handheld('listen = "127.0.0.1:8081"'), tickets=None))
    records = [TicketRecord(ticket_id=1_000_000 * k + 7, category="guest", zones=("hall",), name=f"N{k}", phone_last4="0758")
               for k in range(3)] + [TicketRecord(ticket_id=REG, category="media", zones=("hall",), phone_last4="1234")]
    validator = _validator(records)
    validator.policy = policy_from_config(config)

    async def scenario():
        journal = Journal(tmp_path / "journal.db", "test-gate")
        now = [100.0]
        services = LaneServices(validator=validator, journal=journal, clock=GateClock(trust_local_clock=True),
                                monotonic=lambda: now[0], spawn=asyncio.ensure_future,
                                on_journal_failure=lambda exc: None, on_record=lambda: None)
        try:
            with pytest.raises(LookupRefused, match="attended lanes only"):
                PhoneSearch(LaneRunner(config.lanes[0], services, LaneOutputs()), 2)
            desk = LaneRunner(config.lanes[2], services, LaneOutputs())
            search = PhoneSearch(desk, 2)
            with pytest.raises(LookupRefused, match="last 4 digits"):
                await search.search("75")
            found = await search.search("0758")
            assert sorted(m.ticket_id for m in found.matches) == [7, 1_000_007, 2_000_007]
            assert (await search.search("9999")).matches == ()
            with pytest.raises(LookupRefused, match="too many phone searches"):
                await search.search("1234")
            now[0] += 30  # one more search a minute later... half a minute: one token back at 2 a minute
            assert [m.ticket_id for m in (await search.search("1234")).matches] == [REG]
            picked = await search.pick(found.seq, 1_000_007)
            assert picked.admitted and picked.ticket_id == 1_000_007
            kinds = [(r.kind, r.reason, r.payload.get("matches")) for r in journal.tail(10)]
            assert kinds[:5] == [("phone_lookup", "ok", 3), ("phone_lookup", "ok", 0), ("phone_lookup", "rate_limited", None),
                                 ("phone_lookup", "ok", 1), ("decision", "ok", None)]
            assert journal.tail(10)[4].payload["source"] == "phone" and journal.tail(10)[4].payload["lookup_seq"] == found.seq
            now[0] += 601
            with pytest.raises(LookupRefused, match="too old"):
                await search.pick(found.seq, 7)
        finally:
            journal.close()

    asyncio.run(scenario())
