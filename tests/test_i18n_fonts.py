"""Ge'ez text renders: the Ethiopic font is installed, covers what we show, and survives a PDF round trip."""
from __future__ import annotations

import io

import pytest
from fontTools.ttLib import TTFont

from appliance.errors import UserError
from appliance.i18n import catalogue_path, fonts
from appliance.i18n.ethiopian_calendar import MONTH_NAMES
from appliance.i18n.extract import load_catalogue


def _cmap(kind: str) -> set[int]:
    return set(TTFont(str(fonts.font_path(kind)), lazy=True).getBestCmap())


def _ethiopic_text_we_show() -> set[str]:
    chars = set("".join(MONTH_NAMES["am"]))
    assert catalogue_path("am").is_file()
    for message in load_catalogue("am"):
        strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        chars.update("".join(s for s in strings if s))
    # Every syllable the on-screen keyboard can type (rows U+1200-U+135A, the Amharic consonants).
    chars.update(chr(cp) for cp in range(0x1200, 0x135B))
    return {c for c in chars if 0x1200 <= ord(c) <= 0x139F}


@pytest.mark.parametrize("kind", fonts.FONT_KINDS)
def test_fonts_are_installed(kind):
    path = fonts.font_path(kind)
    assert path.is_file() and path.suffix == ".ttf"


def test_ethiopic_font_covers_every_character_we_show():
    covered = _cmap("ethiopic") & _cmap("ethiopic-bold")
    import unicodedata
    missing = sorted(c for c in _ethiopic_text_we_show() if ord(c) not in covered and unicodedata.name(c, ""))
    assert not missing, missing


def test_latin_font_covers_afaan_oromo_and_english():
    covered = _cmap("latin")
    text = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'’–“”%()/:.,"
    assert {c for c in text if ord(c) not in covered} == set()


def test_kiosk_font_urls_and_css():
    assert fonts.kiosk_font_file("ethiopic-regular.ttf") == fonts.font_path("ethiopic")
    assert fonts.kiosk_font_file("ethiopic-bold.ttf") == fonts.font_path("ethiopic-bold")
    with pytest.raises(KeyError):
        fonts.kiosk_font_file("../../etc/passwd")
    css = fonts.font_face_css("/static/fonts/")
    assert css.count("@font-face") == 2
    assert 'url("/static/fonts/ethiopic-regular.ttf")' in css and "unicode-range: U+1200-139F" in css


def test_missing_font_is_a_clear_user_error(monkeypatch, tmp_path):
    monkeypatch.setitem(fonts._CANDIDATES, "ethiopic", (tmp_path / "nothing.ttf",))
    with pytest.raises(UserError) as err:
        fonts.font_path("ethiopic")
    assert "fonts-noto-core" in err.value.hint
    with pytest.raises(ValueError):
        fonts.font_path("klingon")


def test_pdf_keeps_ethiopic_text_extractable():
    from fpdf import FPDF
    from pypdf import PdfReader

    pdf = FPDF(format="A4")
    family = fonts.register_pdf_fonts(pdf)
    pdf.add_page()
    lines = ["ስም: አበበ በቀለ ኃይሌ", "ውጤት: አደገኛ ያልሆነ (H&E)", "Maqaa: Gammachuu Bu'aa", "Result: benign 96.2 %",
             "መስከረም 1 ቀን 2017 ዓ.ም."]
    pdf.set_font(family, "B", 14)
    pdf.cell(text="ሪፖርት / Report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 12)
    for line in lines:
        pdf.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    data = bytes(pdf.output())
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    for expected in ["ሪፖርት", *lines]:
        assert expected in text, (expected, text)
