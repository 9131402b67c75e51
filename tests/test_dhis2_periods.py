"""DHIS2 periods in the Gregorian and the Ethiopian calendar (Pagume joined to Nehase or to the next
Meskerem, a leap year's sixth Pagume day), and the data value set with the screening indicators."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from appliance.errors import UserError
from appliance.exchange import dhis2
from appliance.exchange.periods import ETHIOPIAN_MONTHLY, GREGORIAN_MONTHLY, period_of_day
from appliance.i18n.ethiopian_calendar import EthiopianDate
from appliance.store.fields import new_uuid

from pathway_support import checklist, save
from test_store_support import register, save_exam


@pytest.mark.parametrize("day, gregorian, nehase, meskerem", [
    ("2025-09-11", "202509", "201801", "201801"),     # 1 Meskerem 2018
    ("2025-09-10", "202509", "201712", "201801"),     # Pagume 5, 2017 (not a leap year: the last day)
    ("2025-09-06", "202509", "201712", "201801"),     # Pagume 1, 2017
    ("2025-09-05", "202509", "201712", "201712"),     # Nehase 30, 2017
    ("2023-09-11", "202309", "201512", "201601"),     # Pagume 6, 2015: the leap year's sixth day
    ("2023-09-12", "202309", "201601", "201601"),     # 1 Meskerem 2016 (after a leap year: 12 September)
    ("2026-01-09", "202601", "201805", "201805"),     # 1 Tir 2018
])
def test_period_ids(day, gregorian, nehase, meskerem):
    assert period_of_day(day, GREGORIAN_MONTHLY) == gregorian
    assert period_of_day(day, ETHIOPIAN_MONTHLY, "nehase") == nehase
    assert period_of_day(day, ETHIOPIAN_MONTHLY, "meskerem") == meskerem


def test_every_pagume_day_of_a_leap_year_goes_to_one_month():
    first = EthiopianDate(2015, 13, 1).to_gregorian()
    days = [first + timedelta(days=i) for i in range(6)]
    assert EthiopianDate.from_gregorian(days[-1]) == EthiopianDate(2015, 13, 6)
    assert {period_of_day(d, ETHIOPIAN_MONTHLY, "nehase") for d in days} == {"201512"}
    assert {period_of_day(d, ETHIOPIAN_MONTHLY, "meskerem") for d in days} == {"201601"}


def _mapping(tmp_path, post_id: str, period_type: str, pagume: str = "nehase", extra: str = "") -> str:
    text = dhis2.DEFAULT_MAPPING.read_text(encoding="utf-8")
    text = text.replace('period_type = "gregorian_monthly"', f'period_type = "{period_type}"')
    text = text.replace('pagume = "nehase"', f'pagume = "{pagume}"')
    text = text.replace("[org_units]\n", f'[org_units]\n"{post_id}" = "OU_AGARO"\n') + extra
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _exam_on(store, exam: dict, day: str) -> None:
    """A copy of ``exam`` made on ``day`` with trained models (bulk path, as an import writes it)."""
    at = f"{day}T08:00:00.000Z"
    record = {**store.exams.get(exam["uuid"]), "uuid": new_uuid(), "created_at": at, "updated_at": at, "demo": False}
    record["result"] = {**record["result"], "demo": False,
                        "steps": [{**step, "demo": False} for step in record["result"]["steps"]]}
    store.bulk_insert("exams", [record])


@pytest.fixture
def pagume_store(store):
    woman = register(store, birth_date="1988-01-01")
    exam = save_exam(store, woman, "pap_smear", "normal", seed=3)
    store.exams.decide(exam["uuid"], "normal", by="nurse1")
    for day in ("2023-09-11", "2023-09-12", "2023-08-30"):      # Pagume 6 2015, Meskerem 1 2016, Nehase 24 2015
        _exam_on(store, exam, day)
    save(store, woman, "2023-09-11", via="positive", eligibility=checklist(), treated=True)
    other = register(store, "JU-2", "Hana Bekele", birth_date="1990-05-05")
    save(store, other, "2023-09-12", hiv="positive", via="negative")
    return store


def _values(store, cfg, tmp_path, period_type, pagume="nehase", **options):
    cfg.exchange.dhis2_mapping = _mapping(tmp_path, store.post_id, period_type, pagume)
    out = tmp_path / "values.json"
    summary = dhis2.write_data_value_set(store, cfg, out, date_from="2023-08-01", date_to="2023-09-30", **options)
    return summary, json.loads(out.read_text())["dataValues"]


def _value(values, element, period):
    found = [v for v in values if v["dataElement"] == element and v["period"] == period]
    return sum(int(v["value"]) for v in found) if found else None


def test_gregorian_periods_put_everything_in_september(pagume_store, cfg, tmp_path):
    summary, values = _values(pagume_store, cfg, tmp_path, GREGORIAN_MONTHLY)
    assert summary["period_type"] == "gregorian_monthly"
    assert _value(values, "BCCDMS_PAP_SMEAR", "202309") == 2 and _value(values, "BCCDMS_PAP_SMEAR", "202308") == 1
    assert _value(values, "BCCDMS_CXCA_SCREENED", "202309") == 2
    assert _value(values, "BCCDMS_CXCA_VIA_POSITIVE", "202309") == 1
    assert _value(values, "BCCDMS_CXCA_VIA_DONE", "202309") == 2
    assert _value(values, "BCCDMS_CXCA_TREATED_SAME_DAY", "202309") == 1


def test_ethiopian_periods_join_pagume_to_nehase(pagume_store, cfg, tmp_path):
    summary, values = _values(pagume_store, cfg, tmp_path, ETHIOPIAN_MONTHLY, "nehase")
    assert summary["periods"] == ["201512", "201601"]
    assert _value(values, "BCCDMS_PAP_SMEAR", "201512") == 2      # Nehase 24 and Pagume 6
    assert _value(values, "BCCDMS_PAP_SMEAR", "201601") == 1
    assert _value(values, "BCCDMS_CXCA_VIA_POSITIVE", "201512") == 1
    assert _value(values, "BCCDMS_CXCA_SCREENED", "201512") == 1
    assert _value(values, "BCCDMS_CXCA_SCREENED", "201601") == 1
    assert {v["orgUnit"] for v in values} == {"OU_AGARO"}


def test_ethiopian_periods_join_pagume_to_the_next_meskerem(pagume_store, cfg, tmp_path):
    summary, values = _values(pagume_store, cfg, tmp_path, ETHIOPIAN_MONTHLY, "meskerem")
    assert _value(values, "BCCDMS_PAP_SMEAR", "201512") == 1
    assert _value(values, "BCCDMS_PAP_SMEAR", "201601") == 2
    assert _value(values, "BCCDMS_CXCA_SCREENED", "201601") == 2
    assert _value(values, "BCCDMS_CXCA_TREATED", "201601") == 1


def test_the_screened_count_can_be_split_by_hiv_status(pagume_store, cfg, tmp_path):
    extra = ""
    cfg.exchange.dhis2_mapping = _mapping(tmp_path, pagume_store.post_id, GREGORIAN_MONTHLY)
    text = open(cfg.exchange.dhis2_mapping, encoding="utf-8").read().replace(
        '[indicators.screened]\nnumerator = "BCCDMS_CXCA_SCREENED"\n',
        '[indicators.screened]\nnumerator = "BCCDMS_CXCA_SCREENED"\ndisaggregate = "hiv"\n'
        '[indicators.screened.category_option_combos]\npositive = "HIV_POS"\nnegative = "HIV_NEG"\n'
        'unknown = "HIV_UNKNOWN"\n' + extra)
    open(cfg.exchange.dhis2_mapping, "w", encoding="utf-8").write(text)
    out = tmp_path / "values.json"
    dhis2.write_data_value_set(pagume_store, cfg, out, date_from="2023-08-01", date_to="2023-09-30")
    screened = {v["categoryOptionCombo"]: v["value"] for v in json.loads(out.read_text())["dataValues"]
                if v["dataElement"] == "BCCDMS_CXCA_SCREENED"}
    assert screened == {"HIV_POS": "1", "HIV_NEG": "0", "HIV_UNKNOWN": "1"}


@pytest.mark.parametrize("change, words", [
    (('period_type = "gregorian_monthly"', 'period_type = "julian"'), "period_type = 'julian'"),
    (('pagume = "nehase"', 'pagume = "hamle"'), "pagume = 'hamle'"),
    (("[indicators.screened]", "[indicators.happiness]"), "unknown indicator [indicators.happiness]"),
    (('numerator = "BCCDMS_CXCA_SCREENED"', 'numerator = "X"\ndenominator = "Y"'), "it is a count"),
    (('numerator = "BCCDMS_CXCA_SCREENED"', 'numerator = "X"\ndisaggregate = "hiv"'), "does not map the groups"),
])
def test_a_bad_mapping_is_refused_with_a_sentence(cfg, tmp_path, change, words):
    text = dhis2.DEFAULT_MAPPING.read_text(encoding="utf-8").replace(*change)
    (tmp_path / "m.toml").write_text(text, encoding="utf-8")
    cfg.exchange.dhis2_mapping = str(tmp_path / "m.toml")
    with pytest.raises(UserError) as refused:
        dhis2.load_mapping(cfg)
    assert words in refused.value.message


def test_posts_with_visits_but_no_org_unit_are_named(store, cfg, tmp_path):
    woman = register(store)
    save(store, woman, date(2026, 1, 5), via="negative")
    cfg.exchange.dhis2_mapping = _mapping(tmp_path, "some-other-post", GREGORIAN_MONTHLY)
    with pytest.raises(UserError, match=f"screening visits but no DHIS2 org unit.*{store.post_id}"):
        dhis2.write_data_value_set(store, cfg, tmp_path / "v.json")
