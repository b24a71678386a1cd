"""The font a badge is written in: one that has a glyph for every character
on it, Chinese, Japanese and Korean names included.

A badge with a box in place of a letter is worse than no badge, so a text
that no font found here covers is refused with a message saying what to
install (Latin text needs only DejaVu, which every Debian has).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gated.errors import BadgeError

# Debian's CJK fonts first (`apt-get install fonts-wqy-zenhei` or `fonts-noto-cjk`), then Latin ones.
CANDIDATES = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 0),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 0),
)
ENV_FONT = "GATED_BADGE_FONT"  # a font file to try before the others


@dataclass(frozen=True, slots=True)
class FontFile:
    path: str
    index: int  # the face within a .ttc collection


@lru_cache(maxsize=16)
def _cmap(path: str, index: int) -> frozenset[int] | None:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # unreadable or not a font: not a candidate
        return None


def _candidates(explicit: str | None) -> list[tuple[str, int]]:
    out = []
    for chosen in (explicit, os.environ.get(ENV_FONT)):
        if chosen:
            out.append((chosen, 0))
    return out + [c for c in CANDIDATES if Path(c[0]).is_file()]


def font_for(texts: list[str], explicit: str | None = None) -> FontFile:
    """The first font that has every character of `texts` (and the ellipsis a cut line ends with)."""
    needed = {ord(ch) for text in texts for ch in text if not ch.isspace()} | {ord("…")}
    if explicit and _cmap(explicit, 0) is None:
        raise BadgeError(f"{explicit}: not a readable TrueType/OpenType font")
    missing: set[int] = needed
    for path, index in _candidates(explicit):
        cmap = _cmap(path, index)
        if cmap is None:
            continue
        lacking = needed - cmap
        if not lacking:
            return FontFile(path, index)
        if len(lacking) < len(missing):
            missing = lacking
    sample = "".join(chr(c) for c in sorted(missing)[:8])
    raise BadgeError(
        f"no font here has the characters {sample!r}: install a CJK font "
        "(apt-get install fonts-wqy-zenhei or fonts-noto-cjk) or pass --font FILE"
    )
