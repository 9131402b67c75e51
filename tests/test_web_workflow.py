"""The clinician's workflow over HTTP against the real server, store and tiny models:
register → choose analysis → upload → quality → process → result → decide → print/PDF →
browse records/images → statistics; every bad input refused with a message and nothing saved.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re

import pytest
from PIL import Image

from webutil import (ADMIN, DOCTOR, NURSE, SUPERVISOR, first_image, live_server, staffed_server,  # noqa: F401
                     web_cfg)


def _patient_uuid(res) -> str:
    assert res.status == 303, res.text[:800]
    match = re.search(r"/patients/([0-9a-f-]{36})$", res.location)
    assert match, res.location
    return match.group(1)


def _counts(ctx):
    return ctx.store.exams.query(limit=1)[1], len(list(ctx.store.images.browse(limit=500)[0]))


def _jpeg(size=(640, 480), colour=(200, 120, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def nurse(staffed_server):
    return staffed_server.logged_in(NURSE)


def test_pap_smear_from_registration_to_saved_decision(staffed_server, nurse, datasets, caplog):
    caplog.set_level(logging.DEBUG)
    ctx = staffed_server.ctx
    uuid = _patient_uuid(nurse.register_patient("JU-000123", "Almaz Bekele", phone="0911 234 567",
                                                 address="Kebele 03"))
    assert "JU-000123" not in uuid and "Almaz" not in uuid
    patient_page = nurse.get(f"/patients/{uuid}")
    assert patient_page.status == 200 and "Almaz Bekele" in patient_page.text and 'value="pap_smear"' in patient_page.text
    draft = nurse.new_draft(uuid, "pap_smear")
    step = nurse.get(f"/drafts/{draft}")
    assert step.status == 200 and "Start processing" not in step.text     # no image yet
    image = first_image(datasets, "herlev", "normal_superficiel", kind="originals")
    up = nurse.upload(draft, image.read_bytes(), filename=image.name)
    assert up.status == 303
    step = nurse.get(f"/drafts/{draft}")
    assert "Start processing" in step.text
    assert nurse.get(f"/drafts/{draft}/image.jpg").headers["content-type"] == "image/jpeg"
    assert _counts(ctx)[0] == 0                                            # nothing saved before processing
    res = nurse.process(draft)
    assert res.status == 303 and re.search(r"/exams/[0-9a-f-]{36}$", res.location)
    exam_uuid = res.location.rsplit("/", 1)[-1]
    page = nurse.get(f"/exams/{exam_uuid}")
    assert page.status == 200
    assert re.search(r"\d+\.\d %", page.text), "class percentages are shown"
    assert "Normal" in page.text and "Abnormal" in page.text
    exam = ctx.store.exams.get(exam_uuid)
    assert exam["status"] == "awaiting_decision" and exam["analysis"] == "pap_smear"
    # The stored image is the uploaded file, byte for byte, and the result was made from it.
    uploaded = hashlib.sha256(image.read_bytes()).hexdigest()
    assert exam["image"]["sha256"] == uploaded == exam["result"]["image_info"]["sha256"]
    assert ctx.store.images.path(uploaded).read_bytes() == image.read_bytes()
    assert exam["patient_uuid"] == uuid and exam["source"] == "file"
    # The nurse records the screening decision: another class, with a note.
    other = "abnormal" if exam["label"] == "normal" else "normal"
    assert nurse.post(f"/exams/{exam_uuid}/decide", {"agrees": "no", "label": other, "note": "Refer to Jimma"}).status == 303
    exam = ctx.store.exams.get(exam_uuid)
    assert exam["decision"]["label"] == other and exam["decision"]["agrees"] is False
    assert exam["final_label"] == other and exam["decision"]["note"] == "Refer to Jimma"
    assert "Decision saved" in nurse.get(f"/exams/{exam_uuid}").text
    # The draft is gone: processing twice cannot make a second exam (it leads to the first one).
    again = nurse.process(draft, version=1)
    assert again.status == 303 and again.location.endswith(exam_uuid)
    assert _counts(ctx)[0] == 1
    # Browse records, images, statistics, print and PDF find it.
    assert exam_uuid in nurse.get("/records").text
    images = nurse.get(f"/images?analysis=pap_smear&label={other}").text
    assert exam_uuid in images and exam["image"]["sha256"] in images
    assert nurse.get(f"/exams/{exam_uuid}/thumb.jpg").headers["content-type"] == "image/jpeg"
    stats = nurse.get("/statistics").text
    assert 'id="stat-exams">1<' in stats
    assert re.search(r"Clinician chose another class</td><td>1<", stats)
    assert 'id="chart-posts"' not in stats                     # by health post: supervisors only
    printed = nurse.get(f"/exams/{exam_uuid}/print")
    assert printed.status == 200 and "Almaz Bekele" in printed.text and "Refer to Jimma" in printed.text
    pdf = nurse.get(f"/exams/{exam_uuid}/report.pdf")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF")
    assert "Almaz" not in pdf.headers["content-disposition"]
    # Every view or change of patient data is in the audit log (the data itself is not).
    actions = {(e["action"], e["target_type"]) for e in ctx.store.audit.query(actor=NURSE[0], limit=500)[0]}
    for expected in (("patient.register", "patient"), ("view", "patient"), ("exam.save", "exam"), ("view", "exam"),
                     ("exam.decide", "exam"), ("print", "exam"), ("pdf", "exam"), ("view", "exam_list")):
        assert expected in actions, expected
    log_text = repr(ctx.store.audit.query(limit=500)[0])
    assert "Almaz" not in log_text and "0911" not in log_text
    assert "Almaz" not in caplog.text and "JU-000123" not in caplog.text      # nor in the server's log
    # Bad decisions change nothing.
    assert nurse.post(f"/exams/{exam_uuid}/decide", {"note": "no choice"}).status == 400
    assert ctx.store.exams.get(exam_uuid)["decision"]["note"] == "Refer to Jimma"


def test_pdf_report_embeds_amharic_names(staffed_server, nurse, datasets):
    from pypdf import PdfReader
    uuid = _patient_uuid(nurse.register_patient("AM-1", "አበበ በቀለ"))
    draft = nurse.new_draft(uuid, "pap_smear")
    nurse.upload(draft, first_image(datasets, "herlev").read_bytes())
    exam_uuid = nurse.process(draft).location.rsplit("/", 1)[-1]
    pdf = nurse.get(f"/exams/{exam_uuid}/report.pdf").body
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "አበበ በቀለ" in text and "AM-1" in text and "%" in text
    fonts = {str(f.get_object()["/BaseFont"]) for page in PdfReader(io.BytesIO(pdf)).pages
             for f in page["/Resources"]["/Font"].values()}
    assert any("Ethiopic" in name for name in fonts), fonts


@pytest.mark.parametrize("fields, message", [
    ({"pid": ""}, "card number"),
    ({"full_name": ""}, "full name"),
    ({"pid": "<script>"}, "only contain"),
    ({"birth_date": "2999-01-01", "age_years": ""}, "in the future"),
    ({"birth_date": "31/02/1990", "age_years": ""}, "has only 28 days"),
    ({"birth_date": "1990", "age_years": ""}, "not a date that can be read"),
    ({"age_years": "300"}, "not plausible"),
    ({"age_years": ""}, "date of birth or the approximate age"),
    ({"phone": "12ab"}, "phone"),
    ({"full_name": "x" * 500}, "too long"),
])
def test_bad_registrations_are_refused_with_a_message(staffed_server, nurse, fields, message):
    values = {"pid": "BAD-1", "full_name": "Test Patient", "age_years": "33"}
    values.update(fields)
    pid = values.pop("pid")
    name = values.pop("full_name")
    res = nurse.register_patient(pid, name, **values)
    assert res.status == 400, res.status
    assert message in res.text.lower() or message in res.text
    assert staffed_server.ctx.store.patients.by_pid("BAD-1") is None
    assert 'value="Test Patient"' in res.text or fields.get("full_name") is not None   # typed values kept


def test_duplicate_patient_id_offers_the_existing_record(staffed_server, nurse):
    first = _patient_uuid(nurse.register_patient("DUP-7", "Hana Tesfaye"))
    res = nurse.register_patient("DUP-7", "Someone Else")
    assert res.status == 409 and f"/patients/{first}" in res.text
    assert staffed_server.ctx.store.patients.by_pid("DUP-7")["full_name"] == "Hana Tesfaye"


def test_patient_search_is_posted_never_in_the_url(staffed_server, nurse):
    uuid = _patient_uuid(nurse.register_patient("SR-55", "Tigist Alemu", phone="0922 111 222"))
    res = nurse.post("/diagnose/search", {"q": "tigist"})
    assert res.status == 303 and "tigist" not in res.location.lower()
    page = nurse.get("/diagnose")
    assert f"/patients/{uuid}" in page.text
    nurse.post("/diagnose/search", {"q": "0922111"})
    assert f"/patients/{uuid}" in nurse.get("/diagnose").text


def test_bad_uploads_change_nothing(staffed_server, nurse, datasets):
    ctx = staffed_server.ctx
    uuid = _patient_uuid(nurse.register_patient("UP-1", "Upload Test"))
    draft = nurse.new_draft(uuid, "pap_smear")
    good = first_image(datasets, "herlev").read_bytes()
    assert nurse.upload(draft, good).status == 303
    version = ctx.drafts.get(draft).version
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")          # 400 Mpx in a few KB
    cases = [
        (b"%PDF-1.4 not an image", "not an image"),
        (good[: len(good) // 2], "incomplete"),
        (bomb.getvalue(), "too large"),
        (b"", "No image was chosen"),
    ]
    for data, words in cases:
        res = nurse.upload(draft, data, filename="x.jpg" if data else "")
        assert res.status == 400, (words, res.status)
        assert words.lower() in res.text.lower(), words
        assert ctx.drafts.get(draft).version == version       # the earlier good image is still the one
    assert _counts(ctx) == (0, 0)


def test_upload_over_the_size_limit_is_refused_before_it_is_read(staffed_server, nurse):
    ctx = staffed_server.ctx
    limit = staffed_server.cfg.server.max_upload_mb * 1024 * 1024
    uuid = _patient_uuid(nurse.register_patient("UP-2", "Big Upload"))
    draft = nurse.new_draft(uuid, "pap_smear")
    nurse.get(f"/drafts/{draft}")
    res = nurse.post(f"/drafts/{draft}/image", files={"image": ("big.jpg", b"\xff" * (limit + 2 * 1024 * 1024), "image/jpeg")})
    assert res.status == 413 and "too large" in res.text
    assert not ctx.drafts.get(draft).has_image and _counts(ctx) == (0, 0)


def test_quality_warning_is_shown_before_processing(staffed_server, nurse):
    uuid = _patient_uuid(nurse.register_patient("Q-1", "Quality Test"))
    draft = nurse.new_draft(uuid, "pap_smear")
    nurse.upload(draft, _jpeg(size=(120, 90), colour=(3, 3, 3)))      # tiny and black
    page = nurse.get(f"/drafts/{draft}").text
    assert 'id="quality-warnings"' in page and "Start processing" in page


def test_histopathology_decision_needs_a_doctor(staffed_server, nurse, datasets):
    uuid = _patient_uuid(nurse.register_patient("BR-1", "Breast Case"))
    draft = nurse.new_draft(uuid, "breast_histopathology")
    nurse.upload(draft, first_image(datasets, "breakhis", kind="originals").read_bytes())
    exam_uuid = nurse.process(draft).location.rsplit("/", 1)[-1]
    page = nurse.get(f"/exams/{exam_uuid}").text
    assert "→" in page and 'id="decision-form"' not in page
    assert nurse.post(f"/exams/{exam_uuid}/decide", {"agrees": "yes"}).status == 403
    exam = staffed_server.ctx.store.exams.get(exam_uuid)
    assert exam["decision"] is None and len(exam["result"]["path"]) >= 2
    doctor = staffed_server.client()
    doctor.login(*DOCTOR)
    doctor.get(f"/exams/{exam_uuid}")
    assert doctor.post(f"/exams/{exam_uuid}/decide", {"agrees": "no", "label": "no-such-class"}).status == 400
    assert staffed_server.ctx.store.exams.get(exam_uuid)["decision"] is None
    assert doctor.post(f"/exams/{exam_uuid}/decide", {"agrees": "yes", "note": "agree"}).status == 303
    assert staffed_server.ctx.store.exams.get(exam_uuid)["decision"]["agrees"] is True
    heat = doctor.get(f"/exams/{exam_uuid}/heatmap.png")
    assert heat.status == 200 and heat.body.startswith(b"\x89PNG")
    # A supervisor reads it but cannot decide or diagnose.
    supervisor = staffed_server.client()
    supervisor.login(*SUPERVISOR)
    assert supervisor.get(f"/exams/{exam_uuid}").status == 200
    assert 'id="chart-posts"' in supervisor.get("/statistics").text
    assert supervisor.post(f"/exams/{exam_uuid}/decide", {"agrees": "yes"}).status == 403
    assert supervisor.post("/drafts", {"patient_uuid": uuid, "analysis": "pap_smear"}).status == 403


def test_record_filters_are_kept_on_the_server_and_validated(staffed_server, nurse, datasets):
    a = _patient_uuid(nurse.register_patient("F-1", "Filter One"))
    b = _patient_uuid(nurse.register_patient("F-2", "Other Person"))
    for uuid in (a, b):
        draft = nurse.new_draft(uuid, "pap_smear")
        nurse.upload(draft, first_image(datasets, "herlev").read_bytes())
        nurse.process(draft)
    nurse.get("/records")
    res = nurse.post("/records", {"name": "Filter", "analysis": "pap_smear"})
    assert res.status == 303 and "Filter" not in res.location
    page = nurse.get("/records").text
    assert "Filter One" in page and "Other Person" not in page
    bad = nurse.post("/records", {"date_from": "2026-05-01", "date_to": "2026-01-01"})
    assert bad.status == 400 and "after the end date" in bad.text
    assert "Filter One" in nurse.get("/records").text and "Other Person" not in nurse.get("/records").text
    nurse.post("/records", {"clear": "1"})
    page = nurse.get("/records").text
    assert "Filter One" in page and "Other Person" in page


def test_api_answers_json_and_drafts_belong_to_their_owner(staffed_server, nurse, datasets):
    uuid = _patient_uuid(nurse.register_patient("API-1", "Api Patient"))
    draft = nurse.new_draft(uuid, "pap_smear")
    assert nurse.get(f"/api/drafts/{draft}").json()["has_image"] is False
    doctor = staffed_server.client()
    doctor.login(*DOCTOR)
    assert doctor.get(f"/api/drafts/{draft}").status == 404          # not theirs
    assert doctor.get(f"/drafts/{draft}").status == 404
    nurse.upload(draft, first_image(datasets, "herlev").read_bytes())
    summary = nurse.get(f"/api/drafts/{draft}/wait?version=0").json()
    assert summary["has_image"] and summary["version"] == 1 and "Api Patient" not in repr(summary)
