"""`gated journal tail|stats|export`: the local journal, read without the daemon."""

from __future__ import annotations

import json
import sys

from gated.cli.args import EXIT_OK, UsageError, add_group


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


def add_parser(subparsers) -> None:
    jr = add_group(subparsers, "journal", help="inspect the local journal")
    for name, func, helptext in (
        ("tail", cmd_journal_tail, "the last records, one JSON object per line"),
        ("stats", cmd_journal_stats, "counts, backlog, sizes"),
        ("export", cmd_journal_export, "all records as JSON lines or CSV"),
    ):
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
