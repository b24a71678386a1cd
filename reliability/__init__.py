"""The reliability campaign (`make reliability`): power cuts, a lying SD card,
partitions, fuzzing and a secrets scan, run against the real daemon and the
reference registry as processes, and the report they write (docs/reliability.md).

Nothing under `gated/` or `hw_sim/` imports this package.
"""
