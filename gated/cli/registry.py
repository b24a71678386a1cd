"""`gated registry ...`: the reference registry (serve gates, import attendees, revoke, reissue, keys, report).

The registry's code still lives in gated/registry/; it is imported inside
the command functions only, so `gated --help` and a gate's own commands
never load it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gated.cli.args import EXIT_OK, UsageError, add_group, kid, ticket_id


def _store(args, *, create: bool = False):
    from gated.registry.store import RegistryStore

    return RegistryStore(args.db, create=create)


def _is_loopback(listen: str) -> bool:
    """True when HOST:PORT names a loopback host (127.0.0.0/8, ::1, localhost)."""
    from gated.web.security import is_loopback

    host = listen.rpartition(":")[0] if ":" in listen else listen
    return is_loopback(host.lower())


def cmd_registry_serve(args) -> int:
    import asyncio
    import signal

    from gated.keyfile import load_keyfile
    from gated.registry.server import TlsFiles, serve

    tls_given = [a for a in (args.tls_ca, args.tls_cert, args.tls_key) if a is not None]
    if args.plaintext and tls_given:
        raise UsageError("gated registry serve: --plaintext and --tls-* exclude each other")
    if not args.plaintext and len(tls_given) != 3:
        raise UsageError("gated registry serve: give --tls-ca, --tls-cert and --tls-key (or --plaintext, for the simulator only)")
    if args.plaintext and not _is_loopback(args.listen):
        raise UsageError(
            f"gated registry serve: --plaintext listens on loopback only (got --listen {args.listen}): without TLS "
            "a gate's id is whatever its metadata claims; use --tls-ca/--tls-cert/--tls-key to serve other hosts"
        )
    tls = None if args.plaintext else TlsFiles(Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key))
    if tls is not None:
        for path in (tls.ca, tls.cert, tls.key):
            if not path.is_file():
                raise UsageError(f"gated registry serve: {path}: no such file")
    if args.keys is not None:
        ring = load_keyfile(args.keys)
        with _store(args, create=True) as store:
            have = store.keys()
            for kid in ring.kids():
                if have.get(kid) != ring.get(kid):
                    store.add_key(kid, ring.get(kid))

    def ready(port: int) -> None:
        host = args.listen.rpartition(":")[0]
        print(f"registry listening on {host}:{port} ({'plaintext' if tls is None else 'mTLS'})", flush=True)

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await serve(args.db, args.listen, tls, ready=ready)
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return EXIT_OK


def cmd_registry_import(args) -> int:
    from gated.registry.importer import import_attendees, read_attendees

    read_attendees(args.file)  # a bad file stops here, before the database is even created
    with _store(args, create=True) as store:
        count = import_attendees(store, args.file)
    print(f"imported {count} ticket{'s' if count != 1 else ''} from {args.file}")
    return EXIT_OK


def cmd_registry_revoke(args) -> int:
    with _store(args) as store:
        store.revoke(args.ticket)
    print(f"ticket {args.ticket} revoked")
    return EXIT_OK


def cmd_registry_reissue(args) -> int:
    with _store(args) as store:
        rec = store.reissue(args.ticket)
    print(f"ticket {args.ticket}: badge serial is now {rec.badge_serial}; older badges are superseded")
    return EXIT_OK


def cmd_registry_keys_add(args) -> int:
    from gated.keyfile import load_keyfile, new_key, save_keyfile
    from gated.validation.keyring import KeyRing

    with _store(args, create=True) as store:
        if args.from_file is not None:
            ring = load_keyfile(args.from_file)
            kids = [args.kid] if args.kid is not None else ring.kids()
            for kid in kids:
                key = ring.get(kid)
                if key is None:
                    raise UsageError(f"{args.from_file}: no key with kid {kid} (kids present: {ring.kids()})")
                store.add_key(kid, key)
            print(f"added kid{'s' if len(kids) != 1 else ''} {', '.join(map(str, kids))} from {args.from_file}")
        else:
            if args.kid is None or args.out is None:
                raise UsageError("gated registry keys add: give --from KEYFILE, or --kid N --out KEYFILE for a new key")
            key = new_key()
            save_keyfile(args.out, KeyRing({args.kid: key}))
            store.add_key(args.kid, key)
            print(f"added new kid {args.kid}; its key file is {args.out} (mode 0600)")
    return EXIT_OK


def cmd_registry_keys_retire(args) -> int:
    with _store(args) as store:
        store.retire_key(args.kid)
    print(f"kid {args.kid} retired: its codes now say unknown_key")
    return EXIT_OK


def cmd_registry_keys_list(args) -> int:
    with _store(args) as store:
        print(" ".join(map(str, sorted(store.keys()))) or "(no keys)")
    return EXIT_OK


def cmd_registry_report(args) -> int:
    from gated.registry.report import checkin_report, format_report

    with _store(args) as store:
        report = checkin_report(store)
    sys.stdout.write(format_report(report))
    return EXIT_OK


def add_parser(subparsers) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", required=True, metavar="FILE", help="the registry's SQLite file")

    reg = add_group(subparsers, "registry", help="the reference registry")
    p = reg.add_parser("serve", parents=[db], help="serve gates over gRPC until stopped")
    p.add_argument("--listen", default="127.0.0.1:7443", metavar="HOST:PORT")
    p.add_argument("--tls-ca", metavar="FILE", help="CA that signed the gates' client certificates")
    p.add_argument("--tls-cert", metavar="FILE", help="the registry's certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the registry's private key")
    p.add_argument("--plaintext", action="store_true", help="no TLS (the simulator on loopback only)")
    p.add_argument("--keys", metavar="KEYFILE", help="serve the event keys of this key file too")
    p.set_defaults(func=cmd_registry_serve)
    p = reg.add_parser("import", parents=[db], help="import attendees from a CSV file (all or nothing)")
    p.add_argument("file", metavar="FILE.csv")
    p.set_defaults(func=cmd_registry_import)
    p = reg.add_parser("revoke", parents=[db], help="revoke a ticket")
    p.add_argument("ticket", type=ticket_id)
    p.set_defaults(func=cmd_registry_revoke)
    p = reg.add_parser("reissue", parents=[db], help="reprint a badge: the old one stops working")
    p.add_argument("ticket", type=ticket_id)
    p.set_defaults(func=cmd_registry_reissue)
    p = reg.add_parser("report", parents=[db], help="the check-in report")
    p.set_defaults(func=cmd_registry_report)
    keys = add_group(reg, "keys", help="the event keys the registry serves")
    p = keys.add_parser("add", parents=[db], help="add keys from a key file, or a new key")
    p.add_argument("--from", dest="from_file", metavar="KEYFILE")
    p.add_argument("--kid", type=kid)
    p.add_argument("--out", metavar="KEYFILE", help="with --kid: where to write the new key (0600)")
    p.set_defaults(func=cmd_registry_keys_add)
    p = keys.add_parser("retire", parents=[db], help="retire a key: its codes say unknown_key")
    p.add_argument("--kid", type=kid, required=True)
    p.set_defaults(func=cmd_registry_keys_retire)
    keys.add_parser("list", parents=[db], help="the kids served").set_defaults(func=cmd_registry_keys_list)
