"""Languages of the kiosk, the printed report and the PDF.

Catalogues are gettext ``.po`` files under ``appliance/i18n/locale/<lang>/LC_MESSAGES/``;
they are compiled in memory when first used, so no compiled ``.mo`` file is needed.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
# Language code -> its own name (what a nurse looks for on the language switch).
LANGUAGES = {"en": "English"}
DEFAULT_LANGUAGE = "en"


@lru_cache(maxsize=None)
def get_translations(lang: str) -> NullTranslations:
    """gettext-style translations for ``lang``; English (the source language) is the identity."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == DEFAULT_LANGUAGE or not po.is_file():
        return NullTranslations()
    with open(po, "rb") as fh:
        catalog = read_po(fh, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)
