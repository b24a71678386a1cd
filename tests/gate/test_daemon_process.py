"""The daemon as systemd runs it: a subprocess, scans on a pty, signals, power cuts."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from gated.journal import Journal
from gated.validation.token import mint_dynamic
from tests.gatekit import KEY, Pty, make_gate_dir


class Daemon:
    """`gated run` in a subprocess; its JSON log lines are read as they come."""

    def __init__(self, root, env=None):
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gated", "run", "--config", str(root / "gate.toml")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env={**os.environ, **(env or {})},
        )
        self.events = []
        self._buffer = b""

    def read_events(self, timeout=0.1):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            self.events += [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, predicate, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [e for e in self.events if predicate(e)]
            if found:
                return found
            self.read_events(0.05)
        raise AssertionError(f"no such event within {timeout}s; last: {self.events[-5:]} stderr: {self.stderr_now()}")

    def stderr_now(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def named(self, name):
        return [e for e in self.events if e.get("event") == name]


@pytest.fixture
def gate_dir(tmp_path):
    make_gate_dir(tmp_path, passage=False, emergency=False, rate_burst=1000)
    pty_in, pty_out = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    yield tmp_path, pty_in
    pty_in.close()
    pty_out.close()


def phone(ticket):
    return mint_dynamic(KEY, 1, ticket, time.time())


def test_scan_opens_relay_and_sigterm_leaves_it_locked(gate_dir):
    root, scanner = gate_dir
    d = Daemon(root)
    try:
        d.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        scanner.send(phone(1))
        d.wait_for(lambda e: e["event"] == "relay" and e["energized"] is True)
        decision = d.wait_for(lambda e: e["event"] == "decision")[0]
        assert (decision["reason"], decision["ticket_id"], decision["lane"]) == ("ok", 1, "in-1")
        scanner.send(phone(2))
        d.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == 2)
        d.proc.send_signal(signal.SIGTERM)  # mid-pulse
        assert d.proc.wait(timeout=15) == 0
        d.read_events(0.2)
        relay = [e["energized"] for e in d.named("relay")]
        assert relay[-1] is False and d.named("gate_stopped")
    finally:
        if d.proc.poll() is None:
            d.proc.kill()


def test_kill_9_mid_stream_loses_no_journaled_decision(gate_dir):
    root, scanner = gate_dir
    d = Daemon(root)
    try:
        d.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        for n in range(200):
            scanner.send(phone(1000 + n))
            if n == 120:
                d.wait_for(lambda e: e["event"] == "decision" and (e["ticket_id"] or 0) >= 1050)
                d.proc.send_signal(signal.SIGKILL)
                break
        d.proc.wait(timeout=10)
        d.read_events(0.2)
        logged = {e["ticket_id"] for e in d.named("decision")}
        assert len(logged) >= 50
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    # every decision the daemon reported had been journaled before it was logged
    with Journal(root / "state" / "journal.db", "test-gate") as journal:
        journaled = {r.ticket_id for r in journal.tail(100_000) if r.kind == "decision"}
    assert logged <= journaled
    # and the gate comes back and keeps deciding
    again = Daemon(root)
    try:
        again.wait_for(lambda e: e["event"] == "scanner_connected" and e["source"] == "in-1/serial0")
        scanner.send(phone(3))
        again.wait_for(lambda e: e["event"] == "decision" and e["ticket_id"] == 3)
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(timeout=15) == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def test_systemd_notify_ready_and_watchdog_from_the_event_loop(gate_dir, tmp_path_factory):
    root, scanner = gate_dir
    sock_path = tmp_path_factory.mktemp("notify") / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    d = Daemon(root, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})

    def messages(window):
        got, end = [], time.monotonic() + window
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                break
        return got

    try:
        first = sock.recv(4096).decode()
        while "READY=1" not in first:
            first = sock.recv(4096).decode()
        assert "STATUS=gate test-gate" in first
        assert sum(m == "WATCHDOG=1" for m in messages(0.6)) >= 4  # every 0.1 s
        d.proc.send_signal(signal.SIGSTOP)  # a stalled gate stops pinging: systemd would restart it
        messages(0.15)
        assert [m for m in messages(0.5) if m == "WATCHDOG=1"] == []
        d.proc.send_signal(signal.SIGCONT)
        assert "WATCHDOG=1" in messages(0.5)
        d.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in messages(5)
        assert d.proc.wait(timeout=15) == 0
    finally:
        sock.close()
        if d.proc.poll() is None:
            d.proc.kill()


def test_invalid_config_refuses_to_start_with_one_line(tmp_path):
    make_gate_dir(tmp_path)
    text = (tmp_path / "gate.toml").read_text().replace("pin = 27", "pin = 17")
    (tmp_path / "gate.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "gated", "run", "--config", str(tmp_path / "gate.toml")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "gate.toml:" in r.stderr and "17" in r.stderr and "Traceback" not in r.stderr
