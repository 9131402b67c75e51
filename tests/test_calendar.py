"""The Ethiopian calendar: conversion against published date pairs, entry and display, ages."""
from __future__ import annotations

import datetime as dt

import pytest

from appliance.i18n import error_text
from appliance.i18n.age import (AGE_GROUPS, Age, BadAge, age_at, age_group, age_group_at, age_group_label,
                                format_age, parse_age_years)
from appliance.i18n.dates import (BadDate, check_past_date, date_from_parts, days_in_month, format_date,
                                  local_date, month_choices, parse_date)
from appliance.i18n.ethiopian_calendar import (MONTH_NAMES, BadEthiopianDate, EthiopianDate, from_gregorian,
                                               is_leap_year, parse_month, to_gregorian)
from webutil import browser  # noqa: F401 (fixture: the system Chromium)

# (Gregorian, Ethiopian year, month, day). Sources, independent of this code:
#  [P] Perl Date::Converter / Raku Date::Calendar::CopticEthiopic conversion tests (new-year eves, Pagume);
#  [R] rgaudin/ethiopian_date tests; [K] Kenat (JS) tests; [N] news reports of Enkutatash 2023 and 2024;
#  [T] tesfatours.com on Genna: Tahsas 28 = 7 January in a year after a leap year (Jan 8 = Tahsas 29);
#  [I] ICU's Ethiopic calendar in Chromium (the leap-day and century rows; test_icu_agrees_every_day
#      repeats the comparison for every day from 1900 to 2100).
KNOWN_PAIRS = [
    (dt.date(2024, 9, 11), 2017, 1, 1),     # [N] Meskerem 1 2017 (Enkutatash 2024)
    (dt.date(2023, 9, 12), 2016, 1, 1),     # [N] Meskerem 1 2016, after Pagume 6 of leap year 2015
    (dt.date(2023, 9, 11), 2015, 13, 6),    # [I] Pagume 6 2015
    (dt.date(2019, 9, 11), 2011, 13, 6),    # [P] Pagume 6 2011
    (dt.date(2019, 9, 12), 2012, 1, 1),     # [P]
    (dt.date(2015, 9, 11), 2007, 13, 6),    # [P]
    (dt.date(2015, 9, 12), 2008, 1, 1),     # [P]
    (dt.date(2016, 9, 10), 2008, 13, 5),    # [P] Pagume 5 of a common year ...
    (dt.date(2016, 9, 11), 2009, 1, 1),     # [P] ... and the new year the next day
    (dt.date(2024, 9, 10), 2016, 13, 5),    # [K]
    (dt.date(2025, 5, 22), 2017, 9, 14),    # [K]
    (dt.date(2025, 1, 7), 2017, 4, 29),     # [T] Genna: Tahsas 29
    (dt.date(2024, 1, 7), 2016, 4, 28),     # [T][I] Genna after a leap year: Tahsas 28
    (dt.date(2016, 1, 8), 2008, 4, 29),     # [T] "8 January 2016 is Tahsas 29"
    (dt.date(2024, 2, 29), 2016, 6, 21),    # [I] Gregorian leap day
    (dt.date(2024, 3, 1), 2016, 6, 22),     # [I]
    (dt.date(2000, 2, 29), 1992, 6, 21),    # [I] leap day of a century leap year
    (dt.date(2100, 3, 1), 2092, 6, 21),     # [I] 2100 is not a Gregorian leap year
    (dt.date(1982, 11, 21), 1975, 3, 12),   # [R]
    (dt.date(1941, 12, 7), 1934, 3, 28),    # [R]
    (dt.date(2010, 12, 22), 2003, 4, 13),   # [R]
    (dt.date(2010, 12, 20), 2003, 4, 11),   # [R]
    (dt.date(1941, 9, 29), 1934, 1, 19),    # [P]
    (dt.date(1992, 3, 17), 1984, 7, 8),     # [P]
    (dt.date(1996, 2, 25), 1988, 6, 17),    # [P]
    (dt.date(2038, 11, 10), 2031, 3, 1),    # [P]
    (dt.date(2094, 7, 18), 2086, 11, 11),   # [P]
]

# Julian Day Numbers of Ethiopian dates from the geez.org reference test data
# (EthiopicCalendarTest.java, as quoted by several ports).
KNOWN_JDN = [
    (1724221, 1, 1, 1), (1724586, 2, 1, 1), (1724585, 1, 13, 5), (1725315, 3, 13, 5),
    (1725316, 3, 13, 6), (2299160, 1575, 2, 7), (2401443, 1855, 2, 20), (2415021, 1892, 4, 23),
    (2453372, 1997, 4, 23), (2454720, 2000, 13, 5), (2448988, 1985, 4, 22), (3182395, 3993, 4, 7),
]


@pytest.mark.parametrize("gregorian, year, month, day", KNOWN_PAIRS)
def test_known_pairs_both_ways(gregorian, year, month, day):
    assert from_gregorian(gregorian) == EthiopianDate(year, month, day)
    assert to_gregorian(year, month, day) == gregorian


@pytest.mark.parametrize("jdn, year, month, day", KNOWN_JDN)
def test_julian_day_numbers(jdn, year, month, day):
    assert EthiopianDate(year, month, day).jdn == jdn
    assert EthiopianDate.from_jdn(jdn) == EthiopianDate(year, month, day)


def test_gregorian_jdn_anchor():
    # J2000.0: 1 January 2000 is JDN 2,451,545.
    assert EthiopianDate.from_gregorian(dt.date(2000, 1, 1)).jdn == 2_451_545


def test_every_day_round_trips_and_years_have_the_right_length():
    day, end = dt.date(1850, 1, 1), dt.date(2150, 12, 31)
    previous = from_gregorian(day - dt.timedelta(days=1))
    while day <= end:
        ec = from_gregorian(day)
        assert ec.to_gregorian() == day
        assert ec > previous  # one day later, never skipping or repeating
        if ec.month == 1 and ec.day == 1:
            assert (previous.month, previous.day) == (13, 6 if is_leap_year(previous.year) else 5)
        previous = ec
        day += dt.timedelta(days=1)


def test_leap_years_and_pagume():
    assert [y for y in range(2010, 2021) if is_leap_year(y)] == [2011, 2015, 2019]
    assert EthiopianDate(2015, 13, 6).to_gregorian() == dt.date(2023, 9, 11)
    with pytest.raises(BadEthiopianDate) as err:
        EthiopianDate(2016, 13, 6)
    assert "has only 5 days" in err.value.message
    with pytest.raises(BadEthiopianDate):
        EthiopianDate(2016, 14, 1)
    with pytest.raises(BadEthiopianDate):
        EthiopianDate(2016, 1, 31)


def test_month_names_in_three_languages():
    assert EthiopianDate(2017, 1, 1).month_name("am") == "መስከረም"
    assert EthiopianDate(2017, 13, 1).month_name("en") == "Pagume"
    assert EthiopianDate(2017, 1, 1).month_name("om") == "Fulbaana"
    for names in MONTH_NAMES.values():
        assert len(names) == 13
        assert [parse_month(n) for n in names] == list(range(1, 14))


@pytest.mark.parametrize("text, month", [
    ("ህዳር", 3), ("ሕዳር", 3), ("ታህሳስ", 4), ("ነሃሴ", 12), ("ጳጉሜን", 13), ("miazia", 8), ("Tekemt", 2),
    ("Nehasse", 12), ("Yek", 6), ("Onkololeessa", 2), ("Muddee", 4), ("Ebla", 8), ("MESKEREM", 1),
])
def test_month_spelling_variants(text, month):
    assert parse_month(text) == month


def test_unknown_or_ambiguous_month_names_are_none():
    assert parse_month("September") is None      # a Gregorian month is not an Ethiopian one
    assert parse_month("Me") is None             # too short to be sure
    assert parse_month("") is None


# -- entry --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, calendar, expected", [
    ("1/1/2017", "ethiopian", dt.date(2024, 9, 11)),
    ("01-01-2017", "ethiopian", dt.date(2024, 9, 11)),
    ("2017-01-01", "ethiopian", dt.date(2024, 9, 11)),
    ("1 Meskerem 2017", "ethiopian", dt.date(2024, 9, 11)),
    ("መስከረም 1 ቀን 2017 ዓ.ም.", "gregorian", dt.date(2024, 9, 11)),   # the mark wins over the setting
    ("Fulbaana 1, 2017 ALH", "gregorian", dt.date(2024, 9, 11)),
    ("6/13/2015", "ethiopian", dt.date(2023, 9, 11)),
    ("11/9/2024", "gregorian", dt.date(2024, 9, 11)),                 # day first, never US order
    ("2024-09-11", "gregorian", dt.date(2024, 9, 11)),
    ("Sep 11 2024", "gregorian", dt.date(2024, 9, 11)),
    ("11 ሴፕቴምበር 2024", "gregorian", dt.date(2024, 9, 11)),
    ("Fulbaana 11, 2024", "gregorian", dt.date(2024, 9, 11)),        # Oromo Gregorian month name
    ("11/9/2024 G.C.", "ethiopian", dt.date(2024, 9, 11)),
    ("29.2.2024", "gregorian", dt.date(2024, 2, 29)),
    ("١١/٩/٢٠٢٤", "gregorian", dt.date(2024, 9, 11)),                  # digits typed in another script
])
def test_parse_date(text, calendar, expected):
    assert parse_date(text, calendar) == expected


@pytest.mark.parametrize("text, calendar, fragment", [
    ("", "gregorian", "Enter a date"),
    ("6/13/2016", "ethiopian", "has only 5 days"),
    ("29/2/2023", "gregorian", "has only 28 days"),
    ("1/14/2017", "ethiopian", "no month 14"),
    ("1/1/17", "ethiopian", "four digits"),
    ("yesterday", "gregorian", "not a date"),
    ("1 September 2017", "ethiopian", "not a date"),
    ("1 2 3 2017", "gregorian", "not a date"),
])
def test_parse_date_refuses_with_a_clear_sentence(text, calendar, fragment):
    with pytest.raises(BadDate) as err:
        parse_date(text, calendar)
    assert fragment in err.value.message
    assert err.value.hint


def test_date_from_parts_and_month_pickers():
    assert date_from_parts("ethiopian", 2011, 13, 6) == dt.date(2019, 9, 11)
    assert date_from_parts("gregorian", 2024, 2, 29) == dt.date(2024, 2, 29)
    assert days_in_month("ethiopian", 2015, 13) == 6
    assert days_in_month("ethiopian", 2016, 13) == 5
    assert days_in_month("gregorian", 2024, 2) == 29
    assert days_in_month("gregorian", 2023, 12) == 31
    assert len(month_choices("ethiopian", "am")) == 13
    assert month_choices("ethiopian", "am")[0] == (1, "መስከረም")
    assert month_choices("gregorian", "om")[8] == (9, "Fulbaana")
    with pytest.raises(BadDate):
        date_from_parts("ethiopian", 2016, 13, 6)
    with pytest.raises(ValueError):
        date_from_parts("julian", 2016, 1, 1)


def test_birth_dates_must_be_plausible():
    today = dt.date(2026, 11, 26)
    assert check_past_date(dt.date(1980, 1, 1), today=today) == dt.date(1980, 1, 1)
    with pytest.raises(BadDate) as err:
        # 2019 typed as Ethiopian but read as Gregorian: the hint explains the 7-8 year gap.
        check_past_date(dt.date(2027, 1, 1), today=today, text="1/1/2027")
    assert "1/1/2027" in err.value.message and "7 or 8" in err.value.hint
    with pytest.raises(BadDate):
        check_past_date(dt.date(1890, 1, 1), today=today)


# -- display ------------------------------------------------------------------------------
def test_format_date_in_each_language_and_calendar():
    day = dt.date(2024, 9, 11)
    assert format_date(day, "en", "ethiopian") == "1 Meskerem 2017 E.C."
    assert format_date(day, "am", "ethiopian") == "መስከረም 1 ቀን 2017 ዓ.ም."
    assert format_date(day, "om", "ethiopian") == "Fulbaana 1, 2017 ALH"
    assert format_date(day, "en", "gregorian") == "September 11, 2024"
    assert format_date(day, "am", "gregorian") == "11 ሴፕቴምበር 2024"
    assert format_date(day, "en", "ethiopian", style="short") == "01/01/2017 E.C."
    assert format_date(day, "en", "ethiopian", both=True) == "1 Meskerem 2017 E.C. (September 11, 2024 G.C.)"
    assert format_date(day, "om", "gregorian", both=True) == "Fulbaana 11, 2024 ALA (Fulbaana 1, 2017 ALH)"
    assert format_date("2024-09-11", "xx", "gregorian") == "September 11, 2024"   # unknown language: English
    assert format_date(None, "am", "ethiopian") == "" and format_date("", "om") == ""


def test_timestamps_are_shown_as_the_local_day(monkeypatch):
    monkeypatch.setenv("TZ", "Africa/Addis_Ababa")
    import time
    time.tzset()
    try:
        assert local_date("2026-01-01T22:30:00.000Z") == dt.date(2026, 1, 2)   # 01:30 in Ethiopia
        assert local_date("2026-01-01") == dt.date(2026, 1, 1)
        assert format_date("2026-01-01T22:30:00.000Z", "en", "ethiopian") == "24 Tahsas 2018 E.C."
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_errors_are_shown_in_the_users_language():
    with pytest.raises(BadDate) as err:
        parse_date("6/13/2016", "ethiopian")
    message, hint = error_text(err.value, "am")
    assert "13" in message and "2016" in message and "5" in message
    assert message != err.value.message           # translated, fields kept
    assert error_text(err.value, "en") == (err.value.message, err.value.hint)


# -- approximate age ----------------------------------------------------------------------
def test_age_from_birth_date_or_approximate_age():
    exam = dt.date(2026, 11, 26)
    assert age_at(exam, birth_date="1980-11-27") == Age(45)
    assert age_at(exam, birth_date="1980-11-26") == Age(46)
    assert age_at(exam, birth_date=dt.date(2000, 2, 29)) == Age(26)
    # "about 40" said in 2020 is about 46 in 2026; without a date it is taken as of the exam.
    assert age_at(exam, age_years=40, recorded_at="2020-06-01T09:00:00.000Z") == Age(46, approximate=True)
    assert age_at(exam, age_years=40) == Age(40, approximate=True)
    assert age_at(exam, birth_date="1980-01-01", age_years=20) == Age(46)     # a birth date wins
    assert age_at(exam) is None


def test_age_display():
    assert format_age(Age(45), "en") == "45 years"
    assert format_age(Age(1), "en") == "1 year"
    assert format_age(Age(45, approximate=True), "en") == "about 45 years"
    assert "45" in format_age(Age(45, approximate=True), "am") and "about" not in format_age(Age(45, True), "am")
    assert "45" in format_age(Age(45, approximate=True), "om") and "about" not in format_age(Age(45, True), "om")


def test_age_groups_for_statistics():
    assert AGE_GROUPS == ("<20", "20-29", "30-39", "40-49", "50-59", "60-69", "70+", "unknown")
    assert [age_group(a) for a in (0, 19, 20, 29, 30, 49, 50, 69, 70, 101)] == \
        ["<20", "<20", "20-29", "20-29", "30-39", "40-49", "50-59", "60-69", "70+", "70+"]
    assert age_group(None) == "unknown"
    assert age_group_at("2026-11-26T08:00:00.000Z", age_years=29, recorded_at="2025-01-01T00:00:00Z") == "30-39"
    assert age_group_at("2026-11-26", birth_date="1990-01-01") == "30-39"
    assert age_group_at("2026-11-26") == "unknown"
    assert age_group_label("30-39") == "30–39"
    assert age_group_label("unknown", "en") == "Age unknown"


@pytest.mark.parametrize("text, years", [("45", 45), (" about 45 ", 45), ("45 ዓመት", 45), ("waggaa 45", 45), ("٤٥", 45)])
def test_parse_age(text, years):
    assert parse_age_years(text) == years


@pytest.mark.parametrize("text, fragment", [("", "Enter the age"), ("forty", "not an age"), ("40 or 50", "not an age"),
                                            ("130", "not plausible")])
def test_parse_age_refuses(text, fragment):
    with pytest.raises(BadAge) as err:
        parse_age_years(text)
    assert fragment in err.value.message


@pytest.mark.browser
def test_icu_agrees_every_day_from_1900_to_2100(browser):
    """An independent implementation: ICU's Ethiopic calendar (Amete Mihret era) in Chromium."""
    start, end = dt.date(1900, 1, 1), dt.date(2100, 12, 31)
    icu = browser.new_page().evaluate("""([start, days]) => {
        const f = new Intl.DateTimeFormat('en-u-ca-ethiopic',
            {year: 'numeric', month: 'numeric', day: 'numeric', era: 'short', timeZone: 'UTC'});
        const out = [];
        for (let i = 0; i < days; i++) {
            const parts = {};
            for (const p of f.formatToParts(new Date(start + i * 86400000))) parts[p.type] = p.value;
            out.push(`${parts.era} ${parts.year}-${parts.month}-${parts.day}`);
        }
        return out;
    }""", [int(dt.datetime(1900, 1, 1, 12, tzinfo=dt.timezone.utc).timestamp() * 1000),
           (end - start).days + 1])
    ours = []
    day = start
    while day <= end:
        ec = from_gregorian(day)
        ours.append(f"AM {ec.year}-{ec.month}-{ec.day}")
        day += dt.timedelta(days=1)
    mismatches = [(start + dt.timedelta(days=i)).isoformat() for i, (a, b) in enumerate(zip(ours, icu)) if a != b]
    assert len(icu) == len(ours) and not mismatches, mismatches[:5]
