"""The gate's admin service: a technician at the gate asks what it is doing, and tells it what to do."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gated.rpc.admin import (
    AdminAddressError,
    AdminClient,
    AdminError,
    AdminServer,
    admin_target,
)

pytestmark = pytest.mark.timeout(60)


class DoorControl:
    """A GateControl with two lanes, as the daemon would offer it."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.emergency = False
        self.reloads = 0

    def status(self):
        return {
            "gate_id": "gate-a",
            "lanes": [{"id": "in-1", "zone": "hall-a", "direction": "in", "mode": "turnstile", "state": "idle"},
                      {"id": "out-1", "zone": "hall-a", "direction": "out", "mode": "turnstile", "state": "idle"}],
            "uplink": {"connected": True, "target": "127.0.0.1:7443", "backlog": 3, "cache_version": 12,
                       "clock": {"offset_s": 0.25, "trusted": True}},
            "cache_version": 12, "cache_tickets": 3, "journal_backlog": 3, "emergency": self.emergency,
        }

    async def open_lane(self, lane_id: str) -> bool:
        if lane_id not in ("in-1", "out-1") or self.emergency:
            return False
        self.opened.append(lane_id)
        return True

    async def set_emergency(self, active: bool) -> None:
        self.emergency = active

    async def reload_config(self):
        self.reloads += 1
        return (False, "config/gate.toml:3: gate.id: expected a string") if self.reloads > 1 else (True, "2 lanes")

    def journal_stats(self):
        return {"path": "/var/lib/gated/journal.db", "records": 120, "unacked": 3, "oldest_unacked_at": 1.5e9,
                "last_seq": 120, "file_size": 4096, "wal_size": 0, "transactions": 40}


@pytest.fixture
def short_tmp():
    # unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer
    with tempfile.TemporaryDirectory(prefix="gadm") as d:
        yield Path(d)


def serve_in_thread(control, **where):
    """Run the admin server on a loop in another thread, so blocking clients (and the CLI) can call it."""
    import threading

    started = threading.Event()
    box = {}

    def main():
        async def run():
            server = AdminServer(control, **where)
            box["target"] = await server.start()
            box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            started.set()
            await box["stop"].wait()
            await server.stop()

        asyncio.run(run())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10)

    def stop():
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)

    return box["target"], stop


def test_a_technician_checks_and_drives_the_gate_over_the_unix_socket(short_tmp):
    control = DoorControl()
    sock = short_tmp / "admin.sock"
    target, stop = serve_in_thread(control, socket_path=sock)
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        with AdminClient(target) as client:
            status = client.status()
            assert status["gate_id"] == "gate-a" and [lane["id"] for lane in status["lanes"]] == ["in-1", "out-1"]
            assert status["uplink"]["connected"] and status["journal_backlog"] == 3
            assert client.open_lane("in-1") and not client.open_lane("nope")
            client.set_emergency(True)
            assert client.status()["emergency"] and not client.open_lane("out-1")
            client.set_emergency(False)
            assert client.reload_config() == (True, "2 lanes")
            assert client.reload_config() == (False, "config/gate.toml:3: gate.id: expected a string")
            assert client.journal_stats()["unacked"] == 3 and client.journal_stats()["oldest_unacked_at"] == 1.5e9
        assert control.opened == ["in-1"]

        gated = [sys.executable, "-m", "gated", "admin"]
        r = subprocess.run([*gated, "open", "out-1", "--socket", str(sock)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "opened once" in r.stdout
        r = subprocess.run([*gated, "reload", "--socket", str(sock)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "refused: config/gate.toml:3" in r.stderr
        r = subprocess.run([*gated, "status", "--socket", str(sock)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and '"cache_version": 12' in r.stdout
    finally:
        stop()
    assert not sock.exists()


def test_the_admin_service_on_a_loopback_port():
    target, stop = serve_in_thread(DoorControl(), address="127.0.0.1:0")
    try:
        assert target.startswith("127.0.0.1:") and not target.endswith(":0")
        with AdminClient(target) as client:
            assert client.status()["cache_tickets"] == 3
    finally:
        stop()


@pytest.mark.parametrize("address", ["0.0.0.0:7001", "192.168.1.20:7001", "[::]:7001", "gate.example.org:7001", "7001"])
def test_anything_but_loopback_is_refused_before_listening(address):
    with pytest.raises(AdminAddressError):
        AdminServer(DoorControl(), address=address)
    r = subprocess.run([sys.executable, "-m", "gated", "admin", "status", "--address", address],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("error: admin address")


def test_loopback_forms_are_accepted():
    assert admin_target(address="localhost:7001") == "localhost:7001"
    assert admin_target(address="[::1]:7001") == "[::1]:7001"
    assert admin_target(address="127.0.0.2:7001") == "127.0.0.2:7001"


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(short_tmp):
    sock = short_tmp / "admin.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # a crashed daemon's leftover: nobody listens
    target, stop = serve_in_thread(DoorControl(), socket_path=sock)
    try:
        async def second():
            await AdminServer(DoorControl(), socket_path=sock).start()

        with pytest.raises(AdminError, match="another process is serving"):
            asyncio.run(second())
    finally:
        stop()
    (short_tmp / "file").write_text("not a socket")
    with pytest.raises(AdminError, match="not a socket"):
        asyncio.run(AdminServer(DoorControl(), socket_path=short_tmp / "file").start())
    assert (short_tmp / "file").read_text() == "not a socket"


def test_no_gate_running_is_a_clear_error(short_tmp):
    with AdminClient(f"unix:{short_tmp / 'none.sock'}", timeout_s=2) as client:
        with pytest.raises(AdminError, match="no gate answering"):
            client.status()
    assert os.listdir(short_tmp) == []
