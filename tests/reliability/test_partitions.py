"""The registry down and back while two gate processes scan, changes made at
the registry meanwhile, under each offline policy: every record stored
exactly once after heal, the changes reach both gates, the policy holds for a
gate rebooted offline, and the conflicts of the partition are reported."""

import pytest

from reliability import partition


@pytest.mark.parametrize("policy", ["strict", "lenient"])
def test_partition_and_heal(tmp_path, policy):
    result = partition.run(tmp_path, policy)
    assert result.records > 0
    problems = result.problems()
    assert problems == [], "\n".join(problems + result.notes)
