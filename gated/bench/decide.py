"""decide() on a large cache beside the two-HMAC floor, and the cache's memory and load time."""

from __future__ import annotations

import gc
import hmac
import os
import subprocess
import sys
import tempfile
import time

from gated.bench.common import BENCH_NOW, FIRST_TICKET, interleaved
from gated.validation import EntitlementCache, KeyRing, Lane, Policy, Validator
from gated.validation.token import mint_dynamic, mint_static, mint_wallet


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
    wallet = [mint_wallet(key, 1, t, BENCH_NOW) for t in ids]  # what a Google Wallet pass shows
    forged = [c[:-2] + ("AB" if c[-2:] != "AB" else "CD") for c in dynamic]
    garbage = [f"GT1:{i:040d}" for i in range(len(ids))] + ["", "x" * 10_000, "\x00" * 52]
    for sample in (dynamic[0], static[0], forged[0], garbage[0]):
        validator.decide(sample, lane, BENCH_NOW)
    assert validator.decide(dynamic[1], lane, BENCH_NOW).reason == "ok"
    assert validator.decide(static[1], lane, BENCH_NOW).reason == "ok"
    assert validator.decide(wallet[1], lane, BENCH_NOW).reason == "ok"
    assert validator.decide(forged[1], lane, BENCH_NOW).reason == "bad_signature"
    assert validator.decide(garbage[1], lane, BENCH_NOW).reason == "bad_format"

    ticket_msg = b"gated-ticket-key\x00" + bytes(8)
    dyn_msg, static_msg, counter = bytes(14), bytes(12), bytes(8)
    decide = validator.decide
    digest = hmac.digest
    idx = list(range(len(ids)))
    rounds, per_round = (4, 500) if quick else (20, 2500)
    results = interleaved(
        {
            "dynamic_ok": lambda i: decide(dynamic[i], lane, BENCH_NOW),
            "static_ok": lambda i: decide(static[i], lane, BENCH_NOW),
            "wallet_ok": lambda i: decide(wallet[i], lane, BENCH_NOW),
            "bad_signature": lambda i: decide(forged[i], lane, BENCH_NOW),
            "bad_format": lambda i: decide(garbage[i], lane, BENCH_NOW),
            "floor_dynamic": lambda i: (digest(key, ticket_msg, "sha256"), digest(key, dyn_msg, "sha256")),
            "floor_static": lambda i: (digest(key, ticket_msg, "sha256"), digest(key, static_msg, "sha256")),
            # a Wallet code's floor: the Wallet key (HMAC-SHA256), then its HOTP (HMAC-SHA1)
            "floor_wallet": lambda i: (digest(key, ticket_msg, "sha256"), digest(key, counter, "sha1")),
        },
        idx,
        rounds,
        per_round,
    )
    floor_d, floor_s, floor_w = results["floor_dynamic"], results["floor_static"], results["floor_wallet"]
    ratios = {
        "dynamic_ok_median": round(results["dynamic_ok"]["median_us"] / floor_d["median_us"], 2),
        "dynamic_ok_p99": round(results["dynamic_ok"]["p99_us"] / floor_d["p99_us"], 2),
        "static_ok_median": round(results["static_ok"]["median_us"] / floor_s["median_us"], 2),
        "static_ok_p99": round(results["static_ok"]["p99_us"] / floor_s["p99_us"], 2),
        "wallet_ok_median": round(results["wallet_ok"]["median_us"] / floor_w["median_us"], 2),
        "wallet_ok_p99": round(results["wallet_ok"]["p99_us"] / floor_w["p99_us"], 2),
    }
    memory = _cache_memory(snapshot, tickets)
    return {
        "decide": {k: results[k] for k in ("dynamic_ok", "static_ok", "wallet_ok", "bad_signature", "bad_format")},
        "floor": {"dynamic": floor_d, "static": floor_s, "wallet": floor_w},
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
