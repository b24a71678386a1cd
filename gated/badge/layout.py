"""Where everything sits on a badge: the sizes desks print on, and one layout
in millimetres that every output (PNG, PDF, ZPL, Brother QL) paints.

The layout is pure: it takes the badge's words, its QR matrix and a way to
measure text, and returns drawing operations in millimetres from the top
left corner. The painters only translate those to pixels, PDF points or
printer dots, so a badge looks the same on paper, card and label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

MM_PER_INCH = 25.4


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    width_mm: float
    height_mm: float
    what: str
    brother_label: str | None = None  # the brother_ql label this size prints on, if any


# The common badge sizes. The 62 mm label is continuous tape; a badge takes
# 100 mm of it, cut after each one.
SIZES: dict[str, Size] = {
    "cr80": Size("cr80", 85.6, 54.0, "CR80 card, 85.6 x 54 mm"),
    "a6": Size("a6", 105.0, 148.0, "A6, 105 x 148 mm"),
    "4x3in": Size("4x3in", 101.6, 76.2, "4 x 3 in label"),
    "62mm": Size("62mm", 62.0, 100.0, "62 mm continuous label, 100 mm per badge", brother_label="62"),
}
DEFAULT_SIZE = "cr80"


@dataclass(frozen=True, slots=True)
class Box:
    """A filled rectangle (the category band)."""

    x: float
    y: float
    w: float
    h: float
    color: str  # "#RRGGBB"


@dataclass(frozen=True, slots=True)
class Text:
    """One line of text, left-aligned (or centred) in its box, already fitted to its width."""

    x: float
    y: float  # top of the line box
    w: float
    size: float  # em height in mm
    text: str
    color: str
    centre: bool = False


@dataclass(frozen=True, slots=True)
class Code:
    """The QR code: a square of `modules`, quiet zone included in `side`."""

    x: float
    y: float
    side: float
    modules: tuple[tuple[bool, ...], ...]  # rows of dark (True) / light, without the quiet zone
    text: str  # what it encodes, for outputs that draw their own QR (ZPL)


@dataclass(frozen=True, slots=True)
class Photo:
    x: float
    y: float
    w: float
    h: float
    path: str


Op = Box | Text | Code | Photo
Measure = Callable[[str, float], float]  # (text, em size in mm) -> width in mm

QUIET_MODULES = 4  # the quiet zone the QR standard asks for, each side
MARGIN_MM = 3.0


def text_on(color: str) -> str:
    """Black or white, whichever reads on `color` (WCAG relative luminance)."""
    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if luminance > 0.179 else "#FFFFFF"


def fit(text: str, width: float, size: float, measure: Measure, smallest: float) -> tuple[str, float]:
    """The largest size <= `size` at which `text` fits `width`; below `smallest`, cut with an ellipsis."""
    w = measure(text, size)
    if w <= width:
        return text, size
    scaled = size * width / w
    if scaled >= smallest:
        return text, scaled
    cut = text
    while cut and measure(cut + "…", smallest) > width:
        cut = cut[:-1]
    return cut.rstrip() + "…", smallest


def lay_out(
    size: Size,
    *,
    name: str,
    company: str,
    category: str,
    color: str,
    footer: str,
    modules: Sequence[Sequence[bool]],
    code_text: str,
    photo: str | None,
    measure: Measure,
) -> list[Op]:
    """The badge as drawing operations: band with the category, name, company, QR, photo, footer."""
    w, h = size.width_mm, size.height_mm
    m = MARGIN_MM
    band_h = max(8.0, round(h * 0.17, 1))
    ops: list[Op] = [Box(0, 0, w, band_h, color)]
    ink = "#000000"
    band_text, band_size = fit(category.upper(), w - 2 * m, band_h * 0.62, measure, 2.5)
    ops.append(Text(m, (band_h - band_size) / 2, w - 2 * m, band_size, band_text, text_on(color), centre=True))

    grid = tuple(tuple(bool(c) for c in row) for row in modules)
    footer_size = 2.4
    top = band_h + m * 0.6
    bottom = h - m * 0.6 - footer_size * 1.3
    if w > h:  # landscape: QR on the left, words (and photo) on the right
        side = min(bottom - top, w * 0.45)
        ops.append(Code(m * 0.3, top + (bottom - top - side) / 2, side, grid, code_text))
        x = m * 0.3 + side + m * 0.5
        col_w = w - x - m
        y = top + m * 0.4
        if photo:
            ph_h = (bottom - top) * 0.55
            ph_w = ph_h * 0.8
            ops.append(Photo(w - m - ph_w, y, ph_w, ph_h, photo))
            name_w = col_w - ph_w - m * 0.5
        else:
            name_w = col_w
        name_size = min(9.0, (bottom - top) * 0.28)
        ops.extend(_words(x, y, name_w, col_w, name, company, name_size, ink, measure, photo_h=(bottom - top) * 0.55 if photo else 0.0))
    else:  # portrait: words on top, QR centred below
        y = top + m * 0.4
        col_w = w - 2 * m
        if photo:
            ph_h = (h - band_h) * 0.28
            ph_w = ph_h * 0.8
            ops.append(Photo((w - ph_w) / 2, y, ph_w, ph_h, photo))
            y += ph_h + m * 0.5
        name_size = min(11.0, w * 0.095)
        words = _words(m, y, col_w, col_w, name, company, name_size, ink, measure, centre=True)
        ops.extend(words)
        y = max(op.y + op.size * 1.25 for op in words)
        side = min(bottom - y - m * 0.3, w - 2 * m)
        ops.append(Code((w - side) / 2, y + (bottom - y - side) / 2, side, grid, code_text))
    f_text, f_size = fit(footer, w - 2 * m, footer_size, measure, 1.6)
    ops.append(Text(m, h - m * 0.5 - f_size * 1.2, w - 2 * m, f_size, f_text, ink, centre=True))
    return ops


def _words(x, y, name_w, col_w, name, company, name_size, ink, measure, *, centre=False, photo_h=0.0) -> list[Text]:
    """The name (on two lines if it must) and the company under it."""
    out: list[Text] = []
    lines = [name]
    if measure(name, name_size) > name_w and " " in name.strip():
        words = name.split()
        best = min(range(1, len(words)), key=lambda i: max(measure(" ".join(words[:i]), 1), measure(" ".join(words[i:]), 1)))
        lines = [" ".join(words[:best]), " ".join(words[best:])]
    size = min(fit(line, name_w, name_size, measure, name_size * 0.45)[1] for line in lines)
    for line in lines:
        text, s = fit(line, name_w, size, measure, size)
        out.append(Text(x, y, name_w, s, text, ink, centre))
        y += s * 1.2
    if company:
        y += size * 0.15
        c_w = name_w if photo_h and y < out[0].y + photo_h else col_w  # beside the photo...
        if c_w < col_w and measure(company, size * 0.55) > c_w:
            y, c_w = out[0].y + photo_h + size * 0.3, col_w  # ...or under it, where the whole column is free
        text, s = fit(company, c_w, size * 0.55, measure, 2.0)
        out.append(Text(x, y, c_w, s, text, ink, centre))
    return out
