"""`gated bench fleet`: a few simulated gates over real gRPC; nothing lost, nothing doubled.

Speed is not asserted (a test machine may be busy): the figures are reported by the
command and quoted in the README.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import POSTGRES_ENV


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
    assert report["fanout_samples"] == 30 and report["fanout_missed"] == 0 and report["instances"] == 1
    assert report["ack_p99_ms"] >= report["ack_p50_ms"] > 0 and report["fanout_p99_ms"] >= report["fanout_p50_ms"] > 0
    # Every passage moves its ticket's count: updates reach each gate, never more than one per
    # passage of the fleet (10 a second here; the window's ends may round up a little).
    assert 0 < report["updates_per_gate_per_s"] <= 15


def test_several_instances_need_postgresql_and_say_so_in_one_line():
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "fleet", "--gates", "5", "--instances", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--store postgres" in r.stderr


@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"several registry instances need PostgreSQL: set {POSTGRES_ENV} (.ci/run does)")
def test_six_gates_on_two_instances_of_one_postgresql_lose_and_double_nothing():
    """Gates 0, 2, 4 on instance 0 and 1, 3, 5 on instance 1: every passage reaches the gates of both."""
    env = {k: v for k, v in os.environ.items() if k != "GATED_BENCH_POSTGRES"}  # the test server's fresh database
    r = subprocess.run([sys.executable, "-m", "gated", "bench", "fleet", "--store", "postgres", "--instances", "2",
                        "--gates", "6", "--scans-per-s", "2", "--seconds", "3", "--json"],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["store"], report["instances"], report["gates"]) == ("postgres", 2, 6)
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["unacked"] == 0 and report["errors"] == []
    assert report["events_sent"] == 6 * 2 * 3 * 2 and report["events_per_s"] * 3 == report["events_sent"]
    # every passage at each of the five other gates, two of them on its own instance and three on the other
    assert report["fanout_samples"] == 36 and report["fanout_missed"] == 0 and report["fanout_pairs"] == 36 * 5
    assert report["fanout_across_instances_p99_ms"] >= report["fanout_across_instances_p50_ms"] > 0
    assert len(report["registry_cpu_percent"]) == 2 and all(c > 0 for c in report["registry_cpu_percent"])
    for instance in report["per_instance"]:
        assert instance["gates"] == 3 and instance["events_stored"] == 3 * 2 * 3 * 2
        assert instance["ack_p99_ms"] >= instance["ack_p50_ms"] > 0
        assert instance["fanout_to_its_gates_p99_ms"] >= instance["fanout_to_its_gates_p50_ms"] > 0
