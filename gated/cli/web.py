"""`gated web hash-pin`: the hash a page's `pin_hash` holds (the operator screen's, the registry's pages').

The PIN is read from the terminal without echo, or one line from stdin with
`--stdin` (never from the command line, where `ps` and the shell's history
would keep it)."""

from __future__ import annotations

import sys

from gated.cli.args import EXIT_OK, UsageError, add_group


def cmd_hash_pin(args) -> int:
    from gated.web.security import hash_pin, pin_problem

    if args.stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        if not sys.stdin.isatty():
            raise UsageError("gated web hash-pin: no terminal to type the PIN on; pipe it with --stdin")
        pin = getpass.getpass("PIN: ")
        if getpass.getpass("PIN again: ") != pin:
            raise UsageError("gated web hash-pin: the two PINs differ")
    if problem := pin_problem(pin):
        raise UsageError(f"gated web hash-pin: {problem}")
    print(hash_pin(pin))
    return EXIT_OK


def add_parser(subparsers) -> None:
    web = add_group(subparsers, "web", help="gated's web pages (operator screens)")
    p = web.add_parser("hash-pin", help="print the scrypt hash of a PIN, for pin_hash in the config")
    p.add_argument("--stdin", action="store_true", help="read the PIN from the first line of stdin")
    p.set_defaults(func=cmd_hash_pin)
