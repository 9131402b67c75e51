"""Age from a date of birth or from an approximate age, for display and for statistics.

Many patients know their age only roughly ("about 45"), and then the store keeps exactly that
(``age_years``) instead of an invented birth date. An approximate age was true on the day it
was recorded, so the age at a later exam adds the years since then (``recorded_at``: the
patient record's ``created_at``, or whenever ``age_years`` was last set).
"""
from __future__ import annotations

import datetime as _dt
import re
from bisect import bisect_right
import unicodedata
from dataclasses import dataclass

from . import N_, TranslatableError, get_translations, language
from .dates import MAX_AGE_YEARS, local_date

# Lower bounds of the statistics age groups: <20, 20-29, ..., 60-69, 70+.
AGE_GROUP_BOUNDS = (20, 30, 40, 50, 60, 70)
UNKNOWN_AGE_GROUP = "unknown"


def _age_group_keys() -> tuple[str, ...]:
    keys = [f"<{AGE_GROUP_BOUNDS[0]}"]
    keys += [f"{lo}-{hi - 1}" for lo, hi in zip(AGE_GROUP_BOUNDS, AGE_GROUP_BOUNDS[1:])]
    keys.append(f"{AGE_GROUP_BOUNDS[-1]}+")
    return tuple(keys)


# Every age group key in display order, "unknown" last (statistics list all of them).
AGE_GROUPS = _age_group_keys() + (UNKNOWN_AGE_GROUP,)


class BadAge(TranslatableError):
    """An approximate age that cannot be read or is not plausible."""


@dataclass(frozen=True)
class Age:
    years: int
    approximate: bool = False


def _whole_years(start: _dt.date, end: _dt.date) -> int:
    return end.year - start.year - ((end.month, end.day) < (start.month, start.day))


def age_at(on, *, birth_date=None, age_years: int | None = None, recorded_at=None) -> Age | None:
    """The patient's age on ``on`` (a date or stored timestamp), or ``None`` when nothing is known.

    A birth date wins over an approximate age. Dates may be ``date`` objects or stored text.
    """
    day = local_date(on)
    if birth_date:
        return Age(max(_whole_years(local_date(birth_date), day), 0))
    if age_years is None or age_years == "":
        return None
    years = int(age_years)
    if recorded_at:
        years += max(_whole_years(local_date(recorded_at), day), 0)
    return Age(max(years, 0), approximate=True)


def age_group(age: Age | int | None) -> str:
    """The statistics group of an age: ``"<20"``, ``"20-29"`` … ``"70+"``, or ``"unknown"``."""
    if age is None:
        return UNKNOWN_AGE_GROUP
    years = age.years if isinstance(age, Age) else int(age)
    if years < 0:
        return UNKNOWN_AGE_GROUP
    # bisect: the store groups every exam of a big statistics run through here.
    return AGE_GROUPS[bisect_right(AGE_GROUP_BOUNDS, years)]


def age_group_at(on, *, birth_date=None, age_years: int | None = None, recorded_at=None) -> str:
    """Shortcut for statistics: the age group at an exam from whatever the patient record holds."""
    return age_group(age_at(on, birth_date=birth_date, age_years=age_years, recorded_at=recorded_at))


def age_group_label(key: str, lang: str = "en") -> str:
    if key == UNKNOWN_AGE_GROUP:
        return get_translations(language(lang)).gettext(N_("Age unknown"))
    return key.replace("-", "–")


def format_age(age: Age | int, lang: str = "en") -> str:
    """``45 years``, or ``about 45 years`` for an approximate age, in ``lang``."""
    if not isinstance(age, Age):
        age = Age(int(age))
    t = get_translations(language(lang))
    n = age.years
    if age.approximate:
        text = t.ngettext("about %(num)d year", "about %(num)d years", n)
    else:
        text = t.ngettext("%(num)d year", "%(num)d years", n)
    return text % {"num": n}


def parse_age_years(text: str) -> int:
    """An approximate age as typed: ``45``, ``about 45``, ``45 years``, ``45 ዓመት``, ``waggaa 45``."""
    raw = unicodedata.normalize("NFKC", text or "").strip()
    numbers = re.findall(r"\d+", raw)
    if not raw:
        raise BadAge(N_("Enter the age in years."), N_("For example 45."))
    if len(numbers) != 1:
        raise BadAge(N_("“%(text)s” is not an age in years."), N_("Write one number, for example 45."), text=raw)
    years = int(numbers[0])
    if not 0 <= years <= MAX_AGE_YEARS:
        raise BadAge(N_("An age of %(years)d years is not plausible."),
                     N_("Write the age in years, from 0 to %(max)d."), years=years, max=MAX_AGE_YEARS)
    return years
