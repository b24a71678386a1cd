"""The `gated admin`, `gated registry` and `gated certs` subcommands.

Registered into `gated.cli` through `_EXTRA_COMMANDS`. Heavy imports (grpc,
the registry) happen inside the command functions, so `gated --help` stays
quick. Exit status follows `gated.cli`: 0 done, 1 a negative answer, 2 a
usage error with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_NO = 0, 1
DEFAULT_ADMIN_SOCKET = "/run/gated/admin.sock"


def _usage(message: str) -> Exception:
    from gated.cli import UsageError

    return UsageError(message)


def _u64(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ticket id") from None
    if not 0 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not 0..2^64-1")
    return value


def _kid(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"kid {text!r} is not 0..255")
    return int(text)


# ------------------------------------------------------------------ admin


def _admin_client(args):
    from gated.rpc.admin import AdminClient, admin_target

    if args.address is not None:
        target = admin_target(address=args.address)
    elif args.socket is not None:
        target = admin_target(socket_path=args.socket)
    elif args.config is not None:
        from gated.config import load_config

        admin = load_config(args.config).admin
        target = (
            admin_target(socket_path=admin.socket)
            if admin.socket is not None
            else admin_target(address=f"{admin.host}:{admin.port}")
        )
    else:
        target = admin_target(socket_path=DEFAULT_ADMIN_SOCKET)
    return AdminClient(target)


def cmd_admin_status(args) -> int:
    with _admin_client(args) as client:
        print(json.dumps(client.status(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_admin_open(args) -> int:
    with _admin_client(args) as client:
        opened = client.open_lane(args.lane)
    print(f"lane {args.lane}: {'opened once' if opened else 'NOT opened (unknown lane, emergency or fault)'}")
    return EXIT_OK if opened else EXIT_NO


def cmd_admin_emergency(args) -> int:
    with _admin_client(args) as client:
        client.set_emergency(args.state == "on")
    print(f"emergency {args.state}")
    return EXIT_OK


def cmd_admin_reload(args) -> int:
    with _admin_client(args) as client:
        ok, message = client.reload_config()
    print(("reloaded: " if ok else "refused: ") + message, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_NO


def cmd_admin_journal_stats(args) -> int:
    with _admin_client(args) as client:
        print(json.dumps(client.journal_stats(), indent=2, sort_keys=True))
    return EXIT_OK


# --------------------------------------------------------------- registry


def _store(args, *, create: bool = False):
    from hw_sim.registry_store import RegistryStore

    return RegistryStore(args.db, create=create)


def _is_loopback(listen: str) -> bool:
    """True when HOST:PORT names a loopback host (127.0.0.0/8, ::1, localhost)."""
    from gated.config import is_loopback_host

    host = listen.rpartition(":")[0] if ":" in listen else listen
    return is_loopback_host(host.strip("[]").lower())


def cmd_registry_serve(args) -> int:
    from gated.keyfile import load_keyfile
    from hw_sim.registry import TlsFiles, serve

    tls_given = [a for a in (args.tls_ca, args.tls_cert, args.tls_key) if a is not None]
    if args.plaintext and tls_given:
        raise _usage("gated registry serve: --plaintext and --tls-* exclude each other")
    if not args.plaintext and len(tls_given) != 3:
        raise _usage("gated registry serve: give --tls-ca, --tls-cert and --tls-key (or --plaintext, for the simulator only)")
    if args.plaintext and not _is_loopback(args.listen):
        raise _usage(
            f"gated registry serve: --plaintext listens on loopback only (got --listen {args.listen}): without TLS "
            "a gate's id is whatever its metadata claims; use --tls-ca/--tls-cert/--tls-key to serve other hosts"
        )
    tls = None if args.plaintext else TlsFiles(Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key))
    if tls is not None:
        for path in (tls.ca, tls.cert, tls.key):
            if not path.is_file():
                raise _usage(f"gated registry serve: {path}: no such file")
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
    from hw_sim.registry_import import import_attendees, read_attendees

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
                    raise _usage(f"{args.from_file}: no key with kid {kid} (kids present: {ring.kids()})")
                store.add_key(kid, key)
            print(f"added kid{'s' if len(kids) != 1 else ''} {', '.join(map(str, kids))} from {args.from_file}")
        else:
            if args.kid is None or args.out is None:
                raise _usage("gated registry keys add: give --from KEYFILE, or --kid N --out KEYFILE for a new key")
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
    from hw_sim.registry_report import checkin_report, format_report

    with _store(args) as store:
        report = checkin_report(store)
    sys.stdout.write(format_report(report))
    return EXIT_OK


# ------------------------------------------------------------------ certs


def cmd_certs_make(args) -> int:
    from gated.rpc.certs import make_venue_certs

    gate_ids = [g.strip() for g in args.gate_ids.split(",") if g.strip()]
    if not gate_ids:
        raise _usage("gated certs make: --gate-ids needs at least one gate id")
    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    try:
        venue = make_venue_certs(args.out, gate_ids, hosts)
    except ValueError as exc:
        raise _usage(f"gated certs make: {exc}") from None
    print(f"wrote {venue.ca}, {venue.registry.cert} and {len(venue.gates)} gate certificate(s) in {args.out}")
    return EXIT_OK


# --------------------------------------------------------------- register


def register(sub) -> None:
    from gated.cli import _Parser

    target = argparse.ArgumentParser(add_help=False)
    where = target.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help=f"the gate's admin socket (default {DEFAULT_ADMIN_SOCKET})")
    where.add_argument("--address", metavar="HOST:PORT", help="the gate's loopback admin address")
    where.add_argument("--config", metavar="FILE", help="take the admin address from the gate's config")

    admin = sub.add_parser("admin", help="talk to the running gate").add_subparsers(
        dest="admin_command", required=True, parser_class=_Parser
    )
    admin.add_parser("status", parents=[target], help="lanes, uplink, cache, clock, backlog (JSON)").set_defaults(func=cmd_admin_status)
    p = admin.add_parser("open", parents=[target], help="open a lane once")
    p.add_argument("lane")
    p.set_defaults(func=cmd_admin_open)
    p = admin.add_parser("emergency", parents=[target], help="open every lane, or return to normal")
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(func=cmd_admin_emergency)
    admin.add_parser("reload", parents=[target], help="re-read the config file").set_defaults(func=cmd_admin_reload)
    admin.add_parser("journal-stats", parents=[target], help="journal counts and sizes (JSON)").set_defaults(func=cmd_admin_journal_stats)

    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", required=True, metavar="FILE", help="the registry's SQLite file")

    reg = sub.add_parser("registry", help="the reference registry").add_subparsers(
        dest="registry_command", required=True, parser_class=_Parser
    )
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
    p.add_argument("ticket", type=_u64)
    p.set_defaults(func=cmd_registry_revoke)
    p = reg.add_parser("reissue", parents=[db], help="reprint a badge: the old one stops working")
    p.add_argument("ticket", type=_u64)
    p.set_defaults(func=cmd_registry_reissue)
    p = reg.add_parser("report", parents=[db], help="the check-in report")
    p.set_defaults(func=cmd_registry_report)
    keys = reg.add_parser("keys", help="the event keys the registry serves").add_subparsers(
        dest="keys_command", required=True, parser_class=_Parser
    )
    p = keys.add_parser("add", parents=[db], help="add keys from a key file, or a new key")
    p.add_argument("--from", dest="from_file", metavar="KEYFILE")
    p.add_argument("--kid", type=_kid)
    p.add_argument("--out", metavar="KEYFILE", help="with --kid: where to write the new key (0600)")
    p.set_defaults(func=cmd_registry_keys_add)
    p = keys.add_parser("retire", parents=[db], help="retire a key: its codes say unknown_key")
    p.add_argument("--kid", type=_kid, required=True)
    p.set_defaults(func=cmd_registry_keys_retire)
    keys.add_parser("list", parents=[db], help="the kids served").set_defaults(func=cmd_registry_keys_list)

    certs = sub.add_parser("certs", help="TLS certificates for a venue").add_subparsers(
        dest="certs_command", required=True, parser_class=_Parser
    )
    p = certs.add_parser("make", help="a CA, the registry's certificate and one per gate")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--gate-ids", required=True, metavar="A,B,...")
    p.add_argument("--hosts", metavar="H1,H2", help="extra registry host names or addresses")
    p.set_defaults(func=cmd_certs_make)
