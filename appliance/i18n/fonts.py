"""Fonts for Ge'ez (Ethiopic) text: the kiosk, the print page and the PDF.

Decision: use the system's Noto fonts from Debian's ``fonts-noto-core`` package instead of
vendoring copies into ``kiosk/static/fonts``.

- The installer and CI (``.ci/run``) install ``fonts-noto-core``; Raspberry Pi OS ships the
  same package. It provides ``NotoSansEthiopic-{Regular,Bold}.ttf`` and ``NotoSans-*.ttf``.
- One copy on the box serves all three users: Chromium finds it through fontconfig, fpdf2
  embeds (a subset of) the same file in the PDF, and the kiosk serves it to phones that open
  the colposcope upload page (route in phase 2: ``KIOSK_FONT_FILES`` names the URLs).
- Font fixes come with OS updates; the licence (SIL OFL 1.1) travels with the Debian
  package (``/usr/share/doc/fonts-noto-core/copyright``), and the repository holds no binary
  font files. Vendoring would be allowed by the OFL but needs the licence file beside the
  copy and would duplicate ~350 KB per face for no gain on a Debian box.

Noto Sans Ethiopic covers only Ethiopic (plus space and hyphen), so every consumer pairs it
with a Latin font: the PDF registers it as a fallback font, the kiosk's ``@font-face`` gives it
a ``unicode-range``. Fallbacks when Noto is missing: Abyssinica SIL (``fonts-sil-abyssinica``)
and DejaVu Sans (``fonts-dejavu-core``). A box with none of them fails with a clear message
(and ``appliance doctor`` should say so).
"""
from __future__ import annotations

from pathlib import Path

from . import N_, TranslatableError

_NOTO = Path("/usr/share/fonts/truetype/noto")
_CANDIDATES: dict[str, tuple[Path, ...]] = {
    "ethiopic": (_NOTO / "NotoSansEthiopic-Regular.ttf",
                 Path("/usr/share/fonts/truetype/abyssinica/AbyssinicaSIL-Regular.ttf")),
    "ethiopic-bold": (_NOTO / "NotoSansEthiopic-Bold.ttf",
                      Path("/usr/share/fonts/truetype/abyssinica/AbyssinicaSIL-Regular.ttf")),
    "latin": (_NOTO / "NotoSans-Regular.ttf",
              Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")),
    "latin-bold": (_NOTO / "NotoSans-Bold.ttf",
                   Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")),
    # Arrows and other symbols Noto Sans lacks ("→" of the cascade path), for the PDF.
    "symbols": (_NOTO / "NotoSansSymbols-Regular.ttf",
                Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")),
    "symbols-bold": (_NOTO / "NotoSansSymbols-Bold.ttf",
                     Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")),
}
FONT_KINDS = tuple(_CANDIDATES)
# The Ethiopic blocks: Ethiopic, Supplement, Extended, Extended-A, Extended-B.
ETHIOPIC_UNICODE_RANGE = "U+1200-139F, U+2D80-2DDF, U+AB00-AB2F, U+1E7E0-1E7FF"
# File names the kiosk serves the Ethiopic faces under (phase 2 route: /static/fonts/<name>).
KIOSK_FONT_FILES = {"ethiopic-regular.ttf": "ethiopic", "ethiopic-bold.ttf": "ethiopic-bold"}
PDF_FAMILY = "bccdms-sans"
PDF_ETHIOPIC_FAMILY = "bccdms-ethiopic"
PDF_SYMBOLS_FAMILY = "bccdms-symbols"


class FontMissing(TranslatableError):
    """No usable font for Ge'ez (or Latin) text is installed."""


_MISSING = {"ethiopic": N_("No font for Ge'ez (Ethiopic) text is installed."),
            "latin": N_("No font for Latin text is installed."),
            "symbols": N_("No font for symbols (arrows) is installed.")}


def font_path(kind: str = "ethiopic") -> Path:
    """The TTF file for ``kind`` (one of ``FONT_KINDS``), used by the PDF and served to the kiosk."""
    try:
        candidates = _CANDIDATES[kind]
    except KeyError:
        raise ValueError(f"unknown font kind {kind!r}; expected one of {', '.join(FONT_KINDS)}") from None
    for path in candidates:
        if path.is_file():
            return path
    raise FontMissing(_MISSING[kind.split("-")[0]],
                      N_("Install the Debian package fonts-noto-core (sudo apt-get install fonts-noto-core)."))


def kiosk_font_file(name: str) -> Path:
    """The file behind a kiosk font URL name (``ethiopic-regular.ttf``); ``KeyError`` for others."""
    return font_path(KIOSK_FONT_FILES[name])


def font_face_css(url_prefix: str = "/static/fonts/") -> str:
    """``@font-face`` rules for the kiosk and the print page.

    The family is called "Noto Sans Ethiopic" so an installed copy (``local()``) wins and the
    box's file is only downloaded by clients without it (phones); ``unicode-range`` keeps Latin
    text in the page's own font. Use it as ``font-family: <latin font>, "Noto Sans Ethiopic", sans-serif``.
    """
    rules = []
    for name, (weight, local) in {"ethiopic-regular.ttf": (400, "NotoSansEthiopic-Regular"),
                                  "ethiopic-bold.ttf": (700, "NotoSansEthiopic-Bold")}.items():
        rules.append(
            "@font-face {\n"
            '  font-family: "Noto Sans Ethiopic";\n'
            f"  src: local(\"{local}\"), url(\"{url_prefix}{name}\") format(\"truetype\");\n"
            f"  font-weight: {weight};\n"
            "  font-display: swap;\n"
            f"  unicode-range: {ETHIOPIC_UNICODE_RANGE};\n"
            "}\n")
    return "".join(rules)


def register_pdf_fonts(pdf) -> str:
    """Add the Latin, Ethiopic and symbol fonts to an ``fpdf.FPDF``, Ethiopic and symbols as fallbacks.

    Returns the family to ``pdf.set_font()`` with; text in any of the three languages then
    renders (and extracts back) correctly, arrows included. Each face has its bold ("B"), so
    bold text falls back to bold Ethiopic, regular to regular. (Mixing fonts in one PDF also
    needs ``report_pdf``'s guard against an fpdf2 2.8.9 font-state bug: see ``_Report``.)
    """
    for family, kind in ((PDF_FAMILY, "latin"), (PDF_ETHIOPIC_FAMILY, "ethiopic"), (PDF_SYMBOLS_FAMILY, "symbols")):
        pdf.add_font(family, "", str(font_path(kind)))
        pdf.add_font(family, "B", str(font_path(f"{kind}-bold")))
    pdf.set_fallback_fonts([PDF_ETHIOPIC_FAMILY, PDF_SYMBOLS_FAMILY], exact_match=False)
    return PDF_FAMILY
