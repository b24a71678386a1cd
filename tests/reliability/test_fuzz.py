"""Each fuzz target runs a few seconds under atheris, in its own process, from
the seed corpus kept in fuzz/corpus: any exception the input surface does not
document, or a broken round trip, fails with the input that caused it. The
long runs (10^6 executions per target) are `make reliability`.
"""

import os

import pytest

from reliability.fuzzing import run_target

SECONDS = float(os.environ.get("GATED_FUZZ_SECONDS", "2"))


@pytest.mark.parametrize("target", ["token", "framer", "hid_keys", "config", "snapshot", "registry_update"])
def test_fuzz_target_finds_no_crash(target, tmp_path):
    result = run_target(target, seconds=SECONDS, work=tmp_path)
    assert result.executions > 0, result.describe()
    assert result.crashes == 0, result.describe()
