"""The clinical glossary (``glossary.csv``): each term's translation and its review status.

A translated clinical term is shown alone only once a native-speaking clinician has reviewed it
(status ``reviewed``); until then the English term stands beside it — "አደገኛ (Malignant)" — so a
doubtful word is never the only thing a clinician reads. Terms the glossary keeps international
(the same word in both languages) are shown once.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

GLOSSARY = Path(__file__).resolve().parent / "glossary.csv"
# The glossary's column for each translated language.
COLUMNS = {"am": "amharic", "om": "afaan_oromo"}
REVIEWED = "reviewed"


@lru_cache(maxsize=4)
def statuses(path: Path = GLOSSARY) -> dict[tuple[str, str], str]:
    """(English term, language) -> review status, for every term and translated language."""
    out: dict[tuple[str, str], str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for lang, column in COLUMNS.items():
                out[(row["english"], lang)] = (row.get(f"{column}_status") or "").strip()
    return out


def reviewed(english: str, lang: str, *, path: Path = GLOSSARY) -> bool:
    """Whether the ``lang`` translation of ``english`` has been signed off (English always is)."""
    return lang not in COLUMNS or statuses(path).get((english, lang)) == REVIEWED


def with_english(english: str, translated: str, lang: str, *, path: Path = GLOSSARY) -> str:
    """``translated`` for display: alone when reviewed or when it is the English word itself,
    else with the English term beside it."""
    if translated == english or reviewed(english, lang, path=path):
        return translated
    return f"{translated} ({english})"
