"""`python -m gated.bench.floors` at toy sizes: the real gates get every batch acknowledged by the
stripped registries, the store floor holds every row once, every passage reaches every other gate.

Speeds are reported, not asserted (a test machine may be busy)."""

from __future__ import annotations

import pytest

from gated.bench.floors import REPLAY_MODES, fanout_floor, replay_floor

pytestmark = pytest.mark.timeout(180)


def test_the_real_gate_replays_to_each_stripped_registry_and_its_journal_empties():
    results = replay_floor(events=3000, batch_size=500)
    assert [r["registry"] for r in results] == list(REPLAY_MODES)
    for r in results:
        assert r["journal_backlog_after"] == 0, r  # every record acknowledged and marked
        assert r["events_per_s"] > 0 and r["gate_cpu_us_per_event"] > 0
    ack, store = results
    assert ack["stored"] is None and store["stored"] == 3000  # each row once, in the registry's own schema


def test_the_fleet_load_against_the_fanout_floor_reaches_every_gate():
    r = fanout_floor(gates=12, cadence_ms=20.0, seconds=1.5, processes=2)
    assert r["errors"] == [] and r["unacked"] == 0
    assert r["fanout_missed"] == 0 and r["fanout_p99_ms"] is not None  # each passage's round at every other gate
    assert 0 < r["updates_per_gate_per_s"] <= 1000 / 20.0 + 5  # rounds at least 20 ms apart
