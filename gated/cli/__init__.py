"""The `gated` command line: one entry point, one subcommand per job.

Each command group is a module here with `add_parser(subparsers)` and its
`cmd_*` functions; what they share (the parser, `UsageError`, exit statuses,
argument types) is `gated.cli.args`. A command imports what it runs inside
its function, so `import gated.cli` and `gated --help` stay light. Commands
from other packages (the simulator's `gated sim`) are plugins, found through
the `gated.commands` entry points and never imported here by name. Nothing
outside gated/cli imports this package; plugins import `gated.cli.args` only.
"""

from __future__ import annotations

import sys
from typing import Sequence

from gated.cli import (
    admin,
    badge,
    bench,
    certs,
    demo,
    journal,
    keys,
    registry,
    run,
    token,
    wallet,
    web,
)
from gated.cli.args import EXIT_OK, EXIT_USAGE, Parser, UsageError, needs_extra
from gated.errors import GatedError

PLUGIN_GROUP = "gated.commands"
# Commands that come with an optional part of gated, and what to say when that part is not installed.
OPTIONAL_COMMANDS = {"sim": ("the simulator", "sim")}
BUILTIN = (keys, token, wallet, bench, demo, run, journal, admin, registry, certs, web, badge)  # the order `gated --help` lists them


def _unavailable(subparsers, name: str, help: str, answer) -> None:
    """A stand-in for a command that cannot run here: any arguments, one line, exit status 2."""
    p = subparsers.add_parser(name, help=help, add_help=False)
    p.set_defaults(func=lambda args: answer(), takes_any_arguments=True)


def _add_plugins(subparsers) -> None:
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        if ep.name in subparsers.choices:
            continue  # a plugin never replaces a command of gated's own, nor one found before it
        try:
            ep.load()(subparsers)
        except ImportError:
            continue  # its package or dependencies are absent: said below, if it is an optional part of gated
        except Exception as exc:  # a broken plugin must not take `gated --help` and the gate's own commands with it
            message = f"gated {ep.name}: the command from {ep.value} could not be loaded: {type(exc).__name__}: {exc}"
            _unavailable(subparsers, ep.name, "(could not be loaded)", lambda message=message: _say(message))
    for name, (what, extra) in OPTIONAL_COMMANDS.items():
        if name not in subparsers.choices:
            _unavailable(subparsers, name, f"(not installed: pip install 'gated[{extra}]')",
                         lambda name=name, what=what, extra=extra: needs_extra(name, what, extra))


def _say(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def build_parser() -> Parser:
    parser = Parser(prog="gated", description="Venue gate daemon and its tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in BUILTIN:
        module.add_parser(sub)
    _add_plugins(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "takes_any_arguments", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # what parse_args() says
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
