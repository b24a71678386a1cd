"""`gated registry ...`: the reference registry (serve gates and pages, import attendees, revoke, reissue, keys,
report, staff accounts and API tokens).

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


def _actor() -> str:
    """Who made a change from the command line, as `changes.actor` records it: "cli:<os user>"."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database
        import os

        return f"cli:uid{os.getuid()}"


def _is_loopback(listen: str) -> bool:
    """True when HOST:PORT names a loopback host (127.0.0.0/8, ::1, localhost)."""
    from gated.web.security import is_loopback

    host = listen.rpartition(":")[0] if ":" in listen else listen
    return is_loopback(host.lower())


def cmd_registry_serve(args) -> int:
    import asyncio
    import signal

    from gated import eventloop
    from gated.keyfile import load_keyfile
    from gated.registry.server import TlsFiles

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
                    store.add_key(kid, ring.get(kid), actor=_actor())

    http = _http_settings(args, tls)
    metrics = _metrics_address(args)

    async def main() -> None:
        from gated.registry.accounts import Accounts
        from gated.registry.server import RegistryServer

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        server = RegistryServer(args.db, args.listen, tls=tls)
        pages = scrape = None
        try:
            await server.start()
            _rest_the_collector()
            host = args.listen.rpartition(":")[0]
            print(f"registry listening on {host}:{server.port} ({'plaintext' if tls is None else 'mTLS'})", flush=True)
            settings = http
            if settings is not None:
                pages = await _start_pages(server, settings, explicit=args.http is not None)
                print(f"registry pages at {pages.url} (API: {pages.url}api/openapi.json)", flush=True)
                if not await pages.registry.accounts.run(lambda store: Accounts(store).users()):
                    print("no accounts yet: create the first admin with "
                          f"`gated registry users add NAME --role admin --db {args.db}`, then sign in", flush=True)
            if metrics is not None:
                from gated.metrics import MetricsError, MetricsServer

                scrape = MetricsServer(*metrics, server.service.metrics.exposition, allow_remote=args.metrics_allow_remote)
                try:
                    await scrape.start()
                except MetricsError as exc:
                    raise UsageError(f"gated registry serve: --metrics: {exc}") from None
                print(f"registry metrics at {scrape.url}", flush=True)
            await stopping.wait()
        finally:
            if scrape is not None:
                await scrape.stop()
            if pages is not None:
                await pages.stop()
            await server.stop()

    eventloop.run(main())
    return EXIT_OK


DEFAULT_HTTP = "127.0.0.1:8443"

#: Allocations between the cyclic collector's youngest-generation passes (Python's default: 700).
COLLECT_EVERY = 20_000


def _rest_the_collector() -> None:
    """Once loaded: what the registry holds for good (the mirror, the loaded modules, gRPC's
    objects) leaves the cyclic collector's generations (`gc.freeze`), and young passes run
    every `COLLECT_EVERY` allocations instead of 700. Why: serving hundreds of gates, the
    loop allocates a message, a future and a coroutine frame per write; Python's default
    ran a pass every few writes and full passes over everything loaded, 9 % of the loop's
    time in a profile of 500 gates. Only garbage in reference cycles waits longer (for the
    next pass); reference counts still free everything else at once."""
    import gc

    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(COLLECT_EVERY, middle, old)


def _metrics_address(args) -> tuple[str, int] | None:
    """`--metrics HOST:PORT`: loopback unless `--metrics-allow-remote` (gated.metrics says why)."""
    from gated.metrics import listen_problem

    if args.metrics is None:
        return None
    host, _, port = args.metrics.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"gated registry serve: --metrics {args.metrics}: expected HOST:PORT (like 127.0.0.1:9109)")
    problem = listen_problem(host, args.metrics_allow_remote)
    if problem:
        raise UsageError(f"gated registry serve: --metrics {args.metrics}: {problem}")
    return host, int(port)


def _http_settings(args, tls):
    """The pages' address and TLS (the serve command's certificate), or None for --http off."""
    from gated.web import WebSettings
    from gated.web.server import WebError, check_settings

    if args.http == "off":
        return None
    text = args.http or DEFAULT_HTTP
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"gated registry serve: --http {text}: expected HOST:PORT (like {DEFAULT_HTTP}) or off")
    settings = WebSettings(host, int(port), tls_cert=None if tls is None else tls.cert,
                           tls_key=None if tls is None else tls.key, title="registry",
                           tls_client_ca=None if tls is None else tls.ca)  # API clients may use the venue CA's certificates
    try:
        check_settings(settings, sign_in=True)
    except WebError as exc:
        raise UsageError(f"gated registry serve: --http {text}: {exc}") from None
    return settings


async def _start_pages(server, settings, *, explicit: bool):
    """Listen; the default port, when busy, gives way to a free one (an explicit --http does not)."""
    from dataclasses import replace

    from gated.registry.http import RegistryWeb
    from gated.registry.pages import staff_pages
    from gated.web.server import WebError

    pages = RegistryWeb(server, settings, pages=staff_pages())
    try:
        await pages.start()
    except WebError as exc:
        if explicit:
            raise UsageError(f"gated registry serve: {exc}") from None
        print(f"{exc}; the pages take a free port instead", file=sys.stderr, flush=True)
        pages = RegistryWeb(server, replace(settings, port=0), pages=staff_pages())
        await pages.start()
    return pages


def cmd_registry_import(args) -> int:
    from gated.registry.importer import import_attendees, read_attendees

    read_attendees(args.file)  # a bad file stops here, before the database is even created
    with _store(args, create=True) as store:
        count = import_attendees(store, args.file, actor=_actor())
    print(f"imported {count} ticket{'s' if count != 1 else ''} from {args.file}")
    return EXIT_OK


def cmd_registry_revoke(args) -> int:
    with _store(args) as store:
        store.revoke(args.ticket, actor=_actor())
    print(f"ticket {args.ticket} revoked")
    return EXIT_OK


def cmd_registry_reissue(args) -> int:
    with _store(args) as store:
        rec = store.reissue(args.ticket, actor=_actor())
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
                store.add_key(kid, key, actor=_actor())
            print(f"added kid{'s' if len(kids) != 1 else ''} {', '.join(map(str, kids))} from {args.from_file}")
        else:
            if args.kid is None or args.out is None:
                raise UsageError("gated registry keys add: give --from KEYFILE, or --kid N --out KEYFILE for a new key")
            key = new_key()
            save_keyfile(args.out, KeyRing({args.kid: key}))
            store.add_key(args.kid, key, actor=_actor())
            print(f"added new kid {args.kid}; its key file is {args.out} (mode 0600)")
    return EXIT_OK


def cmd_registry_keys_retire(args) -> int:
    with _store(args) as store:
        store.retire_key(args.kid, actor=_actor())
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


def _read_password(prompt: str) -> str:
    """From stdin when it is not a terminal (one line), else typed twice without echo: never argv."""
    import getpass

    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(prompt)
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ; nothing changed")
    return password


def cmd_registry_users_add(args) -> int:
    from gated.registry.accounts import Accounts, name_problem, password_problem, role_problem

    for problem in (name_problem(args.name), role_problem(args.role)):
        if problem:
            raise UsageError(f"gated registry users add: {problem}")
    password = _read_password(f"password for {args.name}: ")
    if problem := password_problem(password):
        raise UsageError(f"gated registry users add: {problem}")
    with _store(args, create=True) as store:
        Accounts(store).add_user(args.name, args.role, password)
    print(f"user {args.name} added ({args.role})")
    return EXIT_OK


def cmd_registry_users_password(args) -> int:
    from gated.registry.accounts import Accounts, password_problem

    password = _read_password(f"new password for {args.name}: ")
    if problem := password_problem(password):
        raise UsageError(f"gated registry users password: {problem}")
    with _store(args) as store:
        Accounts(store).set_password(args.name, password)
    print(f"user {args.name}: password changed, account unlocked")
    return EXIT_OK


def cmd_registry_users_list(args) -> int:
    import time

    from gated.registry.accounts import Accounts

    with _store(args) as store:
        users = Accounts(store).accounts()
    now = time.time()
    for a in users:
        print(f"{a.name}\t{a.role}" + ("\tdisabled" if a.disabled else "") + ("\tlocked" if a.locked_until > now else ""))
    if not users:
        print("(no users)")
    return EXIT_OK


def cmd_registry_users_disable(args) -> int:
    from gated.registry.accounts import Accounts

    with _store(args) as store:
        Accounts(store).set_disabled(args.name, args.disable)
    print(f"user {args.name} {'disabled: no sign-in (pages already open stay so until they sign out or their session ends)' if args.disable else 'enabled'}")
    return EXIT_OK


def cmd_registry_tokens_add(args) -> int:
    import time

    from gated.registry.accounts import Accounts, name_problem, role_problem

    for problem in (name_problem(args.name), role_problem(args.role)):
        if problem:
            raise UsageError(f"gated registry tokens add: {problem}")
    with _store(args, create=True) as store:
        token = Accounts(store).add_token(args.name, args.role, time.time())
    print(token)
    print(f"token {args.name} ({args.role}): shown this once; send it as 'Authorization: Bearer TOKEN'", file=sys.stderr)
    return EXIT_OK


def cmd_registry_tokens_revoke(args) -> int:
    from gated.registry.accounts import Accounts

    with _store(args) as store:
        Accounts(store).revoke_token(args.name)
    print(f"token {args.name} revoked")
    return EXIT_OK


def cmd_registry_tokens_list(args) -> int:
    from gated.registry.accounts import Accounts

    with _store(args) as store:
        tokens = Accounts(store).tokens()
    for name, role, _created in tokens:
        print(f"{name}\t{role}")
    if not tokens:
        print("(no tokens)")
    return EXIT_OK


def add_parser(subparsers) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", required=True, metavar="FILE|URL",
                    help="the registry's database: an SQLite file, or a postgresql://... URL (needs gated[postgres])")

    reg = add_group(subparsers, "registry", help="the reference registry")
    p = reg.add_parser("serve", parents=[db], help="serve gates over gRPC until stopped")
    p.add_argument("--listen", default="127.0.0.1:7443", metavar="HOST:PORT")
    p.add_argument("--tls-ca", metavar="FILE", help="CA that signed the gates' client certificates")
    p.add_argument("--tls-cert", metavar="FILE", help="the registry's certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the registry's private key")
    p.add_argument("--plaintext", action="store_true", help="no TLS (the simulator on loopback only)")
    p.add_argument("--keys", metavar="KEYFILE", help="serve the event keys of this key file too")
    p.add_argument("--http", metavar="HOST:PORT", help=f"the staff pages and the API (default {DEFAULT_HTTP}; "
                   "beyond loopback only with --tls-*; 'off': none)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus /metrics on its own address, no sign-in "
                   "(loopback; the pages serve /metrics too, to a viewer's token)")
    p.add_argument("--metrics-allow-remote", action="store_true", help="let --metrics listen beyond loopback")
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
    users = add_group(reg, "users", help="staff accounts of the registry's pages (viewer, desk, admin)")
    p = users.add_parser("add", parents=[db], help="add an account; the password is read from stdin or typed")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("viewer", "desk", "admin"))
    p.set_defaults(func=cmd_registry_users_add)
    p = users.add_parser("password", parents=[db], help="set a new password (and unlock the account)")
    p.add_argument("name")
    p.set_defaults(func=cmd_registry_users_password)
    users.add_parser("list", parents=[db], help="the accounts").set_defaults(func=cmd_registry_users_list)
    p = users.add_parser("disable", parents=[db], help="refuse an account's sign-in (it keeps its password)")
    p.add_argument("name")
    p.set_defaults(func=cmd_registry_users_disable, disable=True)
    p = users.add_parser("enable", parents=[db], help="let a disabled account sign in again")
    p.add_argument("name")
    p.set_defaults(func=cmd_registry_users_disable, disable=False)
    tokens = add_group(reg, "tokens", help="API tokens of registration systems")
    p = tokens.add_parser("add", parents=[db], help="make a token (printed once)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("viewer", "desk", "admin"))
    p.set_defaults(func=cmd_registry_tokens_add)
    p = tokens.add_parser("revoke", parents=[db], help="revoke a token")
    p.add_argument("name")
    p.set_defaults(func=cmd_registry_tokens_revoke)
    tokens.add_parser("list", parents=[db], help="the tokens").set_defaults(func=cmd_registry_tokens_list)
