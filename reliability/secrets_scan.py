"""Secrets: a simulated day, then every place text leaves the gate is searched for keys.

`gated sim --duration S` runs without a terminal (the real daemon on virtual
devices, the registry, a scripted crowd). Afterwards these are searched for
the event key(s) and the per-ticket key of every attendee, as hex (either
case), base64 (standard and URL-safe, padded or not) and raw bytes:

- the sim's output, the gate's JSON log (gated.log), summary.json;
- the journal file itself (raw bytes) and `gated journal export` (jsonl, csv);
- the registry database: every text field of every table but `keys` (which
  holds the event key by design), and `gated registry report`;
- the error messages of commands given bad input (a wrong key file, a code
  that fails, a bad config, an unknown ticket).

The key files themselves (keys.json, state/keyring.json) and the registry's
`keys` table hold keys on purpose and are not searched.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gated.keyfile import load_keyfile
from gated.validation.token import ticket_key
from reliability.venue import REPO


@dataclass
class SecretsResult:
    places: int = 0
    bytes_searched: int = 0
    keys: int = 0
    tickets: int = 0
    decisions: int = 0
    found: list[str] = field(default_factory=list)
    seconds: float = 0.0


def encodings(secret: bytes) -> set[bytes]:
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return {secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="), url, url.rstrip(b"=")}


class Finder:
    """Finds any of many secrets in a text or blob in one pass per encoding shape."""

    def __init__(self, secrets: dict[str, bytes]):
        self.raw = {v: k for k, v in secrets.items()}
        self.encoded = {e: k for k, v in secrets.items() for e in encodings(v)}
        self.hex_run = re.compile(rb"[0-9a-fA-F]{64,}")
        self.b64_run = re.compile(rb"[A-Za-z0-9+/_=-]{43,}")

    def search(self, data: bytes) -> list[str]:
        hits = []
        for pattern in (self.hex_run, self.b64_run):
            for m in pattern.finditer(data):
                run = m.group()
                for enc, name in self.encoded.items():
                    if enc in run:
                        hits.append(f"{name} ({'hex' if pattern is self.hex_run else 'base64'})")
        for i in range(0, max(0, len(data) - 31)):
            name = self.raw.get(data[i:i + 32])
            if name is not None:
                hits.append(f"{name} (raw bytes)")
        return hits


def _gated(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gated", *args], capture_output=True, timeout=120, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def run(root: Path, duration: float = 20.0, rate_per_min: float = 600.0) -> SecretsResult:
    t0 = time.monotonic()
    res = SecretsResult()
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / "sim"
    sim = subprocess.run([sys.executable, "-m", "gated", "sim", "--in-process", "--run-dir", str(run_dir), "--duration", str(duration),
                          "--rate", str(rate_per_min)], capture_output=True, timeout=duration + 180, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL)
    if sim.returncode != 0:
        raise RuntimeError(f"gated sim exited {sim.returncode}: {sim.stderr.decode(errors='replace')[-500:]}")
    ring = load_keyfile(run_dir / "keys.json")
    secrets = {f"event key kid {kid}": ring.get(kid) for kid in ring.kids()}
    with open(run_dir / "attendees.csv", newline="") as f:
        tickets = [int(row["ticket_id"]) for row in csv.DictReader(f)]
    for kid in ring.kids():
        for tid in tickets:
            secrets[f"ticket key {tid} (kid {kid})"] = ticket_key(ring.get(kid), tid)
    res.keys, res.tickets = len(ring.kids()), len(tickets)
    finder = Finder(secrets)
    places: dict[str, bytes] = {"gated sim output": sim.stdout + sim.stderr}
    for name in ("gated.log", "summary.json", "attendees.csv", "gate.toml"):
        if (run_dir / name).exists():
            places[name] = (run_dir / name).read_bytes()
    for name in ("journal.db", "journal.db-wal"):
        if (run_dir / "state" / name).exists():
            places[f"state/{name} (raw)"] = (run_dir / "state" / name).read_bytes()
    config = str(run_dir / "gate.toml")
    for fmt in ("jsonl", "csv"):
        r = _gated("journal", "export", "--format", fmt, "--config", config, cwd=root)
        places[f"gated journal export --format {fmt}"] = r.stdout + r.stderr
        if fmt == "jsonl":
            res.decisions = r.stdout.count(b'"decision"')
    for args in (("journal", "tail", "-n", "100000", "--config", config), ("journal", "stats", "--config", config)):
        r = _gated(*args, cwd=root)
        places["gated " + " ".join(args[:2])] = r.stdout + r.stderr
    db = run_dir / "registry.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'keys'").fetchall():
            cols = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
            blob = bytearray()
            for row in conn.execute(f"SELECT {', '.join(cols)} FROM {table}"):
                for value in row:
                    if isinstance(value, (str, bytes)):
                        blob += value.encode() if isinstance(value, str) else value
                        blob += b"\n"
            places[f"registry.db table {table}"] = bytes(blob)
    finally:
        conn.close()
    r = _gated("registry", "report", "--db", str(db), cwd=root)
    places["gated registry report"] = r.stdout + r.stderr
    # error messages: bad input given on purpose, with the real key file in play
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "bad.toml").write_text((run_dir / "gate.toml").read_text().replace("[gate]", "[gate]\nbogus = 1", 1))
    (bad / "short-keys.json").write_text('{"keys": {"1": "' + ring.get(ring.kids()[0]).hex()[:40] + '"}}')
    some = str(tickets[0])
    for args in (
        ("token", "verify", "GT1NOTACODE", "--keys", str(run_dir / "keys.json")),
        ("token", "verify", "12345678", "--manual", some, "--keys", str(run_dir / "keys.json")),
        ("token", "mint", "--keys", str(run_dir / "keys.json"), "--kid", "9", "--ticket", some, "--static"),
        ("token", "mint", "--keys", str(bad / "short-keys.json"), "--kid", "1", "--ticket", some, "--static"),
        ("config", "check", "--check-files", str(bad / "bad.toml")),
        ("registry", "keys", "add", "--db", str(db), "--from", str(bad / "short-keys.json")),
        ("registry", "revoke", "999999999999", "--db", str(db)),
        ("keys", "new", "--out", str(run_dir / "keys.json")),
    ):
        r = _gated(*args, cwd=root)
        places["error: gated " + " ".join(args[:3])] = r.stdout + r.stderr
    for place, data in places.items():
        res.places += 1
        res.bytes_searched += len(data)
        res.found += [f"{place}: {hit}" for hit in finder.search(data)]
    res.seconds = time.monotonic() - t0
    return res
