"""The gate's idea of the time, and whether to trust it.

A Raspberry Pi has no real-time clock: after a power cut it may boot in 1970
or wherever NTP last left it. Dynamic codes and validity windows need the
real time, so the gate keeps an offset to the registry's clock (measured by
the uplink's time service) and says when it cannot trust what it has
(`clock_unsynced`) instead of silently refusing every phone.

Trust rules:
- `trust_local_clock = true` in the config (an RTC or NTP is present): the
  local clock is always trusted, and a registry offset, when known, is still
  applied.
- otherwise the clock is trusted only while a registry offset was measured
  less than `max_age_s` ago (monotonic time: a wall-clock jump does not age
  it or refresh it). Kept across restarts only as a hint, never as trust.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockStatus:
    offset_s: float | None
    trusted: bool
    age_s: float | None  # since the last registry measurement
    rtt_s: float | None


class GateClock:
    def __init__(
        self,
        *,
        trust_local_clock: bool = False,
        max_age_s: float = 6 * 3600.0,
        wall=time.time,
        monotonic=time.monotonic,
    ):
        self.trust_local_clock = trust_local_clock
        self.max_age_s = max_age_s
        self._wall = wall
        self._monotonic = monotonic
        self._offset: float | None = None
        self._rtt: float | None = None
        self._measured_at: float | None = None

    def update(self, offset_s: float, rtt_s: float) -> None:
        """Record a measurement: registry time minus local wall time, and its round trip."""
        self._offset, self._rtt, self._measured_at = offset_s, rtt_s, self._monotonic()

    def now(self) -> float:
        """Unix time as the gate believes it (local wall time plus the registry offset)."""
        return self._wall() + (self._offset or 0.0)

    def monotonic(self) -> float:
        return self._monotonic()

    def trusted(self) -> bool:
        if self.trust_local_clock:
            return True
        return self._measured_at is not None and self._monotonic() - self._measured_at < self.max_age_s

    def status(self) -> ClockStatus:
        age = None if self._measured_at is None else self._monotonic() - self._measured_at
        return ClockStatus(self._offset, self.trusted(), age, self._rtt)
