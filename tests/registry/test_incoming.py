"""A batch as the registry takes it in (`gated.registry.incoming.parse_batch`): the same events, payload
texts and refusals as checking each event on its own, whichever gate sent it, however its payloads repeat."""

from __future__ import annotations

import json

import pytest

from gated.journal import Journal
from gated.registry import incoming
from gated.registry.incoming import MalformedEvent, parse_batch
from gated.rpc import convert
from gated.rpc.v1 import registry_pb2 as pb
from tests.rpc.test_event_batches import journaled_day, odd_payloads

REG_NO = 5205320758


def reference(batch: pb.StreamEventsRequest):
    """What the registry made of a batch event by event (`check_event` on each, in order)."""
    try:
        return incoming._parse_event_by_event(batch, "gate-a")
    except MalformedEvent as exc:
        return str(exc)


def parsed(batch: pb.StreamEventsRequest):
    try:
        return parse_batch(batch, "gate-a")
    except MalformedEvent as exc:
        return str(exc)


def on_the_wire(batch: pb.StreamEventsRequest) -> pb.StreamEventsRequest:
    return pb.StreamEventsRequest.FromString(batch.SerializeToString())


def event(seq: int, kind=pb.EVENT_KIND_DECISION, event_id: str | None = None, **fields) -> pb.Event:
    return pb.Event(event_id=f"vendor:{seq}" if event_id is None else event_id, seq=seq, at=1_764_230_400.0 + seq,
                    kind=kind, lane="in-1", reason="ok", **fields)


def test_a_gates_day_is_taken_in_as_event_by_event_checking_took_it(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        journaled_day(journal, 800, seed=11)
        odd_payloads(journal)
        rows = journal.unacked_rows(0, 100_000)
        epoch = journal.epoch
    for start in range(0, len(rows), 500):  # the same decisions again and again: most come from what was read before
        batch = on_the_wire(convert.event_batch_rows("gate-a", rows[start - 1][0] if start else 0, rows[start:start + 500], epoch))
        events = parsed(batch)
        assert events == reference(batch)
        assert [e.seq for e in events] == [r[0] for r in rows[start:start + 500]]
        for ev in events:
            assert json.loads(ev.payload_json) == ev.payload


def test_another_vendors_payloads_are_stored_as_the_registry_always_read_them():
    batch = pb.StreamEventsRequest(after_seq=0, journal_epoch=7, events=[
        event(1, decision=pb.Decision(zone="hall-a", direction="in"), extra_json='{ "zone" : "ignored", "x": 1 }'),
        event(2, decision=pb.Decision(zone="hall-a", direction="in"), extra_json='{"x": 2}'),  # same typed bytes, other extra
        event(3, decision=pb.Decision(zone="hall-a", direction="in")),
        event(4, decision=pb.Decision(zone="hall-a", direction="in")),
        event(5, extra_json='{"deep": {"a": [1, 2, {"b": null}]}, "nan": NaN, "ü": "ß"}'),
        event(6, pb.EVENT_KIND_PASSAGE, passage=pb.Passage(zone="hall-a", direction="in", ticket_id=REG_NO, inside=["hall-a"])),
        event(7, pb.EVENT_KIND_PASSAGE, extra_json='{"zone": "hall-b", "direction": "out"}'),  # no typed payload at all
        event(8, pb.EVENT_KIND_MANUAL_OPEN, manual_open=pb.ManualOpen(source="admin"), ticket_id=0),
        event(9, pb.EVENT_KIND_MANUAL_OPEN, manual_open=pb.ManualOpen(source="admin")),
        event(10, pb.EVENT_KIND_EMERGENCY, emergency=pb.Emergency()),  # a payload present and empty
        event(11, pb.EVENT_KIND_BOOT),
    ])
    events = parsed(on_the_wire(batch))
    assert events == reference(on_the_wire(batch))
    texts = [e.payload_json for e in events]
    assert texts[0] == '{"zone":"hall-a","x":1,"direction":"in"}' and texts[1] == '{"x":2,"zone":"hall-a","direction":"in"}'
    assert texts[2] == texts[3] == '{"zone":"hall-a","direction":"in"}'
    assert [e.ticket_id for e in events[7:9]] == [0, None]
    # each event its own payload: one changed, the next alike is not
    events[2].payload["zone"] = "elsewhere"
    assert events[3].payload["zone"] == "hall-a"
    assert parse_batch(on_the_wire(batch), "gate-a")[2].payload["zone"] == "hall-a"


def test_an_event_with_no_typed_field_keeps_its_extra_json_text_as_sent_unless_sql_reads_it_or_it_has_escapes():
    """Re-encoding the gate's own text gains nothing for a kind whose text only a JSON parser reads."""
    spaced = '{"code": "static", "lane_seq": 7}'
    batch = on_the_wire(pb.StreamEventsRequest(after_seq=0, events=[
        event(1, extra_json=spaced),
        event(2, decision=pb.Decision(), extra_json=spaced),  # an empty typed message, as older gates send it
        event(3, decision=pb.Decision(zone="hall-a"), extra_json=spaced),  # a typed field: one object, encoded
        event(4, extra_json='{"quote": "say \\"ok\\""}'),  # escapes: encoded, so a key reads as written
        event(5, pb.EVENT_KIND_PASSAGE, extra_json='{"zone": "hall-a", "direction": "in"}'),  # SQL reads a passage
        event(6, pb.EVENT_KIND_REDEMPTION, extra_json='{"benefit": "lunch"}'),  # and a redemption
        event(7, pb.EVENT_KIND_NOT_PASSED, extra_json=spaced),
    ]))
    events = parsed(batch)
    assert events == reference(batch)
    texts = [e.payload_json for e in events]
    assert texts[0] == texts[1] == texts[6] == spaced
    assert texts[2] == '{"code":"static","lane_seq":7,"zone":"hall-a"}'
    assert texts[3] == '{"quote":"say \\"ok\\""}'
    assert texts[4:6] == ['{"zone":"hall-a","direction":"in"}', '{"benefit":"lunch"}']
    assert all(json.loads(e.payload_json) == e.payload for e in events)


@pytest.mark.parametrize("bad, first_error", [
    ([event(1), event(1)], "seq 1 does not follow 1"),
    ([event(3), event(2)], "seq 2 does not follow 3"),
    ([event(1, event_id="🎟" * 65)], "event_id is over 256 bytes"),
    ([event(1, kind=99)], "kind 99 is not an EventKind"),
    ([event(1, kind=pb.EVENT_KIND_UNSPECIFIED)], "kind 0 is not an EventKind"),
    ([event(1, decision=pb.Decision()), event(2, pb.EVENT_KIND_PASSAGE, decision=pb.Decision(zone="hall-a"))],
     "kind passage with a decision payload"),
    ([event(1, extra_json="[1, 2]")], "extra_json is not a JSON object"),
    ([event(1, extra_json="{nope")], "extra_json is not a JSON object"),
    ([event(1, extra_json="[" * 100_000 + "]" * 100_000)], "extra_json is not a JSON object"),
    ([event(1, pb.EVENT_KIND_PASSAGE)], "a passage with no zone"),
    ([event(1, pb.EVENT_KIND_PASSAGE, passage=pb.Passage(zone=""), extra_json='{"zone": "hall-a"}')], "a passage with no zone"),
    # two faults in one batch: the first event's is the one named, as always
    ([event(1), event(2, extra_json="[]"), event(2)], "extra_json is not a JSON object"),
    ([event(1, decision=pb.Decision(zone="z")), event(2, kind=99), event(3, decision=pb.Decision(zone="z"), extra_json="1")],
     "kind 99"),
])
def test_a_batch_that_breaks_the_contract_is_refused_naming_the_first_fault(bad, first_error):
    batch = on_the_wire(pb.StreamEventsRequest(after_seq=0, events=bad))
    refused = parsed(batch)
    assert isinstance(refused, str) and first_error in refused
    assert refused == reference(batch)


def test_a_64_character_event_id_of_four_byte_characters_is_just_within_the_limit():
    batch = on_the_wire(pb.StreamEventsRequest(events=[event(1, event_id="🎟" * 64)]))
    assert parsed(batch)[0].event_id == "🎟" * 64


def test_batches_sent_back_to_back_are_stored_and_acked_in_order_and_a_bad_one_refused_only_after_those_before_it(registry_db):
    """A gate's window of batches arrives at once: each is parsed while the one before it is stored;
    the bad one is answered INVALID_ARGUMENT only once every earlier batch is stored and acknowledged."""
    import asyncio

    import grpc

    from gated.registry.store import RegistryStore
    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
    from tests.rpc_helpers import start_registry

    def passage(seq: int, ticket_id: int) -> pb.Event:
        return event(seq, pb.EVENT_KIND_PASSAGE, passage=pb.Passage(ticket_id=ticket_id, zone="hall-a", direction="in"))

    good = [pb.StreamEventsRequest(after_seq=100 * k, journal_epoch=9, events=[
        passage(100 * k + i, 1001 + i % 3) if i % 2 else event(100 * k + i, decision=pb.Decision(zone="hall-a"))
        for i in range(1, 101)]) for k in range(4)]
    bad = pb.StreamEventsRequest(after_seq=400, journal_epoch=9, events=[event(401), event(402, extra_json="[]")])

    async def day():
        registry = await start_registry(registry_db, None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
                call = pb_grpc.RegistryServiceStub(channel).StreamEvents(metadata=(("gated-gate-id", "vendor"),))
                for batch in [*good, bad]:
                    await call.write(batch)
                acks = [(await call.read()).up_to_seq for _ in good]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call.read()
            assert acks == [100, 200, 300, 400]
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "extra_json" in refused.value.details()
        finally:
            await registry.stop()
        with RegistryStore(registry_db, create=False) as store:
            assert store.event_ids("vendor", 9) == [f"vendor:{seq}" for seq in range(1, 401)]
            assert store.ticket(1001).entries_used + store.ticket(1002).entries_used + store.ticket(1003).entries_used == 200

    asyncio.run(asyncio.wait_for(day(), 45))


@pytest.mark.parametrize("kind", [pb.EVENT_KIND_DECISION, pb.EVENT_KIND_PASSAGE, pb.EVENT_KIND_REDEMPTION, pb.EVENT_KIND_NOT_PASSED])
@pytest.mark.parametrize("extra", [
    '{"zone":"hall-a","direction":"in"}', ' {"zone": "hall-a"}', '{"zone": "hall-a"} ', '\t{"zone":"hall-a"}\n',
    '{"zone":"hall-a"}{"x":1}', '{"direction":"in"}', '{"zone":""}', '{"zone":null}', '{"zone":"h\\u00e4ll"}',
    '{"zone":"hall-a","nan":NaN,"inf":-Infinity}', '{"zone":"hall-a","d":{"a":[1,{"b":[]}]}}', '{"zone":"ü"}',
    "{}", "null", "1", '"text"', "[]", "", '{"zone":"hall-a"', '{"zone":"hall-a",}',
])
def test_an_all_extra_event_is_taken_in_as_checking_it_alone_takes_it(kind, extra):
    """The usual event (no typed payload, everything in extra_json) is parsed in the loop itself:
    whatever its text, the events, texts and refusals are the reference's."""
    events = [event(1, kind, extra_json=extra, ticket_id=0), event(2, kind, extra_json=extra),
              event(3, kind, extra_json=extra, ticket_id=2**64 - 1)]
    batch = on_the_wire(pb.StreamEventsRequest(after_seq=0, events=events))
    got = parsed(batch)
    assert got == reference(batch)
    if not isinstance(got, str):
        assert [e.ticket_id for e in got] == [0, None, 2**64 - 1]
        assert all(json.loads(e.payload_json) == e.payload for e in got if "NaN" not in extra)
