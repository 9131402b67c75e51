"""The result and the decision as the clinician meets them (issue 14, item 7): real kiosk under
waitress, records in the real store, Chromium with touch at 800×480 for the "Change" flow.

- one rounding rule: the headline and the bars show the same percentage;
- a saved decision is a summary with "Change"; changing asks for a reason, kept in the history;
- people are shown by display name; "Another class" never offers the model's own class;
- the heatmap says it covers only the centre crop;
- an image that failed the quality gate gets a result only after "Analyse anyway" (audited),
  and the result says "image quality poor".
"""
from __future__ import annotations

import html
import io
import re

import numpy as np
import pytest
from PIL import Image

from appliance.web import views
from test_result_decision_web import save_exam
from webutil import DOCTOR, NURSE, browser, live_server, staffed_server, web_cfg  # noqa: F401


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def login(live, who=NURSE):
    client = live.client()
    assert client.login(*who).status == 303
    return client


def test_headline_and_bars_use_one_rounding_rule(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", pid="RD-1")
    store = staffed_server.ctx.store
    record = store.exams.get(exam["uuid"])
    page = login(staffed_server).get(f"/exams/{exam['uuid']}")
    shown = views.probability_text(record["result"]["steps"][0]["probabilities"][record["label"]])
    path = re.search(r'id="cascade-path">(.*?)</p>', page.text, re.S).group(1)
    top_bar = re.search(r'bar-row top">.*?bar-value">([^<]+)<', page.text, re.S).group(1)
    assert shown in text_of(path) and top_bar == shown
    # A near-certain probability: the old headline said "100 %" while the bar said "99.9 %".
    assert views.probability_text(0.99962) == "> 99.9 %" and views.probability_text(0.00038) == "< 0.1 %"


def test_another_class_leaves_out_the_models_own_class(staffed_server):
    plain = save_exam(staffed_server, label="abnormal", pid="RD-2")
    page = login(staffed_server).get(f"/exams/{plain['uuid']}").text
    select = re.search(r'<fieldset[^>]*id="decision-label"[^>]*>(.*?)</fieldset>', page, re.S).group(1)
    assert 'value="abnormal"' not in select and 'value="normal"' in select
    # An out-of-scope image has no one-tap agree: there the clinician may name the model's class.
    flagged = save_exam(staffed_server, label="abnormal", flagged=True, pid="RD-3")
    page = login(staffed_server).get(f"/exams/{flagged['uuid']}").text
    select = re.search(r'<fieldset[^>]*id="decision-label"[^>]*>(.*?)</fieldset>', page, re.S).group(1)
    assert 'value="abnormal"' in select


def test_a_saved_decision_is_a_summary_and_a_change_needs_a_reason(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", pid="RD-4")
    store = staffed_server.ctx.store
    nurse = login(staffed_server)
    nurse.get(f"/exams/{exam['uuid']}")
    assert nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "yes", "note": ""}).status == 303
    page = nurse.get(f"/exams/{exam['uuid']}").text
    assert 'id="decision-saved"' in page and 'id="change-decision"' in page
    assert re.search(r'<form[^>]*id="decision-form" hidden[ >]', page), "the form stays closed after saving"
    summary = text_of(page[page.index('id="decision-saved"'):page.index('id="change-decision"')])
    assert "Nurse1" in summary and "nurse1" not in summary                   # the display name
    assert 'name="reason"' in page

    # A change without a reason is refused and changes nothing.
    before = store.exams.get(exam["uuid"])
    refused = nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "no", "label": "normal", "note": ""})
    assert refused.status == 400 and "Say why the decision is changed." in refused.text
    assert store.exams.get(exam["uuid"]) == before
    # The same decision again is no change: no reason needed, nothing written.
    assert nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "yes", "note": ""}).status == 303
    assert store.exams.get(exam["uuid"]) == before

    changed = nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "no", "label": "normal", "note": "",
                                                           "reason": "Second look under 40x"})
    assert changed.status == 303
    record = store.exams.get(exam["uuid"])
    assert record["decision"]["label"] == "normal" and record["decision"]["reason"] == "Second look under 40x"
    assert [d["label"] for d in record["decision_history"]] == ["abnormal"]
    decided = store.audit.query(action="exam.decide")[0][0]
    assert decided["detail"]["reason"] == "Second look under 40x"
    page = text_of(nurse.get(f"/exams/{exam['uuid']}").text)
    assert "Reason for the change: Second look under 40x" in page
    assert "Changed from Abnormal, decided by Nurse1" in page
    printed = text_of(nurse.get(f"/exams/{exam['uuid']}/print").text)
    assert "Second look under 40x" in printed and "Nurse1" in printed

    # The reason of one change stays in the history when the decision is changed again.
    assert nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "yes", "note": "",
                                                        "reason": "Doctor's review"}).status == 303
    history = store.exams.get(exam["uuid"])["decision_history"]
    assert [(d["label"], d.get("reason")) for d in history] == [("abnormal", None), ("normal", "Second look under 40x")]


def _blurred_jpeg() -> bytes:
    """A flat, featureless frame: the quality gate warns about it."""
    rng = np.random.default_rng(3)
    pixels = np.clip(180 + rng.normal(0, 1, (480, 640, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_an_image_that_failed_the_quality_gate_needs_analyse_anyway(staffed_server):
    store = staffed_server.ctx.store
    nurse = login(staffed_server)
    patient = nurse.register_patient("RD-5", "Quality Test").location.rsplit("/", 1)[-1]
    draft = nurse.new_draft(patient, "pap_smear")
    assert nurse.upload(draft, _blurred_jpeg()).status == 303
    page = nurse.get(f"/drafts/{draft}").text
    assert 'id="quality-warnings"' in page and "Analyse anyway" in page and 'name="anyway"' in page
    # "Start processing" without the explicit choice analyses nothing.
    version = int(re.search(r'name="version" value="(\d+)"', page).group(1))
    refused = nurse.post(f"/drafts/{draft}/process", {"version": version})
    assert refused.status == 409 and "did not pass the quality check" in refused.text
    assert store.exams.for_patient(patient) == []
    done = nurse.post(f"/drafts/{draft}/process", {"version": version, "anyway": "1"})
    assert done.status == 303
    uuid = done.location.rsplit("/", 1)[-1]
    assert store.exams.get(uuid)["result"]["quality"]["ok"] is False
    entries = store.audit.query(action="analyse_anyway")[0]
    assert entries and entries[0]["target_id"] == uuid and entries[0]["actor"] == NURSE[0]
    result = nurse.get(f"/exams/{uuid}").text
    assert 'id="quality-poor"' in result and "Image quality poor" in result


@pytest.mark.browser
def test_change_opens_the_form_and_the_heatmap_explains_the_crop_by_touch(staffed_server, browser, datasets):
    from webutil import first_image
    exam = save_exam(staffed_server, label="abnormal", pid="RD-6")
    staffed_server.ctx.store.exams.decide(exam["uuid"], "abnormal", by=DOCTOR[0])
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    page.goto(staffed_server.url + "/login")
    page.fill("input[name=username]", DOCTOR[0])
    page.fill("input[name=password]", DOCTOR[1])
    page.locator("form[action='/login'] button[type=submit]").tap()
    page.wait_for_url(re.compile(r"/$|/diagnose$"))
    page.goto(f"{staffed_server.url}/exams/{exam['uuid']}")
    assert page.locator("#decision-saved").is_visible() and not page.locator("#decision-form").is_visible()
    page.locator("#change-decision").tap()
    assert page.locator("#decision-form").is_visible() and page.locator("#decision-reason").is_visible()
    page.locator("#cancel-change").tap()
    assert not page.locator("#decision-form").is_visible() and page.locator("#change-decision").is_visible()

    # A fresh result of a real image: the heatmap's note says what it covers.
    nurse = staffed_server.logged_in(NURSE)
    patient = nurse.register_patient("RD-7", "Heatmap Test").location.rsplit("/", 1)[-1]
    draft = nurse.new_draft(patient, "pap_smear")
    nurse.upload(draft, first_image(datasets, "herlev").read_bytes())
    uuid = nurse.process(draft).location.rsplit("/", 1)[-1]
    page.goto(f"{staffed_server.url}/exams/{uuid}")
    assert not page.locator("#heatmap-note").is_visible()
    page.locator("#heatmap-toggle").tap()
    assert page.locator("#heatmap-note").is_visible()
    assert "only the centre of the image" in page.locator("#heatmap-note").inner_text()
    context.close()
