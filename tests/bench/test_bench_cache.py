"""`gated bench --sections cache,delta` runs end to end and reports every figure it promises.

Speed is not asserted (a test machine may be busy); the figures and their
targets are printed by `gated bench` and quoted in the README.
"""

import json
import subprocess
import sys

from gated.bench import _table
from gated.bench.common import ID_LAYOUTS


def test_bench_reports_the_cache_per_id_layout_and_scans_during_deltas():
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "--json", "--quick", "--tickets", "20000", "--sections", "decide,cache,delta"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["cache"]) == set(ID_LAYOUTS)
    for layout in ID_LAYOUTS:
        c = report["cache"][layout]
        assert c["tickets"] == 20000 and c["load_s"] > 0
        for kind in ("present", "absent", "dict_present", "dict_absent"):
            assert c["lookup"][kind]["p99_us"] >= c["lookup"][kind]["median_us"] > 0 and c["lookup"][kind]["n"] == 500
        assert c["delta"]["new_tickets"] == 2000 and c["delta"]["total_s"] >= c["delta"]["build_s"] > 0
    d = report["delta"]
    assert d["missed"] == 0 and d["deltas"] >= 1 and d["tickets_after"] == 20000 + d["deltas"] * 2000
    assert d["scan_to_relay_during"]["n"] + d["scan_to_relay_outside"]["n"] == d["scans"] == 200
    assert all(isinstance(report["targets"][name], bool) for name in (
        "cache: lookup p99 at most 20 µs for every id layout, present and absent",
        "delta: scan to relay p99 under 20 ms while large deltas apply",
    ))
    # The sections not asked for were not run: their targets are neither met nor missed, and say so.
    not_run = [name for name in report["targets"] if name.split(":")[0] in ("gate", "rpc", "redeem", "screen", "store", "api_batch")]
    assert len(not_run) >= 8 and all(report["targets"][name] is None for name in not_run)
    table = _table(report)
    assert all(f"[not run] {name}" in table for name in not_run) and "[met] rpc:" not in table
