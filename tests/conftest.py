"""What every test shares: the repository root, and waiting for a condition.

The tests mirror the package: validation/, drivers/, gate/, config/, rpc/,
registry/, cli/, bench/, sim/, reliability/; `gatekit.py` (a gate with ptys
and mock pins) and `rpc_helpers.py` (a registry and gates over loopback) are
the shared scenery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition", step: float = 0.005) -> float:
    """Poll `condition()` from a thread that may block; the seconds it took, or AssertionError."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


async def until(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition", step: float = 0.005) -> float:
    """Poll `condition()` from the event loop without blocking it; the seconds it took, or AssertionError."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start
