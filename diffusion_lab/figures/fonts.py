"""Text in figures: class names drawn in a font that has their glyphs (or transliterated), and
long titles wrapped.

Matplotlib's default font (DejaVu Sans) has no CJK glyphs, so an image folder named in
Japanese would be labelled with empty boxes and a warning per glyph. Labels whose characters
the default font lacks are drawn with an installed font that has all of them as a fallback
(matplotlib falls back glyph by glyph along a family list); where no installed font has
them, the names are transliterated to ASCII and one warning says so.
"""

from __future__ import annotations

import functools
import re
import textwrap
import unicodedata
import warnings
from collections.abc import Sequence
from typing import Any

from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

# Matplotlib's own last resort: a box for every code point, not a glyph.
PLACEHOLDER_FONTS = ("Last Resort",)


@functools.cache
def code_points(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for."""
    return frozenset(FT2Font(path).get_charmap())


def default_font() -> tuple[str, str]:
    """(family name, file) of the font matplotlib draws text with by default."""
    path = font_manager.findfont(font_manager.FontProperties())
    return font_manager.get_font(path).family_name, path


def missing(names: Sequence[str]) -> frozenset[str]:
    """The characters of `names` that the default font has no glyph for."""
    have = code_points(default_font()[1])
    return frozenset(c for name in names for c in name if ord(c) not in have and c.isprintable())


@functools.cache
def font_with(chars: frozenset[str]) -> str | None:
    """The family name of an installed font that has a glyph for every one of `chars`."""
    wanted = {ord(c) for c in chars}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(PLACEHOLDER_FONTS):
            continue
        try:
            if wanted <= code_points(entry.fname):
                return entry.name
        except (OSError, RuntimeError):  # a font file FreeType cannot open
            continue
    return None


def ascii_char(c: str, drawable: frozenset[int]) -> str:
    """`c` as the default font can draw it: itself, its base letter without accents, the
    syllable its Unicode name gives (kana, hangul: `ka`), else its code point (`U+732B`)."""
    if ord(c) in drawable:
        return c
    base = "".join(b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b))
    if base and all(ord(b) in drawable for b in base):
        return base
    words = unicodedata.name(c, "").split()
    if len(words) >= 3 and words[-2] in ("LETTER", "SYLLABLE", "SMALL"):
        return words[-1].lower()
    return f"U+{ord(c):04X}"


def transliterate(name: str) -> str:
    """`name` in characters the default font has."""
    drawable = code_points(default_font()[1])
    return "".join(ascii_char(c, drawable) for c in name)


@functools.cache
def warn_transliterated(names: tuple[str, ...], shown: tuple[str, ...]) -> None:
    """One warning per set of names, however many figures draw them."""
    pairs = ", ".join(f"{n} -> {s}" for n, s in zip(names, shown, strict=True) if n != s)
    warnings.warn(
        f"class names: no installed font has their glyphs (install one, e.g. Noto Sans CJK); "
        f"drawn transliterated: {pairs}",
        stacklevel=3,
    )


def label_text(names: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The class names as figures draw them, and the text properties to draw them with
    (for `ax.set_xticks(..., labels=labels, **properties)`)."""
    names = list(names)
    lacking = missing(names)
    if not lacking:
        return names, {}
    fallback = font_with(lacking)
    if fallback is not None:
        return names, {"fontfamily": [default_font()[0], fallback]}
    shown = [transliterate(name) for name in names]
    warn_transliterated(tuple(names), tuple(shown))
    return shown, {}


def wrap_overrides(overrides: str, width: int = 80, max_lines: int = 3) -> str:
    """`a=1,b=2,...` for a title: lines of at most `width` characters, broken after commas, at
    most `max_lines` of them (then `...`), so a long sweep name does not widen the figure."""
    spaced = re.sub(r",(?! )", ", ", overrides)
    lines = textwrap.wrap(spaced, width, max_lines=max_lines, placeholder=" ...")
    return "\n".join(lines)
