"""Class names in figures: a font with their glyphs where one is installed, else ASCII and one
warning; never matplotlib's empty boxes with a warning per glyph."""

from __future__ import annotations

import io
import unicodedata
import warnings

import pytest
import torch
from matplotlib import font_manager

from diffusion_lab.figures import fonts
from diffusion_lab.figures.bars import per_class_accuracy_figure
from diffusion_lab.figures.grids import class_grid, class_grid_figure
from diffusion_lab.lit.confusion import confusion_figure

JAPANESE = ["ねこ", "犬", "がっこう"]


def drawn(figure) -> list[warnings.WarningMessage]:
    """Render a figure to PNG; the warnings raised while building and drawing it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure().savefig(io.BytesIO(), format="png")
    return caught


def grid_of(names: list[str]):
    images = torch.zeros(2 * len(names), 3, 8, 8, dtype=torch.uint8)
    return lambda: class_grid_figure(class_grid(images, 2), names, "title")


def tick_texts(figure, axis: str = "y") -> list[tuple[str, list[str]]]:
    """(text, font families) of the first axes' tick labels."""
    ax = figure.axes[0]
    labels = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [(t.get_text(), t.get_fontfamily()) for t in labels]


def a_glyph_only_another_font_has() -> str | None:
    """A letter or symbol some installed font (not a placeholder one) has and the default
    lacks (matplotlib's own STIX fonts have some)."""
    default = fonts.code_points(fonts.default_font()[1])
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(fonts.PLACEHOLDER_FONTS):
            continue
        for point in sorted(fonts.code_points(entry.fname) - default):
            char = chr(point)
            if unicodedata.category(char)[0] in "LS" and char.isprintable():
                return char
    return None


def test_names_the_default_font_has_are_drawn_as_they_are():
    assert fonts.label_text(["airplane", "café", "ζώο"]) == (["airplane", "café", "ζώο"], {})


def test_a_glyph_of_another_installed_font_is_drawn_with_it_without_warnings():
    char = a_glyph_only_another_font_has()
    if char is None:
        pytest.skip("no installed font has a glyph the default font lacks")
    names = ["cat", f"dog {char}"]
    shown, properties = fonts.label_text(names)
    assert shown == names
    assert properties["fontfamily"][0] == fonts.default_font()[0]
    assert char in "".join(chr(p) for p in fonts.code_points(font_of(properties["fontfamily"][1])))
    assert drawn(grid_of(names)) == []


def font_of(family: str) -> str:
    return font_manager.findfont(font_manager.FontProperties(family=family))


def test_japanese_names_get_a_font_or_ascii_with_one_warning_for_all_figures():
    fonts.warn_transliterated.cache_clear()
    fallback = fonts.font_with(fonts.missing(JAPANESE))
    figures = [
        grid_of(JAPANESE),
        lambda: confusion_figure(torch.eye(3), JAPANESE, "confusion"),
        lambda: per_class_accuracy_figure({"real": [(0.5, None)] * 3}, JAPANESE),
    ]
    caught = [w for figure in figures for w in drawn(figure)]
    grid = grid_of(JAPANESE)()
    if fallback is not None:  # a machine with a CJK font: the names themselves, no warning
        assert caught == []
        assert [text for text, _ in tick_texts(grid)] == JAPANESE
        return
    # CI's machine has none: ASCII names, one warning (not one per glyph and figure).
    assert [str(w.message) for w in caught] == [
        "class names: no installed font has their glyphs (install one, e.g. Noto Sans CJK); "
        "drawn transliterated: ねこ -> neko, 犬 -> U+72AC, がっこう -> gatukou"
    ]
    assert [text for text, _ in tick_texts(grid)] == ["neko", "U+72AC", "gatukou"]


@pytest.mark.parametrize(
    ("name", "ascii"),
    [
        ("ねこ", "neko"),
        ("カメラ", "kamera"),
        ("한글", "hangeul"),
        ("猫", "U+732B"),
        ("ñandú", "ñandú"),
    ],
)
def test_transliteration_keeps_what_the_default_font_draws(name, ascii):
    assert fonts.transliterate(name) == ascii
