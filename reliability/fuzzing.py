"""Runs the atheris targets of `fuzz/` each in its own process, and says what they found.

A run works on a copy of the target's corpus (the repo keeps only the
seeds); a crash is reported with the exception's last line and the input
(hex), which libFuzzer also writes to the work directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from reliability.venue import REPO

CORPUS = REPO / "fuzz" / "corpus"


@dataclass
class FuzzResult:
    target: str
    executions: int
    crashes: int
    seconds: float
    finding: str = ""  # the exception line
    input_hex: str = ""

    def describe(self) -> str:
        if not self.crashes:
            return f"{self.target}: {self.executions:,} executions, no crash"
        return f"{self.target}: crash after {self.executions:,} executions: {self.finding} (input {self.input_hex[:200]})"


def run_target(target: str, *, runs: int | None = None, seconds: float | None = None, work: Path | None = None) -> FuzzResult:
    """Fuzz `target` for `runs` executions or `seconds`, whichever the caller gives (both: whichever ends first)."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        work = Path(work or tmp)
        corpus = work / "corpus"
        shutil.copytree(CORPUS / target, corpus, dirs_exist_ok=True)
        argv = [sys.executable, "-m", "fuzz.run", target, f"-artifact_prefix={work}/", "-print_final_stats=1",
                "-rss_limit_mb=2048", "-timeout=20"]
        if runs is not None:
            argv.append(f"-runs={runs}")
        if seconds is not None:
            argv.append(f"-max_total_time={max(1, int(seconds))}")
        argv.append(str(corpus))
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, errors="replace",
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        elapsed = time.monotonic() - t0
        out = proc.stdout + proc.stderr
        done = re.findall(r"stat::number_of_executed_units:\s*(\d+)", out) or re.findall(r"Done (\d+) runs", out)
        executions = int(done[-1]) if done else max([int(n) for n in re.findall(r"^#(\d+)", out, re.M)] or [0])
        crash_files = sorted(work.glob("crash-*")) + sorted(work.glob("timeout-*")) + sorted(work.glob("oom-*"))
        if proc.returncode == 0 and not crash_files:
            return FuzzResult(target, executions, 0, elapsed)
        lines = [ln for ln in out.splitlines() if re.match(r"^[A-Za-z_.]*(Error|Exception|Failed)\b.*:", ln)]
        finding = lines[-1] if lines else (out.strip().splitlines() or ["exit " + str(proc.returncode)])[-1]
        data = crash_files[0].read_bytes() if crash_files else b""
        return FuzzResult(target, executions, 1, elapsed, finding[:300], data.hex())


def targets() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
