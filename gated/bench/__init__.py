"""`gated bench`: the figures the README quotes, measured in one run.

The sections live in this package, one module each (`decide`, `gate`,
`cache`, `camera`, `rpc`, `journal`), over `common`; nothing outside the
benchmarks and `gated bench` imports them.

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

import json
import os
import platform
import time

from gated.bench.cache import bench_cache_layouts
from gated.bench.common import build_snapshot
from gated.bench.decide import bench_decide
from gated.bench.gate import (
    bench_delta_layouts,
    bench_idle_daemon,
    bench_scan_to_relay,
)

#: (target, the sections it needs, its check). A target whose section did not run (or was skipped:
#: no browser) is neither met nor missed: `None` in the JSON, "[not run]" in the table.
TARGETS = (
    ("decide: admitted code median within 4x the two-HMAC floor", ("decide",),
     lambda r: max(r["decide"]["ratio_to_floor"]["dynamic_ok_median"], r["decide"]["ratio_to_floor"]["static_ok_median"]) <= 4),
    ("decide: admitted code p99 within 10x the floor", ("decide",),
     lambda r: max(r["decide"]["ratio_to_floor"]["dynamic_ok_p99"], r["decide"]["ratio_to_floor"]["static_ok_p99"]) <= 10),
    ("cache: at most 200 bytes resident per ticket", ("decide",), lambda r: r["decide"]["cache"]["rss_bytes_per_ticket"] <= 200),
    ("cache: 1,000,000-ticket snapshot loads in at most 5 s", ("decide",),
     lambda r: r["decide"]["cache"]["snapshot_load_s"] * 1_000_000 / max(r["decide"]["cache"]["tickets"], 1) <= 5),
    ("gate: scan to relay p99 under 20 ms (journal fsync included)", ("gate",),
     lambda r: r["gate"]["scan_to_relay"] is not None and r["gate"]["scan_to_relay"]["p99_us"] < 20_000 and r["gate"]["missed"] == 0),
    ("gate: idle daemon CPU near zero (under 1%)", ("idle",), lambda r: r["idle"]["cpu_percent"] < 1.0),
    ("rpc: backlog replay at least 5,000 events/s over mTLS, each stored once", ("rpc",),
     lambda r: r["rpc"]["backlog_replay"]["events_per_s"] >= 5000 and r["rpc"]["backlog_replay"]["stored_once"]),
    ("rpc: backlog replay of 100,000 events at least 200,000 events/s over mTLS, each stored once (issue 14; 5,000 events in --quick)",
     ("rpc",), lambda r: r["rpc"]["backlog_replay"]["events_per_s"] >= 200_000 and r["rpc"]["backlog_replay"]["stored_once"]),
    ("rpc: propagation gate A -> gate B p99 under 100 ms", ("rpc",), lambda r: r["rpc"]["propagation"]["p99_s"] < 0.1),
    ("rpc: GetTime p99 at most 50 ms during an import, every update within 1 MiB", ("rpc",),
     lambda r: r["rpc"]["import"]["gettime_p99_ms"] <= 50 and r["rpc"]["import"]["largest_update_bytes"] <= 1 << 20
     and r["rpc"]["import"]["default_limit_client_converged"]),
    ("redeem: every lunch granted once across two units, redemption through the registry p99 under 100 ms", ("redeem",),
     lambda r: r["redeem"]["granted_once_each"] and r["redeem"]["scan_to_decision"]["p99_ms"] < 100),
    ("cache: lookup p99 at most 20 µs for every id layout, present and absent", ("cache",),
     lambda r: all(c["lookup"][k]["p99_us"] <= 20 for c in r["cache"].values() for k in ("present", "absent"))),
    ("cache: 1,000,000-ticket snapshot loads in at most 1 s, every id layout", ("cache",),
     lambda r: all(c["load_s"] * 1_000_000 / c["tickets"] <= 1 for c in r["cache"].values())),
    ("cache: a delta of 10,000 new tickets applies in at most 0.5 s, every id layout", ("cache",),
     lambda r: all(c["delta"]["total_s"] <= 0.5 for c in r["cache"].values())),
    ("delta: scan to relay p99 under 20 ms while large deltas apply", ("delta",),
     lambda r: r["delta"]["scan_to_relay_during"] is not None and r["delta"]["scan_to_relay_during"]["p99_us"] < 20_000
     and r["delta"]["missed"] == 0),
    ("screen: scan to screen (pty to the browser's DOM) p99 at most 100 ms", ("screen",),
     lambda r: r["screen"]["p99_ms"] <= 100 and r["screen"]["scans"] == r["screen"]["written"]),
    ("store: a new registry process with 1,000,000 tickets has its whole snapshot at a gate within 2 s, each engine (--quick: 100,000)", ("store",),
     lambda r: all(m["cold_start"]["first_snapshot_s"] * 1_000_000 / m["cold_start"]["tickets"] <= 2
                   and m["cold_start"]["process_first_snapshot_s"] <= 2 for m in r["store"]["engines"].values())),
    ("store: a snapshot asked for after a change is served within 1 s, each engine", ("store",),
     lambda r: all(m["cold_start"]["snapshot_after_change_s"] <= 1 for m in r["store"]["engines"].values())),
    ("dashboard: each registry page and chart's data p99 at most 200 ms (1,000,000 tickets and check-ins)", ("dashboard",),
     lambda r: r["dashboard"]["met"]),
    ("api_batch: a 50,000-attendee API batch applied and at both connected gates within 5 s, every attendee, no event lost, "
     "each engine (issue 12)", ("api_batch",),
     lambda r: all(e["everywhere_s"] <= 5 and e["complete"] for e in r["api_batch"]["end_to_end"].values())),
)


def section_ran(report: dict, section: str) -> bool:
    return section in report and not (isinstance(report[section], dict) and "skipped" in report[section])


def evaluate_targets(report: dict) -> dict[str, bool | None]:
    """Each target: met (True), missed (False), or None when a section it needs did not run."""
    return {name: bool(check(report)) if all(section_ran(report, s) for s in needs) else None
            for name, needs, check in TARGETS}


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
    lines.append("same-run floor: two hmac.digest(key, msg, ...) (sha256, sha256; the Wallet code's sha256, sha1)")
    for name, s in d["floor"].items():
        lines.append(f"  {'floor (' + name + ' sizes)':<40} {s['median_us']:>9.2f} {s['p99_us']:>9.2f}")
    r = d["ratio_to_floor"]
    lines.append(f"  ratio to floor: dynamic {r['dynamic_ok_median']}x median, {r['dynamic_ok_p99']}x p99; static {r['static_ok_median']}x median, {r['static_ok_p99']}x p99; "
                 f"wallet {r.get('wallet_ok_median')}x median, {r.get('wallet_ok_p99')}x p99")
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
    if "screen" in report:
        sc = report["screen"]
        if "skipped" in sc:
            lines += ["", f"scan to screen: skipped: {sc['skipped']}"]
        else:
            lines += ["", f"scan to screen, {sc['tickets']:,} tickets, headless Chromium    median ms    p99 ms   max ms",
                      f"  {'last byte on the pty to the DOM':<40} {sc['median_ms']:>9.2f} {sc['p99_ms']:>9.2f} {sc['max_ms']:>8.2f}",
                      f"  ({sc['scans']}/{sc['written']} drawn; clocks aligned within {sc['clock_uncertainty_ms']} ms, drift {sc['clock_drift_ms']} ms)"]
    if "store" in report:
        from gated.bench.store import format_store

        lines += ["", format_store(report["store"])]
    if "dashboard" in report:
        from gated.bench.dashboard import format_dashboard

        lines += ["", format_dashboard(report["dashboard"])]
    if "api_batch" in report:
        from gated.bench.api_batch import format_api_batch

        lines += ["", format_api_batch(report["api_batch"])]
    lines += ["", "targets:"]
    for name, ok in report["targets"].items():
        lines.append(f"  [{'not run' if ok is None else 'met' if ok else 'MISSED'}] {name}")
    return "\n".join(lines)


SECTIONS = ("decide", "gate", "idle", "camera", "rpc", "redeem", "cache", "delta", "screen")


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
        from gated.bench.camera import (
            bench_camera,  # segno draws its frames: the sim extra
        )

        report["camera"] = bench_camera(repeats=2 if quick else 5)
    if "rpc" in sections:
        from gated.bench.rpc import bench_rpc  # grpc, and the reference registry

        report["rpc"] = bench_rpc(quick, tickets)
    if "redeem" in sections:
        from gated.bench.redeem import measure_redemption  # two handheld units and the registry over mTLS

        report["redeem"] = measure_redemption(40 if quick else 300)
    if "cache" in sections:
        t0 = time.perf_counter()
        report["cache"] = bench_cache_layouts(tickets, quick, delta_tickets=min(10_000, max(tickets // 10, 100)))
        report["cache_wall_s"] = round(time.perf_counter() - t0, 1)
    if "delta" in sections:
        t0 = time.perf_counter()
        report["delta"] = bench_delta_layouts(tickets, quick, delta_tickets=min(10_000, max(tickets // 10, 100)))
        report["delta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "screen" in sections:
        from gated.bench.screen import bench_scan_to_screen  # selenium and a browser

        t0 = time.perf_counter()
        report["screen"] = bench_scan_to_screen(scans=100 if quick else 500)
        report["screen"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "store" in sections:
        from gated.bench.store import bench_store  # each engine of the registry's store (PostgreSQL when given)

        t0 = time.perf_counter()
        report["store"] = bench_store(quick)
        report["store"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "dashboard" in sections:
        from gated.bench.dashboard import bench_dashboard

        t0 = time.perf_counter()
        size = 50_000 if quick else 1_000_000
        report["dashboard"] = bench_dashboard(size, size, rounds=30 if quick else 200)
        report["dashboard"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if "api_batch" in sections:
        from gated.bench.api_batch import bench_api_batch

        report["api_batch"] = bench_api_batch(rounds=2 if quick else 5, end_to_end_rounds=1 if quick else 3)
    report["targets"] = evaluate_targets(report)
    if as_json:
        print(json.dumps(report))
    else:
        print(_table(report))
    return 0
