"""The registry's shortcuts for a batch of events give exactly what the event-by-event way gives.

The reference store counts each usage event on its own (`_count_usage` reading and writing its
ticket's row, looking every outcome up in ``implied_uses``), inserts one event a statement, and
logs check-ins and counts the dashboard's figures by the row triggers on ``events`` that schema 6
had (`_SCHEMA_6_TRIGGERS`); the store under test takes the batch as the server does. Both are fed the same hostile day, batch for batch: resends after a lost
ack, a seq twice in a batch, a resend with other content, over-entries, over-redemptions, a
revoked ticket, absent ticket ids, the four id shapes a show brings (consecutive, 10-digit
registration numbers, blocks, random 63-bit), reboots whose new epoch closes the old one
(admissions with no outcome counted) and outcomes of those admissions arriving afterwards. And the
usage a batch counts goes to the gates in the same bytes as each op converted on its own would.
"""

from __future__ import annotations

import json
import random

import pytest

from gated.registry import dashdata
from gated.registry import store as store_module
from gated.registry.store import EventBatch, EventConflict, IncomingEvent, RegistryStore
from gated.rpc.convert import delta_to_proto, delta_update
from gated.rpc.v1 import registry_pb2 as pb
from gated.validation import TicketRecord, TicketState
from gated.validation.cache import Delta, Reissue, SetBenefit, SetState, SetUsage, SetZone, Upsert

pytestmark = pytest.mark.timeout(120)

_rng = random.Random(14)
HELD = ([100_001 + i for i in range(8)] + [5_205_320_758 + 7 * i for i in range(8)]
        + [1_000_000 * k + 3 for k in range(1, 9)] + [_rng.getrandbits(63) for _ in range(8)])
ABSENT = [100_000, 5_205_320_759, 9_000_000_003, (1 << 64) - 1, _rng.getrandbits(63)]
REVOKED = HELD[3]
LIMITED = [tid for i, tid in enumerate(HELD) if i % 3 != 2]  # max_entries 1 or 2 (`_tickets`)


def _tickets() -> list[tuple[TicketRecord, str]]:
    return [(TicketRecord(tid, "guest", zones=("hall-a", "hall-b"), max_entries=(1, 2, 0)[i % 3],
                          benefits=(("lunch", 1),) if i % 2 else ()), "") for i, tid in enumerate(HELD)]


def _reference(store: RegistryStore) -> RegistryStore:
    """Usage counted event by event: each ticket read and written alone, each outcome looked up."""
    def one_by_one(usage, gate_id, db_epoch, conflicts):
        return [op for ev in usage if (op := store._count_usage(ev, gate_id, db_epoch, conflicts)) is not None]

    store._count_usages = one_by_one
    return store


#: What followed a new event before schema 7 (gated.registry.store._log_new_events and
#: gated.registry.dashdata.count_new_events now): triggers on every row inserted.
_SCHEMA_6_TRIGGERS = """
CREATE TRIGGER checkin_logged AFTER INSERT ON events WHEN NEW.kind = 'passage'
BEGIN
    INSERT INTO checkin_log(gate_id, epoch, seq) VALUES (NEW.gate_id, NEW.epoch, NEW.seq);
END;
CREATE TRIGGER dash_denial AFTER INSERT ON events WHEN NEW.kind = 'decision' AND NEW.reason <> 'ok' BEGIN
    INSERT INTO dash_denials(reason, n) VALUES (NEW.reason, 1) ON CONFLICT(reason) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER dash_passage AFTER INSERT ON events WHEN NEW.kind = 'passage' AND json_valid(NEW.payload)
    AND json_extract(NEW.payload, '$.direction') IN ('in', 'out') BEGIN
    INSERT INTO dash_hourly(hour, gate_id, lane, ins, outs)
        SELECT CAST(NEW.at / 3600 AS INTEGER) * 3600, NEW.gate_id, NEW.lane, d = 'in', d = 'out'
        FROM (SELECT json_extract(NEW.payload, '$.direction') AS d) WHERE true
        ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs;
    INSERT INTO dash_zone_hourly(hour, zone, ins, outs)
        SELECT CAST(NEW.at / 3600 AS INTEGER) * 3600, z, d = 'in', d = 'out'
        FROM (SELECT json_extract(NEW.payload, '$.direction') AS d, json_extract(NEW.payload, '$.zone') AS z)
        WHERE typeof(z) = 'text' AND z <> ''
        ON CONFLICT DO UPDATE SET ins = ins + excluded.ins, outs = outs + excluded.outs;
    INSERT OR IGNORE INTO dash_attended(ticket_id)
        SELECT NEW.ticket_id WHERE NEW.ticket_id IS NOT NULL AND json_extract(NEW.payload, '$.direction') = 'in';
END;
"""


def _with_schema_6_triggers(store: RegistryStore) -> None:
    """The dashboard installed, and its and the check-in log's rules as schema 6's triggers."""
    dashdata.install(store.conn)
    store.conn.executescript(_SCHEMA_6_TRIGGERS)


def _one_row_a_statement(conn, dialect, rows, events=()):
    """`_insert_events` as it was: one row a statement, the triggers doing the rest (`_SCHEMA_6_TRIGGERS`:
    the dashboard's figures by SQL from each stored text, whatever `events` carry parsed)."""
    return conn.executemany(store_module._INSERT_EVENT, rows).rowcount if rows else 0


def _store_as_reference(store: RegistryStore, batch: EventBatch, received_at: float, check, monkeypatch):
    """`store_event_batches([batch])` the long way: the batch in its savepoint inside a group (an
    empty batch of another gate beside it, left out of the comparison), its events inserted one
    row a statement."""
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "_insert_events", _one_row_a_statement)
        results, delta = store.store_event_batches([batch, EventBatch("reference-pad", 1, [])], received_at, check=check)
    return results[:1], delta


def _refuse_one_ticket(ops) -> None:
    """The mirror's check, refusing any usage of one ticket (the batch is stored without its usage)."""
    if any(getattr(op, "ticket_id", None) == HELD[7] for op in ops):
        raise ValueError(f"ticket {HELD[7]} refused")


class _Gate:
    def __init__(self, name: str, rng: random.Random) -> None:
        self.name, self.rng = name, rng
        self.epoch, self.seq, self.at = 1, 0, 1_764_230_400.0
        self.open: list[tuple[int, int, str]] = []  # admitted decisions with no outcome yet: (seq, ticket, direction)
        self.lost: list[tuple[int, int]] = []  # admissions of a closed epoch: (decision seq, ticket)
        self.sent: list[EventBatch] = []

    def _event(self, kind: str, ticket: int | None, payload: dict, reason: str = "ok", lane: str = "in-1") -> IncomingEvent:
        self.seq += 1
        self.at += self.rng.random()
        text = json.dumps(payload)
        return IncomingEvent(f"{self.name}:{self.seq}", self.seq, self.at, kind, lane, ticket, reason, text,
                             json.loads(text) if self.rng.random() < 0.7 else None)  # parsed by the server, or not

    def batch(self) -> EventBatch:
        rng = self.rng
        events = []
        for _ in range(rng.randint(1, 12) if rng.random() < 0.9 else rng.randint(250, 700)):  # a backlog, now and then
            roll = rng.random()
            tid = rng.choice(HELD + ABSENT[:2]) if rng.random() < 0.9 else rng.choice(ABSENT)
            if self.lost and roll < 0.1:  # an outcome the power cut lost, journaled at the next start
                seq, tid = self.lost.pop(0)
                events.append(self._event("passage", tid, {"ticket_id": tid, "zone": "hall-a", "direction": "in",
                                                            "outcome": "unknown", "decision_seq": seq}))
            elif self.open and roll < 0.5:
                seq, tid, direction = self.open.pop(rng.randrange(len(self.open)))
                kind = rng.choice(("passage", "passage", "not_passed"))
                events.append(self._event(kind, tid, {"ticket_id": tid, "zone": rng.choice(("hall-a", "hall-b")),
                                                      "direction": direction, "decision_seq": seq},
                                          lane=rng.choice(("in-1", "in-2"))))
            elif roll < 0.6:
                events.append(self._event("redemption", tid, {"ticket_id": tid, "benefit": "lunch", "zone": "hall-a",
                                                               "direction": "in"}, lane="desk-1"))
            elif roll < 0.65:
                events.append(self._event("decision", tid, {"zone": "hall-a"},
                                          reason=rng.choice(("unknown_ticket", "bad_signature", "outside_validity"))))
            else:
                direction = rng.choice(("in", "in", "out"))
                events.append(self._event("decision", tid, {"zone": "hall-a", "direction": direction}))
                self.open.append((self.seq, tid, direction))
        if rng.random() < 0.05:
            events.append(events[-1])  # a seq twice in one batch: the second a resend of the first
        batch = EventBatch(self.name, self.epoch, events)
        self.sent.append(batch)
        if rng.random() < 0.1:  # a power cut after this batch: a new epoch, whose first record closes this one
            for _ in range(rng.randint(1, 3)):  # admissions journaled just before it, their outcomes lost
                tid = rng.choice(LIMITED)
                events.append(self._event("decision", tid, {"zone": "hall-a", "direction": "in"}))
                self.open.append((self.seq, tid, "in"))
            self.lost += [(seq, tid) for seq, tid, direction in self.open if direction == "in"]
            self.epoch, self.seq, self.open = self.epoch + 1, 0, []
        return batch

    def resend(self) -> EventBatch:
        old = self.rng.choice(self.sent)
        if self.rng.random() < 0.3:  # the same seqs with other content: a journal that lost records
            ev = old.events[0]
            return EventBatch(old.gate_id, old.epoch, [IncomingEvent(ev.event_id, ev.seq, ev.at + 1, ev.kind, ev.lane,
                                                                     ev.ticket_id, ev.reason, ev.payload_json)])
        return old


def _state(store: RegistryStore) -> tuple:
    conn = store.conn
    return (
        conn.execute("SELECT gate_id, epoch, seq, event_id, at, kind, lane, ticket_id, reason, payload "
                     "FROM events ORDER BY gate_id, epoch, seq").fetchall(),
        conn.execute("SELECT ticket_id, entries_used, inside, benefits, state FROM tickets ORDER BY ticket_id").fetchall(),
        conn.execute("SELECT gate_id, epoch, acked_seq FROM gates WHERE gate_id <> 'reference-pad' "
                     "ORDER BY gate_id, epoch").fetchall(),
        conn.execute("SELECT gate_id, seq, epoch, ticket_id FROM implied_uses ORDER BY gate_id, epoch, seq").fetchall(),
        conn.execute("SELECT gate_id, epoch, by_epoch, counted FROM closed_epochs ORDER BY gate_id, epoch").fetchall(),
        [(c.kind, c.ticket_id, c.benefit, c.first, c.then) for c in store.conflicts()],
        conn.execute("SELECT gate_id, epoch, seq FROM checkin_log ORDER BY id").fetchall(),  # the API's cursor order
        [sorted(conn.execute(f"SELECT * FROM {table}").fetchall())  # what the triggers count
         for table in ("dash_hourly", "dash_zone_hourly", "dash_denials", "dash_attended", "dash_category")],
    )


def _outcome(result) -> tuple:
    if isinstance(result, EventConflict):
        return ("conflict", str(result))
    return (result.acked_seq, result.new_events, result.usage_refused)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_hostile_day_is_stored_as_event_by_event_counting_stores_it(tmp_path, registry_db, seed, monkeypatch):
    """And as a batch in a group's savepoint, its rows inserted one a statement, stores it: a group of
    one is stored in a transaction of its own, its events many rows a statement, and the check-in
    log and the dashboard's figures follow them as the triggers of schema 6 had them follow. The reference is
    SQLite whatever the engine under test, so on PostgreSQL the engines are compared too (they
    once differed on an epoch's close: PostgreSQL read every outcome's decision_seq as text)."""
    rng = random.Random(seed)
    stores = [RegistryStore(registry_db), _reference(RegistryStore(tmp_path / "reference.db"))]
    try:
        for store in stores:
            store.put_tickets(_tickets(), record_changes=False)
            store.revoke(REVOKED, at=1_764_230_500.0)
        dashdata.install(stores[0].conn)  # the pages' counters
        _with_schema_6_triggers(stores[1])
        gates = [_Gate(f"gate-{n}", rng) for n in range(3)]
        counted = refused = 0
        for round_ in range(120):
            gate = rng.choice(gates)
            batch = gate.resend() if gate.sent and rng.random() < 0.1 else gate.batch()
            check = _refuse_one_ticket if rng.random() < 0.3 else None
            results = []
            for store in stores:
                if store is stores[0]:
                    (result,), delta = store.store_event_batches([batch], float(round_), check=check)
                else:
                    (result,), delta = _store_as_reference(store, batch, float(round_), check, monkeypatch)
                results.append((_outcome(result), None if delta is None else delta.ops))
            assert results[0] == results[1]
            counted += len(results[0][1] or ())
            refused += results[0][0][-1] is not None
        assert _state(stores[0]) == _state(stores[1])
        state = _state(stores[0])
        assert counted and refused and state[3] and state[5]  # usage counted and refused, admissions counted on closing, conflicts
        assert any(ev.kind == "passage" and "unknown" in ev.payload_json for g in gates for b in g.sent for ev in b.events)
        assert max(len(b.events) for g in gates for b in g.sent) > 256  # a batch past one statement's rows
    finally:
        for store in stores:
            store.close()


def test_a_delta_goes_to_the_gates_in_the_same_bytes_however_it_is_built():
    """`delta_update` (usage ops added as field values) against `delta_to_proto` (each op a message):
    every kind of op, the four id shapes and the ends of each range, names with any character."""
    rng = random.Random(14)
    ids = HELD + ABSENT + [0, (1 << 64) - 1, 1 << 63]
    zones = ("hall-a", "hall-b", "Saal Ü", "会場", "")
    ops = []
    for n in range(3000):
        tid = rng.choice(ids)
        roll = rng.random()
        if roll < 0.6:
            ops.append(SetUsage(tid, rng.choice((0, 1, 2, 0xFFFFFFFF)), tuple(rng.sample(zones[:4], rng.randint(0, 3)))))
        elif roll < 0.8:
            ops.append(SetBenefit(tid, rng.choice(("lunch", "drink €", "")), rng.choice((0, 1, 0xFFFFFFFF))))
        elif roll < 0.85:
            ops.append(SetState(tid, rng.choice((TicketState.ACTIVE, TicketState.REVOKED))))
        elif roll < 0.9:
            ops.append(Reissue(tid, rng.randint(0, 0xFFFF)))
        elif roll < 0.95:
            ops.append(SetZone(rng.choice(zones[:4]), rng.randint(0, 1000)))
        else:
            ops.append(Upsert(TicketRecord(tid, "guest", zones=("hall-a",), inside=("hall-a",), benefits=(("lunch", 1),))))
    for chunk in (ops, ops[:1], [op for op in ops if isinstance(op, SetUsage)], []):
        delta = Delta(41, 42, tuple(chunk))
        expected = pb.WatchEntitlementsResponse(delta=delta_to_proto(delta)).SerializeToString()
        assert delta_update(delta).SerializeToString() == expected


def test_a_file_of_schema_6_counts_each_event_once_when_its_triggers_give_way_to_the_store(tmp_path):
    """A registry file written by schema 6 (check-in log and dashboard kept by triggers on events,
    dashboard schema 3, every kind indexed by time), opened by this gated mid-show: the triggers
    go, only passages stay indexed by time, and the passages and refusals stored before and after
    each count once, in the check-in log and on the dashboard."""
    db = tmp_path / "r.db"
    rng = random.Random(6)
    gate = _Gate("gate-0", rng)
    with RegistryStore(db) as store:
        store.put_tickets(_tickets(), record_changes=False)
        _with_schema_6_triggers(store)
        store.conn.executescript("UPDATE meta SET value = 6 WHERE key = 'schema'; "
                                 "UPDATE meta SET value = 3 WHERE key = 'dashboard_schema'; "
                                 "DROP INDEX events_passages_at; CREATE INDEX events_kind_at ON events(kind, at);")
        for _ in range(20):  # stored as schema 6 stored them: a row a statement, the triggers doing the rest
            batch = gate.batch()
            with store.transaction():
                _one_row_a_statement(store.conn, store.dialect, store_module._event_rows(
                    batch.events, batch.gate_id, batch.epoch, 1.0))
    with RegistryStore(db) as store:
        assert store._meta("schema") == 7
        assert dashdata.install(store.conn) and not dashdata.install(store.conn)
        conn = store.conn
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'").fetchall() == []
        assert sorted(conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
                                   "AND sql IS NOT NULL").fetchall()) == [("events_passages_at",), ("usage_by_ticket",)]
        for _ in range(20):
            batch = gate.batch()
            store.store_event_batches([batch], 2.0)
        passages = conn.execute("SELECT gate_id, epoch, seq FROM events WHERE kind = 'passage' ORDER BY received_at, epoch, seq").fetchall()
        assert len(passages) > 20
        assert conn.execute("SELECT gate_id, epoch, seq FROM checkin_log ORDER BY id").fetchall() == passages
        refused = conn.execute("SELECT reason, count(*) FROM events WHERE kind = 'decision' AND reason <> 'ok' GROUP BY reason").fetchall()
        assert len(refused) > 1 and sorted(conn.execute("SELECT reason, n FROM dash_denials").fetchall()) == sorted(refused)
        hourly = conn.execute(
            "SELECT CAST(at / 3600 AS INTEGER) * 3600 AS h, gate_id, lane, sum(d = 'in'), sum(d = 'out') FROM "
            "(SELECT at, gate_id, lane, json_extract(payload, '$.direction') AS d FROM events WHERE kind = 'passage') "
            "GROUP BY h, gate_id, lane ORDER BY h, gate_id, lane").fetchall()
        assert conn.execute("SELECT hour, gate_id, lane, ins, outs FROM dash_hourly ORDER BY hour, gate_id, lane").fetchall() == hourly
        zones = conn.execute(
            "SELECT CAST(at / 3600 AS INTEGER) * 3600 AS h, json_extract(payload, '$.zone') AS z, "
            "sum(json_extract(payload, '$.direction') = 'in'), sum(json_extract(payload, '$.direction') = 'out') "
            "FROM events WHERE kind = 'passage' GROUP BY h, z ORDER BY h, z").fetchall()
        assert len(zones) > 1 and conn.execute("SELECT hour, zone, ins, outs FROM dash_zone_hourly ORDER BY hour, zone").fetchall() == zones
        attended = conn.execute("SELECT DISTINCT ticket_id FROM events WHERE kind = 'passage' AND ticket_id IS NOT NULL "
                                "AND json_extract(payload, '$.direction') = 'in' ORDER BY ticket_id").fetchall()
        assert conn.execute("SELECT ticket_id FROM dash_attended ORDER BY ticket_id").fetchall() == attended
