"""`gated badge render`: technicians test badges and printers without a lane."""

from __future__ import annotations

import argparse

from gated.cli.args import EXIT_OK, UsageError, add_group, kid, ticket_id

FORMATS = ("pdf", "png", "zpl", "brother-ql")  # gated.badge.FORMATS, here so `gated --help` imports nothing
SIZES = ("cr80", "a6", "4x3in", "62mm")  # gated.badge.layout.SIZES


def serial(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a badge serial (0..65535)")
    return int(text)


def cmd_badge_render(args) -> int:
    from pathlib import Path

    from gated.atomic_file import write_atomically
    from gated.badge import make_badge, render
    from gated.keyfile import load_keyfile

    ring = load_keyfile(args.keys)
    key = ring.get(args.kid)
    if key is None:
        raise UsageError(f"{args.keys}: no key with kid {args.kid} (kids present: {ring.kids()})")
    size = args.size or ("62mm" if args.format == "brother-ql" else "cr80")
    badge = make_badge(
        key, args.kid, args.ticket, args.serial, name=args.name, company=args.company,
        category=args.category, color=args.color, photo=args.photo,
    )
    data = render(badge, args.format, size, font=args.font, dpi=args.dpi, model=args.model)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: no such directory {out.parent}")
    try:
        write_atomically(out, data, mode=0o644)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    print(f"{out}: {args.format} badge, {size}, ticket {args.ticket} serial {args.serial}, {len(data)} bytes")
    return EXIT_OK


def add_parser(subparsers) -> None:
    badge = add_group(subparsers, "badge", help="render badges for the desk's printers")
    p = badge.add_parser("render", help="write one badge to a file (PDF, PNG, ZPL or a Brother QL job)")
    p.add_argument("--keys", required=True, metavar="FILE")
    p.add_argument("--kid", type=kid, required=True)
    p.add_argument("--ticket", type=ticket_id, required=True)
    p.add_argument("--serial", type=serial, required=True, help="the badge serial (0 for the first print)")
    p.add_argument("--name", required=True)
    p.add_argument("--company", required=True)
    p.add_argument("--category", required=True, help="guest, media, staff...: the band's words and colour")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--size", choices=SIZES, help="cr80 (default), a6, 4x3in, 62mm (brother-ql's default and only size)")
    p.add_argument("--photo", metavar="FILE", help="a photo of the attendee (JPEG, PNG)")
    p.add_argument("--color", metavar="#RRGGBB", help="the band colour (default: the category's)")
    p.add_argument("--font", metavar="FILE", help="a TrueType font with every character written (default: found)")
    p.add_argument("--dpi", type=int, help="png: 300 by default; zpl: the printer's, 203 by default")
    p.add_argument("--model", help="brother-ql: the printer model (default QL-820NWB)")
    p.set_defaults(func=cmd_badge_render)
