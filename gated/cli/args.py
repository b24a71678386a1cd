"""What every `gated` command shares: the parser, the usage error, exit statuses, argument types.

This module is the command line's public API for plugins (`gated sim` and
any other command found through the `gated.commands` entry points): a plugin
imports from here and nothing else of gated.cli.

Exit status: 0 success, 1 a negative answer (a code that is not `ok`, a
failed check), 2 a usage error (bad arguments, unreadable key file, invalid
config). Errors are one line on stderr; a traceback never reaches the user.

Numbers typed on the command line are written in decimal ASCII digits, with
no sign, no `0x`, no `_`: a ticket id (`--ticket`, `--manual`, `registry
revoke TICKET`) is 0..2^64-1 (`5205320758`, leading zeros allowed), a kid is
0..255.
"""

from __future__ import annotations

import argparse
import sys

from gated.errors import UsageError

EXIT_OK, EXIT_NO, EXIT_USAGE = 0, 1, 2
U64_MAX = 2**64 - 1


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def add_group(subparsers, name: str, help: str) -> argparse._SubParsersAction:
    """`gated NAME ...`: a command group whose subcommand is required (dest NAME_command)."""
    return subparsers.add_parser(name, help=help).add_subparsers(
        dest=f"{name}_command", required=True, parser_class=Parser
    )


def _decimal(text: str, what: str, top: int, out_of_range: str) -> int:
    shown = text if len(text) <= 40 else text[:40] + "..."  # a pasted blob stays one short line
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{shown!r} is not a {what} (decimal digits)")
    if len(text.lstrip("0")) > len(str(top)) or int(text, 10) > top:  # length first: int() of 5,000 digits raises
        raise argparse.ArgumentTypeError(out_of_range.format(shown))
    return int(text, 10)


def ticket_id(text: str) -> int:
    """A ticket id, 0..2^64-1, in decimal digits."""
    return _decimal(text, "ticket id", U64_MAX, "{} is not 0..2^64-1")


def kid(text: str) -> int:
    """A key id, 0..255, in decimal digits."""
    return _decimal(text, "kid", 255, "kid {} is not 0..255")


def needs_extra(command: str, what: str, extra: str) -> int:
    """Say in one line that `gated COMMAND` needs an optional part, and how to install it; exit status 2."""
    print(f"gated {command} needs {what}: pip install 'gated[{extra}]'", file=sys.stderr)
    return EXIT_USAGE
