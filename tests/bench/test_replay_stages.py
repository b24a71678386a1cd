"""The replay bench at toy sizes: a day at the door replayed end to end, and stage by stage with the
batches built and parsed the old way and the new compared on the way (any difference fails the run)."""

from __future__ import annotations

import json

import pytest

from gated.bench.replay import SHAPES, fill_journal, measure_stages, venue_tickets
from gated.bench.rpc import measure_backlog_replay
from gated.journal import Journal

pytestmark = pytest.mark.timeout(120)


def test_a_days_records_name_their_decisions_and_use_every_id_layout(tmp_path):
    tickets = venue_tickets(50)
    held = {t.ticket_id for t in tickets}
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        assert fill_journal(journal, 3000, "day", tickets) == 3000
        records = journal.unacked(0, 3000)
    kinds = {r.kind for r in records}
    assert {"decision", "passage", "not_passed", "redemption"} <= kinds
    by_seq = {r.seq: r for r in records}
    for r in records:
        if r.kind in ("passage", "not_passed", "redemption"):
            decision = by_seq[r.payload["decision_seq"]]
            assert decision.kind == "decision" and decision.ticket_id == r.ticket_id and decision.reason == "ok"
    used = {r.ticket_id for r in records}
    assert any(t < 200_000 for t in used) and any(5_205_320_758 <= t < 10**10 for t in used)
    assert any(t >= 1 << 40 for t in used & held) and any(t % 1_000_000 < 50 and t >= 1_000_000 for t in used)
    assert any(r.reason == "unknown_ticket" and r.ticket_id not in held for r in records)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_stage_is_timed_and_the_registry_holds_every_event_once(shape):
    result = measure_stages(3000, shape, batch_size=700)
    assert result["stored_once"] and result["acked_through"], json.dumps(result)
    assert all(us > 0 for us in result["us_per_event"].values())


def test_a_day_replays_over_grpc_each_event_stored_once():
    result = measure_backlog_replay(2000, batch_size=500, shape="day")
    assert result["stored_once"] and result["journal_backlog_after"] == 0 and result["shape"] == "day"
