"""`gated wallet object`: the Google Wallet pass of one ticket, for the issuer's server.

The pass carries a rotating barcode (docs/token-format.md, "Google Wallet
rotating code"): Wallet computes a TOTP from the ticket's own Wallet key and
shows `GW1:<kid>:<ticket>:<seconds>:<8 digits>`, which gates verify offline
from their event keys. The JSON printed holds that per-ticket key (Google
needs it): it is a secret of one ticket, never the event key, and it cannot
mint the ticket's other codes. Send it to Google, do not log it.
"""

from __future__ import annotations

import json
import sys

from gated.cli.args import EXIT_OK, UsageError, add_group, kid, ticket_id


def wallet_object(event_key: bytes, kid_: int, ticket: int, *, issuer_id: str | None, class_suffix: str,
                  holder: str | None) -> dict:
    """An `eventTicketObject` (Google Wallet REST API v1) with its `rotatingBarcode`."""
    from gated.validation import token

    obj: dict = {}
    if issuer_id:
        obj["id"] = f"{issuer_id}.gated-{ticket}"
        obj["classId"] = f"{issuer_id}.{class_suffix}"
    obj["state"] = "ACTIVE"
    obj["ticketNumber"] = str(ticket)
    if holder:
        obj["ticketHolderName"] = holder
    obj["rotatingBarcode"] = {
        "type": "QR_CODE",
        "renderEncoding": "UTF_8",
        "valuePattern": token.wallet_pattern(kid_, ticket),
        "alternateText": str(ticket),
        "totpDetails": {
            "periodMillis": str(token.WALLET_PERIOD_MS),
            "algorithm": "TOTP_SHA1",
            "parameters": [{"key": token.wallet_key(event_key, ticket).hex(), "valueLength": token.WALLET_DIGITS}],
        },
    }
    return obj


def cmd_wallet_object(args) -> int:
    from gated.keyfile import load_keyfile

    ring = load_keyfile(args.keys)
    key = ring.get(args.kid)
    if key is None:
        raise UsageError(f"{args.keys}: no key with kid {args.kid} (kids present: {ring.kids()})")
    obj = wallet_object(key, args.kid, args.ticket, issuer_id=args.issuer_id, class_suffix=args.class_suffix,
                        holder=args.holder)
    print(json.dumps(obj, indent=2, ensure_ascii=False))
    if not args.issuer_id:
        print("gated wallet object: no --issuer-id given: add \"id\" and \"classId\" before inserting the object",
              file=sys.stderr)
    return EXIT_OK


def add_parser(subparsers) -> None:
    wal = add_group(subparsers, "wallet", help="Google Wallet passes with rotating barcodes")
    p = wal.add_parser("object", help="print a ticket's eventTicketObject JSON (it holds the ticket's Wallet key)")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=kid, required=True)
    p.add_argument("--ticket", type=ticket_id, required=True)
    p.add_argument("--issuer-id", metavar="ID", help="your Google Wallet issuer id: sets id and classId")
    p.add_argument("--class-suffix", default="gated-event", metavar="NAME",
                   help="the event ticket class's suffix (default gated-event)")
    p.add_argument("--holder", metavar="NAME", help="ticketHolderName")
    p.set_defaults(func=cmd_wallet_object)
