"""The gate as its own process: `python -m gated run --config FILE`, started, killed and restarted by the simulator.

The simulator holds everything outside the gate (the ptys, the I/O module,
the proxy, the registry); this module holds only the child process:

- `start()` runs the real daemon, its JSON log appended to `<run dir>/gated.log`
  (each boot adds a line `{"event": "sim_boot", ...}` first, so a reader can
  tell the boots apart);
- `stop()` is a clean stop (SIGTERM: the daemon finishes the decision in
  flight and puts the relays in their safe state), `kill()` a power cut
  (SIGKILL: nothing runs after it, whatever the journal holds is what survives);
- `clock_offset_s`: the gate's clock, off by that much. With an offset the
  child runs under libfaketime (Debian's `faketime` package), reading the
  offset from `<run dir>/faketime.rc` once a second (FAKETIME_TIMESTAMP_FILE).

What libfaketime does to Python here (faketime 0.9.10, measured): with the
offset applied to every clock, `time.time()` and `time.monotonic()` both move,
`time.sleep`, asyncio and gRPC work. Leaving the monotonic clock alone
(FAKETIME_DONT_FAKE_MONOTONIC=1) breaks `time.sleep` (EINVAL from
clock_nanosleep), so that mode is not used. Changing the file while the gate
runs therefore jumps its monotonic clock too, which a real NTP step does not
do; the faithful rehearsal, and the default, is the Pi that boots with its
clock off: the gate restarts under the new offset (`restart=True`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

FAKETIME_LIBS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1")
STOP_TIMEOUT_S = 10.0


def faketime_library() -> str | None:
    """libfaketime's path, or None when the `faketime` package is not installed."""
    if shutil.which("faketime") is None:
        return None
    for pattern in FAKETIME_LIBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


class GateProcessError(RuntimeError):
    """The gate process cannot be started or controlled as asked (one line)."""


class GateProcess:
    """One gate daemon as a child process; at most one runs at a time."""

    def __init__(self, config: str | os.PathLike, run_dir: str | os.PathLike, *, python: str | None = None) -> None:
        self.config = Path(config)
        self.run_dir = Path(run_dir)
        self.python = python or sys.executable
        self.log_path = self.run_dir / "gated.log"
        self.faketime_file = self.run_dir / "faketime.rc"
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.kills = 0
        self.clock_offset_s = 0.0
        self.under_faketime = False
        self.last_exit: int | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        if self.running:
            return "running"
        return "stopped" if self.last_exit is not None or self.proc is None else "exited"

    def status(self) -> dict:
        if self.proc is not None and self.proc.poll() is not None:
            self.last_exit = self.proc.returncode
        return {"state": self.state(), "pid": self.pid if self.running else None, "boots": self.boots,
                "power_cuts": self.kills, "last_exit": self.last_exit, "clock_offset_s": self.clock_offset_s,
                "faketime": self.under_faketime, "log": str(self.log_path)}

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.under_faketime = False
        if self.clock_offset_s:
            lib = faketime_library()
            if lib is None:
                raise GateProcessError("a clock offset needs libfaketime: apt-get install faketime")
            self.write_offset()
            env.update({"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(self.faketime_file),
                        "FAKETIME_CACHE_DURATION": "1"})
            self.under_faketime = True
        return env

    def write_offset(self) -> None:
        tmp = self.faketime_file.with_suffix(".tmp")
        tmp.write_text(f"{round(self.clock_offset_s):+d}\n")
        os.replace(tmp, self.faketime_file)  # libfaketime never reads half a file

    def start(self) -> int:
        if self.running:
            raise GateProcessError(f"the gate is already running (pid {self.pid})")
        env = self._env()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"event": "sim_boot", "boot": self.boots + 1, "clock_offset_s": self.clock_offset_s,
                                  "at": time.time()}) + "\n")
            log.flush()
            self.proc = subprocess.Popen(
                [self.python, "-m", "gated", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.run_dir,
                start_new_session=True,  # a Ctrl-C at the simulator's terminal is the simulator's, not the gate's
            )
        self.boots += 1
        self.last_exit = None
        self.started_at = time.monotonic()
        return self.proc.pid

    def kill(self) -> None:
        """Power cut: SIGKILL, and reap it so no zombie is left."""
        if not self.running:
            raise GateProcessError("the gate is not running")
        self.proc.send_signal(signal.SIGKILL)
        self.last_exit = self.proc.wait()
        self.kills += 1

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Clean stop (SIGTERM); SIGKILL after `timeout_s`. The exit status, or None if none was running."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.last_exit = self.proc.returncode
        return self.last_exit

    def last_log_line(self) -> str:
        """The gate's last log line (why a boot failed), at most 300 characters."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                lines = fh.read().decode("utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def set_clock_offset(self, offset_s: float) -> None:
        """The offset the next boot runs with; written at once if the gate already runs under faketime."""
        self.clock_offset_s = float(offset_s)
        if self.under_faketime:
            self.write_offset()
