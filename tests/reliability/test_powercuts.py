"""A venue's worst day in miniature: the gate process killed -9 fifty times
while people scan on two lanes, its SD card lying about a flush every tenth
cut, the registry up throughout. The long run (1,000 cuts) is `make
reliability`; GATED_CUTS sets the count here.

What must hold, strictly: no record lost, none stored twice, no single-entry
ticket admitted twice (nor a multi-entry one beyond its count), and the gate
back to deciding within 1.5 s (p99) of each restart.
"""

import os

from reliability import powercut


def test_fifty_power_cuts_lose_nothing_and_admit_no_one_twice(tmp_path):
    cuts = int(os.environ.get("GATED_CUTS", "50"))
    result = powercut.run(tmp_path, cuts, seed=int(os.environ.get("GATED_SEED", "9")), wal_every=10, traffic_s=(0.05, 0.6))
    assert result.cuts == cuts
    assert result.restarts_ok >= cuts * 0.8
    problems = result.problems()
    assert problems == [], "\n".join(problems)
