"""Badges at the registration desk: the code a printed badge carries must come
back off the paper, the card, the label and the printer's raster exactly as
minted, whatever the ticket numbering, the size or the attendee's script."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image, ImageChops

from gated.badge import SIZES, make_badge, render
from gated.badge import fonts
from gated.errors import BadgeError
from gated.validation import token

KEY = bytes(range(32))
KID = 1
RNG = random.Random(11)
# The shapes a show numbers its tickets in: consecutive, 10-digit registration numbers, blocks, random 63-bit.
SHOW_IDS = [100001, 100002, 5205320758, 1_000_000 * 3 + 17, RNG.getrandbits(63)]


def decoded(image: Image.Image) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(image)]


def assert_is_the_badge(texts: list[str], ticket_id: int, serial: int) -> None:
    """Exactly one QR, and it verifies as `gated token verify` would: ok, this ticket, this serial."""
    assert len(texts) == 1, texts
    v = token.verify_code(texts[0], {KID: KEY}, now=1_790_000_000.0)
    assert (str(v.reason), v.ticket_id, v.serial, str(v.kind)) == ("ok", ticket_id, serial, "static")


def pdf_page(data: bytes, tmp_path: Path, dpi: int = 200) -> Image.Image:
    pdf = tmp_path / "badge.pdf"
    pdf.write_bytes(data)
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    return Image.open(tmp_path / "page.png").convert("RGB")


def badge(ticket_id=5205320758, serial=0, name="张伟 Zhang Wei", company="北京会展有限公司", category="guest", **kw):
    return make_badge(KEY, KID, ticket_id, serial, name=name, company=company, category=category, **kw)


@pytest.mark.parametrize("size", list(SIZES))
def test_png_of_every_size_carries_the_code_for_every_numbering(size):
    for n, ticket_id in enumerate(SHOW_IDS):
        b = badge(ticket_id, serial=n)
        img = Image.open(BytesIO(render(b, "png", size)))
        width_mm = img.width / 300 * 25.4
        assert abs(width_mm - SIZES[size].width_mm) < 0.2
        assert_is_the_badge(decoded(img), ticket_id, n)


@pytest.mark.parametrize("size", list(SIZES))
def test_pdf_page_rendered_by_poppler_carries_the_code(size, tmp_path):
    b = badge(5205320758, serial=7)
    data = render(b, "pdf", size)
    assert data.startswith(b"%PDF-")
    page = pdf_page(data, tmp_path)
    assert abs(page.width / 200 * 25.4 - SIZES[size].width_mm) < 0.5  # the page is the card, not A4
    assert abs(page.height / 200 * 25.4 - SIZES[size].height_mm) < 0.5
    assert_is_the_badge(decoded(page), 5205320758, 7)


def test_pdf_keeps_the_names_as_text_with_the_font_embedded(tmp_path):
    data = render(badge(company="ACME Events"), "pdf", "a6")
    (tmp_path / "b.pdf").write_bytes(data)
    text = subprocess.run(["pdftotext", str(tmp_path / "b.pdf"), "-"], capture_output=True, text=True, check=True).stdout
    assert "张伟" in text and "Zhang Wei" in text and "ACME Events" in text and "GUEST" in text
    fonts_used = subprocess.run(["pdffonts", str(tmp_path / "b.pdf")], capture_output=True, text=True, check=True).stdout
    assert "yes" in fonts_used.splitlines()[-1]  # emb(edded): the printer needs no font of its own


def test_brother_ql_raster_read_back_carries_the_code(tmp_path):
    from brother_ql.reader import BrotherQLReader

    for n, ticket_id in enumerate(SHOW_IDS[2:]):
        job = render(badge(ticket_id, serial=n + 1, category="media"), "brother-ql", "62mm")
        assert b"\x00" * 200 + b"\x1b@" in job and job.endswith(b"\x1a")  # invalidate, initialize ... print with feeding
        reader = BrotherQLReader(BytesIO(job))
        reader.filename_fmt = str(tmp_path / f"ql{n}-{{counter}}.png")
        reader.analyse()
        page = Image.open(tmp_path / f"ql{n}-1.png").convert("RGB")
        assert page.width == 720  # the 62 mm head: 720 dots, 696 of them printable
        assert_is_the_badge(decoded(page), ticket_id, n + 1)


def test_brother_ql_refuses_a_card_size_and_an_unknown_model():
    with pytest.raises(BadgeError, match="Brother QL printers print on tape: size cr80"):
        render(badge(), "brother-ql", "cr80")
    with pytest.raises(BadgeError, match="unknown Brother QL model 'QL-9'"):
        render(badge(), "brother-ql", "62mm", model="QL-9")


def test_zpl_carries_the_code_in_its_qr_field_and_the_words_in_text_fields():
    b = badge(1_000_000 * 3 + 17, serial=2, name="Anna ^Müller~", company="Messe AG", category="staff")
    zpl = render(b, "zpl", "4x3in").decode("utf-8")
    assert zpl.startswith("^XA") and zpl.rstrip().endswith("^XZ")
    assert "^CI28" in zpl  # UTF-8 field data
    qr = [line for line in zpl.splitlines() if "^BQN,2," in line]
    assert len(qr) == 1 and qr[0].endswith(f"^FDMA,{b.code}^FS")
    assert "^FDAnna^FS" in zpl and "^FD\\5EMüller\\7E^FS" in zpl  # on two lines; ZPL's own ^ and ~ escaped under ^FH
    assert "^FDMesse AG^FS" in zpl and "^FR^FH\\^FDSTAFF^FS" in zpl  # the category reversed out of the band
    assert f"^PW{round(101.6 / 25.4 * 203)}" in zpl


def test_zpl_draws_a_chinese_name_as_a_graphic_the_printer_needs_no_font_for():
    zpl = render(badge(name="王芳", company="ACME"), "zpl", "cr80").decode("utf-8")
    assert "王芳" not in zpl and zpl.count("^GFA,") == 1 and "^FDACME^FS" in zpl
    graphic = next(line for line in zpl.splitlines() if "^GFA," in line)
    fields = graphic.split("^GFA,")[1].removesuffix("^FS").split(",")
    total, row_bytes, data = int(fields[0]), int(fields[2]), fields[3]
    assert set(data) - set("0") and len(data) == 2 * total and total % row_bytes == 0  # ink, and the byte count it claims


def name_area(img: Image.Image) -> Image.Image:
    """The right-hand column of a CR80 badge, where the name is written."""
    return img.crop((img.width // 2, img.height // 5, img.width, img.height * 3 // 5))


def test_a_chinese_name_renders_as_glyphs_not_tofu():
    # Tofu boxes all look alike: two different names of the same length would draw the same ink.
    a = Image.open(BytesIO(render(badge(name="张伟", company=""), "png", "cr80")))
    b = Image.open(BytesIO(render(badge(name="伟张", company=""), "png", "cr80")))
    c = Image.open(BytesIO(render(badge(name="李娜", company=""), "png", "cr80")))
    assert ImageChops.difference(name_area(a), name_area(b)).getbbox() is not None
    assert ImageChops.difference(name_area(a), name_area(c)).getbbox() is not None
    # and against the font's own missing-glyph box (.notdef), drawn for a private-use character:
    font = fonts.font_for(["张"])
    from PIL import ImageFont, ImageDraw

    f = ImageFont.truetype(font.path, 64, index=font.index)

    def glyph(ch):
        im = Image.new("L", (80, 80), 255)
        ImageDraw.Draw(im).text((4, 4), ch, font=f, fill=0)
        return im

    tofu = glyph("\ue000")
    for ch in "张伟李娜":
        assert glyph(ch).getbbox() is not None and ImageChops.difference(glyph(ch), tofu).getbbox() is not None


def test_without_a_cjk_font_the_badge_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setattr(fonts, "CANDIDATES", (("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 0),))
    monkeypatch.delenv(fonts.ENV_FONT, raising=False)
    with pytest.raises(BadgeError, match="install a CJK font .*fonts-wqy-zenhei"):
        render(badge(name="张伟"), "png", "cr80")
    assert render(badge(name="Zhang Wei", company="ACME"), "png", "cr80").startswith(b"\x89PNG")  # Latin still prints


def test_the_band_is_the_category_colour_and_config_colours_win():
    def band(img):
        return img.convert("RGB").getpixel((3, 3))

    for category, rgb in (("guest", (0x87, 0xCE, 0xEB)), ("media", (0x00, 0x00, 0x8B)), ("staff", (0xFF, 0, 0))):
        assert band(Image.open(BytesIO(render(badge(category=category), "png", "cr80")))) == rgb
    chosen = make_badge(KEY, KID, 5, 0, name="A", company="B", category="vip", colors={"vip": "#aa8800"})
    assert band(Image.open(BytesIO(render(chosen, "png", "cr80")))) == (0xAA, 0x88, 0x00)
    assert make_badge(KEY, KID, 5, 0, name="A", company="B", category="guest", colors={"guest": "#123456"}).color == "#123456"


def test_a_photo_is_placed_and_the_code_still_reads(tmp_path):
    photo = tmp_path / "face.jpg"
    Image.new("RGB", (300, 400), (30, 160, 60)).save(photo)
    for size in ("cr80", "a6"):
        img = Image.open(BytesIO(render(badge(photo=photo), "png", size))).convert("RGB")
        assert (30, 160, 60) in {img.getpixel((x, y)) for x in range(0, img.width, 7) for y in range(0, img.height, 7)} or any(
            abs(p[0] - 30) + abs(p[1] - 160) + abs(p[2] - 60) < 12 for p in img.getdata())
        assert_is_the_badge(decoded(img), 5205320758, 0)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (dict(name="   "), "the badge's name is empty"),
        (dict(name="A\x1b[2J"), "control characters"),
        (dict(company="x" * 121), "at most 120"),
        (dict(color="red"), "is not \"#RRGGBB\""),
        (dict(serial=65536), "badge serial must be 0..65535"),
        (dict(photo="/nonexistent/face.jpg"), "no such photo file"),
    ],
)
def test_bad_badge_input_is_one_clear_error(kwargs, says):
    with pytest.raises(BadgeError, match=says.replace("(", r"\(")) as exc:
        badge(**kwargs)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- the command, as a technician runs it


def gated(*args):
    return subprocess.run([sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": {str(KID): KEY.hex()}}))
    os.chmod(path, 0o600)
    return str(path)


def test_badge_render_end_to_end_every_format(keyfile, tmp_path):
    base = ["badge", "render", "--keys", keyfile, "--kid", "1", "--ticket", "5205320758", "--serial", "4",
            "--name", "陈静 Chen Jing", "--company", "上海传媒", "--category", "media"]
    for fmt, ext in (("png", "png"), ("pdf", "pdf"), ("zpl", "zpl"), ("brother-ql", "bin")):
        out = tmp_path / f"b.{ext}"
        r = gated(*base, "--format", fmt, "--out", str(out))
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.strip().startswith(f"{out}: {fmt} badge")
    code = decoded(Image.open(tmp_path / "b.png"))
    assert code == decoded(pdf_page((tmp_path / "b.pdf").read_bytes(), tmp_path))
    assert f"^FDMA,{code[0]}^FS" in (tmp_path / "b.zpl").read_text()
    v = gated("token", "verify", code[0], "--keys", keyfile)
    answer = json.loads(v.stdout)
    assert v.returncode == 0 and (answer["reason"], answer["ticket_id"], answer["serial"]) == ("ok", 5205320758, 4)


@pytest.mark.parametrize(
    "change, says",
    [
        (["--format", "jpeg"], "invalid choice: 'jpeg'"),
        (["--serial", "-1"], "is not a badge serial"),
        (["--kid", "9"], "no key with kid 9"),
        (["--size", "a4"], "invalid choice: 'a4'"),
        (["--color", "#12345"], 'is not "#RRGGBB"'),
        (["--out", "/nonexistent/dir/b.png"], "no such directory"),
        (["--format", "brother-ql", "--size", "a6"], "size a6 is not one of theirs"),
    ],
)
def test_badge_render_bad_usage_is_one_line_and_exit_2(keyfile, tmp_path, change, says):
    args = {"--keys": keyfile, "--kid": "1", "--ticket": "42", "--serial": "0", "--name": "A", "--company": "B",
            "--category": "guest", "--format": "png", "--out": str(tmp_path / "b.png")}
    for flag, value in zip(change[::2], change[1::2]):
        args[flag] = value
    r = gated("badge", "render", *[x for kv in args.items() for x in kv])
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_a_gate_installed_without_the_print_extra_says_what_to_install(keyfile, tmp_path):
    code = "import sys; sys.modules['PIL'] = None; sys.modules['segno'] = None; from gated.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "badge", "render", "--keys", keyfile, "--kid", "1", "--ticket", "42",
                        "--serial", "0", "--name", "A", "--company", "B", "--category", "guest", "--format", "png",
                        "--out", str(tmp_path / "b.png")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: badge printing needs the print extra (segno is missing): pip install 'gated[print]'"), r.stderr
