"""`python -m gated.bench`: the whole run; `--memory-child PATH` is the fresh process that measures the cache's memory."""

import sys

from gated.bench import run_bench
from gated.bench.decide import _memory_child

if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
    _memory_child(sys.argv[2])
else:
    sys.exit(run_bench(as_json="--json" in sys.argv))
