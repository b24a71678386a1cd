"""`gated bench fleet`: a few simulated gates over real gRPC; nothing lost, nothing doubled.

Speed is not asserted (a test machine may be busy): the figures are reported by the
command and quoted in the README.
"""

import json
import subprocess
import sys


def test_five_gates_scanning_for_three_seconds_lose_and_double_nothing():
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "fleet", "--gates", "5", "--scans-per-s", "2",
                        "--seconds", "3", "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for key in ("events_per_s", "ack_p50_ms", "ack_p99_ms", "fanout_p50_ms", "fanout_p99_ms", "registry_cpu_percent",
                "lost", "duplicated"):
        assert key in report, key
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["unacked"] == 0 and report["errors"] == []
    assert report["events_sent"] == 5 * 2 * 3 * 2  # a decision and a passage per scan
    assert report["events_per_s"] * 3 == report["events_sent"]  # every one stored, counted in the database
    assert report["fanout_samples"] == 30 and report["fanout_missed"] == 0
    assert report["ack_p99_ms"] >= report["ack_p50_ms"] > 0 and report["fanout_p99_ms"] >= report["fanout_p50_ms"] > 0


def test_several_instances_say_in_one_line_that_they_are_not_available():
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "fleet", "--gates", "5", "--instances", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not available yet" in r.stderr
