"""Languages, calendars, names and phones through the real kiosk (waitress, store, tiny models), over HTTP.

One server for the module: each test uses its own users and card numbers. The browser side
(on-screen keyboard, every page in Amharic and Afaan Oromo, screenshots) is in test_browser_i18n.py.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import re

import pytest

from appliance.i18n import get_translations
from appliance.i18n.age import age_group_at
from appliance.i18n.dates import format_date
from webutil import NURSE, first_image, make_users, start_server, web_config

PASSWORD = "i18n-pass-2026"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pack, pack_key):
    from appliance.config import load_config
    cfg = web_config(load_config(data_dir=tmp_path_factory.mktemp("i18n-data"), environ={}), tiny_pack, pack_key)
    live = start_server(cfg)
    make_users(live)
    try:
        yield live
    finally:
        live.stop()


def user(server, name: str, *, language: str = "en", calendar: str = "gregorian", role: str = "nurse"):
    """A logged-in client for a new account with this language and calendar."""
    server.ctx.store.users.create(name, PASSWORD, role, display_name=name, language=language, calendar=calendar)
    client = server.client()
    assert client.login(name, PASSWORD).status == 303
    return client


def text_of(res) -> str:
    """The page's text without tags, entities decoded (what a person reads)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", res.text))


def patient_uuid(res) -> str:
    assert res.status == 303, text_of(res)[:600]
    return re.search(r"/patients/([0-9a-f-]{36})$", res.location).group(1)


def tr(lang: str, msgid: str, **fields) -> str:
    text = get_translations(lang).gettext(msgid)
    assert text != msgid, f"{msgid!r} has no {lang} translation"
    return text % fields if fields else text


# -- calendar ----------------------------------------------------------------------------------
def test_user_picks_the_ethiopian_calendar_and_enters_dates_of_birth_in_it(server):
    store = server.ctx.store
    nurse = user(server, "ec.nurse")
    nurse.get("/settings")
    assert nurse.post("/settings/calendar", {"calendar": "julian"}).status == 400        # refused, nothing changed
    assert store.users.get("ec.nurse")["calendar"] == "gregorian"
    res = nurse.post("/settings/calendar", {"calendar": "ethiopian"})
    assert res.status == 303 and store.users.get("ec.nurse")["calendar"] == "ethiopian"
    assert "E.C." in text_of(nurse.get("/settings"))                  # today in both calendars
    page = text_of(nurse.get("/diagnose"))
    assert "Day/month/year in the Ethiopian calendar (E.C.)" in page  # the field says how to type it

    # 12 Megabit 1977 E.C. is 21 March 1985: stored as the Gregorian ISO date, shown back in E.C.
    cases = {"EC-1": ("12/07/1977", "1985-03-21"), "EC-2": ("መጋቢት 12 1977", "1985-03-21"),
             "EC-3": ("6/13/2015", "2023-09-11"),               # Pagume 6 of a leap year
             "EC-4": ("21/03/1985 G.C.", "1985-03-21")}         # a calendar mark wins over the setting
    for pid, (typed, stored) in cases.items():
        uuid = patient_uuid(nurse.register_patient(pid, "Calendar Test", birth_date=typed, age_years=""))
        assert store.patients.get(uuid)["birth_date"] == stored, pid
    shown = text_of(nurse.get(f"/patients/{uuid}"))
    assert "12 Megabit 1977 E.C." in shown

    # Impossible or future E.C. dates are refused with a sentence; nothing is stored.
    for typed, message in (("6/13/2016", "has only 5 days"), ("1/1/2099", "in the future"),
                           ("30/02/1977 G.C.", "has only 28 days"), ("12/07/77", "four digits")):
        res = nurse.register_patient("EC-BAD", "Calendar Test", birth_date=typed, age_years="")
        assert res.status == 400 and message in text_of(res), (typed, text_of(res)[:300])
        assert f'value="{typed}"' in res.text                       # what was typed stays in the form
    assert store.patients.by_pid("EC-BAD") is None

    # The record filters take E.C. dates too, keep them as ISO dates and show them back in E.C.
    nurse.get("/records")
    assert nurse.post("/records", {"date_from": "1/1/2010", "date_to": "30/12/2099"}).status == 303
    assert nurse.get("/records").text.count('value="01/01/2010"') == 1
    assert nurse.post("/records", {"date_from": "1/1/2099", "date_to": "1/1/2010"}).status == 400


def test_an_approximate_age_is_stored_as_such(server):
    store = server.ctx.store
    nurse = user(server, "age.nurse")
    uuid = patient_uuid(nurse.register_patient("AGE-1", "Age Test", age_years="about 45"))
    patient = store.patients.get(uuid)
    assert patient["age_years"] == 45 and not patient.get("birth_date")
    assert "about 45 years" in text_of(nurse.get(f"/patients/{uuid}"))
    res = nurse.register_patient("AGE-2", "Age Test", age_years="forty")
    assert res.status == 400 and "not an age in years" in text_of(res)
    assert store.patients.by_pid("AGE-2") is None


# -- names and phones ---------------------------------------------------------------------------
def test_phones_are_stored_as_plus_251_and_found_however_they_are_typed(server):
    store = server.ctx.store
    nurse = user(server, "phone.nurse")
    uuid = patient_uuid(nurse.register_patient("PH-1", "Phone Test", phone="0911-23 45 67"))
    assert store.patients.get(uuid)["phone"] == "+251911234567"
    assert "0911 234 567" in text_of(nurse.get(f"/patients/{uuid}"))
    for typed in ("+251 911 234 567", "251911234567", "0911 234", "00251-911-23"):
        nurse.post("/diagnose/search", {"q": typed})
        assert f"/patients/{uuid}" in nurse.get("/diagnose").text, typed
    for typed, message in (("0911 23", "too few digits"), ("0611 234 567", "does not start like"),
                           ("call me", "can only contain digits")):
        res = nurse.register_patient("PH-BAD", "Phone Test", phone=typed)
        assert res.status == 400 and message in text_of(res), typed
    assert store.patients.by_pid("PH-BAD") is None


def test_names_are_found_in_geez_and_latin_as_typed(server):
    nurse = user(server, "name.nurse")
    haile = patient_uuid(nurse.register_patient("NM-1", "ኃይሌ ገብረሥላሴ"))
    gammachuu = patient_uuid(nurse.register_patient("NM-2", "Gammachuu Bu'aa"))
    for typed, wanted in (("ሀይሌ", haile), ("ሃይሌ ገብረስላሴ", haile), ("ገብረ", haile),
                          ("gamachu buaa", gammachuu), ("GAMMACHUU", gammachuu), ("bu’aa", gammachuu)):
        nurse.post("/diagnose/search", {"q": typed})
        page = nurse.get("/diagnose").text
        assert f"/patients/{wanted}" in page, typed
        assert f"/patients/{haile if wanted == gammachuu else gammachuu}" not in page, typed
    nurse.post("/diagnose/search", {"q": "ሀይሌ"})
    assert "ኃይሌ ገብረሥላሴ" in nurse.get("/diagnose").text          # shown as typed, not folded


# -- language -------------------------------------------------------------------------------------
def test_a_language_picked_on_the_login_screen_becomes_the_users_own(server):
    store = server.ctx.store
    store.users.create("lang.nurse", PASSWORD, "nurse", display_name="Almaz", language="en")
    kiosk = server.client()
    kiosk.get("/login")
    res = kiosk.post("/login/language", {"lang": "am", "back": "/login"})
    assert res.status == 303 and res.location.endswith("/login?chosen=1")
    page = kiosk.get("/login?chosen=1")
    assert '<html lang="am">' in page.text and 'name="language" value="am"' in page.text
    # A wrong password on the Amharic screen is answered in Amharic; the choice is kept for the retry.
    wrong = kiosk.post("/login", {"username": "lang.nurse", "password": "not-it-123", "language": "am"})
    assert wrong.status == 401 and tr("am", "The username or password is wrong.") in text_of(wrong)
    assert 'name="language" value="am"' in wrong.text
    assert kiosk.post("/login", {"username": "lang.nurse", "password": PASSWORD, "language": "am"}).status == 303
    assert store.users.get("lang.nurse")["language"] == "am"
    home = kiosk.get("/")
    assert '<html lang="am">' in home.text and tr("am", "Statistics") in text_of(home)

    # Without a choice on the login screen the user's own language wins (the cookie is the kiosk's).
    kiosk.post("/logout")
    assert '<html lang="am">' in kiosk.get("/login").text
    assert kiosk.post("/login", {"username": NURSE[0], "password": NURSE[1]}).status == 303
    assert '<html lang="en">' in kiosk.get("/").text and store.users.get(NURSE[0])["language"] == "en"

    # Logged in: the switch changes the user's record.
    kiosk.post("/login/language", {"lang": "om", "back": "/settings"})
    assert store.users.get(NURSE[0])["language"] == "om"
    assert tr("om", "Language and calendar") in text_of(kiosk.get("/settings"))
    kiosk.post("/login/language", {"lang": "en", "back": "/"})


def test_errors_reach_the_user_in_their_language(server):
    store = server.ctx.store
    nurse = user(server, "am.nurse", language="am")
    patient_uuid(nurse.register_patient("DUP-AM", "ሙሉ ቀን"))
    res = nurse.register_patient("DUP-AM", "ሌላ ሰው")
    assert res.status == 409
    assert tr("am", "A patient with the card number %(pid)s is already registered (%(name)s).",
              pid="DUP-AM", name="ሙሉ ቀን") in text_of(res)
    res = nurse.register_patient("PH-AM", "ሙሉ ቀን", phone="0911 23")
    assert tr("am", "The phone number %(number)s has too few digits.", number="0911 23") in text_of(res)
    res = nurse.register_patient("DOB-AM", "ሙሉ ቀን", birth_date="31/02/1990", age_years="")
    assert tr("am", "Month %(month)d of %(year)d has only %(days)d days.", month=2, year=1990, days=28) in text_of(res)
    assert store.patients.by_pid("PH-AM") is None and store.patients.by_pid("DOB-AM") is None
    # A broken upload on the image step, in Amharic too.
    uuid = store.patients.by_pid("DUP-AM")["uuid"]
    draft = nurse.new_draft(uuid, "pap_smear")
    res = nurse.upload(draft, b"not an image at all", filename="x.jpg")
    assert res.status == 400
    assert tr("am", "This file is not an image the appliance can read (%(formats)s).",
              formats="JPEG, PNG, TIFF, BMP or WebP") in text_of(res)


# -- print, PDF, statistics -----------------------------------------------------------------------
def _exam(client, uuid: str, datasets) -> str:
    draft = client.new_draft(uuid, "pap_smear")
    assert client.upload(draft, first_image(datasets, "herlev").read_bytes()).status == 303
    res = client.process(draft)
    assert res.status == 303, text_of(res)[:500]
    return res.location.rsplit("/", 1)[-1]


def test_print_page_and_pdf_in_amharic_with_both_calendars(server, datasets):
    from pypdf import PdfReader
    nurse = user(server, "print.nurse", language="am", calendar="ethiopian")
    uuid = patient_uuid(nurse.register_patient("PR-1", "ብርቱካን ደሳለኝ", birth_date="12/07/1977", age_years="",
                                               phone="0911 555 666"))
    exam = _exam(nurse, uuid, datasets)
    ec_birth = format_date("1985-03-21", "am", "ethiopian")          # መጋቢት 12 ቀን 1977 ዓ.ም.
    gc_birth = format_date("1985-03-21", "am", "gregorian")          # 21 ማርች 1985
    printed = text_of(nurse.get(f"/exams/{exam}/print"))
    for wanted in ("ብርቱካን ደሳለኝ", ec_birth, gc_birth, tr("am", "Patient"), tr("am", "Clinician's decision"),
                   tr("am", "Age at the exam"), "0911 555 666"):
        assert wanted in printed, wanted
    pdf = nurse.get(f"/exams/{exam}/report.pdf")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf.body))
    text = "".join(page.extract_text() for page in reader.pages)
    for wanted in ("ብርቱካን ደሳለኝ", ec_birth, gc_birth, tr("am", "Patient"), tr("am", "Clinician's decision"),
                   tr("am", "Decision support only: the clinician's decision is the diagnosis.")[:20]):
        assert wanted in text, wanted
    assert reader.metadata.title == tr("am", "Breast and cervical cancer diagnosis support: report")


def test_statistics_age_groups_and_chart_labels_in_the_users_language(server, datasets):
    import json
    store = server.ctx.store
    nurse = user(server, "stats.nurse", language="om")
    ages = {"ST-1": {"age_years": "23"}, "ST-2": {"birth_date": "01/01/1950", "age_years": ""},
            "ST-3": {"age_years": "45"}}
    for pid, fields in ages.items():
        _exam(nurse, patient_uuid(nurse.register_patient(pid, "Stats Test", **fields)), datasets)
    # The store's age groups are the i18n ones, counted as age_group_at counts them.
    exams, _total = store.exams.query(limit=500)
    expected: dict[str, int] = {}
    for exam in exams:
        p = store.patients.get(exam["patient_uuid"])
        group = age_group_at(exam["created_at"], birth_date=p.get("birth_date"), age_years=p.get("age_years"),
                             recorded_at=p.get("created_at"))
        expected[group] = expected.get(group, 0) + 1
    assert store.stats()["by_age_group"] == expected
    assert {"20-29", "40-49", "70+"} <= set(expected)
    page = nurse.get("/statistics")
    charts = json.loads(html.unescape(re.search(r'data-charts="([^"]*)"', page.text).group(1)))
    assert charts["labels"]["count"] == tr("om", "Exams")
    assert {a["name"] for a in charts["age_groups"]} >= {"20–29", "40–49", "70+"}
    this_month = dt.date.today()
    from babel.dates import format_skeleton
    assert format_skeleton("yMMM", this_month.replace(day=1), locale="om") in [m["month"] for m in charts["months"]]
    # A period typed in the user's calendar; a reversed one is refused.
    assert nurse.get("/statistics?from=01/01/2020&to=31/12/2099").status == 200
    assert nurse.get("/statistics?from=01/01/2099&to=01/01/2020").status == 400
    assert nurse.get("/statistics?from=tomorrow").status == 400
