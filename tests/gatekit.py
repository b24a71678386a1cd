"""Builds a real gate on disk for tests: key file, config, seeded cache, ptys."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from gated.gate.state import StateStore
from gated.keyfile import save_keyfile
from gated.validation import KeyRing, TicketRecord, encode_snapshot

KEY = bytes(range(32))

TICKETS = [
    TicketRecord(ticket_id=1, category="guest", zones=("hall",), name="Wang Fang"),
    TicketRecord(ticket_id=2, category="media", zones=("hall",), benefits=(("lunch", 1),)),
    TicketRecord(ticket_id=3, category="staff", zones=("hall",)),
    TicketRecord(ticket_id=4, category="guest", zones=("hall",), max_entries=1),
] + [TicketRecord(ticket_id=1000 + i, category="guest", zones=("hall",)) for i in range(2000)]


class Pty:
    """A pty pair standing in for a USB-serial scanner; `path` is a stable symlink."""

    def __init__(self, path: Path):
        self.path = path
        self.master, self.slave = os.openpty()
        path.unlink(missing_ok=True)
        path.symlink_to(os.ttyname(self.slave))

    def send(self, text: str, suffix: bytes = b"\r") -> None:
        os.write(self.master, text.encode("latin-1") + suffix)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def make_gate_dir(root: Path, *, gate_id: str = "test-gate", passage: bool = True, emergency: bool = True,
                  extra_lane: str = "", tickets=TICKETS, rate_burst: int = 10, uplink: str = "") -> Path:
    """Write keys.json, gate.toml and a cache seeded with `tickets` (None: no cache) under `root`.

    `uplink`: the body of an [uplink] table; empty, the gate runs offline.
    """
    save_keyfile(root / "keys.json", KeyRing({1: KEY}), overwrite=True)
    if tickets is not None:
        StateStore(root / "state").save_cache(encode_snapshot(1, tickets), 0)
    passage_table = "  [lane.passage]\n  pin = 5\n" if passage else ""
    passage_timeout = "passage_timeout_s = 1.0" if passage else ""
    emergency_table = "[emergency]\npin = 6\nactive_high = true\npull_up = false\n" if emergency else ""
    uplink_table = f"[uplink]\n{uplink}\n" if uplink else ""
    config = f"""
    [gate]
    id = "{gate_id}"
    key_file = "keys.json"
    state_dir = "state"
    trust_local_clock = true
    gpio = "mock"

    [policy]
    debounce_s = 1.0
    rate_burst = {rate_burst}
    rate_per_s = {max(5, rate_burst)}

    [admin]
    socket = "admin.sock"

    {uplink_table}
    {emergency_table}
    [[lane]]
    id = "in-1"
    zone = "hall"
    direction = "in"
    mode = "turnstile"
    {passage_timeout}
      [[lane.scanner]]
      kind = "serial"
      port = "scanner-in-1"
      [lane.relay]
      pin = 17
      pulse_s = 0.3
      [lane.light]
      red = 22
      green = 23
      blue = 24
      pwm = true
      [lane.buzzer]
      pin = 25
    {passage_table}
    [[lane]]
    id = "out-1"
    zone = "hall"
    direction = "out"
    mode = "turnstile"
      [[lane.scanner]]
      kind = "serial"
      port = "scanner-out-1"
      [lane.relay]
      pin = 27
      pulse_s = 0.3
    {extra_lane}
    """
    path = root / "gate.toml"
    path.write_text(textwrap.dedent(config))
    return path
