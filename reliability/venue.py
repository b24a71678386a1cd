"""A venue on this machine for the campaign: the reference registry and gate
daemons as real processes, scanners on ptys, and read-only views of what
each of them stored.

Processes:
- `Registry`: `gated registry serve` (mTLS on loopback) on a fixed port, so
  it can be killed and brought back where the gates expect it.
- `GateProcess`: `gated run` through `reliability.gate_process` (mock pins
  that people walk through), its JSON log read line by line as it comes.

Views (never through the product's own classes, which would write):
- `journal_rows(path)`: a copy of the journal (db + WAL) read with sqlite3,
  so looking never checkpoints or repairs the file under test.
- `registry_rows(db)`: the registry's events and tickets, read-only.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gated.keyfile import save_keyfile
from gated.rpc.certs import make_venue_certs
from gated.validation import KeyRing

KEY = bytes.fromhex("6b1f0c2e9d4a7b3c5e8f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f")
KID = 1
REPO = Path(__file__).resolve().parent.parent
_U64 = 1 << 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def u64(value: int | None) -> int | None:
    return None if value is None else (value + _U64 if value < 0 else value)


class Process:
    """A child process whose stdout JSON lines (and stderr lines) are collected by threads."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self.changed = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_json: bool) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.changed:
                if is_json:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        event = {"event": "_text", "text": line}
                    if not isinstance(event, dict):
                        event = {"event": "_text", "text": line}
                    event["_t"] = time.monotonic()
                    self.events.append(event)
                else:
                    self.stderr.append(line)
                self.changed.notify_all()

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        end = time.monotonic() + timeout
        with self.changed:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and seen == len(self.events):
                    tail = "\n".join(self.stderr[-5:])
                    raise RuntimeError(f"{what}: not seen within {timeout}s (exit {self.proc.poll()}); stderr: {tail}")
                self.changed.wait(min(left, 0.05))

    def named(self, name: str) -> list[dict]:
        with self.changed:
            return [e for e in self.events if e.get("event") == name]

    def kill(self) -> None:
        """kill -9: a power cut."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.join()

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.join()
        return code

    def join(self) -> None:
        for t in self._threads:
            t.join(5)


class Registry:
    """`gated registry serve` with mTLS on a fixed loopback port."""

    def __init__(self, root: Path, port: int, certs):
        self.root, self.port, self.certs = root, port, certs
        self.db = root / "registry.db"
        self.process: Process | None = None
        self.logs: list[str] = []

    def start(self) -> None:
        c = self.certs
        argv = [sys.executable, "-m", "gated", "registry", "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}",
                "--tls-ca", str(c.ca), "--tls-cert", str(c.registry.cert), "--tls-key", str(c.registry.key)]
        self.process = Process(argv, self.root)
        self.process.wait_for(lambda e: "registry listening" in e.get("text", ""), 30, "registry start")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        self.process.kill() if kill else self.process.terminate()
        self.logs += [json.dumps(e) for e in self.process.events] + self.process.stderr
        self.process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """A `gated registry ...` command against this registry's database, as staff run it."""
        return subprocess.run([sys.executable, "-m", "gated", "registry", *args, "--db", str(self.db)],
                              capture_output=True, text=True, timeout=60, cwd=self.root,
                              env={**os.environ, "PYTHONPATH": str(REPO)})


def make_venue(root: Path, gate_ids: list[str]):
    """Key file and certificates for a venue of `gate_ids`."""
    root.mkdir(parents=True, exist_ok=True)
    save_keyfile(root / "keys.json", KeyRing({KID: KEY}), overwrite=True)
    return make_venue_certs(root / "certs", gate_ids, hosts=["127.0.0.1", "localhost"])


@dataclass
class LaneSpec:
    id: str
    relay_pin: int
    passage_pin: int | None
    direction: str = "in"


@dataclass
class GateDir:
    root: Path
    gate_id: str
    lanes: list[LaneSpec]
    ptys: dict[str, "Pty"] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "gate.toml"

    @property
    def journal(self) -> Path:
        return self.root / "state" / "journal.db"


class Pty:
    """A pty pair standing in for a USB-serial scanner; `path` is a stable symlink the config names."""

    def __init__(self, path: Path):
        self.path = path
        self.master, self.slave = os.openpty()
        path.unlink(missing_ok=True)
        path.symlink_to(os.ttyname(self.slave))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode("latin-1") + b"\r")

    def drain(self) -> None:
        """Throw away what a dead gate left unread (a scanner's buffer dies with the power)."""
        import termios

        termios.tcflush(self.slave, termios.TCIFLUSH)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def write_gate(root: Path, venue_root: Path, certs, gate_id: str, port: int, lanes: list[LaneSpec], *,
               offline_policy: str = "strict", trust_local_clock: bool = True) -> GateDir:
    root.mkdir(parents=True, exist_ok=True)
    gate = certs.gates[gate_id]
    lane_tables = []
    for lane in lanes:
        timeout = "passage_timeout_s = 1.0\n" if lane.passage_pin is not None else ""
        passage = f"[lane.passage]\npin = {lane.passage_pin}\n" if lane.passage_pin is not None else ""
        lane_tables.append(
            f'\n[[lane]]\nid = "{lane.id}"\nzone = "hall"\ndirection = "{lane.direction}"\nmode = "turnstile"\n{timeout}'
            f'[[lane.scanner]]\nkind = "serial"\nport = "scanner-{lane.id}"\n'
            f"[lane.relay]\npin = {lane.relay_pin}\npulse_s = 0.1\n{passage}"
        )
    text = f"""[gate]
id = "{gate_id}"
key_file = "{venue_root / 'keys.json'}"
state_dir = "state"
offline_policy = "{offline_policy}"
trust_local_clock = {'true' if trust_local_clock else 'false'}
gpio = "mock"

[policy]
debounce_s = 1.0
rate_burst = 1000
rate_per_s = 1000
anti_passback = false

[admin]
socket = "admin.sock"

[uplink]
target = "127.0.0.1:{port}"
ca = "{certs.ca}"
cert = "{gate.cert}"
key = "{gate.key}"
reconnect_max_s = 1
""" + "".join(lane_tables)
    (root / "gate.toml").write_text(text)
    g = GateDir(root, gate_id, lanes)
    for lane in lanes:
        g.ptys[lane.id] = Pty(root / f"scanner-{lane.id}")
    return g


def start_gate(gate: GateDir, seed: int, walk: float = 0.85) -> Process:
    return Process([sys.executable, "-m", "reliability.gate_process", "--config", str(gate.config),
                    "--seed", str(seed), "--walk", str(walk)], gate.root)


# ------------------------------------------------------------------ views


@dataclass(frozen=True)
class Row:
    """One record, as a journal or the registry holds it (`payload`: its JSON, keys sorted)."""

    gate_id: str
    epoch: int
    seq: int
    at: float
    kind: str
    lane: str | None
    ticket_id: int | None
    reason: str | None
    payload: str = "{}"

    @property
    def content(self) -> tuple:
        return (self.gate_id, self.at, self.kind, self.lane, self.ticket_id, self.reason, self.payload)

    @property
    def outcome(self) -> str | None:
        """A usage record's "outcome" ("unknown": journaled at a start for an admission a cut left open)."""
        value = json.loads(self.payload).get("outcome")
        return value if isinstance(value, str) else None


def _canonical(payload: str | None) -> str:
    try:
        value = json.loads(payload or "{}")
    except ValueError:
        return payload or ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def epoch_of(epochs: list[tuple[int, int]], seq: int) -> int:
    """The epoch of record `seq`: the epochs row with the largest first_seq <= seq (0 before the first)."""
    i = bisect.bisect_right([first for first, _ in epochs], seq) - 1
    return 0 if i < 0 else epochs[i][1]


def journal_rows(path: Path, gate_id: str) -> list[Row]:
    """Every record of the journal at `path` (db and WAL copied first: reading never touches the original).

    Each record gets the epoch the journal's own `epochs` table gives its seq
    (a new one at every start, its seqs leaping ahead); a file made before
    that table existed has one epoch, in `meta`."""
    if not path.exists():
        return []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "journal.db"
        shutil.copyfile(path, copy)
        wal = Path(str(path) + "-wal")
        if wal.exists():
            shutil.copyfile(wal, Path(str(copy) + "-wal"))
        conn = sqlite3.connect(copy)
        try:
            has_epochs = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'epochs'").fetchone()
            if has_epochs:
                epochs = [(first, u64(e)) for first, e in conn.execute("SELECT first_seq, epoch FROM epochs ORDER BY first_seq")]
            else:
                epochs = [(0, u64(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]))]
            rows = conn.execute("SELECT seq, at, kind, lane, ticket_id, reason, payload FROM records ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []  # the card lost even the schema (nothing had been checkpointed): the gate starts a new file
        finally:
            conn.close()
    return [Row(gate_id, epoch_of(epochs, seq), seq, at, kind, lane, u64(t), reason, _canonical(payload))
            for seq, at, kind, lane, t, reason, payload in rows]


def registry_rows(db: Path) -> list[Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT gate_id, epoch, seq, at, kind, lane, ticket_id, reason, payload FROM events").fetchall()
    finally:
        conn.close()
    return [Row(g, u64(e), s, at, k, lane or None, u64(t), reason or None, _canonical(payload))
            for g, e, s, at, k, lane, t, reason, payload in rows]


def registry_tickets(db: Path) -> dict[int, tuple[int, int, int]]:
    """ticket_id -> (max_entries, entries_used, state)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT ticket_id, max_entries, entries_used, state FROM tickets").fetchall()
    finally:
        conn.close()
    return {u64(t): (m, u, s) for t, m, u, s in rows}


def registry_conflicts(db: Path) -> list[dict]:
    """The registry's conflicts table: one dict per conflict (kind, ticket_id, first_gate, gate_id, ...)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM conflicts ORDER BY id")]
    finally:
        conn.close()
    for r in rows:
        r["ticket_id"] = u64(r["ticket_id"])
    return rows


def registry_acked(db: Path, gate_id: str) -> dict[int, int]:
    """epoch -> the highest seq the registry holds of it, for every journal epoch of `gate_id`."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT epoch, acked_seq FROM gates WHERE gate_id = ?", (gate_id,)).fetchall()
    finally:
        conn.close()
    return {u64(e): s for e, s in rows}


def undrained(gate: GateDir, db: Path) -> list[Row]:
    """The gate's journal records the registry does not hold under their own (gate, epoch, seq)."""
    rows = journal_rows(gate.journal, gate.gate_id)
    if not rows:
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        held = {(u64(e), s) for e, s in conn.execute("SELECT epoch, seq FROM events WHERE gate_id = ?", (gate.gate_id,))}
    finally:
        conn.close()
    return [r for r in rows if (r.epoch, r.seq) not in held]


def wait_drained(gate: GateDir, db: Path, timeout: float = 60.0) -> bool:
    """Until the registry holds every record of the gate's journal, every epoch (True), or `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if not undrained(gate, db):
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    return False
