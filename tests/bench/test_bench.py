"""`gated bench --json` runs end to end and reports every figure it promises.

Speed is not asserted here (a test machine may be busy); the figures and
their targets are printed by `gated bench` and quoted in the README.
"""

import json
import subprocess
import sys

from gated.bench import TARGETS, _table


def test_bench_json_reports_every_figure():
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "--json", "--quick", "--tickets", "20000"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    d = report["decide"]
    for op in ("dynamic_ok", "static_ok", "bad_signature", "bad_format"):
        assert d["decide"][op]["median_us"] > 0 and d["decide"][op]["p99_us"] >= d["decide"][op]["median_us"]
    assert d["floor"]["dynamic"]["median_us"] > 0 and d["floor"]["static"]["median_us"] > 0
    assert d["cache"]["tickets"] == 20000 and d["cache"]["rss_bytes_per_ticket"] > 0 and d["cache"]["snapshot_load_s"] > 0
    g = report["gate"]
    assert g["scans"] == 200 and g["missed"] == 0 and g["scan_to_relay"]["n"] == 200
    assert g["scan_to_relay"]["p99_us"] >= g["scan_to_relay"]["median_us"] > 0 and g["fsync_alone"]["median_us"] > 0
    assert report["idle"]["rss_mb"] > 0 and report["idle"]["cpu_percent"] >= 0
    assert report["camera"]["zxing"]["frames"] == 50 and report["camera"]["zxing"]["median_ms"] > 0
    rpc = report["rpc"]
    assert rpc["backlog_replay"]["events"] == 5000 and rpc["backlog_replay"]["stored_once"] is True
    assert rpc["propagation"]["samples"] == 30 and rpc["snapshot"]["loaded_tickets"] == 20000
    assert rpc["import"]["gate_tickets"] == 6000 and rpc["import"]["default_limit_client_converged"] is True
    redeem = report["redeem"]
    assert redeem["samples"] == 40 and redeem["granted_once_each"] is True
    assert redeem["scan_to_decision"]["p99_ms"] >= redeem["scan_to_decision"]["median_ms"] > 0 and redeem["retry_rpc"]["n"] == 40
    # Every target is judged, met or missed, but those of the sections named only on request: not run.
    targets = report["targets"]
    assert set(targets) == {name for name, _, _ in TARGETS}
    for name, needs, _ in TARGETS:
        if set(needs) & {"store", "dashboard", "api_batch"} or (needs == ("screen",) and "skipped" in report["screen"]):
            assert targets[name] is None, name
        else:
            assert isinstance(targets[name], bool), name
    table = _table(report)
    assert all(f"[not run] {name}" in table for name, ok in targets.items() if ok is None)
    assert all(f"[{'met' if ok else 'MISSED'}] {name}" in table for name, ok in targets.items() if ok is not None)
