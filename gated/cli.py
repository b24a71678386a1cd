"""The `gated` command line: one entry point, one subcommand per job.

Exit status: 0 success, 1 a negative answer (a code that is not `ok`, a
failed check), 2 a usage error (bad arguments, unreadable key file, invalid
config). Errors are one line on stderr; a traceback never reaches the user.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Sequence

from gated.errors import GatedError

EXIT_OK, EXIT_NO, EXIT_USAGE = 0, 1, 2


class UsageError(GatedError):
    """Bad command-line use; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _u64(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not 0..2^64-1")
    return value


def _kid(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"kid {text} is not 0..255")
    return value


def _event_key(ring, kid: int, path: str) -> bytes:
    key = ring.get(kid)
    if key is None:
        raise UsageError(f"{path}: no key with kid {kid} (kids present: {ring.kids()})")
    return key


# ---- keys ----

def cmd_keys_new(args) -> int:
    from gated.keyfile import new_key, save_keyfile
    from gated.validation.keyring import KeyRing

    save_keyfile(args.out, KeyRing({args.kid: new_key()}), overwrite=args.force)
    print(f"wrote {args.out} (kid {args.kid}, mode 0600)")
    return EXIT_OK


# ---- token ----

def cmd_token_mint(args) -> int:
    from gated.keyfile import load_keyfile
    from gated.validation import token

    key = _event_key(load_keyfile(args.keys), args.kid, args.keys)
    try:
        if args.static:
            code = token.mint_static(key, args.kid, args.ticket, args.serial)
        else:
            code = token.mint_dynamic(key, args.kid, args.ticket, args.time if args.time is not None else time.time())
    except ValueError as exc:
        raise UsageError(f"gated token mint: {exc}") from None
    print(code)
    return EXIT_OK


def cmd_token_totp(args) -> int:
    from gated.keyfile import load_keyfile
    from gated.validation import token

    key = _event_key(load_keyfile(args.keys), args.kid, args.keys)
    print(token.manual_code(key, args.ticket, args.time if args.time is not None else time.time()))
    return EXIT_OK


def cmd_token_verify(args) -> int:
    from gated.keyfile import load_keyfile
    from gated.validation import token

    ring = load_keyfile(args.keys)
    now = args.time if args.time is not None else time.time()
    if args.manual is not None:
        v = token.verify_manual(args.manual, args.code, ring.keys, now, args.skew)
    else:
        v = token.verify_code(args.code, ring.keys, now, args.skew)
    out = {
        "reason": str(v.reason),
        "ticket_id": v.ticket_id,
        "kind": None if v.kind is None else str(v.kind),
        "kid": v.kid if v.ticket_id is not None else None,
        "step": v.step,
        "serial": v.serial,
    }
    print(json.dumps(out))
    return EXIT_OK if v.reason == "ok" else EXIT_NO


# ---- bench, demo ----

def cmd_bench(args) -> int:
    from gated.bench import run_bench

    return run_bench(as_json=args.json, tickets=args.tickets, quick=args.quick, sections=tuple(args.sections.split(",")))


def cmd_demo(args) -> int:
    from gated.demo import run_demo

    return run_demo()


# ---- the daemon, its config and its journal ----

def cmd_run(args) -> int:
    import asyncio

    from gated.daemon import run_gate
    from gated.logs import configure

    configure(args.log_level)
    return asyncio.run(run_gate(args.config))


def cmd_config_check(args) -> int:
    from gated.config import config_check_main

    return config_check_main(args.file, check_files=args.check_files)


def _open_journal(args):
    from gated.config import load_config
    from gated.journal import Journal

    if args.config:
        config = load_config(args.config)
        return Journal(config.journal.path, config.gate.id)
    if not args.db or not args.gate_id:
        raise UsageError("gated journal: give --config FILE, or --db FILE with --gate-id ID")
    return Journal(args.db, args.gate_id)


def cmd_journal_tail(args) -> int:
    with _open_journal(args) as journal:
        for record in journal.tail(args.n):
            print(json.dumps(record.as_dict(), ensure_ascii=False))
    return EXIT_OK


def cmd_journal_stats(args) -> int:
    with _open_journal(args) as journal:
        print(json.dumps(journal.stats(), default=str, indent=2))
    return EXIT_OK


def cmd_journal_export(args) -> int:
    with _open_journal(args) as journal:
        out = sys.stdout if args.out in (None, "-") else open(args.out, "w", newline="", encoding="utf-8")
        try:
            count = journal.export(out, fmt=args.format, since=args.since)
        finally:
            if out is not sys.stdout:
                out.close()
    print(f"exported {count} records", file=sys.stderr)
    return EXIT_OK


def build_parser() -> _Parser:
    parser = _Parser(prog="gated", description="Venue gate daemon and its tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    keys = sub.add_parser("keys", help="event key files").add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    p = keys.add_parser("new", help="write a new key file (mode 0600)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--kid", type=_kid, default=1)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_keys_new)

    tok = sub.add_parser("token", help="mint and check codes").add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    p = tok.add_parser("mint", help="print a code")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=_kid, required=True)
    p.add_argument("--ticket", type=_u64, required=True)
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--dynamic", action="store_true", help="phone e-ticket code (30 s steps)")
    kind.add_argument("--static", action="store_true", help="printed badge code")
    p.add_argument("--time", type=float, metavar="UNIX", help="dynamic: the time to mint for (default now)")
    p.add_argument("--serial", type=int, default=0, help="static: badge serial (default 0)")
    p.set_defaults(func=cmd_token_mint)

    p = tok.add_parser("totp", help="print the 8-digit manual code")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=_kid, required=True)
    p.add_argument("--ticket", type=_u64, required=True)
    p.add_argument("--time", type=float, metavar="UNIX")
    p.set_defaults(func=cmd_token_totp)

    p = tok.add_parser("verify", help="check a code's format, key, signature and time; prints JSON")
    p.add_argument("code", help="the code text (or the 8 digits with --manual TICKET)")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--time", type=float, metavar="UNIX")
    p.add_argument("--skew", type=int, default=1, metavar="STEPS")
    p.add_argument("--manual", type=_u64, metavar="TICKET", help="CODE is the typed 8 digits for this ticket")
    p.set_defaults(func=cmd_token_verify)

    p = sub.add_parser("bench", help="measure the decision path and print the figures")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.add_argument("--tickets", type=int, default=1_000_000, help="cache size (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="fewer iterations (for smoke tests)")
    p.add_argument("--sections", default="decide,gate,idle,camera,rpc,cache,delta", help="comma-separated: decide (always), gate, idle, camera, rpc, cache, delta")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="a scripted day at the door, through the real decision path")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the gate daemon")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_run)

    cfg = sub.add_parser("config", help="check a config file").add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    p = cfg.add_parser("check", help="validate every key, pin and lane; exit 0 if good, 2 if not")
    p.add_argument("file")
    p.add_argument("--check-files", action="store_true", help="also require the key file and TLS files to exist")
    p.set_defaults(func=cmd_config_check)

    jr = sub.add_parser("journal", help="inspect the local journal").add_subparsers(dest="journal_command", required=True, parser_class=_Parser)
    for name, func, helptext in (("tail", cmd_journal_tail, "the last records, one JSON object per line"), ("stats", cmd_journal_stats, "counts, backlog, sizes"), ("export", cmd_journal_export, "all records as JSON lines or CSV")):
        p = jr.add_parser(name, help=helptext)
        p.add_argument("--config", metavar="FILE", help="the gate's config (finds the journal and gate id)")
        p.add_argument("--db", metavar="FILE", help="a journal file, with --gate-id")
        p.add_argument("--gate-id")
        if name == "tail":
            p.add_argument("-n", type=int, default=20)
        if name == "export":
            p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
            p.add_argument("--since", type=float, metavar="UNIX")
            p.add_argument("--out", metavar="FILE", help="default: stdout")
        p.set_defaults(func=func)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Later subsystems (config, journal, daemon, registry, simulator) add their
# subcommands here, each from its own module.
_EXTRA_COMMANDS: list[Callable] = []


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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


from gated.rpc.commands import register as _register_rpc  # noqa: E402  (admin, registry, certs)

_EXTRA_COMMANDS.append(_register_rpc)

from hw_sim.command import register as _register_sim  # noqa: E402  (gated sim)

_EXTRA_COMMANDS.append(_register_sim)


if __name__ == "__main__":
    sys.exit(main())
