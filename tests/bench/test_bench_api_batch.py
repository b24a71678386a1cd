"""`gated bench --sections api_batch`: every stage of a 50,000-attendee batch is measured and reported.

One round (the bench runs five): a fresh registry file with the dashboard's
triggers, the batch's real shapes, every delta taken on a gate's fast path
(the bench refuses otherwise), the gate holding the registry's version, and
the same batch sent again storing nothing.
"""

from __future__ import annotations

import pytest

from gated.bench.api_batch import BASE, BATCH, STAGES, bench_api_batch, format_api_batch

pytestmark = pytest.mark.timeout(180)


def test_one_round_measures_every_stage_and_prints_them():
    r = bench_api_batch(rounds=1)
    assert (r["batch"], r["tickets_before"], r["rounds"]) == (BATCH, BASE, 1)
    assert set(r["stages"]) == set(STAGES) and all(s["cpu_s"] > 0 and s["wall_s"] > 0 for s in r["stages"].values())
    assert r["deltas"] >= BATCH // 2048 and 0 < r["largest_delta_bytes"] <= 1 << 20
    text = format_api_batch(r)
    assert "publish: " in text and "request to one gate's cache" in text and "load average" in text
