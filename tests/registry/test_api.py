"""A registration system drives the registry over its HTTP API while gates work the doors.

Real parts: the registry's gRPC service and its HTTP application on loopback,
gates with real uplinks (tests/rpc_helpers.Gate), the registry's database on
each engine (`registry_db`), an aiohttp client sending what a CRM sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest

from gated.registry.accounts import ROLES, Accounts
from gated.registry.api import ROUTES
from gated.registry.http import RegistryWeb
from gated.registry.openapi import openapi
from gated.validation import Lane, Policy, Reason, TicketState, Validator
from gated.web import WebSettings
from tests.rpc_helpers import ALICE, BOB, HALL_OUT, Gate, badge_code, phone_code, start_registry, until

pytestmark = pytest.mark.timeout(120)
REG_NUMBER = 5_205_320_758  # the seed's SMS: 您的登记号为:5205320758


def attendee(ticket_id: int, n: int = 0, **fields) -> dict:
    row = {"ticket_id": str(ticket_id), "name": f"Delegate {n}", "company": "Trade Mission", "category": "guest",
           "ticket_type": "3-day", "zones": ["hall-a"], "max_entries": 0, "benefits": {"lunch_day1": 1},
           "phone": f"+86 138 0013 {n % 10000:04d}"}
    row.update(fields)
    return row


class Crm:
    """A registration system's client: one token, JSON in and out."""

    def __init__(self, session: aiohttp.ClientSession, token: str | None) -> None:
        self.session = session
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body=None, **params) -> tuple[int, dict]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data is not None else {}))
        async with self.session.request(method, path, data=data, headers=headers, params=params) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def venue(tmp_path, db, gates=("gate-a",), clock=time.time):
    """A registry (on `db`: either engine) with its pages and API, gates watching it, and a CRM client per role."""
    registry = await start_registry(db, None)
    accounts = Accounts(registry.store)
    tokens = {role: accounts.add_token(f"crm-{role}", role, time.time()) for role in ROLES}
    web = RegistryWeb(registry, WebSettings("127.0.0.1", 0, title="registry"), clock=clock)
    await web.start()
    running = []
    for gate_id in gates:
        gate = Gate(tmp_path, gate_id, registry.port, None)
        gate.validator = Validator(gate.keyring, gate.cache, Policy(rate_burst=10**6, rate_per_s=1e6))
        running.append(gate.start())
    session = aiohttp.ClientSession(base_url=web.url)
    try:
        await until(lambda: all(len(g.cache) == 3 and 1 in g.keyring for g in running), 10, "the gates in sync")
        yield registry, web, running, {role: Crm(session, t) for role, t in tokens.items()}, session
    finally:
        await session.close()
        for gate in running:
            await gate.stop()
        await web.stop()
        await registry.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 100))


def test_without_a_token_nothing_is_answered_and_a_viewer_token_cannot_write(tmp_path, registry_db):
    async def day():
        async with venue(tmp_path, registry_db) as (registry, _web, _gates, crm, session):
            anonymous, forged = Crm(session, None), Crm(session, "gtd_" + "x" * 43)
            assert (await anonymous.call("GET", f"/api/v1/attendees/{ALICE.ticket_id}"))[0] == 401
            assert (await forged.call("GET", f"/api/v1/attendees/{ALICE.ticket_id}"))[0] == 401
            assert (await anonymous.call("PUT", "/api/v1/attendees", {"attendees": [attendee(REG_NUMBER)]}))[0] in (401, 403)
            status, body = await crm["viewer"].call("PUT", "/api/v1/attendees", {"attendees": [attendee(REG_NUMBER)]})
            assert status == 403 and "desk" in body["error"]
            assert (await crm["viewer"].call("POST", f"/api/v1/attendees/{ALICE.ticket_id}/revoke"))[0] == 403
            status, alice = await crm["viewer"].call("GET", f"/api/v1/attendees/{ALICE.ticket_id}")
            assert status == 200 and alice["name"] == "Alice Zhang" and alice["category"] == "vip" and "phone" not in alice
            assert registry.store.ticket(REG_NUMBER) is None and registry.store.ticket(ALICE.ticket_id).state == ALICE.state
            # a revoked token stops working at once
            Accounts(registry.store).revoke_token("crm-desk")
            assert (await crm["desk"].call("GET", f"/api/v1/attendees/{ALICE.ticket_id}"))[0] == 401

    run(day())


def test_a_batch_with_one_bad_row_changes_nothing_and_names_the_row_and_field(tmp_path, registry_db):
    async def day():
        async with venue(tmp_path, registry_db) as (registry, _web, gates, crm, _session):
            rows = [attendee(REG_NUMBER + n, n) for n in range(500)]
            version, changes = registry.store.version, registry.store.conn.execute("SELECT count(*) FROM changes").fetchone()
            for index, bad, field in (
                (417, {"zones": ["hall a"]}, "zones"),
                (3, {"ticket_id": "52053207x8"}, "ticket_id"),
                (250, {"valid_from": "2025-06-01T08:00:00", "valid_until": "2025-06-03T18:00:00+08:00"}, "valid_from"),
                (499, {"benefits": "lunch"}, "benefits"),
                (12, {"ticket_id": str(REG_NUMBER)}, "ticket_id"),  # row 0's ticket again
                (7, {"badge": "gold"}, "badge"),
                (1, {"category": ""}, "category"),
            ):
                batch = [dict(r) for r in rows]
                batch[index].update(bad)
                status, body = await crm["desk"].call("PUT", "/api/v1/attendees", {"attendees": batch})
                assert status == 400 and body["row"] == index and body["field"] == field, body
                assert body["error"].startswith(f"attendees[{index}].{field}: ") and "\n" not in body["error"]
            for body in (b"{", b'{"attendees": 3}', b"[]"):
                status, answer = await crm["desk"].call("PUT", "/api/v1/attendees", body)
                assert status == 400 and answer["error"]
            assert registry.store.version == version and registry.store.ticket_count() == 3
            assert registry.store.conn.execute("SELECT count(*) FROM changes").fetchone() == changes
            await asyncio.sleep(0.5)
            assert all(len(g.cache) == 3 for g in gates)

    run(day())


def test_a_batch_sent_twice_is_stored_once_and_reaches_the_gates_once(tmp_path, registry_db):
    async def day():
        async with venue(tmp_path, registry_db, gates=("gate-a", "gate-b")) as (registry, _web, gates, crm, _session):
            rows = [attendee(1_000_000 * k + n, n, category=("guest", "media", "vip")[k % 3]) for k in range(1, 4) for n in range(1, 101)]
            status, body = await crm["desk"].call("PUT", "/api/v1/attendees", {"attendees": rows})
            assert status == 200 and body == {"received": 300, "created": 300, "updated": 0, "unchanged": 0}
            await until(lambda: all(len(g.cache) == 303 for g in gates), 5, "the batch at both gates")
            version = registry.store.version
            status, body = await crm["desk"].call("PUT", "/api/v1/attendees", {"attendees": rows})
            assert status == 200 and body == {"received": 300, "created": 0, "updated": 0, "unchanged": 300}
            rows[5]["name"] = "Delegate 6, corrected"
            status, body = await crm["desk"].call("PUT", "/api/v1/attendees", {"attendees": rows})
            assert body == {"received": 300, "created": 0, "updated": 1, "unchanged": 299}
            await until(lambda: all(g.cache.get(1_000_006).name == "Delegate 6, corrected" for g in gates), 5, "the fix")
            assert registry.store.version == version + 1  # one delta for the one change
            assert [(kind, actor) for _id, kind, actor in registry.store.history(1_000_006)] == [("ticket", "token:crm-desk")] * 2
            rec = gates[1].cache.get(3_000_100)
            assert rec.category == "guest" and rec.benefits == (("lunch_day1", 1),) and rec.phone_last4 == "0100"
            assert gates[0].decide(phone_code(2_000_042)).reason is Reason.OK

    run(day())


def test_revoke_and_reissue_reach_every_gate_with_who_did_it(tmp_path, registry_db):
    async def day():
        async with venue(tmp_path, registry_db, gates=("gate-a", "gate-b")) as (registry, _web, gates, crm, _session):
            status, bob = await crm["desk"].call("POST", f"/api/v1/attendees/{BOB.ticket_id}/revoke")
            assert status == 200 and bob["state"] == "revoked"
            status, alice = await crm["desk"].call("POST", f"/api/v1/attendees/{ALICE.ticket_id}/reissue")
            assert status == 200 and alice["badge_serial"] == 1
            waited = await until(lambda: all(g.cache.get(BOB.ticket_id).state is TicketState.REVOKED
                                             and g.cache.get(ALICE.ticket_id).badge_serial == 1 for g in gates),
                                 1.0, "the change at every gate within a second")
            for gate in gates:  # the gate's own decision, once each (a repeated read is debounced)
                assert gate.decide(phone_code(BOB.ticket_id)).reason is Reason.REVOKED
                assert gate.decide(badge_code(ALICE.ticket_id, 0)).reason is Reason.SUPERSEDED_BADGE
                assert gate.decide(badge_code(ALICE.ticket_id, 1), Lane("in-2", "hall-a")).reason is Reason.OK
            assert [(kind, actor) for _id, kind, actor in registry.store.history(BOB.ticket_id)] == [("state", "token:crm-desk")]
            assert [(kind, actor) for _id, kind, actor in registry.store.history(ALICE.ticket_id)] == [("reissue", "token:crm-desk")]
            assert (await crm["desk"].call("POST", "/api/v1/attendees/18446744073709551616/revoke"))[0] == 400
            assert (await crm["desk"].call("POST", f"/api/v1/attendees/{REG_NUMBER}/revoke"))[0] == 404
            assert (await crm["viewer"].call("GET", f"/api/v1/attendees/{REG_NUMBER}"))[0] == 404
            print(f"revoke and reissue at both gates after {waited * 1000:.0f} ms")

    run(day())


def test_a_crm_follows_every_checkin_and_checkout_by_cursor(tmp_path, registry_db):
    async def day():
        async with venue(tmp_path, registry_db, gates=("gate-a", "gate-b")) as (registry, _web, (a, b), crm, _session):
            await a.pass_through(phone_code(ALICE.ticket_id))
            await b.pass_through(phone_code(BOB.ticket_id))
            await b.pass_through(phone_code(ALICE.ticket_id), HALL_OUT)
            seen: list[dict] = []
            cursor = 0
            waited = time.monotonic()
            while len(seen) < 3 and time.monotonic() - waited < 5:
                status, page = await crm["viewer"].call("GET", "/api/v1/checkins", after=cursor, limit=2)
                assert status == 200 and len(page["checkins"]) <= 2
                seen += page["checkins"]
                cursor = page["next"]
                await asyncio.sleep(0.02)
            # Two gates send on their own: the order is the registry's order of storing, each passage once.
            assert sorted((c["gate"], c["ticket_id"], c["direction"], c["category"]) for c in seen) == [
                ("gate-a", str(ALICE.ticket_id), "in", "vip"), ("gate-b", str(ALICE.ticket_id), "out", "vip"),
                ("gate-b", str(BOB.ticket_id), "in", "guest")]
            assert [c["cursor"] for c in seen] == sorted({c["cursor"] for c in seen}) and all(c["lane"] and c["at"] > 0 for c in seen)
            status, page = await crm["viewer"].call("GET", "/api/v1/checkins", after=cursor)
            assert page == {"checkins": [], "next": cursor}
            for bad in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "10001"}):
                status, body = await crm["viewer"].call("GET", "/api/v1/checkins", **bad)
                assert status == 400 and body["field"] in bad

    run(day())


def test_the_openapi_description_is_valid_and_describes_every_api_route(tmp_path, registry_db):
    from openapi_spec_validator import validate

    async def day():
        async with venue(tmp_path, registry_db) as (_registry, web, _gates, crm, _session):
            status, served = await crm["viewer"].call("GET", "/api/openapi.json")
            routes = {(r.method.lower(), r.resource.canonical) for r in web.app.router.routes()
                      if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"}
            return status, served, routes

    status, served, routes = run(day())
    assert status == 200 and served == json.loads(json.dumps(openapi()))
    validate(served)
    described = {(method, path) for path, item in served["paths"].items() for method in item}
    assert routes == described == {(r.method.lower(), r.path) for r in ROUTES}


# A CRM's batch repeats a few forms (category, zones, validity, benefits) over thousands of rows:
# those are checked once per form. A bad value in any field of any row, in a row whose form was
# seen before or not, must still be named exactly as the row-by-row check names it.
BAD_VALUES = {
    "ticket_id": ["", "-1", "18446744073709551616", True, 1.5, None, "12a"],
    "name": [True, 1.0, "\ud800 lone surrogate", "x" * 5000],
    "company": [["a"], "é" * 2100],
    "phone": ["12", "abc", True],
    "max_entries": [True, 1.0, "-1", "x"],
    "category": ["", True, "\udfff"],
    "zones": [[], ["a;b"], [True], "hall-a;hall-a", [1]],
    "benefits": [{"lunch_day1": True}, {"lunch_day1": 1.0}, {"lunch_day1": -1}, ["lunch_day1"], {"a=b": 1}],
    "validity": [[[True, 2]], [["2025-06-01T08:00:00+08:00", "2025-06-01T07:00:00+08:00"]], [[1, 2, 3]]],
    "valid_from": ["2025-06-01T08:00:00+08:00"],
    "seat": ["A12"],
}


def _row_by_row(rows: list[dict]) -> str | None:
    from gated.registry.api import RowError, _row_cells, check_row

    seen: dict[int, int] = {}
    for index, row in enumerate(rows):
        try:
            rec, _phone = check_row(*_row_cells(row))
            if rec.ticket_id in seen:
                raise RowError("ticket_id", f"{rec.ticket_id} is already row {seen[rec.ticket_id]}")
        except RowError as exc:
            return f"attendees[{index}].{exc.column}: {exc.problem}"
        seen[rec.ticket_id] = index
    return None


@pytest.mark.parametrize("field,value", [(f, v) for f, values in BAD_VALUES.items() for v in values])
def test_a_bad_field_deep_in_a_batch_of_repeated_forms_is_named_as_row_by_row(field, value):
    from gated.registry.api import BatchError, check_row, _row_cells, parse_batch

    shapes = [(c, z, d) for c in ("guest", "media", "vip") for z in (["hall-a"], ["hall-a", "press"]) for d in (0, 2)]
    ids = [7_000_001 + n for n in range(100)] + [5_205_320_758 + 13 * n for n in range(100)] + \
          [1_000_000 * k + n for k in (3, 4) for n in range(1, 51)] + [(n * 0x9E3779B97F4A7C15) % (1 << 63) for n in range(1, 101)]
    rows = [attendee(tid, n, category=shapes[n % 12][0], zones=shapes[n % 12][1],
                     benefits={"lunch_day1": 1, "dinner": shapes[n % 12][2]},
                     validity=[["2025-06-01T08:00:00+08:00", "2025-06-03T18:00:00+08:00"]]) for n, tid in enumerate(ids)]
    assert [rec for rec, _ in parse_batch(json.dumps({"attendees": rows}).encode())] == \
        [check_row(*_row_cells(r))[0] for r in rows]  # good rows: the same records either way
    for index in (3, 250, 399):  # a form seen before; deep in the batch; the last row
        bad = [dict(r) for r in rows]
        bad[index][field] = value
        expected = _row_by_row(bad)
        assert expected is not None and expected.startswith(f"attendees[{index}].")
        with pytest.raises(BatchError) as refused:
            parse_batch(json.dumps({"attendees": bad}).encode())
        assert (str(refused.value), refused.value.row) == (expected, index)


def test_a_batch_changed_again_before_it_is_published_goes_out_once_per_ticket_on_the_gates_fast_path(tmp_path):
    """Batches land faster than the registry publishes them: a ticket changed twice between two
    publishing steps goes out once, as it is now, so every delta of upserts stays on the gates'
    fast path (each ticket once), and the mirror and a gate following the deltas hold exactly
    what the store holds, for every id layout; ids never registered stay absent."""
    from gated.registry.api import parse_batch, store_batch
    from gated.registry.server import RegistryService
    from gated.registry.store import RegistryStore
    from gated.rpc import convert
    from gated.validation import EntitlementCache, TicketRecord

    ids = [7_000_001 + n for n in range(300)] + [REG_NUMBER + 7919 * n for n in range(300)] + \
          [1_000_000 * k + n for k in (21, 22, 23) for n in range(1, 101)] + [(n * 0x9E3779B97F4A7C15) % (1 << 63) for n in range(1, 301)]
    absent = [7_000_000, REG_NUMBER - 1, 21_000_000, 1 << 63]
    earlier = [100_001 + n for n in range(10)]  # registered before: at the gate already
    with RegistryStore(tmp_path / "r.db") as desk:
        desk.put_tickets([(TicketRecord(ticket_id=tid, category="guest", zones=("hall-a",)), "") for tid in earlier])
    service = RegistryService(RegistryStore(tmp_path / "r.db"), tls=False)
    service.load()
    gate = EntitlementCache()
    gate.load_snapshot(service.cache.to_snapshot())
    with RegistryStore(tmp_path / "r.db") as crm:
        body = json.dumps({"attendees": [attendee(tid, n) for n, tid in enumerate(ids)]}).encode()
        assert store_batch(crm, parse_batch(body), "token:crm") == (len(ids), 0, 0)
        again = json.dumps({"attendees": [attendee(tid, n, name=f"Renamed {n}") for n, tid in enumerate(ids) if n % 2]}).encode()
        assert store_batch(crm, parse_batch(again), "token:crm") == (0, len(ids) // 2, 0)
        crm.revoke(ids[5], actor="token:crm")
        crm.reissue(ids[6], actor="token:crm")
        crm.revoke(earlier[3], actor="token:crm")  # not in the batch: goes in a delta of its own
        held = {tid: crm.ticket(tid) for tid in ids + earlier}
    updates = []
    while True:
        published, more = service._changes_step()
        updates += [p.update.delta for p in published if p.update is not None]
        if not more:
            break
    fast = 0
    for delta in updates:
        tickets = [op.upsert.ticket_id if op.WhichOneof("op") == "upsert" else None for op in delta.ops]
        if None not in tickets:
            assert len(set(tickets)) == len(tickets)
            columns = convert.bulk_upserts(delta.SerializeToString())
            assert isinstance(columns, bytes)
            staging = gate.stage_bulk(delta.base_version, delta.version, columns)
            staging.build()
            gate.swap(staging)
            fast += len(tickets)
        else:
            gate.apply(convert.delta_from_proto(delta))
    assert fast == len(ids) and len(updates[-1].ops) == 1  # only the earlier ticket's revocation went the other way
    assert gate.version == service.cache.version == updates[-1].version
    for tid in ids + earlier:
        assert service.cache.get(tid) == gate.get(tid) == held[tid], tid
    assert gate.get(ids[5]).state is TicketState.REVOKED and gate.get(earlier[3]).state is TicketState.REVOKED
    assert gate.get(ids[6]).badge_serial == 1 and gate.get(ids[1]).name == "Renamed 1"
    assert all(service.cache.get(tid) is None and gate.get(tid) is None for tid in absent)
