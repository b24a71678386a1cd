"""`gated run` (the daemon) and `gated config check` (its config, checked whole before anything starts)."""

from __future__ import annotations

import sys

from gated.cli.args import add_group


def cmd_run(args) -> int:
    from gated import eventloop
    from gated.gate.daemon import run_gate
    from gated.logs import configure

    configure(args.log_level)
    return eventloop.run(run_gate(args.config))


def check_config(path, *, check_files: bool = False) -> int:
    """`gated config check FILE`: 0 and a summary on stdout, or 2 and one line on stderr."""
    from gated.config import describe, load_config
    from gated.errors import ConfigError

    try:
        config = load_config(path, check_files=check_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"OK: {path}: {describe(config)}")
    return 0


def cmd_config_check(args) -> int:
    return check_config(args.file, check_files=args.check_files)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="run the gate daemon")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_run)

    cfg = add_group(subparsers, "config", help="check a config file")
    p = cfg.add_parser("check", help="validate every key, pin and lane; exit 0 if good, 2 if not")
    p.add_argument("file")
    p.add_argument("--check-files", action="store_true", help="also require the key file and TLS files to exist")
    p.set_defaults(func=cmd_config_check)
