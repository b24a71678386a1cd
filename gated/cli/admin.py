"""`gated admin ...`: talk to the running gate through its admin service (unix socket or loopback)."""

from __future__ import annotations

import argparse
import json
import sys

from gated.cli.args import EXIT_NO, EXIT_OK, add_group

DEFAULT_ADMIN_SOCKET = "/run/gated/admin.sock"


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


def add_parser(subparsers) -> None:
    target = argparse.ArgumentParser(add_help=False)
    where = target.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help=f"the gate's admin socket (default {DEFAULT_ADMIN_SOCKET})")
    where.add_argument("--address", metavar="HOST:PORT", help="the gate's loopback admin address")
    where.add_argument("--config", metavar="FILE", help="take the admin address from the gate's config")

    admin = add_group(subparsers, "admin", help="talk to the running gate")
    admin.add_parser("status", parents=[target], help="lanes, uplink, cache, clock, backlog (JSON)").set_defaults(func=cmd_admin_status)
    p = admin.add_parser("open", parents=[target], help="open a lane once")
    p.add_argument("lane")
    p.set_defaults(func=cmd_admin_open)
    p = admin.add_parser("emergency", parents=[target], help="open every lane, or return to normal")
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(func=cmd_admin_emergency)
    admin.add_parser("reload", parents=[target], help="re-read the config file").set_defaults(func=cmd_admin_reload)
    admin.add_parser("journal-stats", parents=[target], help="journal counts and sizes (JSON)").set_defaults(func=cmd_admin_journal_stats)
