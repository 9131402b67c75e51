"""Class names in Amharic and Afaan Oromo are drafts until a native-speaking clinician reviews
them (appliance/i18n/glossary.csv): until then the English name stands beside the translation on
the result page, the print page and the PDF, so a wrong word can never be the only one shown."""
from __future__ import annotations

import io

import pytest

from appliance.i18n import glossary
from webutil import live_server, make_users, web_cfg  # noqa: F401

PASSWORD = "terms-pass-2026"
SLIDE = "herlev/originals/normal_superficiel"


def client_in(live, name: str, language: str):
    live.ctx.store.users.create(name, PASSWORD, "nurse", display_name=name, language=language)
    client = live.client()
    assert client.login(name, PASSWORD).status == 303
    return client


def pap_exam(live, client, datasets, pid: str) -> str:
    patient = live.ctx.store.patients.register(pid, "Terms Test", age_years=35, by="nurse1")
    draft = client.new_draft(patient["uuid"], "pap_smear")
    client.upload(draft, sorted((datasets / SLIDE).glob("*.jpg"))[0].read_bytes())
    res = client.process(draft)
    assert res.status == 303, res.text[:400]
    return res.location.rsplit("/", 1)[-1]


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


@pytest.mark.parametrize("language, normal, abnormal", [
    ("am", "ጤናማ (Normal)", "ጤናማ ያልሆነ (Abnormal)"),
    ("om", "Idilee (Normal)", "Idilee kan hin taane (Abnormal)"),
])
def test_unreviewed_class_names_show_the_english_beside_them(live_server, datasets, language, normal, abnormal):
    make_users(live_server)
    nurse = client_in(live_server, f"{language}.nurse", language)
    exam_uuid = pap_exam(live_server, nurse, datasets, f"TERM-{language}")
    page = nurse.get(f"/exams/{exam_uuid}").text
    assert normal in page and abnormal in page
    printed = nurse.get(f"/exams/{exam_uuid}/print").text
    assert normal in printed and abnormal in printed
    text = pdf_text(nurse.get(f"/exams/{exam_uuid}/report.pdf").body)
    assert "(Normal)" in text and "(Abnormal)" in text


def test_english_readers_see_each_name_once(live_server, datasets):
    make_users(live_server)
    nurse = client_in(live_server, "en.nurse", "en")
    page = nurse.get(f"/exams/{pap_exam(live_server, nurse, datasets, 'TERM-en')}").text
    assert "Normal (Normal)" not in page and "Abnormal" in page


def test_a_reviewed_term_and_an_international_one_stand_alone(tmp_path):
    table = tmp_path / "glossary.csv"
    table.write_text("english,amharic,amharic_status,afaan_oromo,afaan_oromo_status,note\n"
                     "Normal,ጤናማ,reviewed,Idilee,needs review,\n"
                     "Adenosis,አዴኖሲስ,needs review,Adenosis,international term,\n", encoding="utf-8")
    assert glossary.with_english("Normal", "ጤናማ", "am", path=table) == "ጤናማ"
    assert glossary.with_english("Normal", "Idilee", "om", path=table) == "Idilee (Normal)"
    assert glossary.with_english("Adenosis", "Adenosis", "om", path=table) == "Adenosis"
    assert glossary.with_english("Adenosis", "አዴኖሲስ", "am", path=table) == "አዴኖሲስ (Adenosis)"
    assert glossary.with_english("Grade 1", "ደረጃ 1", "am", path=table) == "ደረጃ 1 (Grade 1)"   # not in it: unreviewed
    assert glossary.with_english("Normal", "Normal", "en", path=table) == "Normal"
