"""The Ethiopian calendar (Amete Mihret era, "E.C.") and its conversion to and from the Gregorian one.

The Ethiopian year has twelve months of 30 days and a thirteenth month, Pagume, of 5 days, or
6 in a leap year. A year is a leap year when ``year % 4 == 3`` (2011, 2015, 2019 E.C.), without
the Gregorian century exceptions; the year after a leap year starts on 12 September instead of
11 September (1 Meskerem 2016 = 12 September 2023).

Conversion goes through the Julian Day Number (JDN): 1 Meskerem 1 E.C. is JDN 1,724,221 (the
epoch used by the geez.org reference test data), and a Gregorian ``datetime.date`` has
``JDN = date.toordinal() + 1,721,425``. The tests check the result against published date pairs.

Month names come in Amharic (Ge'ez script), Afaan Oromo and the usual English transliteration;
``parse_month`` also accepts common spelling variants of each.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from . import N_, TranslatableError
from .names import match_name, name_key

EPOCH_JDN = 1_724_221             # 1 Meskerem 1 E.C.
GREGORIAN_ORDINAL_TO_JDN = 1_721_425
PAGUME = 13
MONTHS_PER_YEAR = 13

MONTH_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Meskerem", "Tikimt", "Hidar", "Tahsas", "Tir", "Yekatit", "Megabit",
           "Miyazya", "Ginbot", "Sene", "Hamle", "Nehase", "Pagume"),
    "am": ("መስከረም", "ጥቅምት", "ኅዳር", "ታኅሣሥ", "ጥር", "የካቲት", "መጋቢት",
           "ሚያዝያ", "ግንቦት", "ሰኔ", "ሐምሌ", "ነሐሴ", "ጳጉሜ"),
    # The Oromia regional calendar names; the first twelve are also the Oromo names of the
    # Gregorian months (Fulbaana = September), so a date shown in Afaan Oromo always carries
    # its calendar mark. "Qaammee" is the least attested of them (see glossary.csv).
    "om": ("Fulbaana", "Onkoloolessa", "Sadaasa", "Mudde", "Amajjii", "Guraandhala", "Bitootessa",
           "Eebila", "Caamsaa", "Waxabajjii", "Adoolessa", "Hagayya", "Qaammee"),
}

# Other spellings people write. Ge'ez spelling variants (ህዳር/ሕዳር/ኅዳር, ታህሳስ, ነሃሴ) need no
# entry here: month names are compared through the same folding as patient-name search.
_MONTH_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("Meskerem", "Meskeram", "Mäskäräm", "Maskaram"),
    ("Tikimt", "Tekemt", "Tiqimt", "Tikemt", "Teqemt"),
    ("Hidar", "Hedar", "Hidaar", "Khidar"),
    ("Tahsas", "Tahisas", "Tahesas", "Tahasas", "Thahisas", "Takhsas"),
    ("Tir", "Ter", "T'ir", "T'er", "Tirr"),
    ("Yekatit", "Yakatit", "Yakkatit"),
    ("Megabit", "Magabit", "Megabbit"),
    ("Miyazya", "Miazia", "Miyazia", "Miyaziya", "Miyaza"),
    ("Ginbot", "Genbot", "Guenbot"),
    ("Sene", "Senei", "Säne"),
    ("Hamle", "Hamlei", "Hamley"),
    ("Nehase", "Nehasse", "Nehasie", "Nehassie", "Nahase"),
    ("Pagume", "Pagumen", "Pagumē", "Paguemen", "Puagme", "ጳጉሜን"),
)
_MONTH_OM_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("Fuulbaana",), ("Onkololeessa", "Onkoloolleessa"), (), ("Muddee",), ("Amajji",),
    ("Gurraandhala", "Guraandala"), ("Bitooteessa",), ("Ebla", "Eebla", "Ebila"), ("Camsaa",),
    ("Waxabaji",), ("Adooleessa", "Adooleessaa"), ("Hagaya",), ("Qaamee", "Qammee"),
)


class BadEthiopianDate(TranslatableError):
    """A day, month or year that does not exist in the Ethiopian calendar."""


def is_leap_year(year: int) -> bool:
    """Whether Pagume of Ethiopian ``year`` has 6 days (the year before a Gregorian leap year)."""
    return year % 4 == 3


def days_in_month(year: int, month: int) -> int:
    if not 1 <= month <= MONTHS_PER_YEAR:
        raise BadEthiopianDate(N_("There is no month %(month)d in the Ethiopian calendar."),
                               N_("Ethiopian months are numbered 1 (Meskerem) to 13 (Pagume)."),
                               month=month)
    if month < PAGUME:
        return 30
    return 6 if is_leap_year(year) else 5


@dataclass(frozen=True, order=True)
class EthiopianDate:
    """A day in the Ethiopian calendar (Amete Mihret era). Months 1-13; 13 is Pagume."""

    year: int
    month: int
    day: int

    def __post_init__(self) -> None:
        if self.year < 1:
            raise BadEthiopianDate(N_("The Ethiopian year %(year)d is out of range."),
                                   N_("Write the year with four digits, for example 2017."),
                                   year=self.year)
        last = days_in_month(self.year, self.month)
        if not 1 <= self.day <= last:
            raise BadEthiopianDate(N_("Month %(month)d of %(year)d E.C. has only %(days)d days."),
                                   N_("Check the day of the month."),
                                   month=self.month, year=self.year, days=last)

    # -- Julian Day Number -------------------------------------------------------------
    @property
    def jdn(self) -> int:
        return EPOCH_JDN - 1 + 365 * (self.year - 1) + self.year // 4 + 30 * (self.month - 1) + self.day

    @classmethod
    def from_jdn(cls, jdn: int) -> "EthiopianDate":
        # Count from 1 Meskerem of year 0, so that each four-year cycle ends with its leap
        # year (years 0, 1, 2 have 365 days, year 3 has 366).
        days = jdn - (EPOCH_JDN - 365)
        cycle, rest = divmod(days, 1461)
        year_in_cycle = min(rest // 365, 3)
        day_of_year = rest - 365 * year_in_cycle
        month, day = divmod(day_of_year, 30)
        return cls(4 * cycle + year_in_cycle, month + 1, day + 1)

    # -- Gregorian ---------------------------------------------------------------------
    @classmethod
    def from_gregorian(cls, value: _dt.date) -> "EthiopianDate":
        if isinstance(value, _dt.datetime):
            value = value.date()
        return cls.from_jdn(value.toordinal() + GREGORIAN_ORDINAL_TO_JDN)

    def to_gregorian(self) -> _dt.date:
        ordinal = self.jdn - GREGORIAN_ORDINAL_TO_JDN
        if not 1 <= ordinal <= _dt.date.max.toordinal():
            raise BadEthiopianDate(N_("The Ethiopian year %(year)d is out of range."),
                                   N_("Write the year with four digits, for example 2017."),
                                   year=self.year)
        return _dt.date.fromordinal(ordinal)

    # -- display -----------------------------------------------------------------------
    def month_name(self, lang: str = "en") -> str:
        return month_name(self.month, lang)

    def isoformat(self) -> str:
        """``YYYY-MM-DD`` of the Ethiopian date (for logs and tests; never stored as a record date)."""
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    def __str__(self) -> str:
        return f"{self.day} {self.month_name('en')} {self.year} E.C."


def to_gregorian(year: int, month: int, day: int) -> _dt.date:
    return EthiopianDate(year, month, day).to_gregorian()


def from_gregorian(value: _dt.date) -> EthiopianDate:
    return EthiopianDate.from_gregorian(value)


def month_name(month: int, lang: str = "en") -> str:
    days_in_month(3, month)  # validates the month number (year 3 has every month and day)
    return MONTH_NAMES.get(lang, MONTH_NAMES["en"])[month - 1]


def _month_lookup() -> dict[str, int]:
    table: dict[str, int] = {}
    for names in MONTH_NAMES.values():
        for number, name in enumerate(names, start=1):
            table[name_key(name)] = number
    for variants_by_month in (_MONTH_VARIANTS, _MONTH_OM_VARIANTS):
        for number, variants in enumerate(variants_by_month, start=1):
            for name in variants:
                table[name_key(name)] = number
    return table


_MONTHS_BY_KEY = _month_lookup()


def parse_month(text: str) -> int | None:
    """The Ethiopian month number (1-13) named by ``text`` in any of the three languages.

    Accepts spelling variants and, for Latin script, an unambiguous beginning of at least three
    letters ("Mes", "Yek"). ``None`` when nothing matches.
    """
    return match_name(text, _MONTHS_BY_KEY)
