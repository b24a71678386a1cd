"""A venue's worst day in miniature: the gate process killed -9 fifty times
while people scan on two lanes, its SD card lying about a flush every tenth
cut, the registry up throughout. The long run (1,000 cuts) is `make
reliability`; GATED_CUTS sets the count here.

What must hold, strictly: no record lost, none stored twice, no single-entry
ticket admitted twice (nor a multi-entry one beyond its count), and none
admitted again after the card dropped the gate's record of an admission the
registry held. The restart time (target p99 1.5 s) is printed, not asserted:
fifty restarts on a machine other jobs share move it by seconds; the long
run (`make reliability`) holds the target and `docs/reliability.md` reports it.
"""

import os

from reliability import powercut


def test_fifty_power_cuts_lose_nothing_and_admit_no_one_twice(tmp_path):
    cuts = int(os.environ.get("GATED_CUTS", "50"))
    result = powercut.run(tmp_path, cuts, seed=int(os.environ.get("GATED_SEED", "9")), wal_every=10, traffic_s=(0.05, 0.6))
    assert result.cuts == cuts
    assert result.restarts_ok >= cuts * 0.8
    print(result.timing())
    print(f"re-admitted after the card's loss: {result.readmitted_after_card_loss} "
          f"(the registry held the admission: {result.readmitted_registry_knew})")
    problems = result.problems()
    assert problems == [], "\n".join(problems)
    assert result.wal_truncations >= 1  # the card did lie
