"""Badges printed at the desk: the static code as a QR, name, company, the
category band in its colour, an optional photo.

`make_badge()` mints the code (`gated.validation.token.mint_static`) and
checks the words; `render()` gives the bytes of one output: PDF (vector, the
font embedded), PNG, ZPL for Zebra printers, or a Brother QL raster job.
Sending those bytes to a printer is `gated.badge.printers`. The drawing
libraries (segno, Pillow, fpdf2, brother_ql) are the `print` extra: a gate
that prints no badges installs without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gated.badge.layout import DEFAULT_SIZE, SIZES, Size
from gated.errors import BadgeError

__all__ = ["Badge", "FORMATS", "SIZES", "DEFAULT_SIZE", "make_badge", "render", "color_for", "needs_print_extra"]

FORMATS = ("pdf", "png", "zpl", "brother-ql")
EXTENSIONS = {"pdf": ".pdf", "png": ".png", "zpl": ".zpl", "brother-ql": ".bin"}
MAX_TEXT = 120  # characters of a name, company or category: a badge shows no more
_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")
FALLBACK_COLOR = "#FFFFFF"


@dataclass(frozen=True, slots=True)
class Badge:
    """One badge: its code and what is written on it."""

    code: str  # the static code the QR carries
    ticket_id: int
    serial: int
    name: str
    company: str
    category: str
    color: str  # "#RRGGBB", the category band
    photo: str | None = None


def needs_print_extra(exc: ImportError) -> BadgeError:
    return BadgeError(f"badge printing needs the print extra ({exc.name} is missing): pip install 'gated[print]'")


def color_for(category: str, colors: dict[str, str] | None = None) -> str:
    """The band colour: the config's colour for the category wins, then the policy's defaults."""
    from gated.validation.policy import DEFAULT_COLORS

    for table in (colors or {}, DEFAULT_COLORS):
        if category in table:
            return table[category].upper()
    return FALLBACK_COLOR


def _words(what: str, text: str, required: bool) -> str:
    text = text.strip()
    if required and not text:
        raise BadgeError(f"the badge's {what} is empty")
    if len(text) > MAX_TEXT:
        raise BadgeError(f"the badge's {what} is {len(text)} characters long; at most {MAX_TEXT}")
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise BadgeError(f"the badge's {what} contains control characters")
    return text


def make_badge(
    key: bytes,
    kid: int,
    ticket_id: int,
    serial: int,
    *,
    name: str,
    company: str,
    category: str,
    color: str | None = None,
    colors: dict[str, str] | None = None,
    photo: str | Path | None = None,
) -> Badge:
    """A badge for this ticket and serial, its code signed with the event key `key` (kid `kid`)."""
    from gated.validation import token

    try:
        code = token.mint_static(key, kid, ticket_id, serial)
    except ValueError as exc:
        raise BadgeError(f"cannot mint the badge's code: {exc}") from None
    if color is None:
        color = color_for(category, colors)
    if not _COLOR_RE.fullmatch(color):
        raise BadgeError(f'colour {color!r} is not "#RRGGBB"')
    if photo is not None and not Path(photo).is_file():
        raise BadgeError(f"{photo}: no such photo file")
    return Badge(
        code=code,
        ticket_id=ticket_id,
        serial=serial,
        name=_words("name", name, True),
        company=_words("company", company, False),
        category=_words("category", category, True),
        color=color.upper(),
        photo=None if photo is None else str(photo),
    )


def size_named(name: str) -> Size:
    try:
        return SIZES[name]
    except KeyError:
        raise BadgeError(f"unknown badge size {name!r}; sizes: {', '.join(SIZES)}") from None


def render(badge: Badge, fmt: str, size: str = DEFAULT_SIZE, *, font: str | None = None,
           dpi: int | None = None, model: str | None = None) -> bytes:
    """The badge as the bytes of one output format (see FORMATS)."""
    if fmt not in FORMATS:
        raise BadgeError(f"unknown badge format {fmt!r}; formats: {', '.join(FORMATS)}")
    chosen = size_named(size)
    try:
        from gated.badge import draw
    except ImportError as exc:
        raise needs_print_extra(exc) from None
    if fmt == "png":
        return draw.png(badge, chosen, dpi=dpi or 300, font=font)
    if fmt == "pdf":
        return draw.pdf(badge, chosen, font=font)
    if fmt == "zpl":
        return draw.zpl(badge, chosen, dpi=dpi or 203, font=font)
    return draw.brother_ql(badge, chosen, model=model or draw.BROTHER_DEFAULT_MODEL, font=font)
