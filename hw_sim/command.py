"""`gated sim`: a plugin of the gated command line (entry point `gated.commands`: sim).

Registering it imports nothing heavy; the simulator itself, and the packages
only it needs (`pip install 'gated[sim]'`), are imported when the command runs.
"""

from __future__ import annotations

from gated.cli.args import UsageError, needs_extra
from hw_sim.defaults import DEFAULT_RATE_PER_MIN, DEFAULT_RUN_DIR


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sim", help="the whole gate on this machine: virtual scanners, camera and pins, reference registry, live console",
        description="Run the simulated gate: the real daemon fed by virtual devices, the reference registry and a "
                    "scripted crowd. On a terminal: a live console with keys; otherwise plain log lines and a summary.",
    )
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, metavar="DIR",
                   help=f"where the run's files go (default {DEFAULT_RUN_DIR}; cleared at each start except keys.json)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run until q or Ctrl-C)")
    p.add_argument("--no-registry", action="store_true", help="no reference registry: the gate runs offline")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_MIN, metavar="PER_MIN",
                   help=f"people arriving per minute while auto traffic is on (default {DEFAULT_RATE_PER_MIN:g})")
    p.add_argument("--config", metavar="FILE", help="the simulator config to start from (default hw_sim/sim.toml)")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args) -> int:
    if args.duration is not None and not args.duration > 0:
        raise UsageError("gated sim: --duration must be a positive number of seconds")
    if not args.rate > 0:
        raise UsageError("gated sim: --rate must be a positive number of people per minute")
    try:
        from hw_sim.sim import run_sim
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] in ("gated", "hw_sim"):
            raise  # our own code is broken: that is a bug to see, not a missing extra
        return needs_extra("sim", "the simulator", "sim")

    return run_sim(args.run_dir, args.duration, not args.no_registry, args.rate, template=args.config)
