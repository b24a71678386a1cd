"""The painters: one badge layout (`layout.lay_out`, in millimetres) turned
into PNG pixels (Pillow), PDF vectors (fpdf2), ZPL fields, or a Brother QL
raster job (brother_ql). Imports the `print` extra; nothing else does.

Why fpdf2 for the PDF: pure Python (no compiler on a Pi), kept up, and it
embeds a subset of a TrueType collection (wqy-zenhei.ttc), so a Chinese
name stays text at any printer resolution and the file stays small; the QR
is drawn as vector rectangles, sharp on a 600 dpi card printer.
"""

from __future__ import annotations

import io
import logging
from functools import lru_cache

import segno
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from gated.badge import Badge
from gated.badge.fonts import FontFile, font_for
from gated.badge.layout import MM_PER_INCH, QUIET_MODULES, Box, Code, Photo, Size, Text, lay_out
from gated.errors import BadgeError

BROTHER_DEFAULT_MODEL = "QL-820NWB"
BROTHER_DPI = 300
_BASELINE = 0.88  # of the em: where a line's baseline sits below its top
_MEASURE_PX = 200  # the size text is measured at; widths scale linearly


@lru_cache(maxsize=64)
def _pil_font(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=max(px, 1), index=index)


def _layout(badge: Badge, size: Size, font: FontFile):
    qr = segno.make(badge.code, error="m", micro=False)
    modules = [tuple(bool(v) for v in row) for row in qr.matrix_iter(scale=1, border=0)]
    measurer = _pil_font(font.path, font.index, _MEASURE_PX)

    def measure(text: str, em_mm: float) -> float:
        return measurer.getlength(text) / _MEASURE_PX * em_mm

    footer = f"#{badge.ticket_id} · {badge.serial}"
    return lay_out(
        size, name=badge.name, company=badge.company, category=badge.category, color=badge.color,
        footer=footer, modules=modules, code_text=badge.code, photo=badge.photo, measure=measure,
    ), measure


def _font(badge: Badge, explicit: str | None) -> FontFile:
    return font_for([badge.name, badge.company, badge.category.upper(), f"#{badge.ticket_id} · {badge.serial}"], explicit)


def _photo(path: str, w_px: int, h_px: int) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (max(w_px, 1), max(h_px, 1)))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadgeError(f"{path}: not a readable photo ({type(exc).__name__})") from None


def raster(badge: Badge, size: Size, dpi: int, font: str | None = None, *, mono: bool = False) -> Image.Image:
    """The badge as an RGB image (`mono`: black and white for thermal printers, the band black)."""
    ff = _font(badge, font)
    ops, measure = _layout(badge, size, ff)
    px = dpi / MM_PER_INCH
    img = Image.new("RGB", (round(size.width_mm * px), round(size.height_mm * px)), "white")
    d = ImageDraw.Draw(img)
    for op in ops:
        if isinstance(op, Box):
            d.rectangle([round(op.x * px), round(op.y * px), round((op.x + op.w) * px) - 1,
                         round((op.y + op.h) * px) - 1], fill="#000000" if mono else op.color)
        elif isinstance(op, Text):
            color = op.color
            if mono and _on_band(op, ops):
                color = "#FFFFFF"
            f = _pil_font(ff.path, ff.index, round(op.size * px))
            x = op.x + ((op.w - measure(op.text, op.size)) / 2 if op.centre else 0)
            d.text((round(x * px), round((op.y + op.size * _BASELINE) * px)), op.text, font=f, fill=color, anchor="ls")
        elif isinstance(op, Code):
            count = len(op.modules) + 2 * QUIET_MODULES
            module = max(1, int(op.side * px) // count)  # whole pixels per module: crisp edges
            x0 = round(op.x * px) + (round(op.side * px) - module * count) // 2 + QUIET_MODULES * module
            y0 = round(op.y * px) + (round(op.side * px) - module * count) // 2 + QUIET_MODULES * module
            d.rectangle([x0 - QUIET_MODULES * module, y0 - QUIET_MODULES * module,
                         x0 + (count - QUIET_MODULES) * module - 1, y0 + (count - QUIET_MODULES) * module - 1], fill="white")
            for r, row in enumerate(op.modules):
                for c, dark in enumerate(row):
                    if dark:
                        d.rectangle([x0 + c * module, y0 + r * module, x0 + (c + 1) * module - 1,
                                     y0 + (r + 1) * module - 1], fill="black")
        elif isinstance(op, Photo):
            w_px, h_px = round(op.w * px), round(op.h * px)
            pic = _photo(op.path, w_px, h_px)
            img.paste(pic.convert("L").convert("RGB") if mono else pic, (round(op.x * px), round(op.y * px)))
    return img


def _on_band(text: Text, ops) -> bool:
    band = ops[0]
    return isinstance(band, Box) and text.y < band.y + band.h


def png(badge: Badge, size: Size, *, dpi: int = 300, font: str | None = None) -> bytes:
    if not 72 <= dpi <= 1200:
        raise BadgeError(f"dpi {dpi} is not 72..1200")
    out = io.BytesIO()
    raster(badge, size, dpi, font).save(out, format="PNG", dpi=(dpi, dpi))
    return out.getvalue()


def pdf(badge: Badge, size: Size, *, font: str | None = None) -> bytes:
    from fpdf import FPDF

    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)  # "BDF NOT subset": the bitmap table it drops
    ff = _font(badge, font)
    ops, measure = _layout(badge, size, ff)
    doc = FPDF(orientation="L" if size.width_mm > size.height_mm else "P", unit="mm",
               format=(min(size.width_mm, size.height_mm), max(size.width_mm, size.height_mm)))
    doc.set_auto_page_break(False)
    doc.set_margins(0, 0, 0)
    doc.set_creator("gated")
    doc.set_title(f"badge {badge.ticket_id} serial {badge.serial}")
    doc.add_font("badge", "", ff.path, collection_font_number=ff.index)
    doc.add_page()
    for op in ops:
        if isinstance(op, Box):
            doc.set_fill_color(*_rgb(op.color))
            doc.rect(op.x, op.y, op.w, op.h, style="F")
        elif isinstance(op, Text):
            doc.set_font("badge", size=op.size * 72 / MM_PER_INCH)
            doc.set_text_color(*_rgb(op.color))
            x = op.x + ((op.w - measure(op.text, op.size)) / 2 if op.centre else 0)
            doc.text(x, op.y + op.size * _BASELINE, op.text)
        elif isinstance(op, Code):
            count = len(op.modules) + 2 * QUIET_MODULES
            m = op.side / count
            doc.set_fill_color(0, 0, 0)
            for r, row in enumerate(op.modules):
                c = 0
                while c < len(row):  # one rectangle per run of dark modules
                    if not row[c]:
                        c += 1
                        continue
                    start = c
                    while c < len(row) and row[c]:
                        c += 1
                    doc.rect(op.x + (QUIET_MODULES + start) * m, op.y + (QUIET_MODULES + r) * m, (c - start) * m, m, style="F")
        elif isinstance(op, Photo):
            pic = _photo(op.path, round(op.w / MM_PER_INCH * 300), round(op.h / MM_PER_INCH * 300))
            doc.image(pic, x=op.x, y=op.y, w=op.w, h=op.h)
    return bytes(doc.output())


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


# --------------------------------------------------------------------------
# ZPL (Zebra): the code in a ^BQ QR field, words in ^FD text fields
# --------------------------------------------------------------------------

def _zpl_field_data(text: str) -> str:
    """^FD data under ^FH: the characters ZPL reserves (^ ~ \\) as hex escapes."""
    return "".join(f"\\{ord(ch):02X}" if ch in "^~\\" else ch for ch in text)


def _zebra_font_has(text: str) -> bool:
    """Zebra's resident scalable font 0 covers Latin-1 under ^CI28; CJK needs a font the printer may lack."""
    try:
        text.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def _zpl_graphic(text: str, ff: FontFile, height: int, width: int) -> str:
    """A line of text the printer has no font for, as a ^GF bitmap (1 bit per dot)."""
    f = _pil_font(ff.path, ff.index, height)
    w = min(width, max(8, int(f.getlength(text)) + 2))
    im = Image.new("1", (w, int(height * 1.2)), 1)
    ImageDraw.Draw(im).text((0, round(height * _BASELINE)), text, font=f, fill=0, anchor="ls")
    im = ImageOps.invert(im.convert("L")).convert("1")  # ZPL: a 1 bit is a black dot
    row_bytes = (im.width + 7) // 8
    data = im.tobytes()
    return f"^GFA,{len(data)},{len(data)},{row_bytes},{data.hex().upper()}"


def zpl(badge: Badge, size: Size, *, dpi: int = 203, font: str | None = None) -> bytes:
    if dpi not in (152, 203, 300, 600):
        raise BadgeError(f"Zebra printers print at 152, 203, 300 or 600 dpi, not {dpi}")
    ff = _font(badge, font)
    ops, measure = _layout(badge, size, ff)
    px = dpi / MM_PER_INCH
    w_dots, h_dots = round(size.width_mm * px), round(size.height_mm * px)
    out = ["^XA", "^CI28", f"^PW{w_dots}", f"^LL{h_dots}", "^LH0,0"]
    for op in ops:
        if isinstance(op, Box):
            w, h = round(op.w * px), round(op.h * px)
            out.append(f"^FO{round(op.x * px)},{round(op.y * px)}^GB{w},{h},{min(w, h)},B,0^FS")
        elif isinstance(op, Text):
            h = max(10, round(op.size * px))
            x = op.x + ((op.w - measure(op.text, op.size)) / 2 if op.centre else 0)
            origin = f"^FO{round(x * px)},{round(op.y * px)}"
            reverse = "^FR" if _on_band(op, ops) else ""
            if _zebra_font_has(op.text):
                out.append(f"{origin}^A0N,{h},{h}{reverse}^FH\\^FD{_zpl_field_data(op.text)}^FS")
            else:
                out.append(f"{origin}{reverse}{_zpl_graphic(op.text, ff, h, round(op.w * px))}^FS")
        elif isinstance(op, Code):
            count = len(op.modules) + 2 * QUIET_MODULES
            mag = max(1, min(10, int(op.side * px) // count))
            inset = QUIET_MODULES * mag
            out.append(f"^FO{round(op.x * px) + inset},{round(op.y * px) + inset}^BQN,2,{mag}^FDMA,{op.text}^FS")
        elif isinstance(op, Photo):
            w_px, h_px = round(op.w * px), round(op.h * px)
            pic = _photo(op.path, w_px, h_px).convert("1")
            pic = ImageOps.invert(pic.convert("L")).convert("1")
            data = pic.tobytes()
            out.append(f"^FO{round(op.x * px)},{round(op.y * px)}^GFA,{len(data)},{len(data)},{(pic.width + 7) // 8},{data.hex().upper()}^FS")
    out.append("^PQ1^XZ")
    return ("\n".join(out) + "\n").encode("utf-8")


# --------------------------------------------------------------------------
# Brother QL: a raster job for 62 mm continuous tape
# --------------------------------------------------------------------------

def brother_ql(badge: Badge, size: Size, *, model: str = BROTHER_DEFAULT_MODEL, font: str | None = None) -> bytes:
    logging.getLogger("brother_ql").setLevel(logging.ERROR)  # its import warns of its own deprecations on stderr
    from brother_ql.conversion import convert
    from brother_ql.labels import LabelsManager
    from brother_ql.raster import BrotherQLRaster

    if size.brother_label is None:
        choices = ", ".join(s.name for s in _brother_sizes())
        raise BadgeError(f"Brother QL printers print on tape: size {size.name} is not one of theirs ({choices})")
    label = next(l for l in LabelsManager().iter_elements() if l.identifier == size.brother_label)
    width_dots = label.dots_printable[0]
    # Drawn at exactly the printable width: brother_ql 0.9.4 would otherwise resize with a filter Pillow 10 removed.
    printable = Size(size.name, width_dots / BROTHER_DPI * MM_PER_INCH, size.height_mm, size.what, size.brother_label)
    img = raster(badge, printable, BROTHER_DPI, font, mono=True)
    try:
        qlr = BrotherQLRaster(model)
    except Exception:
        raise BadgeError(f"unknown Brother QL model {model!r}") from None
    qlr.exception_on_warning = True
    convert(qlr, [img], size.brother_label, cut=True, rotate="0", threshold=50.0, dither=False, compress=True)
    return bytes(qlr.data)


def _brother_sizes():
    from gated.badge.layout import SIZES

    return [s for s in SIZES.values() if s.brother_label]


def brother_models() -> list[str]:
    from brother_ql.models import ALL_MODELS

    return [m.identifier for m in ALL_MODELS]
