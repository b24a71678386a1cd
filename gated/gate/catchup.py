"""After an unclean stop or a registry conflict: no single-entry ticket is admitted on usage the gate may have lost.

A power cut can take the journal's WAL tail with it (an SD card that said a
flush was done): the gate's record of an admission is gone, and the saved
cache never had it. The registry may still hold it: the passage itself, or
only the admitted decision, which it counts as used once this boot's epoch
reaches it (gated/registry/epochs.py). Until the gate's cache holds what the
registry counted, an admission of a ticket with limited entries could be a
second one.

So, on a start that follows an unclean stop (the journal's `clean_stop` mark
is not its end) or that finds the journal behind the saved cache (a rolled
back card), the daemon journals a "boot" record before any lane runs, and
`CatchUp` holds every admission of a limited-entry ticket at an entry lane
(`Validator.limited_entry`) until one of:

- caught up: the registry acknowledged the boot record (so it has closed the
  earlier epochs and counted what they left open) and the cache holds the
  version that ack named (every use counted by then, `EventAck.version`);
  the held admission is then decided again on that cache
  (`Validator.decide_again`);
- the registry cannot be reached (the uplink's first attempt failed): the
  gate is offline, and its offline policy decides as on any offline day;
- `[uplink] catchup_wait_s` (default 3 s) has passed since the start.

A conflict while the gate runs starts one too (reason "registry_conflict"):
the registry refused a batch because it holds other records under one of
the gate's (epoch, seq) (`gated-conflict-seq`: the journal was rolled back),
so it may hold admissions this gate's cache never had, and the boot's
catch-up is long over (or ended at once, the registry away at the start).
The uplink tells the daemon before it moves the records to a new epoch
(`Uplink.on_conflict`); the daemon journals a "boot" record with `after:
"registry_conflict"`, which moves with them, and holds as above until the
registry acknowledged it (and so the moved records, whose new epoch closes
the one it holds the other records under) and the cache holds the version
that ack named. The registry answered a moment ago, and the conflict itself
ends the uplink's session, so here "cannot be reached" means a later session
reached it and ended too; a registry that does not come back at all ends the
hold at `catchup_wait_s`. A catch-up still running whose record moves with
them covers them; one whose record came before them is followed by a new
one, and a held admission waits for both.

Everything else (denials, exits, unlimited tickets, staff) is decided at
once. Why hold rather than refuse: online, the catch-up takes a connection
and one round trip (tens of milliseconds on a LAN), well inside what a
person at a turnstile notices, and refusing valid tickets at every restart
would send people to the desk; offline the hold ends at the first failed
attempt. Why only then: a clean stop wrote every outcome and flushed the
journal; a card that loses a tail does so across a power cut, and the
registry's conflict is how a running gate learns of one it did not see.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

log = structlog.get_logger("gated.gate.catchup")

CLEAN_STOP_MARK = "clean_stop"
POLL_S = 0.01


class CatchUp:
    def __init__(self, boot_seq: int, wait_s: float, *, reason: str, ended_session: int | None = None):
        """`ended_session`: the uplink session a runtime conflict ends (`Uplink.sessions` then; None at
        boot): its own end is no sign of an unreachable registry, a later session's is."""
        self.boot_seq = boot_seq
        self.wait_s = wait_s
        self.reason = reason  # why it is needed: "unclean_stop", "journal_rolled_back" or "registry_conflict"
        self.ended_session = ended_session
        self.outcome: str | None = None  # "caught_up", "registry_unreachable", "timed_out"
        self.held = 0
        self._done = asyncio.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        self.held += 1
        await self._done.wait()

    async def run(self, uplink: Any, cache: Any, started: float) -> None:
        """Watch the uplink until caught up, unreachable, or out of time (`started`: monotonic)."""
        target: int | None = None
        try:
            while True:
                if target is None and uplink.registry_acked_seq >= self.boot_seq:
                    target = uplink.registry_version
                if target is not None and cache.version >= target:
                    self._finish("caught_up", started, registry_version=target)
                    return
                if uplink.unreachable and (self.ended_session is None or uplink.sessions > self.ended_session):
                    self._finish("registry_unreachable", started)
                    return
                if time.monotonic() - started >= self.wait_s:
                    self._finish("timed_out", started, registry_version=target)
                    return
                await asyncio.sleep(POLL_S)
        finally:
            self._done.set()  # never leave a lane waiting, whatever ends this

    def _finish(self, outcome: str, started: float, **fields: Any) -> None:
        self.outcome = outcome
        log_fn = log.info if outcome == "caught_up" else log.warning
        log_fn("catchup_done", outcome=outcome, after=self.reason, seconds=round(time.monotonic() - started, 3),
               admissions_held=self.held, **fields)
