"""The passage window: which admitted entries a passage sensor confirmed.

Lane logic, not a driver: the passage sensor (`gated.drivers.gpio`) reports
every break of the beam; this decides which admission, if any, it belongs
to. Pure: no I/O, no clock reads, no threads; the time is an argument.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

__all__ = ["PassageWindow"]

T = TypeVar("T")


class PassageWindow(Generic[T]):
    """Matches passages to admissions: an admitted entry counts only if a
    passage is seen within `timeout_s` of it.

    Pure and clock-injected: every method takes `now`; nothing here reads a
    clock or starts a timer. The lane calls `expect(token, now)` when it
    opens the turnstile, `passage(now)` on each passage, and `expired(now)`
    at `next_deadline()`.

    Rules:
    - A passage goes to the oldest expectation still in time (FIFO): two
      people admitted back to back are matched in the order they scanned.
    - An expectation is in time up to and including `now == deadline`.
    - `passage()` never consumes an expectation that has run out; those are
      left for `expired()`, so the lane learns of every entry not counted.
    - `passage()` returning None means nobody was expected: a tailgater or
      a forced passage.
    """

    def __init__(self, timeout_s: float) -> None:
        valid = (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                 and math.isfinite(timeout_s) and timeout_s > 0)
        if not valid:
            raise ValueError(
                f"passage timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self._pending: deque[tuple[float, T]] = deque()

    def expect(self, token: T, now: float) -> None:
        self._pending.append((now + self.timeout_s, token))

    def passage(self, now: float) -> T | None:
        for index, (deadline, token) in enumerate(self._pending):
            if now <= deadline:
                del self._pending[index]
                return token
        return None

    def expired(self, now: float) -> list[T]:
        still_pending: deque[tuple[float, T]] = deque()
        ran_out = []
        for deadline, token in self._pending:
            if now > deadline:
                ran_out.append(token)
            else:
                still_pending.append((deadline, token))
        self._pending = still_pending
        return ran_out

    def next_deadline(self) -> float | None:
        """The earliest deadline pending, or None: when to call `expired()`."""
        return min((deadline for deadline, _ in self._pending), default=None)

    def __len__(self) -> int:
        return len(self._pending)
