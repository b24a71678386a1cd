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


def cmd_bench(args) -> int:
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
                   "api_batch (a 50,000-attendee API batch through the registry, stage by stage, ~1 min)")
    p.set_defaults(func=cmd_bench)
