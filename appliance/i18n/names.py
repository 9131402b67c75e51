"""Search keys for patient names and phone numbers, as typed by a nurse; phone validation.

Names
-----
Names may be written in Ge'ez (Ethiopic) script or in Latin letters (Amharic names in English
transliteration, Afaan Oromo in Qubee). ``name_key`` makes them comparable as typed: case,
spacing, Ethiopic and Latin punctuation and accents do not matter, and by default a *search
folding* merges spellings that people use interchangeably for the same sound:

- Ethiopic homophones: ሀ/ሐ/ኀ (and their 4th order ሃ/ሓ/ኃ), ሰ/ሠ, አ/ዐ (and ኣ/ዓ), ጸ/ፀ, ው/ዉ,
  so ኃይሌ, ሀይሌ and ሃይሌ find one another;
- labialised syllables and their spelled-out form: ሏ = ሉዋ, ጓ = ጉዋ, ቋ = ቁዋ, ኳ = ኩዋ;
- Latin: accents, the apostrophe (Afaan Oromo's hudhaa: Bu'aa = Buaa) and doubled letters
  (Gammachuu = Gamachu, Kebbede = Kebede), which transliterations write either way.

The folding is for search keys only: names are stored and shown exactly as typed.
Cross-script matching (አበበ = Abebe) is not attempted: transliteration is too ambiguous to
promise it.

Phones
------
Ethiopian numbers have a 9-digit national significant number: mobile 9… (Ethio Telecom) and
7… (Safaricom), 8… is reserved for a third mobile operator; landlines start with a two-digit
area code 11…58 (011 Addis Ababa, 047 Jimma). People write them +251 9…, 251 9…, 00251 9…,
09…, 07… or 9…, with spaces, dashes or dots. ``parse_phone`` validates and normalises them
(``+251911234567``); ``phone_key`` is the forgiving search key for full or partial input.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import N_, TranslatableError

# Word separators: white space, Ethiopic wordspace ፡ and punctuation ። ፣ ፤ ፥ ፦, Latin punctuation.
_SEPARATORS = re.compile(r"[\s\u1361-\u1368\-_.,;:/()\[\]]+")
# Apostrophes join (Bu'aa, O'Brien): Latin ', typographic ’ ‘, modifier letter ʼ, backtick.
_APOSTROPHES = re.compile(r"['\u2019\u2018\u02bc`´]")
_DOUBLED_LATIN = re.compile(r"([a-z])\1+")


# -- Ethiopic search folding --------------------------------------------------------------
# The Ethiopic block is laid out in rows of eight: a consonant's seven vowel orders at
# base+0..6 (ä u i a e ə o) and, for most consonants, its labialised "wa" form at base+7.
# The labiovelars (ቈ ኈ ኰ ጐ ...) have their own row after their consonant: wä, -, wi, wa, we, wə.
_W_SYLLABLES = {0: "\u12c8", 2: "\u12ca", 3: "\u12cb", 4: "\u12cc", 5: "\u12cd"}   # ወ ዊ ዋ ዌ ው
_LABIOVELAR_ROWS = {0x1248: 0x1240, 0x1258: 0x1250, 0x1288: 0x1280,   # ቈ←ቀ  ቘ←ቐ  ኈ←ኀ
                    0x12B0: 0x12A8, 0x12C0: 0x12B8, 0x1310: 0x1308}   # ኰ←ከ  ዀ←ኸ  ጐ←ገ
# Consonant rows that sound alike in Amharic -> the row search keys use.
_HOMOPHONE_ROWS = {0x1210: 0x1200, 0x1280: 0x1200,   # ሐ, ኀ -> ሀ
                   0x1220: 0x1230,                   # ሠ -> ሰ
                   0x12D0: 0x12A0,                   # ዐ -> አ
                   0x1340: 0x1338}                   # ፀ -> ጸ
# Rows whose 1st and 4th orders are both read "a" (ሀ/ሃ, አ/ኣ).
_GUTTURAL_ROWS = (0x1200, 0x12A0)


def _expand_labialised(ch: str) -> str:
    cp = ord(ch)
    row, order = cp & ~7, cp & 7
    if row in _LABIOVELAR_ROWS and order in _W_SYLLABLES:
        return chr(_LABIOVELAR_ROWS[row] + 1) + _W_SYLLABLES[order]
    if order == 7 and unicodedata.name(ch, "").endswith("WA") and "GLOTTAL" not in unicodedata.name(ch):
        return chr(row + 1) + _W_SYLLABLES[3]          # ሏ -> ሉዋ
    return ch


def _fold_syllable(ch: str) -> str:
    cp = ord(ch)
    row, order = cp & ~7, cp & 7
    if row in _HOMOPHONE_ROWS and order < 7:
        row = _HOMOPHONE_ROWS[row]
    if row in _GUTTURAL_ROWS and order == 3:
        order = 0
    if cp == 0x12C9:                                   # ዉ -> ው
        return "\u12cd"
    return chr(row + order) if order < 7 else ch


def _ethiopic_fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(0x1200, 0x1380):
        ch = chr(cp)
        if not unicodedata.name(ch, "").startswith("ETHIOPIC SYLLABLE"):
            continue
        folded = "".join(_fold_syllable(c) for c in _expand_labialised(ch))
        if folded != ch:
            table[cp] = folded
    return table


_ETHIOPIC_FOLD = _ethiopic_fold_table()


def _fold_latin(text: str) -> str:
    # ASCII has nothing to strip (most names: the store folds every name at start-up).
    stripped = text if text.isascii() else "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    # NFKD would split nothing in Ethiopic (it has no decompositions), so recomposing is safe.
    return _DOUBLED_LATIN.sub(r"\1", unicodedata.normalize("NFC", stripped))


def name_key(name: str, *, fold: bool = True) -> str:
    """The search key of a name: lower case, one space between words, no punctuation.

    With ``fold`` (the default) spelling variants fold together as described in the module
    docstring; ``fold=False`` keeps every letter as typed (only case and spacing change).
    """
    text = unicodedata.normalize("NFKC", name or "").casefold()
    text = _APOSTROPHES.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    if fold:
        text = _fold_latin(text.translate(_ETHIOPIC_FOLD))
    return " ".join(text.split())


def name_tokens(name: str) -> list[str]:
    return name_key(name).split()


def match_name(text: str, table: dict[str, int], *, min_prefix: int = 3) -> int | None:
    """The value in ``table`` (keyed by ``name_key``) named by ``text``: an exact key, or the one
    entry that starts with at least ``min_prefix`` typed letters ("Mes" for Meskerem). Else ``None``."""
    key = name_key(text)
    if not key:
        return None
    if key in table:
        return table[key]
    if len(key) >= min_prefix:
        found = {value for k, value in table.items() if k.startswith(key)}
        if len(found) == 1:
            return found.pop()
    return None


# -- phones ---------------------------------------------------------------------------------
COUNTRY_CODE = "251"
NATIONAL_DIGITS = 9
_PHONE_ALLOWED = re.compile(r"^\+?[\d\s\-.()/]*$")
_EXAMPLE = "0911 234 567"


class BadPhone(TranslatableError):
    """A phone number that is not a valid Ethiopian (or international) number."""


@dataclass(frozen=True)
class PhoneNumber:
    """A validated number. ``national`` is the 9-digit Ethiopian number without the trunk 0;
    for a foreign number ``country`` is empty and ``national`` holds all its digits."""

    national: str
    country: str = COUNTRY_CODE

    @property
    def kind(self) -> str:
        if self.country != COUNTRY_CODE:
            return "foreign"
        return "mobile" if self.national[0] in "789" else "landline"

    @property
    def e164(self) -> str:
        return f"+{self.country}{self.national}"

    def _groups(self) -> str:
        n = self.national
        if self.kind == "mobile":
            return f"{n[:3]} {n[3:6]} {n[6:]}"
        return f"{n[:2]} {n[2:5]} {n[5:]}"

    def national_format(self) -> str:
        """As written in Ethiopia: ``0911 234 567`` (mobile), ``011 123 4567`` (landline)."""
        return self.e164 if self.kind == "foreign" else f"0{self._groups()}"

    def international_format(self) -> str:
        """``+251 911 234 567``, ``+251 11 123 4567``."""
        return self.e164 if self.kind == "foreign" else f"+{self.country} {self._groups()}"


def _ascii_digits(text: str) -> str:
    """The digits of ``text`` as ASCII, whatever script they were typed in (٠١٢, ０１２)."""
    if text.isascii():
        return "".join(ch for ch in text if ch.isdigit())
    out = []
    for ch in text:
        value = unicodedata.decimal(ch, None)
        if value is not None:
            out.append(str(value))
    return "".join(out)


def parse_phone(text: str) -> PhoneNumber:
    """Validate a phone number as typed; raises ``BadPhone`` with a sentence a nurse understands."""
    raw = unicodedata.normalize("NFKC", text or "").strip()
    if not raw:
        raise BadPhone(N_("Enter a phone number."), N_("For example 0911 234 567."))
    if not _PHONE_ALLOWED.match(raw):
        raise BadPhone(N_("A phone number can only contain digits, spaces, dashes and a + at the start."),
                       N_("For example 0911 234 567 or +251 911 234 567."))
    digits = _ascii_digits(raw)
    international = raw.startswith("+") or digits.startswith("00")
    if international:
        digits = digits[2:] if not raw.startswith("+") else digits
        if not digits.startswith(COUNTRY_CODE):
            if not 8 <= len(digits) <= 15 or digits[0] == "0":
                raise BadPhone(N_("The phone number %(number)s is not a valid international number."),
                               N_("Write an Ethiopian number like 0911 234 567, or a foreign one with its country code."),
                               number=raw)
            return PhoneNumber(national=digits, country="")
        national = digits[len(COUNTRY_CODE):]
        if len(national) == NATIONAL_DIGITS + 1 and national.startswith("0"):
            national = national[1:]                    # "+251 (0)911 …"
    elif digits.startswith(COUNTRY_CODE) and len(digits) == len(COUNTRY_CODE) + NATIONAL_DIGITS:
        national = digits[len(COUNTRY_CODE):]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        national = digits
    if len(national) < NATIONAL_DIGITS:
        raise BadPhone(N_("The phone number %(number)s has too few digits."),
                       N_("Ethiopian numbers have 10 digits with the first 0, for example 0911 234 567."),
                       number=raw)
    if len(national) > NATIONAL_DIGITS:
        raise BadPhone(N_("The phone number %(number)s has too many digits."),
                       N_("Ethiopian numbers have 10 digits with the first 0, for example 0911 234 567."),
                       number=raw)
    if national[0] not in "12345789":
        raise BadPhone(N_("The phone number %(number)s does not start like an Ethiopian number."),
                       N_("Mobile numbers start with 09 or 07 (0911 234 567); landlines with their area code, such as 011 or 047."),
                       number=raw)
    return PhoneNumber(national=national)


def normalize_phone(text: str) -> str:
    """The number to store: ``+251911234567``; empty text stays empty (the phone is optional)."""
    if not (text or "").strip():
        return ""
    return parse_phone(text).e164


def format_phone(stored: str, *, international: bool = False) -> str:
    """A stored number for display (``0911 234 567``); text that is not a valid number is shown as is."""
    if not (stored or "").strip():
        return ""
    try:
        number = parse_phone(stored)
    except BadPhone:
        return stored
    return number.international_format() if international else number.national_format()


def phone_key(phone: str) -> str:
    """Search key: the Ethiopian national number without the trunk 0 (``911234567``), or a part of it.

    Forgiving: it never raises, and works on what a nurse has typed so far ("0911 23" -> "91123",
    "+251 91" -> "91"). Foreign numbers keep all their digits.
    """
    raw = unicodedata.normalize("NFKC", phone or "").strip()
    digits = _ascii_digits(raw)
    if raw.startswith("+") or digits.startswith("00"):
        digits = digits if raw.startswith("+") else digits[2:]
        if digits.startswith(COUNTRY_CODE):
            digits = digits[len(COUNTRY_CODE):]
    elif digits.startswith(COUNTRY_CODE) and (len(digits) > NATIONAL_DIGITS or digits[3:4] in ("7", "9")):
        # 251 9…/251 7… is the country code before a mobile number; a 9-digit 251… is a
        # Harar/Dire Dawa landline (025 1…), so it keeps its digits.
        digits = digits[len(COUNTRY_CODE):]
    if digits.startswith("0"):
        digits = digits[1:]
    return digits
