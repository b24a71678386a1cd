"""`gated bench`: the figures the README quotes, measured in one run.

Every timed operation is reported as median and p99 per call, next to a
floor measured in the same run, in the same loop, interleaved with it, so a
busy or slow machine moves both and the ratio stays meaningful:

- decide(): admitted dynamic, admitted static, bad_signature, bad_format, on
  a cache of `--tickets` (default 1,000,000) tickets; floor: the two
  `hmac.digest(key, msg, "sha256")` calls a verification cannot avoid
  (ticket-key derivation on 24 bytes, tag on 14 or 12 bytes).
- the cache: resident memory per ticket (measured in a fresh child process)
  and the time to load the snapshot.
"""

from __future__ import annotations

import gc
import hmac
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from gated.validation import EntitlementCache, KeyRing, Lane, Policy, TicketRecord, Validator, encode_snapshot
from gated.validation.token import mint_dynamic, mint_static

BENCH_NOW = 1_760_000_000
FIRST_TICKET = 9_000_000_000
CATEGORIES = ("guest", "guest", "guest", "exhibitor", "media", "staff", "vip")


def synthetic_records(n: int, first: int = FIRST_TICKET):
    """A realistic venue: 3 days, 2 halls, names, companies, a few benefits."""
    day = 86_400
    windows = ((BENCH_NOW - day, BENCH_NOW + 2 * day),)
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        yield TicketRecord(
            ticket_id=first + i * 7919,
            category=category,
            ticket_type="3-day" if i % 3 else "1-day",
            zones=("hall-a", "hall-b") if category != "staff" else ("hall-a", "hall-b", "backstage"),
            windows=windows,
            max_entries=0 if i % 3 else 1,
            benefits=(("lunch_day1", 1), ("dinner", 1)) if category in ("vip", "media") else (),
            name=f"Attendee Number {i}",
            company=f"Company {i % 5000} Ltd",
            phone_last4=f"{(i * 37) % 10000:04d}",
        )


def _stats(samples_ns: list[int]) -> dict:
    samples = sorted(samples_ns)
    return {
        "median_us": round(statistics.median(samples) / 1000, 3),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000, 3),
        "n": len(samples),
    }


def _interleaved(ops: dict[str, Callable[[int], object]], args: list, rounds: int, per_round: int) -> dict[str, dict]:
    """Time each op per call, round-robin in blocks, so all share the machine's state."""
    samples: dict[str, list[int]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    n_args = len(args)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, op in ops.items():
                out = samples[name]
                base = r * per_round
                for i in range(base, base + per_round):
                    arg = args[i % n_args]
                    t0 = clock()
                    op(arg)
                    out.append(clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    return {name: _stats(s) for name, s in samples.items()}


def build_snapshot(tickets: int) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    snapshot = encode_snapshot(1, synthetic_records(tickets))
    return snapshot, time.perf_counter() - t0


def bench_decide(snapshot: bytes, build_s: float, tickets: int, quick: bool) -> dict:
    key = bytes(range(32))
    ring = KeyRing({1: key})

    cache = EntitlementCache()
    t0 = time.perf_counter()
    cache.load_snapshot(snapshot)
    load_s = time.perf_counter() - t0

    # Realistic lane limits, but a bench lane must not trip them: the codes
    # cycle over many tickets (no debounce repeat), the bucket is deep.
    policy = Policy(rate_burst=10**9, rate_per_s=1e9)
    validator = Validator(ring, cache, policy)
    lane = Lane("bench-in", "hall-a")
    stride = max(1, tickets // 1000)
    ids = [FIRST_TICKET + (i * stride) * 7919 for i in range(min(1000, tickets))]
    dynamic = [mint_dynamic(key, 1, t, BENCH_NOW) for t in ids]
    static = [mint_static(key, 1, t, 0) for t in ids]
    forged = [c[:-2] + ("AB" if c[-2:] != "AB" else "CD") for c in dynamic]
    garbage = [f"GT1:{i:040d}" for i in range(len(ids))] + ["", "x" * 10_000, "\x00" * 52]
    for sample in (dynamic[0], static[0], forged[0], garbage[0]):
        validator.decide(sample, lane, BENCH_NOW)
    assert validator.decide(dynamic[1], lane, BENCH_NOW).reason == "ok"
    assert validator.decide(static[1], lane, BENCH_NOW).reason == "ok"
    assert validator.decide(forged[1], lane, BENCH_NOW).reason == "bad_signature"
    assert validator.decide(garbage[1], lane, BENCH_NOW).reason == "bad_format"

    ticket_msg = b"gated-ticket-key\x00" + bytes(8)
    dyn_msg, static_msg = bytes(14), bytes(12)
    decide = validator.decide
    digest = hmac.digest
    idx = list(range(len(ids)))
    rounds, per_round = (4, 500) if quick else (20, 2500)
    results = _interleaved(
        {
            "dynamic_ok": lambda i: decide(dynamic[i], lane, BENCH_NOW),
            "static_ok": lambda i: decide(static[i], lane, BENCH_NOW),
            "bad_signature": lambda i: decide(forged[i], lane, BENCH_NOW),
            "bad_format": lambda i: decide(garbage[i], lane, BENCH_NOW),
            "floor_dynamic": lambda i: (digest(key, ticket_msg, "sha256"), digest(key, dyn_msg, "sha256")),
            "floor_static": lambda i: (digest(key, ticket_msg, "sha256"), digest(key, static_msg, "sha256")),
        },
        idx,
        rounds,
        per_round,
    )
    floor_d, floor_s = results["floor_dynamic"], results["floor_static"]
    ratios = {
        "dynamic_ok_median": round(results["dynamic_ok"]["median_us"] / floor_d["median_us"], 2),
        "dynamic_ok_p99": round(results["dynamic_ok"]["p99_us"] / floor_d["p99_us"], 2),
        "static_ok_median": round(results["static_ok"]["median_us"] / floor_s["median_us"], 2),
        "static_ok_p99": round(results["static_ok"]["p99_us"] / floor_s["p99_us"], 2),
    }
    memory = _cache_memory(snapshot, tickets)
    return {
        "decide": {k: results[k] for k in ("dynamic_ok", "static_ok", "bad_signature", "bad_format")},
        "floor": {"dynamic": floor_d, "static": floor_s},
        "ratio_to_floor": ratios,
        "cache": {
            "tickets": tickets,
            "snapshot_bytes": len(snapshot),
            "snapshot_build_s": round(build_s, 2),
            "snapshot_load_s": round(load_s, 3),
            **memory,
        },
    }


def _cache_memory(snapshot: bytes, tickets: int) -> dict:
    """Resident memory of a loaded cache, in a fresh process (nothing else resident)."""
    with tempfile.NamedTemporaryFile(prefix="gated-bench-", suffix=".snap", delete=False) as fh:
        fh.write(snapshot)
        path = fh.name
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gated.bench", "--memory-child", path],
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout
        rss_before, rss_after = map(int, out.split())
    finally:
        os.unlink(path)
    per_ticket = (rss_after - rss_before) / max(tickets, 1)
    return {"rss_bytes": rss_after - rss_before, "rss_bytes_per_ticket": round(per_ticket, 1)}


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(path: str) -> None:
    gc.collect()
    before = _rss()
    with open(path, "rb") as fh:
        data = fh.read()
    cache = EntitlementCache()
    cache.load_snapshot(data)
    del data
    gc.collect()
    print(before, _rss())
    assert len(cache) > 0


# ---- issue 4: the gate on (simulated) hardware ----

def _gate_dir(root: str, lanes: int, snapshot: bytes) -> str:
    """A gate on disk for benchmarks: keys, a config with `lanes` serial lanes, a seeded cache."""
    from pathlib import Path

    from gated.keyfile import save_keyfile
    from gated.gate.state import StateStore

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
    from gated.journal import measure_commit

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
            asyncio.run(serve())
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
        "scan_to_relay": _stats(latencies) if latencies else None,
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


# ---- issue 8: the cache index for every id layout, and large deltas ----

ID_LAYOUTS = ("consecutive", "regno10", "blocks", "random63")


def layout_ids(layout: str, n: int, seed: int = 8) -> list[int]:
    """Ticket ids as shows number them: 100001..; 10-digit registration numbers
    (5205320758); blocks per day or ticket type 1_000_000*k + n; random 63-bit."""
    import random

    rng = random.Random(seed)
    if layout == "consecutive":
        return list(range(100_001, 100_001 + n))
    if layout == "regno10":
        return rng.sample(range(1_000_000_000, 10_000_000_000), n)
    if layout == "blocks":
        per_block = -(-n // 4)
        return [1_000_000 * k + m for k in range(1, 5) for m in range(per_block)][:n]
    ids: set[int] = set()
    while len(ids) < n:
        ids.add(rng.getrandbits(63))
    return list(ids)


def _fresh_ids(layout: str, taken: list[int], n: int) -> list[int]:
    """`n` ids not yet taken, continuing the layout (the next walk-ins, the next block)."""
    import random

    rng = random.Random(len(taken))
    if layout == "consecutive":
        return list(range(max(taken) + 1, max(taken) + 1 + n))
    if layout == "blocks":
        top = max(taken) // 1_000_000 + 1
        return [1_000_000 * top + m for m in range(n)]
    have, out = set(taken), []
    while len(out) < n:
        tid = rng.randrange(1_000_000_000, 10_000_000_000) if layout == "regno10" else rng.getrandbits(63)
        if tid not in have:
            have.add(tid)
            out.append(tid)
    return out


def _layout_records(ids: list[int]):
    """`synthetic_records`' tickets (names, companies, benefits) under other ids."""
    import dataclasses

    for tid, rec in zip(ids, synthetic_records(len(ids))):
        yield dataclasses.replace(rec, ticket_id=tid)


def _absent_near(ids: list[int], n: int, seed: int = 9) -> list[int]:
    """Ids a gate is shown that it does not hold: next to held ones (the end of a run), and anywhere."""
    import random

    rng = random.Random(seed)
    have = set(ids)
    out: list[int] = []
    while len(out) < n:
        tid = rng.choice(ids) + rng.choice((1, 2, -1, 1_000_000)) if len(out) % 2 else rng.getrandbits(63)
        if tid not in have and 0 <= tid < 2**64:
            out.append(tid)
    return out


def bench_cache_layouts(tickets: int, quick: bool, delta_tickets: int = 10_000) -> dict:
    """Per id layout, on `tickets` tickets: snapshot load (median of three), lookups of present and
    absent ids (interleaved with the same lookups in a plain dict: the
    baseline), and a delta of `delta_tickets` new tickets built on a copy
    and swapped in (stage + build + swap, as the uplink does it)."""
    from gated.validation import Delta, Upsert

    out: dict = {}
    lookups = 500 if quick else 5000
    for layout in ID_LAYOUTS:
        ids = layout_ids(layout, tickets)
        snapshot = encode_snapshot(1, _layout_records(ids))
        loads = []
        for _ in range(1 if quick else 3):  # the median of three: one load is at the mercy of a busy machine
            cache = EntitlementCache()
            gc.collect()
            t0 = time.perf_counter()
            cache.load_snapshot(snapshot)
            loads.append(time.perf_counter() - t0)
        load_s = statistics.median(loads)
        del snapshot
        import random

        present = random.Random(1).sample(ids, lookups)
        absent = _absent_near(ids, lookups)
        plain = dict.fromkeys(ids, 0)
        row_of, get = cache.table.row_of, plain.get
        timed = _interleaved(
            {
                "present": lambda i: row_of(present[i]),
                "absent": lambda i: row_of(absent[i]),
                "dict_present": lambda i: get(present[i]),
                "dict_absent": lambda i: get(absent[i]),
            },
            list(range(lookups)),
            rounds=4 if quick else 10,
            per_round=lookups // (4 if quick else 10),
        )
        assert all(row_of(t) >= 0 for t in present[:100]) and all(row_of(t) < 0 for t in absent[:100])
        del plain
        fresh = _fresh_ids(layout, ids, delta_tickets)
        delta = Delta(cache.version, cache.version + 1, tuple(Upsert(r) for r in _layout_records(fresh)))
        t0 = time.perf_counter()
        staging = cache.stage(delta)
        t1 = time.perf_counter()
        staging.build()
        t2 = time.perf_counter()
        cache.swap(staging)
        t3 = time.perf_counter()
        assert len(cache) == tickets + delta_tickets and cache.row_of(fresh[-1]) >= 0
        out[layout] = {
            "tickets": tickets,
            "load_s": round(load_s, 3),
            "lookup": timed,
            "delta": {"new_tickets": delta_tickets, "total_s": round(t3 - t0, 3), "build_s": round(t2 - t1, 3),
                      "on_loop_ms": round((t1 - t0 + t3 - t2) * 1000, 2)},
        }
        del cache, staging
        gc.collect()
    return out


def bench_delta_while_scanning(tickets: int, quick: bool, delta_tickets: int = 10_000) -> dict:
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
    base = layout_ids("consecutive", max(tickets - scans, 0))
    scanned = (TicketRecord(ticket_id=FIRST_TICKET + i, category="guest", zones=("hall-a",)) for i in range(scans))
    snapshot = encode_snapshot(1, itertools.chain(_layout_records(base), scanned))
    walk_ins = [t for t in layout_ids("regno10", 25 * delta_tickets, seed=5205320758) if not FIRST_TICKET <= t < FIRST_TICKET + scans]
    messages = [convert.delta_to_proto(Delta(1 + k, 2 + k, tuple(Upsert(r) for r in _layout_records(walk_ins[k * delta_tickets : (k + 1) * delta_tickets]))))
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
        "tickets": tickets, "scans": scans, "lanes": r["lanes"], "missed": r["missed"],
        "deltas": len(spans), "delta_tickets": delta_tickets, "tickets_after": r["tickets_after"],
        "delta_apply_median_s": round(statistics.median(apply_s), 3) if apply_s else None,
        "delta_apply_max_s": round(apply_s[-1], 3) if apply_s else None,
        "scan_to_relay_during": {**_stats(during), "max_us": round(max(during) / 1000, 1)} if during else None,
        "scan_to_relay_outside": _stats(outside) if outside else None,
    }


class _NoRegistry:
    target = "127.0.0.1:1"
    plaintext = True
    ca = cert = key = None
    reconnect_max_s = 1.0


# ---- the camera's decoder ----

def bench_camera(repeats: int = 5) -> dict:
    """Decode time per 640x480 frame and the share decoded, on 50 rendered phone/badge frames
    (tilted up to ~35 degrees, blurred, noisy), for each decoder installed."""
    from gated.drivers.qr_decode import DECODER_NAMES, measure_decoders
    from gated.validation.token import mint_static
    from hw_sim.qr_frames import standard_set

    key = bytes(range(32))
    codes = [mint_dynamic(key, 1, 42, BENCH_NOW), mint_static(key, 1, 43, 0)]
    samples = standard_set(codes, seed=2024, count=50)
    return measure_decoders([x.frame for x in samples], [x.text for x in samples], DECODER_NAMES, repeats=repeats)


# ---- the registry contract over gRPC ----

def bench_rpc(quick: bool, tickets: int) -> dict:
    """Backlog replay, gate-to-gate propagation and a full snapshot, over loopback with mTLS."""
    from gated.rpc.measure import measure_backlog_replay, measure_import, measure_propagation, measure_snapshot

    return {
        "backlog_replay": measure_backlog_replay(5_000 if quick else 100_000),
        "propagation": measure_propagation(30 if quick else 300),
        "snapshot": measure_snapshot(min(tickets, 20_000) if quick else tickets),
        "import": measure_import(5_000 if quick else 100_000),
    }


def bench_redeem(quick: bool) -> dict:
    """The redemption round trip through the registry (two handheld units, mTLS, registry in its own process)."""
    from gated.rpc.measure_redeem import measure_redemption

    return measure_redemption(40 if quick else 300)


TARGETS = (
    ("decide: admitted code median within 4x the two-HMAC floor", lambda r: max(r["decide"]["ratio_to_floor"]["dynamic_ok_median"], r["decide"]["ratio_to_floor"]["static_ok_median"]) <= 4),
    ("decide: admitted code p99 within 10x the floor", lambda r: max(r["decide"]["ratio_to_floor"]["dynamic_ok_p99"], r["decide"]["ratio_to_floor"]["static_ok_p99"]) <= 10),
    ("cache: at most 200 bytes resident per ticket", lambda r: r["decide"]["cache"]["rss_bytes_per_ticket"] <= 200),
    ("cache: 1,000,000-ticket snapshot loads in at most 5 s", lambda r: r["decide"]["cache"]["snapshot_load_s"] * 1_000_000 / max(r["decide"]["cache"]["tickets"], 1) <= 5),
    ("gate: scan to relay p99 under 20 ms (journal fsync included)", lambda r: "gate" not in r or (r["gate"]["scan_to_relay"] is not None and r["gate"]["scan_to_relay"]["p99_us"] < 20_000 and r["gate"]["missed"] == 0)),
    ("gate: idle daemon CPU near zero (under 1%)", lambda r: "idle" not in r or r["idle"]["cpu_percent"] < 1.0),
    ("rpc: backlog replay at least 5,000 events/s over mTLS, each stored once", lambda r: "rpc" not in r or (r["rpc"]["backlog_replay"]["events_per_s"] >= 5000 and r["rpc"]["backlog_replay"]["stored_once"])),
    ("rpc: propagation gate A -> gate B p99 under 100 ms", lambda r: "rpc" not in r or r["rpc"]["propagation"]["p99_s"] < 0.1),
    ("rpc: GetTime p99 at most 50 ms during an import, every update within 1 MiB", lambda r: "rpc" not in r or (r["rpc"]["import"]["gettime_p99_ms"] <= 50 and r["rpc"]["import"]["largest_update_bytes"] <= 1 << 20 and r["rpc"]["import"]["default_limit_client_converged"])),
    ("redeem: every lunch granted once across two units, redemption through the registry p99 under 100 ms", lambda r: "redeem" not in r or (
        r["redeem"]["granted_once_each"] and r["redeem"]["scan_to_decision"]["p99_ms"] < 100)),
    ("cache: lookup p99 at most 20 µs for every id layout, present and absent", lambda r: "cache" not in r or all(
        c["lookup"][k]["p99_us"] <= 20 for c in r["cache"].values() for k in ("present", "absent"))),
    ("cache: 1,000,000-ticket snapshot loads in at most 1 s, every id layout", lambda r: "cache" not in r or all(
        c["load_s"] * 1_000_000 / c["tickets"] <= 1 for c in r["cache"].values())),
    ("cache: a delta of 10,000 new tickets applies in at most 0.5 s, every id layout", lambda r: "cache" not in r or all(
        c["delta"]["total_s"] <= 0.5 for c in r["cache"].values())),
    ("delta: scan to relay p99 under 20 ms while large deltas apply", lambda r: "delta" not in r or (
        r["delta"]["scan_to_relay_during"] is not None and r["delta"]["scan_to_relay_during"]["p99_us"] < 20_000 and r["delta"]["missed"] == 0)),
)


def _machine() -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _table(report: dict) -> str:
    d = report["decide"]
    lines = [f"gated bench — {report['machine']['when']}, Python {report['machine']['python']}, {report['machine']['machine']}, {report['machine']['cpus']} CPUs", ""]
    lines.append(f"decide() on a cache of {d['cache']['tickets']:,} tickets     median µs    p99 µs")
    for name, s in d["decide"].items():
        lines.append(f"  {name:<40} {s['median_us']:>9.2f} {s['p99_us']:>9.2f}")
    lines.append("same-run floor: two hmac.digest(key, msg, 'sha256')")
    for name, s in d["floor"].items():
        lines.append(f"  {'floor (' + name + ' sizes)':<40} {s['median_us']:>9.2f} {s['p99_us']:>9.2f}")
    r = d["ratio_to_floor"]
    lines.append(f"  ratio to floor: dynamic {r['dynamic_ok_median']}x median, {r['dynamic_ok_p99']}x p99; static {r['static_ok_median']}x median, {r['static_ok_p99']}x p99")
    c = d["cache"]
    lines += [
        "",
        f"cache: {c['tickets']:,} tickets, snapshot {c['snapshot_bytes'] / 1e6:.1f} MB (built in {c['snapshot_build_s']} s)",
        f"  load {c['snapshot_load_s']} s, resident {c['rss_bytes'] / 1e6:.1f} MB = {c['rss_bytes_per_ticket']} bytes per ticket",
    ]
    if "gate" in report:
        g = report["gate"]
        s2r = g["scan_to_relay"]
        lines += ["", f"scan to relay: {g['scans']} scans over {g['lanes']} lanes (pty, driver, decide, journal fsync, relay pin)", f"  {'':<40} {'median µs':>9} {'p99 µs':>9}"]
        if s2r:
            lines.append(f"  {'last byte on the pty to relay pin active':<40} {s2r['median_us']:>9.0f} {s2r['p99_us']:>9.0f}")
        lines.append(f"  {'journal append (durable, alone)':<40} {g['journal_append']['median_us']:>9.0f} {g['journal_append']['p99_us']:>9.0f}")
        lines.append(f"  {'fsync alone (same disk)':<40} {g['fsync_alone']['median_us']:>9.0f} {g['fsync_alone']['p99_us']:>9.0f}")
        if g["missed"]:
            lines.append(f"  MISSED: {g['missed']} scans never moved the relay")
    if "idle" in report:
        i = report["idle"]
        lines += ["", f"idle daemon with {i['tickets']:,} tickets: {i['rss_mb']} MB resident, {i['cpu_percent']}% CPU over {i['seconds']} s"]
    if "camera" in report:
        lines += ["", "camera: decode per 640x480 frame, 50 rendered frames (tilt, blur, noise)", f"  {'decoder':<40} {'median ms':>9} {'p99 ms':>9}   read"]
        for name, m in report["camera"].items():
            if m.get("available", True) is False:
                lines.append(f"  {name:<40} not installed")
            else:
                lines.append(f"  {name:<40} {m['median_ms']:>9.2f} {m['p99_ms']:>9.2f}   {m['read']}/{m['frames']} ({m['misread']} misread)")
    if "rpc" in report:
        b, p, n = report["rpc"]["backlog_replay"], report["rpc"]["propagation"], report["rpc"]["snapshot"]
        lines += [
            "",
            "registry over gRPC (loopback, mTLS, registry in its own process)",
            f"  backlog replay: {b['events']:,} journaled events in {b['seconds']} s = {b['events_per_s']:,} events/s, stored once: {b['stored_once']}",
            f"  propagation gate A event -> gate B delta applied: median {p['median_s'] * 1000:.1f} ms, p99 {p['p99_s'] * 1000:.1f} ms ({p['samples']} samples)",
            f"  snapshot of {n['tickets']:,} tickets ({n['bytes'] / 1e6:.1f} MB, {n['messages']} messages): transfer {n['transfer_s']} s, apply {n['apply_s']} s",
        ]
        m = report["rpc"]["import"]
        lines.append(
            f"  import of {m['tickets']:,} tickets ({m['ids']}) while a gate watches: gate holds all after {m['gate_holds_all_s']} s "
            f"(command {m['import_command_s']} s); GetTime median {m['gettime_median_ms']} ms, p99 {m['gettime_p99_ms']} ms; "
            f"{m['update_messages']} updates, largest {m['largest_update_bytes']:,} bytes; 4 MiB client converged: {m['default_limit_client_converged']}"
        )
    if "redeem" in report:
        r = report["redeem"]
        lines += ["", f"redemption through the registry: {r['samples']} lunches, two handheld units (mTLS, registry in its own process)",
                  f"  {'':<40} {'median ms':>9} {'p99 ms':>9}"]
        for label, key in (("Redeem call, granted", "redeem_rpc"), ("scan to decision journaled (lane path)", "scan_to_decision"),
                           ("Redeem at the other unit: exhausted", "refused_rpc"), ("Redeem retried (answered once)", "retry_rpc")):
            lines.append(f"  {label:<40} {r[key]['median_ms']:>9.2f} {r[key]['p99_ms']:>9.2f}")
        lines.append(f"  each lunch granted exactly once: {r['granted_once_each']}")
    if "cache" in report:
        lines += ["", "cache index per id layout (lookups interleaved with a plain dict's, same run)",
                  f"  {'layout':<12} {'tickets':>9} {'load s':>7} {'present med/p99 µs':>19} {'absent med/p99 µs':>18} {'dict med/p99 µs':>16} {'delta s':>8} {'on loop ms':>10}"]
        for layout, c in report["cache"].items():
            lk, d = c["lookup"], c["delta"]
            lines.append(
                f"  {layout:<12} {c['tickets']:>9,} {c['load_s']:>7.3f} {lk['present']['median_us']:>9.2f}/{lk['present']['p99_us']:<9.2f}"
                f"{lk['absent']['median_us']:>8.2f}/{lk['absent']['p99_us']:<9.2f}{lk['dict_present']['median_us']:>7.2f}/{lk['dict_absent']['p99_us']:<8.2f}"
                f"{d['total_s']:>8.3f} {d['on_loop_ms']:>10.2f}")
        lines.append(f"  (delta: {next(iter(report['cache'].values()))['delta']['new_tickets']:,} new tickets staged on a copy, then swapped; 'on loop' is stage() + swap())")
    if "delta" in report:
        d = report["delta"]
        lines += ["", f"scan to relay while deltas of {d['delta_tickets']:,} new tickets apply ({d['tickets']:,} tickets at the gate, {d['deltas']} deltas, "
                      f"median {d['delta_apply_median_s']} s each, then {d['tickets_after']:,} tickets)", f"  {'':<40} {'median µs':>9} {'p99 µs':>9}      n"]
        for label, key in (("scans while a delta applies", "scan_to_relay_during"), ("scans between deltas (same run)", "scan_to_relay_outside")):
            if d[key]:
                lines.append(f"  {label:<40} {d[key]['median_us']:>9.0f} {d[key]['p99_us']:>9.0f} {d[key]['n']:>6}")
        if d["missed"]:
            lines.append(f"  MISSED: {d['missed']} scans never moved the relay")
    lines += ["", "targets:"]
    for name, ok in report["targets"].items():
        lines.append(f"  [{'met' if ok else 'MISSED'}] {name}")
    return "\n".join(lines)


SECTIONS = ("decide", "gate", "idle", "camera", "rpc", "redeem", "cache", "delta")


def run_bench(*, as_json: bool = False, tickets: int = 1_000_000, quick: bool = False, sections: tuple[str, ...] = SECTIONS) -> int:
    report: dict = {"machine": _machine()}
    snapshot, build_s = build_snapshot(tickets)
    report["decide"] = bench_decide(snapshot, build_s, tickets, quick)
    if "gate" in sections:
        t0 = time.perf_counter()
        report["gate"] = bench_scan_to_relay(scans=200 if quick else 1000)
        report["gate"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "idle" in sections:
        t0 = time.perf_counter()
        report["idle"] = bench_idle_daemon(snapshot, tickets, seconds=2.0 if quick else 5.0)
        report["idle"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "camera" in sections:
        report["camera"] = bench_camera(repeats=2 if quick else 5)
    if "rpc" in sections:
        report["rpc"] = bench_rpc(quick, tickets)
    if "redeem" in sections:
        report["redeem"] = bench_redeem(quick)
    if "cache" in sections:
        t0 = time.perf_counter()
        report["cache"] = bench_cache_layouts(tickets, quick, delta_tickets=min(10_000, max(tickets // 10, 100)))
        report["cache_wall_s"] = round(time.perf_counter() - t0, 1)
    if "delta" in sections:
        t0 = time.perf_counter()
        report["delta"] = bench_delta_while_scanning(tickets, quick, delta_tickets=min(10_000, max(tickets // 10, 100)))
        report["delta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    report["targets"] = {name: bool(check(report)) for name, check in TARGETS}
    if as_json:
        print(json.dumps(report))
    else:
        print(_table(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2])
    else:
        sys.exit(run_bench(as_json="--json" in sys.argv))
