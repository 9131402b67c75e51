"""Dates as people see and enter them: Gregorian or Ethiopian calendar, per user setting.

Every date is *stored* as one unambiguous Gregorian ISO date (``2024-09-11``) or UTC
timestamp; the calendar is only a way of showing and typing it. ``format_date`` shows a stored
date in the user's language and calendar (optionally with the other calendar beside it, for the
print page); ``parse_date`` and ``date_from_parts`` read what a nurse typed or picked.

Entry accepts, in the chosen calendar:
- day/month/year numbers: ``1/1/2017``, ``01-01-2017``, ``1.1.2017`` (day first, as written in
  Ethiopia, never the US month-first order), or year first: ``2017-01-01``;
- a month name in English, Amharic or Afaan Oromo: ``1 Meskerem 2017``, ``መስከረም 1 2017``,
  ``Fulbaana 1, 2017``, ``Sep 11 2024``;
- a calendar mark, which wins over the setting: ``E.C.``, ``ዓ.ም.``, ``ALH``/``ALI`` (Ethiopian);
  ``G.C.``, ``እ.ኤ.አ.``, ``ALA`` (Gregorian).
"""
from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from functools import lru_cache

from .. import clock
from . import N_, TranslatableError, get_translations, language
from .ethiopian_calendar import BadEthiopianDate, EthiopianDate
from .ethiopian_calendar import days_in_month as _ethiopian_days_in_month
from .ethiopian_calendar import month_name as _ethiopian_month_name
from .ethiopian_calendar import parse_month as _parse_ethiopian_month
from .names import match_name, name_key

GREGORIAN = "gregorian"
ETHIOPIAN = "ethiopian"
CALENDARS = {GREGORIAN: N_("Gregorian calendar"), ETHIOPIAN: N_("Ethiopian calendar")}
# Oldest plausible date of birth, in years before today.
MAX_AGE_YEARS = 120

# TRANSLATORS: an Ethiopian-calendar date written out; keep the fields, reorder them as your language does.
_EC_LONG = N_("%(day)d %(month)s %(year)d E.C.")
# TRANSLATORS: an Ethiopian-calendar date in numbers (day/month/year).
_EC_SHORT = N_("%(day)02d/%(month_number)02d/%(year)d E.C.")
# TRANSLATORS: a Gregorian date (already formatted) marked as Gregorian, shown beside an Ethiopian one.
_GC_MARKED = N_("%(date)s G.C.")
# TRANSLATORS: a date in the user's calendar followed by the same date in the other calendar.
_BOTH = N_("%(date)s (%(other)s)")

_ETHIOPIAN_MARK = re.compile(r"(?<!\w)(?:e\.?\s?c\.?|ዓ\.?\s?ም\.?|ዓ/ም|ዓመተ\s+ምሕረት|a\.?l\.?[ih]\.?)(?!\w)",
                             re.IGNORECASE)
_GREGORIAN_MARK = re.compile(r"(?<!\w)(?:g\.?\s?c\.?|እ\.?\s?ኤ\.?\s?አ\.?|a\.?l\.?a\.?|a\.?d\.?)(?!\w)",
                             re.IGNORECASE)
# Words around a date that carry nothing: Amharic ቀን ("day"), Oromo "bara" ("year").
_FILLER_WORDS = {name_key("ቀን"), "bara", "guyyaa"}


class BadDate(TranslatableError):
    """A date that cannot be read or does not exist."""


def _check_calendar(calendar: str) -> str:
    if calendar not in CALENDARS:
        raise ValueError(f"unknown calendar {calendar!r}; expected one of {', '.join(CALENDARS)}")
    return calendar


# -- reading stored values -------------------------------------------------------------------
def local_date(value) -> _dt.date:
    """The calendar day of ``value`` on this box.

    ``value`` is a ``date``, a ``datetime`` or stored text: an ISO date (``2024-09-11``) or a UTC
    timestamp (``2026-11-26T08:30:00.123Z``), which is converted to the box's local time first
    (an exam at 22:30 UTC is the next day in Ethiopia, UTC+3).
    """
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        return moment.astimezone().date()
    if isinstance(value, _dt.date):
        return value
    text = str(value).strip()
    if len(text) == 10:
        return _dt.date.fromisoformat(text)
    return local_date(_dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


# -- display ---------------------------------------------------------------------------------
def format_date(value, lang: str = "en", calendar: str = GREGORIAN, *, style: str = "long",
                both: bool = False) -> str:
    """A stored date (or timestamp) for display in ``lang`` and ``calendar``.

    ``style``: ``"long"`` (month names) or ``"short"`` (numbers). ``both``: add the date in the
    other calendar in parentheses, e.g. ``1 Meskerem 2017 E.C. (September 11, 2024 G.C.)``.
    An empty value (no date recorded) gives an empty string.
    """
    if value is None or value == "":
        return ""
    lang = language(lang)
    _check_calendar(calendar)
    day = local_date(value)
    main = _format_one(day, lang, calendar, style, marked=both)
    if not both:
        return main
    other = _format_one(day, lang, ETHIOPIAN if calendar == GREGORIAN else GREGORIAN, style, marked=True)
    return get_translations(lang).gettext(_BOTH) % {"date": main, "other": other}


def format_datetime(value, lang: str = "en", calendar: str = GREGORIAN, *, both: bool = False) -> str:
    """A stored UTC timestamp as the box's local day (short style) and clock time, ``Nov 26, 2026 14:30``;
    ``both`` adds the day in the other calendar: ``17/03/2019 E.C. 14:30 (Nov 26, 2026 G.C.)``."""
    if value is None or value == "":
        return ""
    lang = language(lang)
    _check_calendar(calendar)
    day = local_date(value)
    main = f"{_format_one(day, lang, calendar, 'short', marked=both)} {format_time_of_day(value)}"
    if not both:
        return main
    other = _format_one(day, lang, ETHIOPIAN if calendar == GREGORIAN else GREGORIAN, "short", marked=True)
    return get_translations(lang).gettext(_BOTH) % {"date": main, "other": other}


def _format_one(day: _dt.date, lang: str, calendar: str, style: str, marked: bool) -> str:
    t = get_translations(lang)
    if calendar == ETHIOPIAN:
        ec = EthiopianDate.from_gregorian(day)
        if style == "short":
            return t.gettext(_EC_SHORT) % {"day": ec.day, "month_number": ec.month, "year": ec.year}
        return t.gettext(_EC_LONG) % {"day": ec.day, "month": ec.month_name(lang), "year": ec.year}
    from babel.dates import format_date as _babel_format_date   # here: the store imports this module
    text = _babel_format_date(day, "medium" if style == "short" else "long", locale=lang)
    return t.gettext(_GC_MARKED) % {"date": text} if marked else text


def entry_text(value, calendar: str = GREGORIAN) -> str:
    """A stored date as a nurse types it into a date field in ``calendar``: ``dd/mm/yyyy``.

    It reads back with ``parse_date(text, calendar)``; an empty value gives an empty string.
    """
    if value is None or value == "":
        return ""
    day = local_date(value)
    if _check_calendar(calendar) == ETHIOPIAN:
        ec = EthiopianDate.from_gregorian(day)
        return f"{ec.day:02d}/{ec.month:02d}/{ec.year:04d}"
    return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"


def format_time_of_day(value) -> str:
    """The box's local time of a stored UTC timestamp, ``14:30`` (24-hour clock, any calendar).

    The Ethiopian 12-hour day (counted from 6 a.m.) is not used: clinical records in Ethiopia
    write the international clock, and one convention avoids a 6-hour misreading.
    """
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    else:
        moment = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return moment.astimezone().strftime("%H:%M")


def calendar_name(calendar: str, lang: str = "en") -> str:
    return get_translations(language(lang)).gettext(CALENDARS[_check_calendar(calendar)])


def month_choices(calendar: str, lang: str = "en") -> list[tuple[int, str]]:
    """(number, name) of the months for a month picker: 12 Gregorian or 13 Ethiopian."""
    lang = language(lang)
    if _check_calendar(calendar) == ETHIOPIAN:
        return [(m, _ethiopian_month_name(m, lang)) for m in range(1, 14)]
    from babel.dates import get_month_names
    return [(m, name) for m, name in get_month_names("wide", locale=lang).items()]


def days_in_month(calendar: str, year: int, month: int) -> int:
    if _check_calendar(calendar) == ETHIOPIAN:
        return _ethiopian_days_in_month(year, month)
    if not 1 <= month <= 12:
        raise BadDate(N_("There is no month %(month)d in the Gregorian calendar."),
                      N_("Gregorian months are numbered 1 to 12."), month=month)
    next_month = _dt.date(year + month // 12, month % 12 + 1, 1)
    return (next_month - _dt.timedelta(days=1)).day


# -- entry -----------------------------------------------------------------------------------
def date_from_parts(calendar: str, year: int, month: int, day: int) -> _dt.date:
    """The Gregorian date of day/month/year picked in ``calendar``; ``BadDate`` if it does not exist."""
    if _check_calendar(calendar) == ETHIOPIAN:
        try:
            return EthiopianDate(year, month, day).to_gregorian()
        except BadEthiopianDate as exc:
            raise BadDate(exc.msgid, exc.hint_msgid, **exc.fields) from None
    if not 1 <= year <= 9999:
        raise BadDate(N_("The year %(year)d is out of range."),
                      N_("Write the year with four digits, for example 2024."), year=year)
    last = days_in_month(GREGORIAN, year, month)
    if not 1 <= day <= last:
        raise BadDate(N_("Month %(month)d of %(year)d has only %(days)d days."),
                      N_("Check the day of the month."), month=month, year=year, days=last)
    return _dt.date(year, month, day)


@lru_cache(maxsize=None)
def _gregorian_months() -> dict[str, int]:
    from babel.dates import get_month_names
    table: dict[str, int] = {}
    for lang in ("en", "am", "om"):
        for width in ("wide", "abbreviated"):
            for number, name in get_month_names(width, locale=lang).items():
                table[name_key(name)] = number
    table[name_key("Sept")] = 9
    return table


def _parse_gregorian_month(text: str) -> int | None:
    return match_name(text, _gregorian_months())


def parse_date(text: str, calendar: str = GREGORIAN) -> _dt.date:
    """The Gregorian date of what a nurse typed, read in ``calendar`` (see the module docstring)."""
    _check_calendar(calendar)
    raw = unicodedata.normalize("NFKC", text or "").strip()
    if not raw:
        raise BadDate(N_("Enter a date."), N_("Write the day, the month and the year, for example 1/1/2017."))
    if _ETHIOPIAN_MARK.search(raw):
        calendar, raw = ETHIOPIAN, _ETHIOPIAN_MARK.sub(" ", raw)
    elif _GREGORIAN_MARK.search(raw):
        calendar, raw = GREGORIAN, _GREGORIAN_MARK.sub(" ", raw)
    # Split digits from letters ("1Meskerem") and on separators; drop filler words.
    tokens = [t for t in name_key(re.sub(r"(\d)(\D)|(\D)(\d)", r"\1\3 \2\4", raw)).split()
              if t not in _FILLER_WORDS]
    numbers: list[str] = []
    month: int | None = None
    parse_month = _parse_ethiopian_month if calendar == ETHIOPIAN else _parse_gregorian_month
    for token in tokens:
        digits = "".join(str(unicodedata.decimal(c)) for c in token if unicodedata.decimal(c, None) is not None)
        if digits and len(digits) == len(token):
            numbers.append(digits)
            continue
        found = parse_month(token)
        if found is None or month is not None:
            raise BadDate(N_("“%(text)s” is not a date that can be read."),
                          N_("Write the day, the month and the year, for example 1/1/2017."), text=text.strip())
        month = found
    if month is not None and len(numbers) == 2:
        year_first = len(numbers[0]) == 4
        year, day = (numbers[0], numbers[1]) if year_first else (numbers[1], numbers[0])
        parts = (year, str(month), day)
    elif month is None and len(numbers) == 3:
        parts = (numbers[0], numbers[1], numbers[2]) if len(numbers[0]) == 4 else (numbers[2], numbers[1], numbers[0])
    else:
        raise BadDate(N_("“%(text)s” is not a date that can be read."),
                      N_("Write the day, the month and the year, for example 1/1/2017."), text=text.strip())
    if len(parts[0]) != 4:
        raise BadDate(N_("Write the year of “%(text)s” with four digits."),
                      N_("For example 1/1/2017, not 1/1/17."), text=text.strip())
    year, month_number, day = (int(p) for p in parts)
    return date_from_parts(calendar, year, month_number, day)


def check_past_date(value: _dt.date, *, today: _dt.date | None = None, max_years: int = MAX_AGE_YEARS,
                    text: str | None = None) -> _dt.date:
    """``value`` if it is a plausible date of birth or exam: not in the future, not absurdly old.

    ``text`` is what the user typed; the message quotes it (else the ISO date).
    """
    today = today or clock.today()
    shown = text.strip() if text else value.isoformat()
    if value > today:
        raise BadDate(N_("The date %(date)s is in the future."),
                      N_("Check the year: in the Ethiopian calendar it is 7 or 8 less than in the Gregorian one."),
                      date=shown)
    if value < _dt.date(today.year - max_years, 1, 1):
        raise BadDate(N_("The date %(date)s is more than %(years)d years ago."),
                      N_("Check the year: in the Ethiopian calendar it is 7 or 8 less than in the Gregorian one."),
                      date=shown, years=max_years)
    return value
