"""`python -m gated.bench.fanout` at a toy size: every message written is read, in each mode.

The cost per write is reported, not asserted (a test machine may be busy)."""

from __future__ import annotations

import pytest

from gated.bench.fanout import MODES, measure

pytestmark = pytest.mark.timeout(120)


def test_every_round_reaches_every_watch_in_each_way_of_writing():
    results = measure(watches=30, seconds=0.5, interval_s=0.05)
    assert [r["mode"] for r in results] == list(MODES)
    for r in results:
        assert r["rounds"] >= 5 and r["messages_written"] == 30 * r["rounds"]
        assert r["messages_read"] == r["messages_written"], r  # nothing lost on the way, nothing extra
        assert r["cpu_us_per_write"] > 0 and r["message_bytes"] > 400
