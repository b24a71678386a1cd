"""systemd's notify protocol (Type=notify, WatchdogSec=) with no dependency.

`notify("READY=1")` sends one datagram to $NOTIFY_SOCKET; it is a no-op when
the variable is unset (not started by systemd). `watchdog_interval()` reads
$WATCHDOG_USEC (for this process only, per $WATCHDOG_PID) and returns how
often to ping: half the timeout, as sd_watchdog_enabled(3) advises.

The pings come from a task on the daemon's event loop, so a stalled loop
stops pinging and systemd restarts the daemon: that is the point.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


async def watchdog_pinger(interval: float) -> None:
    """Ping until cancelled. Runs on the event loop it guards."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
