"""The journal's durable append beside a bare fsync on the same filesystem."""

from __future__ import annotations

import math
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from gated.errors import JournalError
from gated.journal import Journal

def measure_commit(path: str | os.PathLike[str], n: int = 1000) -> dict[str, Any]:
    """Time ``n`` durable appends and ``n`` bare fsyncs on the journal's filesystem.

    ``path`` must not exist: a scratch journal is created there, with a
    scratch fsync probe beside it, and both are removed afterwards. Returns
    median and p99 seconds for each, for `gated bench`.
    """
    path = Path(path)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    probe = path.with_name(path.name + ".fsync-probe")
    for p in (path, probe):
        if p.exists():
            raise JournalError(f"journal {p}: already exists; measure_commit needs a scratch path")

    def summary(samples: list[float]) -> tuple[float, float]:
        samples.sort()
        return statistics.median(samples), samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)]

    appends: list[float] = []
    try:
        with Journal(path, "bench", checkpoint_every_s=5.0) as journal:
            for i in range(n):
                t0 = time.perf_counter()
                journal.append("decision", at=time.time(), lane="bench", ticket_id=i,
                               reason="ok", payload={"i": i})
                appends.append(time.perf_counter() - t0)
    finally:
        for suffix in ("", "-wal", "-shm"):
            p = path.with_name(path.name + suffix)
            if p.exists():
                p.unlink()

    fsyncs: list[float] = []
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"x" * 64
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, chunk)
            os.fsync(fd)
            fsyncs.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        probe.unlink()

    append_median, append_p99 = summary(appends)
    fsync_median, fsync_p99 = summary(fsyncs)
    return {
        "n": n,
        "directory": str(path.parent),
        "sqlite_version": sqlite3.sqlite_version,
        "append_median_s": append_median,
        "append_p99_s": append_p99,
        "fsync_median_s": fsync_median,
        "fsync_p99_s": fsync_p99,
    }
