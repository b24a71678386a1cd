"""`gated sim`: a plugin of the gated command line (entry point `gated.commands`: sim).

Registering it imports nothing heavy; the simulator itself, and the packages
only it needs (`pip install 'gated[sim]'`), are imported when the command runs.

`gated sim` runs the rehearsal (hw_sim.run): the gate as its own process,
driven from the web console (and its control API) whose address it prints
first, then the registry's dashboard with the demo account's password; `--scenario FILE`
runs a scripted day headless; `--in-process` is the older simulator with the
gate inside this process and its full-screen console (hw_sim.sim).
"""

from __future__ import annotations

from gated.cli.args import UsageError, needs_extra
from hw_sim.defaults import DEFAULT_RATE_PER_MIN, DEFAULT_RUN_DIR

DEFAULT_API_PORT = 8091  # hw_sim.control's, without importing aiohttp to build the parser


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sim", help="the whole gate on this machine: the gate as its own process on virtual devices, faults, scripted days",
        description="Run the simulated gate: the real daemon as its own process, fed by virtual scanners, its registry "
                    "behind a proxy that can be cut, a crowd; driven from a web console on 127.0.0.1 (its address is "
                    "printed first, then the registry dashboard's with the demo account's password). With --scenario "
                    "FILE: a scripted day, headless, and its summary.",
    )
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, metavar="DIR",
                   help=f"where the run's files go (default {DEFAULT_RUN_DIR}; cleared at each start except keys.json)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--no-registry", action="store_true", help="no reference registry: the gate runs offline (--in-process only)")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_MIN, metavar="PER_MIN",
                   help=f"people arriving per minute at the entry lane (default {DEFAULT_RATE_PER_MIN:g})")
    p.add_argument("--config", metavar="FILE", help="the simulator config to start from (default hw_sim/sim.toml)")
    p.add_argument("--scenario", metavar="FILE", help="run a scripted day (TOML, see scenarios/) headless and print its summary")
    p.add_argument("--json", action="store_true", help="with --scenario: the summary as one JSON object")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, metavar="PORT",
                   help=f"the console's and control API's port on 127.0.0.1 (default {DEFAULT_API_PORT}; a free one if busy; 0: any)")
    p.add_argument("--in-process", action="store_true",
                   help="the older simulator: the gate inside this process, with the full-screen console")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args) -> int:
    if args.duration is not None and not args.duration > 0:
        raise UsageError("gated sim: --duration must be a positive number of seconds")
    if not args.rate > 0:
        raise UsageError("gated sim: --rate must be a positive number of people per minute")
    if args.json and not args.scenario:
        raise UsageError("gated sim: --json goes with --scenario FILE")
    if not 0 <= args.api_port <= 65535:
        raise UsageError("gated sim: --api-port must be between 0 and 65535")
    if args.scenario and args.in_process:
        raise UsageError("gated sim: --scenario runs the gate as its own process; leave out --in-process")
    if args.no_registry and not args.in_process:
        raise UsageError("gated sim: --no-registry goes with --in-process (the rehearsal's gate always has its registry)")
    try:
        if args.in_process:
            from hw_sim.sim import run_sim
        else:
            from hw_sim.run import main_live, main_scripted
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] in ("gated", "hw_sim"):
            raise  # our own code is broken: that is a bug to see, not a missing extra
        return needs_extra("sim", "the simulator", "sim")

    if args.in_process:
        return run_sim(args.run_dir, args.duration, not args.no_registry, args.rate, template=args.config)
    if args.scenario:
        return main_scripted(args.scenario, args.run_dir, as_json=args.json, template=args.config)
    return main_live(args.run_dir, duration=args.duration, rate=args.rate, api_port=args.api_port, template=args.config)

