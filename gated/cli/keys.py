"""`gated keys new`: an event key file."""

from __future__ import annotations

from gated.cli.args import EXIT_OK, add_group, kid


def cmd_keys_new(args) -> int:
    from gated.keyfile import new_key, save_keyfile
    from gated.validation.keyring import KeyRing

    save_keyfile(args.out, KeyRing({args.kid: new_key()}), overwrite=args.force)
    print(f"wrote {args.out} (kid {args.kid}, mode 0600)")
    return EXIT_OK


def add_parser(subparsers) -> None:
    keys = add_group(subparsers, "keys", help="event key files")
    p = keys.add_parser("new", help="write a new key file (mode 0600)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--kid", type=kid, default=1)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_keys_new)
