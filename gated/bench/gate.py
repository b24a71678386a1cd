"""The whole gate: scan to relay over ptys and mock pins, the idle daemon, and scans while large deltas apply."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from gated import eventloop
from gated.bench.common import FIRST_TICKET, layout_ids, layout_records, stats
from gated.validation import KeyRing, TicketRecord, encode_snapshot
from gated.validation.token import mint_dynamic


def _gate_dir(root: str, lanes: int, snapshot: bytes) -> str:
    """A gate on disk for benchmarks: keys, a config with `lanes` serial lanes, a seeded cache."""
    from pathlib import Path

    from gated.keyfile import save_keyfile
    from gated.gate.state import StateStore

    def free_port() -> int:  # the gate serves /metrics, as instrumented as in the field
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    root_path = Path(root)
    save_keyfile(root_path / "keys.json", KeyRing({1: bytes(range(32))}), overwrite=True)
    StateStore(root_path / "state").save_cache(snapshot, 0)
    lane_tables = "".join(
        f"""
[[lane]]
id = "in-{n}"
zone = "hall-a"
direction = "in"
mode = "turnstile"
  [[lane.scanner]]
  kind = "serial"
  port = "scan-{n}"
  [lane.relay]
  pin = {2 + n}
  pulse_s = 0.1
"""
        for n in range(lanes)
    )
    (root_path / "gate.toml").write_text(
        f"""[gate]
id = "bench"
key_file = "keys.json"
state_dir = "state"
trust_local_clock = true
gpio = "mock"
[policy]
rate_burst = 1000
rate_per_s = 1000
[admin]
socket = "admin.sock"
[metrics]
address = "127.0.0.1:{free_port()}"
{lane_tables}"""
    )
    return str(root_path / "gate.toml")


def bench_scan_to_relay(scans: int = 1000, lanes: int = 8) -> dict:
    """From the last byte of a frame written to a pty to the relay pin going active.

    The real path: pty -> pyserial driver -> decide() -> journal (SQLite WAL,
    fsync) -> relay on MockFactory pins. Lanes take turns, so each lane's
    0.1 s pulse has ended before it is scanned again.
    """
    records = [TicketRecord(ticket_id=FIRST_TICKET + i, category="guest", zones=("hall-a",)) for i in range(scans)]
    root = tempfile.mkdtemp(prefix="gated-bench-relay-")
    try:
        return _scan_to_relay_in(root, records, scans, lanes)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _scan_to_relay_in(root: str, records: list, scans: int, lanes: int, *, seed_snapshot: bytes | None = None,
                      during: Callable | None = None) -> dict:
    import asyncio
    import threading

    from gpiozero.pins.mock import MockFactory

    from gated.config import load_config
    from gated.gate.daemon import Gate
    from gated.bench.journal import measure_commit

    key = bytes(range(32))
    config_path = _gate_dir(root, lanes, seed_snapshot or encode_snapshot(1, records))
    masters = {}
    for n in range(lanes):
        master, slave = os.openpty()
        os.symlink(os.ttyname(slave), os.path.join(root, f"scan-{n}"))
        masters[f"in-{n}"] = (master, slave)
    energized = {lane: threading.Event() for lane in masters}
    released = {lane: threading.Event() for lane in masters}
    active_at: dict[str, float] = {}
    for event in released.values():
        event.set()

    def observe(lane_id: str, is_energized: bool, at: float) -> None:
        if is_energized:
            active_at[lane_id] = at
            released[lane_id].clear()
            energized[lane_id].set()
        else:
            energized[lane_id].clear()
            released[lane_id].set()

    ready, stop = threading.Event(), None
    gate_box: dict = {}

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        gate = Gate(load_config(config_path, check_files=True), pin_factory=MockFactory(), relay_observer=observe)
        gate_box["gate"] = gate
        await gate.start()
        while not gate.inputs_connected():
            await asyncio.sleep(0.01)
        ready.set()
        await stop.wait()
        await gate.stop()

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only, off the timed path
    def run_gate() -> None:
        try:
            eventloop.run(serve())
        except BaseException as exc:  # reported below, not lost in a thread
            gate_box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run_gate, name="bench-gate", daemon=True)
    thread.start()
    if not ready.wait(60) or "error" in gate_box:
        raise RuntimeError(f"bench gate did not start: {gate_box.get('error')!r}")
    now = time.time()
    codes = [mint_dynamic(key, 1, FIRST_TICKET + i, now) + "\r" for i in range(scans)]
    lane_ids = list(masters)
    latencies: list[int] = []
    started: list[float] = []
    missed = 0
    gate = gate_box["gate"]
    background = None
    if during is not None:  # work the gate does meanwhile (a large delta), in its own thread
        background_stop = threading.Event()
        background_out: dict = {}
        background = threading.Thread(target=lambda: background_out.update(during(gate, background_stop)), daemon=True)
        background.start()
    for i, code in enumerate(codes):
        lane = lane_ids[i % lanes]
        released[lane].wait(2)
        energized[lane].clear()
        os.write(masters[lane][0], code.encode("ascii"))
        t0 = time.monotonic()
        if energized[lane].wait(2):
            latencies.append(int((active_at[lane] - t0) * 1e9))
            started.append(t0)
        else:
            missed += 1
    if background is not None:
        background_stop.set()
        background.join(120)
    gate.loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    for master, slave in masters.values():
        os.close(master)
        os.close(slave)
    if during is not None:
        return {"scans": scans, "lanes": lanes, "missed": missed, "latencies_ns": latencies, "started": started, **background_out}
    fsync = measure_commit(os.path.join(root, "measure.db"), n=300)
    return {
        "scans": scans,
        "lanes": lanes,
        "missed": missed,
        "scan_to_relay": stats(latencies) if latencies else None,
        "journal_append": {"median_us": round(fsync["append_median_s"] * 1e6, 1), "p99_us": round(fsync["append_p99_s"] * 1e6, 1)},
        "fsync_alone": {"median_us": round(fsync["fsync_median_s"] * 1e6, 1), "p99_us": round(fsync["fsync_p99_s"] * 1e6, 1)},
    }


def bench_idle_daemon(snapshot: bytes, tickets: int, seconds: float = 5.0) -> dict:
    """`gated run` holding `tickets` tickets, doing nothing: resident memory and CPU."""
    import shutil

    root = tempfile.mkdtemp(prefix="gated-bench-idle-")
    config_path = _gate_dir(root, 2, snapshot)
    for n in range(2):
        master, slave = os.openpty()
        os.symlink(os.ttyname(slave), os.path.join(root, f"scan-{n}"))
    import socket

    notify_path = os.path.join(root, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(120)
    proc = subprocess.Popen([sys.executable, "-m", "gated", "run", "--config", config_path, "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, env={**os.environ, "NOTIFY_SOCKET": notify_path})
    try:
        while b"READY=1" not in notify.recv(4096):  # systemd's readiness signal, as a unit would wait for it
            pass
        time.sleep(1.0)  # let start-up work settle
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_s() -> float:
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_s(), time.monotonic()
        with open(f"/proc/{proc.pid}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        notify.close()
        shutil.rmtree(root, ignore_errors=True)
    return {"tickets": tickets, "rss_mb": round(rss_kb / 1024, 1), "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 2), "seconds": seconds}


def bench_delta_layouts(tickets: int, quick: bool, delta_tickets: int = 10_000,
                        layouts: tuple[str, ...] = ("consecutive", "regno10", "blocks")) -> dict:
    """`bench_delta_while_scanning` on a gate of each id layout; the top-level
    figures are the worst layout's (by p99 during deltas), each layout's under "layouts"."""
    runs = {layout: bench_delta_while_scanning(tickets, quick, delta_tickets, base_layout=layout) for layout in layouts}
    worst = max(runs.values(), key=lambda r: (r["scan_to_relay_during"] or {}).get("p99_us", float("inf")))
    return {**worst, "missed": sum(r["missed"] for r in runs.values()), "layouts": runs}


def bench_delta_while_scanning(tickets: int, quick: bool, delta_tickets: int = 10_000, base_layout: str = "consecutive") -> dict:
    """Scan to relay (the 'gate' section's path: pty, driver, decide, journal fsync,
    relay pin) on a gate holding `tickets` tickets, while deltas of
    `delta_tickets` new tickets (10-digit registration numbers) go through the
    uplink's delta path one after another (`Uplink._apply_delta`: conversion,
    staging in a worker thread, swap). Scans that started while a delta was in
    flight are reported apart from the others of the same run."""
    import asyncio
    import shutil

    from gated.rpc import convert
    from gated.rpc.uplink import Uplink
    from gated.validation import Delta, Upsert

    import itertools

    scans = 200 if quick else 1000
    base = [t for t in layout_ids(base_layout, max(tickets - scans, 0)) if not FIRST_TICKET <= t < FIRST_TICKET + scans]
    scanned = (TicketRecord(ticket_id=FIRST_TICKET + i, category="guest", zones=("hall-a",)) for i in range(scans))
    snapshot = encode_snapshot(1, itertools.chain(layout_records(base), scanned))
    held = set(base)
    walk_ins = [t for t in layout_ids("regno10", 25 * delta_tickets, seed=5205320758) if not FIRST_TICKET <= t < FIRST_TICKET + scans and t not in held]
    messages = [convert.delta_to_proto(Delta(1 + k, 2 + k, tuple(Upsert(r) for r in layout_records(walk_ins[k * delta_tickets : (k + 1) * delta_tickets]))))
                for k in range(3 if quick else 24)]

    def deltas(gate, stop) -> dict:
        uplink = Uplink(gate.gate_id, gate.journal, gate.validator.cache, gate.keyring, gate.clock,
                        _NoRegistry())  # not connected: only its delta path runs
        spans = []
        for msg in messages:
            if stop.is_set():
                break
            t0 = time.monotonic()
            asyncio.run_coroutine_threadsafe(uplink._apply_delta(msg), gate.loop).result(60)
            spans.append((t0, time.monotonic()))
            time.sleep(0.05)
        return {"spans": spans, "tickets_after": len(gate.validator.cache)}

    root = tempfile.mkdtemp(prefix="gated-bench-delta-")
    try:
        r = _scan_to_relay_in(root, [], scans, 8, seed_snapshot=snapshot, during=deltas)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    spans = r["spans"]
    during, outside = [], []
    for t0, ns in zip(r["started"], r["latencies_ns"]):
        (during if any(a <= t0 <= b for a, b in spans) else outside).append(ns)
    apply_s = sorted(b - a for a, b in spans)
    return {
        "tickets": tickets, "base_layout": base_layout, "scans": scans, "lanes": r["lanes"], "missed": r["missed"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "deltas": len(spans), "delta_tickets": delta_tickets, "tickets_after": r["tickets_after"],
        "delta_apply_median_s": round(statistics.median(apply_s), 3) if apply_s else None,
        "delta_apply_max_s": round(apply_s[-1], 3) if apply_s else None,
        "scan_to_relay_during": {**stats(during), "max_us": round(max(during) / 1000, 1)} if during else None,
        "scan_to_relay_outside": stats(outside) if outside else None,
    }


class _NoRegistry:
    target = "127.0.0.1:1"
    plaintext = True
    ca = cert = key = None
    reconnect_max_s = 1.0
