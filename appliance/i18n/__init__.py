"""Languages of the kiosk, the printed report and the PDF: English, Amharic and Afaan Oromo.

Catalogues are gettext ``.po`` files under ``appliance/i18n/locale/<lang>/LC_MESSAGES/``;
they are compiled in memory when first used, so no compiled ``.mo`` file is needed (and none
can go stale). ``python -m appliance.i18n.extract`` extracts the English source strings
(``appliance/**.py`` and ``kiosk/templates``, see ``babel.cfg``) into ``messages.pot`` and
merges them into each language's ``.po``.

Strings are marked in Python with ``N_()`` (mark now, translate at display time) or with a
``gettext``/``ngettext`` call on the object ``get_translations(lang)`` returns.

The translations are a draft by the engineering team. Clinical terms carry the translator comment
"needs review by a native-speaking clinician" (and the fuzzy flag where the English should be
shown until then); ``glossary.csv`` lists every clinical term in English, Amharic and Afaan
Oromo with its status: ``needs review``, ``draft`` (translator confident, not yet signed off),
``international term`` (kept in English, as clinicians use it), ``fuzzy`` (not shown yet) or
``reviewed`` (signed off by a native-speaking clinician; then the comment is removed).

Errors a user meets are English ``UserError`` sentences; ``error_text(exc, lang)`` shows them
in the user's language. Sentences with variable parts raise ``TranslatableError`` so the
catalogue holds one msgid with ``%(name)s`` fields instead of one English sentence per value.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from babel.support import NullTranslations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
# Language code -> its own name (what a nurse looks for on the language switch).
LANGUAGES = {
    "en": "English",
    "am": "አማርኛ",
    "om": "Afaan Oromoo",
}
DEFAULT_LANGUAGE = "en"
# Languages that have a catalogue (English is the source language).
TRANSLATED_LANGUAGES = tuple(code for code in LANGUAGES if code != DEFAULT_LANGUAGE)


def N_(text: str) -> str:
    """Mark a string for extraction without translating it now (gettext's N_ convention)."""
    return text


def language(code: str | None) -> str:
    """A supported language code for ``code`` ("am", "am-ET", "om_ET" ...), else the default."""
    if code:
        base = code.replace("_", "-").split("-")[0].strip().lower()
        if base in LANGUAGES:
            return base
    return DEFAULT_LANGUAGE


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=None)
def get_translations(lang: str) -> "NullTranslations":
    """gettext-style translations for ``lang``; English (the source language) is the identity.

    Entries flagged fuzzy in the catalogue are not used: the English source is shown instead.
    """
    # Babel is imported here, not at module level: the store imports the name keys of this
    # package, and CLI commands that never translate should not pay for it.
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import NullTranslations, Translations

    po = catalogue_path(lang)
    if lang == DEFAULT_LANGUAGE or not po.is_file():
        return NullTranslations()
    with open(po, "rb") as fh:
        catalog = read_po(fh, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


class TranslatableError(UserError):
    """A ``UserError`` whose sentences are catalogue msgids with ``%(name)s`` fields.

    ``message``/``hint`` hold the English text with the fields filled in (what the CLI prints);
    ``msgid``, ``hint_msgid`` and ``fields`` let ``error_text`` translate it for the kiosk.
    Mark both sentences with ``N_()`` at the raise site so extraction finds them.
    """

    def __init__(self, message: str, hint: str | None = None, **fields):
        self.msgid = message
        self.hint_msgid = hint
        self.fields = fields
        super().__init__(_fill(message, fields), _fill(hint, fields) if hint else hint)


@lru_cache(maxsize=None)
def translatable(base: type) -> type:
    """``base`` (a ``UserError`` subclass such as ``BadImage`` or ``NotFound``) with the
    sentences of a ``TranslatableError``: ``raise translatable(BadImage)(N_("… %(x)s …"), N_(hint), x=…)``
    is still caught as a ``BadImage`` and is shown translated by ``error_text``."""
    if issubclass(base, TranslatableError):
        return base
    return type(base.__name__, (TranslatableError, base), {"__module__": base.__module__, "__doc__": base.__doc__})


def _fill(text: str, fields: dict) -> str:
    return text % fields if fields else text


def error_text(exc: UserError, lang: str) -> tuple[str, str | None]:
    """The error's sentence and hint in ``lang`` (English where the catalogue has no translation)."""
    t = get_translations(language(lang))
    if isinstance(exc, TranslatableError):
        message = _fill(t.gettext(exc.msgid), exc.fields)
        hint = _fill(t.gettext(exc.hint_msgid), exc.fields) if exc.hint_msgid else None
        return message, hint
    message = t.gettext(exc.message) if exc.message else exc.message
    return message, (t.gettext(exc.hint) if exc.hint else None)
