"""DHIS2 period ids for a day: Gregorian months, or Ethiopian-calendar months.

``gregorian_monthly``: ``yyyyMM`` of the Gregorian month (2026-11-05 -> ``202611``), DHIS2's ISO
monthly period.

``ethiopian_monthly``: ``yyyyMM`` of the Ethiopian year and month, as a DHIS2 instance whose
calendar is Ethiopian names its monthly periods (DHIS2's multi-calendar-dates library builds the
id from the calendar's own year and month; 1 Meskerem 2018 E.C. = 11 September 2025 -> ``201801``).
DHIS2's Ethiopian calendar has twelve monthly periods: it has no period for Pagume, the 5 or
6 days of the thirteenth month. Where those days go is a setting of the mapping file
(``[dhis2] pagume``): ``"nehase"`` counts them in Nehase, month 12 of the same year (the
default), ``"meskerem"`` in Meskerem, month 1 of the next year. Ask the national HMIS team which
one their instance expects; docs/supervisor-dhis2.md says how to check.
"""
from __future__ import annotations

from datetime import date

from ..i18n.ethiopian_calendar import PAGUME, EthiopianDate

GREGORIAN_MONTHLY, ETHIOPIAN_MONTHLY = "gregorian_monthly", "ethiopian_monthly"
PERIOD_TYPES = (GREGORIAN_MONTHLY, ETHIOPIAN_MONTHLY)
PAGUME_TO_NEHASE, PAGUME_TO_MESKEREM = "nehase", "meskerem"
PAGUME_CHOICES = (PAGUME_TO_NEHASE, PAGUME_TO_MESKEREM)


def period_of_day(day: str | date, period_type: str = GREGORIAN_MONTHLY, pagume: str = PAGUME_TO_NEHASE) -> str:
    """The DHIS2 monthly period id of ``day`` (an ISO date, or the first 10 characters of a time)."""
    if isinstance(day, str):
        if period_type == GREGORIAN_MONTHLY:
            return day[0:4] + day[5:7]
        day = date.fromisoformat(day[:10])
    if period_type == GREGORIAN_MONTHLY:
        return f"{day.year:04d}{day.month:02d}"
    if period_type != ETHIOPIAN_MONTHLY:
        raise ValueError(f"unknown period type {period_type!r}")
    eth = EthiopianDate.from_gregorian(day)
    year, month = eth.year, eth.month
    if month == PAGUME:
        if pagume == PAGUME_TO_NEHASE:
            month = 12
        elif pagume == PAGUME_TO_MESKEREM:
            year, month = year + 1, 1
        else:
            raise ValueError(f"unknown Pagume choice {pagume!r}")
    return f"{year:04d}{month:02d}"


class PeriodOf:
    """``period_of_day`` with a cache per day (ten years of visits fall on a few thousand days)."""

    def __init__(self, period_type: str = GREGORIAN_MONTHLY, pagume: str = PAGUME_TO_NEHASE):
        self.period_type, self.pagume = period_type, pagume
        self._days: dict[str, str] = {}

    def __call__(self, day: str) -> str:
        day = day[:10]
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = period_of_day(day, self.period_type, self.pagume)
        return found
