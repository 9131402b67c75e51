"""Search keys for patient names and phone numbers, as typed by a nurse.

Names may be written in Ge'ez (Ethiopic) script or in Latin letters; search is
case- and spacing-insensitive. Ethiopian phone numbers are written +251 9…, 251 9…,
09… or 9…; they all give the same key.
"""
from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[\s\u1361\u1362\u1363\u1364\u1365\u1366\-_.,'\u2019]+")


def name_key(name: str) -> str:
    """Lower-case, NFC-normalised, with spaces and punctuation (Latin and Ethiopic) folded to one space."""
    text = unicodedata.normalize("NFC", name or "").casefold()
    return _SPACES.sub(" ", text).strip()


def name_tokens(name: str) -> list[str]:
    return [t for t in name_key(name).split(" ") if t]


def phone_key(phone: str) -> str:
    """Digits of an Ethiopian number in national form without the trunk 0 (e.g. '911234567').

    Numbers that are not Ethiopian mobile/landline numbers keep all their digits.
    """
    digits = re.sub(r"\D", "", phone or "")
    if digits.startswith("00251"):
        digits = digits[5:]
    elif digits.startswith("251") and len(digits) == 12:
        digits = digits[3:]
    if digits.startswith("0") and len(digits) == 10:
        digits = digits[1:]
    return digits
