"""Cache freshness: how long since the registry last confirmed this gate's entitlements and keys.

The registry confirms the cache by sending something on the entitlement
watch: a delta, a snapshot, or a `current_version` heartbeat saying "you
have everything up to version V" (the gate asks for one every third of its
limit). The key watch runs in the same session (any call failing ends them
all), so a confirmation holds for the key ring too.

Past `stale_after_s` without one, the cache is stale: the status, the
operator screen and `/metrics` say so, the log says it once per transition,
and each decision gets `cache_stale=True` (the policy's `when_stale` decides
what that does). A lane reads one attribute per scan; a timer set for the
moment the limit would pass re-checks, so nothing polls.

At start the age is what the saved cache's file says (its last save came
after the last change the registry sent: an age too high, never too low).
The times are monotonic: a Pi's clock that jumps at boot moves nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("gated.gate.freshness")


class Freshness:
    """Confirmed (`confirmed()`) or stale (`stale`), by the limit and a monotonic clock."""

    def __init__(self, stale_after_s: float, *, age_at_start_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self._monotonic = monotonic
        now = monotonic()
        #: monotonic time of the last confirmation (None: never, and no saved cache)
        self.confirmed_at: float | None = None if age_at_start_s is None else now - max(0.0, age_at_start_s)
        self.stale = self._overdue(now)
        self.transitions = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.stale:
            log.warning("cache_stale", age_s=self._age_text(now), stale_after_s=stale_after_s, note="at start")

    def _overdue(self, now: float) -> bool:
        return self.confirmed_at is None or now - self.confirmed_at > self.stale_after_s

    def _age_text(self, now: float) -> float | None:
        return None if self.confirmed_at is None else round(now - self.confirmed_at, 1)

    def age_s(self) -> float | None:
        """Seconds since the registry last confirmed the cache (None: never)."""
        return None if self.confirmed_at is None else max(0.0, self._monotonic() - self.confirmed_at)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the timer that turns the cache stale when no confirmation comes (on `loop`)."""
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def confirmed(self) -> None:
        """The registry confirmed the cache just now (on the loop thread)."""
        now = self._monotonic()
        self.confirmed_at = now
        if self.stale:
            self.stale = False
            self.transitions += 1
            log.info("cache_fresh", stale_after_s=self.stale_after_s)
        if self._loop is not None and self._timer is None:
            self._arm()

    def check(self) -> bool:
        """Re-read the clock: stale now? (logs a transition once)."""
        now = self._monotonic()
        stale = self._overdue(now)
        if stale and not self.stale:
            self.stale = True
            self.transitions += 1
            log.warning("cache_stale", age_s=self._age_text(now), stale_after_s=self.stale_after_s,
                        note="the registry has not confirmed the entitlements and keys")
        return stale

    def _arm(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        if self.check():
            return  # stale: the next confirmation re-arms
        # a hair past the moment the limit passes; a confirmation meanwhile moves that moment on
        delay = self.confirmed_at + self.stale_after_s - self._monotonic() + 0.01
        self._timer = self._loop.call_later(max(0.0, delay), self._arm)

    def status(self) -> dict:
        self.check()
        age = self.age_s()
        return {"stale": self.stale, "age_s": None if age is None else round(age, 1), "stale_after_s": self.stale_after_s}
