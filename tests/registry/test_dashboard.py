"""The dashboard's figures and the desk's reads, over real HTTP and real gRPC gates:
a morning at two gates, every figure checked against the raw events the registry holds."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gated.registry import dashdata
from gated.registry.report import checkin_report
from gated.registry.store import IncomingEvent, RegistryStore
from gated.validation.token import mint_static
from tests.conftest import wait_until
from tests.registry.desk_helpers import BIG, BLOCK, ENGINES, HUGE, HALL_OUT, LOUNGE_IN, TICKETS, WANG, DeskVenue, venue_db
from tests.rpc_helpers import KEY, KID


def badge(ticket_id: int, serial: int = 0) -> str:
    return mint_static(KEY, KID, ticket_id, serial)


@pytest.fixture(scope="module", params=ENGINES)
def venue(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("desk")
    for db in venue_db(request.param, root):
        with DeskVenue(root, db) as venue:
            yield venue


def data(venue) -> dict:
    status, body, kind = venue.get("/dashboard/data")
    assert status == 200 and kind.startswith("application/json")
    return json.loads(body)


def test_a_morning_at_two_gates_shows_on_the_dashboard(venue):
    guests = [t.ticket_id for t in TICKETS if t.category == "guest"]
    for tid in guests[:20]:
        assert venue.scan("gate-a", badge(tid)).admitted
    for tid in guests[20:30]:
        assert venue.scan("gate-b", badge(tid)).admitted
    for tid in guests[:5]:
        assert venue.scan("gate-b", badge(tid), HALL_OUT).admitted
    assert venue.scan("gate-a", badge(BIG)).admitted
    assert venue.scan("gate-b", badge(BIG), LOUNGE_IN).admitted
    forged = badge(BLOCK)[:-3] + ("AAA" if not badge(BLOCK).endswith("AAA") else "BBB")
    assert venue.scan("gate-a", forged).reason == "bad_signature"
    assert venue.scan("gate-a", badge(guests[10])).reason == "already_inside"

    wait_until(lambda: venue.registry.store.event_count() == 39 + 37, what="39 decisions and 37 passages stored")
    d = data(venue)
    by_place = {}
    for row in d["hourly"]:
        counts = by_place.setdefault((row["gate"], row["lane"]), [0, 0])
        counts[0] += row["in"]
        counts[1] += row["out"]
    assert by_place == {("gate-a", "in-1"): [21, 0], ("gate-b", "in-1"): [10, 0], ("gate-b", "out-1"): [0, 5],
                        ("gate-b", "vip-1"): [1, 0]}
    # The same figures the text report computes from the raw events.
    report = checkin_report(venue.registry.store)
    assert sum(r.entries for r in report.hours) == sum(r["in"] for r in d["hourly"])
    assert {(c.category, c.registered, c.attended) for c in report.categories} == {
        (c["category"], c["registered"], c["attended"]) for c in d["categories"]}
    rates = {c["category"]: (c["attended"], c["registered"]) for c in d["categories"]}
    assert rates["guest"] == (30, 61) and rates["vip"] == (1, 1) and rates["media"] == (0, 1)
    assert d["unique_attendees"] == 31
    assert d["denials"]["bad_signature"] == 1 and d["denials"]["already_inside"] == 1
    assert d["occupancy"]["hall"][-1][1] == 31 - 5 and d["occupancy"]["lounge"][-1][1] == 1
    gates = {g["gate"]: g for g in d["gates"]}
    assert gates["gate-a"]["connected"] and gates["gate-b"]["connected"]
    store = venue.registry.store
    for gate_id, gate in gates.items():
        (epoch,) = store.gate_epochs(gate_id)
        assert gate["acked_seq"] == store.acked_seq(gate_id, epoch) > 0 and gate["epochs"] == 1
        last = store.conn.execute("SELECT max(at), max(received_at) FROM events WHERE gate_id = ?", (gate_id,)).fetchone()
        assert (gate["last_event_at"], gate["last_received_at"]) == last
    assert d["conflicts"]["counts"] == {"over_entry": 0, "over_redemption": 0, "revoked_use": 0}


def test_the_exports_hold_every_check_in(venue):
    assert venue.scan("gate-a", badge(HUGE)).admitted
    wait_until(lambda: dashdata.movements(venue.registry.store.conn, HUGE), what="the crew member's entry stored")
    status, body, kind = venue.get("/export/checkins.csv")
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    passages = venue.registry.store.conn.execute("SELECT count(*) FROM events WHERE kind = 'passage'").fetchone()[0]
    assert len(rows) == passages > 0
    big = [r for r in rows if r["ticket_id"] == str(BIG)]
    assert {(r["gate"], r["lane"], r["zone"], r["direction"], r["category"]) for r in big} == {
        ("gate-a", "in-1", "hall", "in", "vip"), ("gate-b", "vip-1", "lounge", "in", "vip")}
    (crew,) = [r for r in rows if r["ticket_id"] == str(HUGE)]
    assert (crew["gate"], crew["lane"], crew["direction"], crew["category"]) == ("gate-a", "in-1", "in", "staff")
    status, body, kind = venue.get("/export/report.pdf")
    assert status == 200 and kind == "application/pdf" and body.startswith(b"%PDF-")


def test_search_finds_by_number_phone_name_and_company(venue):
    def found(query: str) -> set[str]:
        with RegistryStore(venue.registry.db, create=False) as store:  # a connection of its own, as the pages' reads
            return {r["ticket_id"] for r in dashdata.search(store.conn, query)}

    assert found(str(WANG)) == {str(WANG)}
    assert found(str(BIG)) == {str(BIG)}  # a 63-bit id
    assert found(str(HUGE)) == {str(HUGE)}  # 2^63 and above
    assert found(str(BLOCK)) == {str(BLOCK)}
    assert found("0758") == {str(WANG)}  # the last four phone digits
    assert found("wang") == {str(WANG)} and found("WANG F") == {str(WANG)}
    assert found("acme") == {str(WANG), str(BIG)}  # company, any case
    assert found("5205320759") == set() and found("9999") == set() and found("nobody") == set()
    assert found("%") == set() and found("_") == set()  # LIKE wildcards are literal
    assert found(str(1 << 64)) == set()
    status, body, _ = venue.get("/attendees?q=acme")
    assert status == 200 and b"Wang Fang" in body and b"Zhang Wei" in body


def test_roles_decide_who_may_change_what_and_the_attendee_page_says_who_did(venue):
    assert venue.post(f"/attendees/{BLOCK}/revoke", {"confirm": "yes"}, role="viewer")[0] == 403
    assert venue.post(f"/attendees/{BLOCK}/category", {"category": "vip"}, role="viewer")[0] == 403
    assert venue.post("/accounts", {"name": "x", "role": "admin", "password": "p" * 12, "again": "p" * 12}, role="desk")[0] == 403
    assert venue.get("/dashboard", role="")[0] in (200, 303)  # no sign-in: redirected (followed) to /signin
    status, location = venue.post(f"/attendees/{BLOCK}/category", {"category": "exhibitor"}, role="desk")
    assert status == 303 and location == f"/attendees/{BLOCK}"
    gates = venue.gates.values()
    wait_until(lambda: all(g.cache.get(BLOCK).category == "exhibitor" for g in gates), 1.0, "the category at every gate")
    status, _ = venue.post(f"/attendees/{BLOCK}/benefit", {"benefit": "dinner", "count": "2"}, role="desk")
    assert status == 303
    wait_until(lambda: all(dict(g.cache.get(BLOCK).benefits).get("dinner") == 2 for g in gates), 1.0, "the benefit")
    status, body = venue.post(f"/attendees/{BLOCK}/benefit", {"benefit": "din ner", "count": "x"}, role="desk")
    assert status == 400 and "benefit" in body and "Traceback" not in body
    status, body = venue.post(f"/attendees/{BLOCK}/revoke", {}, role="desk")  # the box not ticked: nothing revoked
    assert status == 400 and "yes, revoke" in body and venue.registry.store.ticket(BLOCK).state == 0
    assert venue.post(f"/attendees/{BLOCK}/revoke", {"confirm": "yes"}, role="desk")[0] == 303
    wait_until(lambda: all(g.cache.get(BLOCK).state == 1 for g in gates), 1.0, "the revocation at every gate")
    assert venue.post("/attendees/12345/revoke", {"confirm": "yes"}, role="desk")[0] == 400  # not registered: said, not crashed
    assert venue.get("/attendees/notanumber")[0] == 404
    assert venue.get("/attendees/12345")[0] == 404
    # Who made each change, and when, newest first: the desk account, as the store recorded it.
    assert [(who, kind) for _id, kind, who in venue.registry.store.history(BLOCK)][-3:] == [
        ("user:li.desk", "ticket"), ("user:li.desk", "ticket"), ("user:li.desk", "state")]
    status, body, _ = venue.get(f"/attendees/{BLOCK}")
    changes = body.decode().split('id="changes"')[1]
    assert changes.count("user:li.desk") == 3 and "revoked" in changes and "details changed" in changes
    assert "UTC" in changes.split("user:li.desk")[0]  # the time of the newest change


def test_install_on_an_existing_file_fills_the_tables_as_the_triggers_would(registry_db):
    """A registry database from before the dashboard: the tables are filled from its events at install,
    then kept by the triggers; both give the figures computed from scratch."""
    with RegistryStore(registry_db) as store:
        store.put_tickets([(t, "") for t in TICKETS])

        def passages(gate, first_seq, ids, direction="in", zone="hall"):
            return [IncomingEvent(f"{gate}:{first_seq + i}", first_seq + i, 1_764_230_400 + 600 * i, "passage", "in-1", tid, "ok",
                                  json.dumps({"ticket_id": tid, "zone": zone, "direction": direction}))
                    for i, tid in enumerate(ids)]

        guests = [t.ticket_id for t in TICKETS if t.category == "guest"]
        store.store_events("gate-a", passages("gate-a", 1, guests[:10]), 1.0)
        assert dashdata.install(store.conn) and not dashdata.install(store.conn)
        store.store_events("gate-a", passages("gate-a", 11, guests[10:15] + [BIG]), 2.0)
        store.store_events("gate-a", passages("gate-a", 17, guests[:3], "out"), 3.0)
        kept = dashdata.dashboard(store.conn)
        store.conn.execute("DELETE FROM meta WHERE key = 'dashboard_schema'")
        if store.dialect == "sqlite":
            for table in ("dash_hourly", "dash_zone_hourly", "dash_denials", "dash_attended", "dash_category"):
                store.conn.execute(f"DROP TABLE {table}")
            for index in ("tickets_name_nocase", "tickets_company_nocase", "tickets_phone_last4"):
                store.conn.execute(f"DROP INDEX {index}")
        else:  # created whole there: all of it goes
            store.conn.execute("DROP TABLE " + ", ".join(f"{table}_{part}" for table in (
                "dash_hourly", "dash_zone_hourly", "dash_denials", "dash_category") for part in ("sum", "new")) + ", dash_attended CASCADE")
            for index in ("tickets_name_lower", "tickets_company_lower", "tickets_phone_last4", "tickets_category", "changes_by_ticket"):
                store.conn.execute(f"DROP INDEX {index}")
            store.conn.execute("ALTER TABLE changes DROP COLUMN dash_at CASCADE")
            for function in ("dash_denial", "dash_passage", "dash_attend", "dash_ticket", "dash_fold"):
                store.conn.execute(f"DROP FUNCTION {function} CASCADE")
        assert dashdata.install(store.conn)
        rebuilt = dashdata.dashboard(store.conn)
        for key in ("hourly", "occupancy", "categories", "unique_attendees"):
            assert kept[key] == rebuilt[key], key
        assert kept["unique_attendees"] == 16
        assert sum(r["out"] for r in kept["hourly"]) == 3


def test_new_passages_are_counted_from_the_new_check_ins_not_from_every_passage_stored(tmp_path):
    """`count_new_events` reads the check-ins after the last one counted, then each one's event by
    its key: a day's figures cost the same per batch at the first passage and the millionth."""
    with RegistryStore(tmp_path / "r.db") as store:
        dashdata.install(store.conn)
        for statement in dashdata._COUNT_PASSAGES:
            plan = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + statement, (0,))]
            assert plan[0].startswith("SEARCH l USING INTEGER PRIMARY KEY (rowid>?)"), plan
            assert plan[1].startswith("SEARCH e USING PRIMARY KEY (gate_id=? AND epoch=? AND seq=?)"), plan


def test_a_bad_walk_in_is_refused_whole_with_the_field_named(venue):
    before = venue.registry.store.ticket_count()
    good = {"name": "Sun Li", "company": "", "phone": "+86 137 0000 1234", "category": "guest", "ticket_type": "1-day",
            "zones": "hall", "max_entries": "1", "benefits": "", "valid_from": "", "valid_until": ""}
    for field, value, said in (("zones", "", "zones:"), ("benefits", "lunch", "benefits:"), ("phone", "call me", "phone:"),
                               ("valid_from", "2026-11-27T08:00:00", "valid_from:"), ("category", " ", "category:"),
                               ("name", "", "name:"), ("ticket_id", str(WANG), "already registered")):
        extra = {"valid_until": "2026-11-27T20:00:00+08:00"} if field == "valid_from" else {}
        status, body = venue.post("/walkin", {**good, **extra, field: value})
        assert status == 400 and said in body and "Traceback" not in body, (field, body[-300:])
    assert venue.post("/walkin", good, role="viewer")[0] == 403
    assert venue.registry.store.ticket_count() == before  # nothing half-registered
    status, location = venue.post("/walkin", {**good, "ticket_id": str(0x7FFF_FFFF_FFFF_FFF1)})  # a 63-bit id typed in
    assert status == 303 and location.startswith(f"/attendees/{0x7FFF_FFFF_FFFF_FFF1}?")
    wait_until(lambda: all(g.cache.get(0x7FFF_FFFF_FFFF_FFF1) is not None for g in venue.gates.values()), 1.0, "at the gates")


def _dash_tables(store: RegistryStore) -> dict:
    return {table: sorted(store.conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("dash_hourly", "dash_zone_hourly", "dash_attended", "dash_category", "dash_denials")}


def test_passages_counted_from_their_parsed_payloads_give_what_sql_on_the_stored_text_gives(tmp_path):
    """The store counts new passages from the payloads it parsed (`dashdata._passage_figures`);
    SQL on the stored text is the reference. A day's passages in the four id shapes, in and out,
    over many hours and gates, stored in batches, each batch twice: once with its payloads (as the
    server hands them over) into one file, once without (the text only: SQL counts them) into
    another. Batches with something odd (a direction or zone of another type, an empty zone, a
    direction neither in nor out, a NaN elsewhere in the payload, an absent ticket, a time SQLite's
    CAST saturates) go to SQL whole in the first file too: every figure must match."""
    import random

    from gated.rpc.convert import payload_text
    from gated.validation import TicketRecord

    rng = random.Random(28)
    ids = ([100_001 + i for i in range(300)] + [5_205_320_758 + 7 * i for i in range(300)]
           + [1_000_000 * (1 + i % 4) + i // 4 for i in range(300)] + [rng.getrandbits(63) for _ in range(300)]
           + [(1 << 63) + 5, (1 << 64) - 1])
    odd = [{"direction": 1}, {"zone": ["hall-a"]}, {"zone": ""}, {"direction": "sideways"}, {"weight": float("nan")},
           {"direction": None}, {"zone": 7}]
    batches = []
    seq = 0
    oddities = [{}] * 23 + [{"payload": o} for o in odd] + [{"at": 1e300}, {"at": -1e17}]  # one odd passage a batch
    for b, oddity in enumerate(rng.sample(oddities, len(oddities))):
        gate = f"gate-{b % 3}"
        events = []
        for n in range(rng.randint(1, 120)):
            seq += 1
            tid = rng.choice(ids + [None, 424242])  # absent from the file, or no ticket at all
            payload = {"ticket_id": tid, "zone": rng.choice(("hall-a", "hall-b", "lounge")),
                       "direction": rng.choice(("in", "in", "out"))}
            at = 1_764_230_400 + rng.uniform(-7200, 86_400 * 2)
            kind = "passage" if n == 0 or rng.random() < 0.8 else "decision"
            if n == 0:
                payload.update(oddity.get("payload", {}))
                at = oddity.get("at", at)
            reason = "ok" if kind == "passage" else rng.choice(("ok", "already_inside", "expired"))
            events.append((seq, at, kind, tid, reason, payload))
        batches.append((gate, events))

    def store_all(path, with_payloads: bool) -> dict:
        with RegistryStore(path) as store:
            store.put_tickets(((TicketRecord(ticket_id=t, category=("guest", "media", "staff")[n % 3],
                                             zones=("hall-a", "hall-b", "lounge")), "")
                               for n, t in enumerate(ids)), record_changes=False)
            dashdata.install(store.conn)
            for gate, events in batches:
                incoming = [IncomingEvent(f"{gate}:{s}", s, at, kind, "in-1", tid, reason, payload_text(p),
                                          p if with_payloads else None) for s, at, kind, tid, reason, p in events]
                store.store_events(gate, incoming, 1.0)
            return _dash_tables(store)

    counted = store_all(tmp_path / "parsed.db", with_payloads=True)
    reference = store_all(tmp_path / "text.db", with_payloads=False)
    assert counted == reference
    assert sum(n for _h, _g, _l, n, _o in counted["dash_hourly"]) > 500  # most of it counted, not skipped
    assert len(counted["dash_attended"]) > 300
    # The plain batches were counted in Python, the odd ones by SQL.
    def figures(gate, events):
        return dashdata._passage_figures([dashdata.NewPassage(at, gate, "in-1", tid, p, payload_text(p))
                                          for _s, at, kind, tid, _r, p in events if kind == "passage"])
    ways = [figures(*batch) is not None for batch in batches]
    assert ways.count(True) == 23 + 2  # plain, and an empty zone or a direction neither in nor out (strings)
    assert ways.count(False) == len(odd) - 2 + 2  # another type, a NaN; the two times
