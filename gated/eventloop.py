"""The asyncio event loop gated's processes run on: uvloop where it is installed.

Why: a registry serving hundreds of gates spends its loop on gRPC writes, each a
few callbacks, futures and a wake-up from gRPC's completion thread. On uvloop
(libuv underneath, the same asyncio API) the same 500-gate fleet's fan-out p99
fell by about a quarter on this 2-CPU machine (README, "The fleet"). Nothing in
gated depends on which loop runs it: signal handlers, `add_reader` on a serial
pty, threads handing results back and aiohttp work the same on both.

One rule comes with it: gated starts child processes with `subprocess` (which
vfork()s or posix_spawn()s), never with the loop's `create_subprocess_*`. On
uvloop those fork(), and a fork runs gRPC's fork handlers in a process using
gRPC: its poller threads are stopped and restarted around the fork, and the
child can abort in them ("Check failed: next_worker->state == KICKED", seen
once in the benchmark's import). A test keeps the loop's subprocess API out
of gated and the simulator.

`GATED_EVENT_LOOP=asyncio` runs the standard library's loop instead (to compare,
or to rule the loop out when diagnosing); where uvloop is not installed (it has
no wheel for 32-bit ARM), the standard loop runs without a word.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")

#: The environment variable that picks the loop: "uvloop" (the default) or "asyncio".
ENV = "GATED_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes this process's loop: uvloop's, or None for asyncio's own."""
    choice = os.environ.get(ENV, "uvloop").strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise SystemExit(f"gated: {ENV}={choice!r}: expected 'uvloop' or 'asyncio'")
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """'uvloop' or 'asyncio': which loop is running (for logs and bench reports)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks: the same set-up and clean-up
    (remaining tasks cancelled, async generators and the default executor shut down)."""
    try:
        factory = loop_factory()
    except BaseException:
        main.close()  # never started: no "never awaited" warning under the one-line error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
