"""`gated bench`: every figure in one run (the measuring is gated.bench's; this is only the command)."""

from __future__ import annotations

import sys

SECTIONS = "decide,gate,idle,camera,rpc,redeem,cache,delta,screen"
# The camera section decodes frames rendered by gated.bench.frames, which draws QR codes with
# segno: a package of the sim extra, absent from a gate installed without it.
CAMERA_NEEDS = ("segno",)


def _camera_missing() -> str | None:
    import importlib

    for name in CAMERA_NEEDS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            return name
    return None


def cmd_bench_fleet(args) -> int:
    import json

    from gated.bench.fleet import format_fleet, run_fleet, sweep

    if args.instances > 1 and args.store != "postgres":
        print("gated bench fleet: --instances above 1 needs --store postgres (several registry instances share one "
              "PostgreSQL database)", file=sys.stderr)
        return 2
    if args.gates < 2 or args.scans_per_s <= 0 or args.seconds <= 0 or args.instances < 1:
        print("gated bench fleet: needs --gates of at least 2, --instances of at least 1, and --scans-per-s and --seconds "
              "above 0", file=sys.stderr)
        return 2
    try:
        if args.sweep:
            sizes = sorted({n for n in (5, 10, 25, 50, 100, 200, 300, 400, 500, 700, 1000) if n <= args.gates} | {args.gates})
            report = sweep(args.scans_per_s, args.seconds, args.store, sizes, instances=args.instances)
        else:
            report = run_fleet(args.gates, args.scans_per_s, args.seconds, store=args.store, instances=args.instances)
    except RuntimeError as exc:
        print(f"gated bench fleet: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(json.dumps(report) if args.json else format_fleet(report))
    return 0


def cmd_bench(args) -> int:
    if args.what == "fleet":
        return cmd_bench_fleet(args)
    sections = tuple(args.sections.split(","))
    if "camera" in sections and (missing := _camera_missing()) is not None:
        print(f"gated bench: camera section skipped: its test frames are drawn with {missing}, "
              "which comes with the simulator: pip install 'gated[sim]'", file=sys.stderr)
        sections = tuple(s for s in sections if s != "camera")
    from gated.bench import run_bench

    return run_bench(as_json=args.json, tickets=args.tickets, quick=args.quick, sections=sections)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure the decision path and print the figures")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.add_argument("--tickets", type=int, default=1_000_000, help="cache size (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="fewer iterations (for smoke tests)")
    p.add_argument("--sections", default=SECTIONS, help="comma-separated: decide (always), gate, idle, camera, rpc, redeem, cache, delta, screen; "
                   "and, only when named, store (the registry's store on SQLite and, with GATED_BENCH_POSTGRES=URL, PostgreSQL), dashboard (the registry's pages at 1,000,000 tickets and check-ins, ~3 min), "
                   "api_batch (a 50,000-attendee API batch through the registry, stage by stage, then end to end to two gates on each engine, ~2-4 min)")
    p.add_argument("what", nargs="?", choices=["fleet"], help="fleet: many simulated gates on one registry (the options below)")
    fleet = p.add_argument_group("fleet")
    fleet.add_argument("--gates", type=int, default=100, help="simulated gates (default 100; with --sweep the largest tried)")
    fleet.add_argument("--scans-per-s", type=float, default=1.0, help="scans per second at each gate (default 1)")
    fleet.add_argument("--seconds", type=float, default=10.0, help="how long the gates scan (default 10)")
    fleet.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                       help="the registry's database (postgres: GATED_BENCH_POSTGRES=URL, a role that may create databases)")
    fleet.add_argument("--instances", type=int, default=1,
                       help="registry instances on one database (above 1: --store postgres); the gates spread round-robin")
    fleet.add_argument("--sweep", action="store_true", help="increasing fleet sizes up to --gates: where fan-out p99 passes 100 ms")
    p.set_defaults(func=cmd_bench)
