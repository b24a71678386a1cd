"""`gated token mint|totp|verify`: technicians mint and check test codes."""

from __future__ import annotations

import json
import time

from gated.cli.args import EXIT_NO, EXIT_OK, UsageError, add_group, kid, ticket_id


def _event_key(ring, kid: int, path: str) -> bytes:
    key = ring.get(kid)
    if key is None:
        raise UsageError(f"{path}: no key with kid {kid} (kids present: {ring.kids()})")
    return key


def cmd_token_mint(args) -> int:
    from gated.keyfile import load_keyfile
    from gated.validation import token

    key = _event_key(load_keyfile(args.keys), args.kid, args.keys)
    try:
        if args.static:
            code = token.mint_static(key, args.kid, args.ticket, args.serial)
        elif args.wallet:
            code = token.mint_wallet(key, args.kid, args.ticket, args.time if args.time is not None else time.time())
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


def add_parser(subparsers) -> None:
    tok = add_group(subparsers, "token", help="mint and check codes")
    p = tok.add_parser("mint", help="print a code")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=kid, required=True)
    p.add_argument("--ticket", type=ticket_id, required=True)
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--dynamic", action="store_true", help="phone e-ticket code (30 s steps)")
    kind.add_argument("--static", action="store_true", help="printed badge code")
    kind.add_argument("--wallet", action="store_true", help="the code a Google Wallet pass shows (GW1)")
    p.add_argument("--time", type=float, metavar="UNIX", help="dynamic, wallet: the time to mint for (default now)")
    p.add_argument("--serial", type=int, default=0, help="static: badge serial (default 0)")
    p.set_defaults(func=cmd_token_mint)

    p = tok.add_parser("totp", help="print the 8-digit manual code")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=kid, required=True)
    p.add_argument("--ticket", type=ticket_id, required=True)
    p.add_argument("--time", type=float, metavar="UNIX")
    p.set_defaults(func=cmd_token_totp)

    p = tok.add_parser("verify", help="check a code's format, key, signature and time; prints JSON")
    p.add_argument("code", help="the code text (or the 8 digits with --manual TICKET)")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--time", type=float, metavar="UNIX")
    p.add_argument("--skew", type=int, default=1, metavar="STEPS")
    p.add_argument("--manual", type=ticket_id, metavar="TICKET", help="CODE is the typed 8 digits for this ticket")
    p.set_defaults(func=cmd_token_verify)
