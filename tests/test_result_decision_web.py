"""The result page's decision for results the model should not be trusted on (real kiosk under
waitress, records in the real store):

- out of scope (flagged): no one-tap "Agree", "Retake the image" first and big, "Image not
  suitable — retake or refer" recorded as a decision (never a class); agreeing by a forged
  POST is refused and changes nothing;
- uncertain: "Uncertain — refer for a second opinion" comes before the agree choice, which
  says the model is not confident;
- a plain result keeps its one-tap "Agree".
"""
from __future__ import annotations

import hashlib
import re

import pytest

from test_store_support import jpeg_bytes, result_json
from webutil import DOCTOR, NURSE, SUPERVISOR, browser, live_server, staffed_server, web_cfg  # noqa: F401


def save_exam(live, analysis="pap_smear", label=None, *, flagged=False, uncertain=False, pid="JU-000501",
              warnings=()):
    store = live.ctx.store
    patient = store.patients.by_pid(pid) or store.patients.register(pid, "Tigist Alemu", age_years=38, by="nurse1")
    result = result_json(analysis, label)
    result["demo"] = False
    result["out_of_scope"] = {"flagged": flagged, "score": 9.0 if flagged else 0.1, "assessed": True,
                              "reason": "far from the training images" if flagged else None}
    result["uncertain"] = uncertain
    result["quality"]["warnings"] = [{"code": w, "message": "The image is blurred."} for w in warnings]
    image = jpeg_bytes(len(store.exams.for_patient(patient["uuid"])) + 1)
    result["image_info"]["sha256"] = hashlib.sha256(image).hexdigest()
    return store.exams.save({"patient_uuid": patient["uuid"], "analysis": analysis, "source": "file",
                             "result": result}, image, by="nurse1")


def login(live, who=NURSE):
    client = live.client()
    assert client.login(*who).status == 303
    return client


def radios(page: str) -> list[str]:
    """The decision form's choices, in the order shown."""
    form = page[page.index('id="decision-form"'):]
    return re.findall(r'name="agrees" value="([^"]+)"', form)


def test_out_of_scope_result_offers_retake_and_not_suitable_but_no_one_tap_agree(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", flagged=True)
    nurse = login(staffed_server)
    page = nurse.get(f"/exams/{exam['uuid']}").text
    assert 'class="alert-scope"' in page
    assert radios(page) == ["not_suitable", "no"] and "Agree:" not in page
    retake = re.search(r'<button class="btn([^"]*)" type="submit" id="retake">', page)
    assert retake and "btn-primary" in retake.group(1)                        # the big first button
    assert page.index('id="retake-form"') < page.index('id="decision-form"')

    # A forged one-tap agree is refused and changes nothing.
    before = staffed_server.ctx.store.exams.get(exam["uuid"])
    refused = nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "yes", "note": ""})
    assert refused.status == 400 and "cannot be agreed to in one tap" in refused.text
    assert staffed_server.ctx.store.exams.get(exam["uuid"]) == before

    saved = nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "not_suitable", "note": "smear too thick"})
    assert saved.status == 303
    record = staffed_server.ctx.store.exams.get(exam["uuid"])
    assert record["final_label"] == "not_suitable" and record["decision"]["note"] == "smear too thick"
    page = nurse.get(f"/exams/{exam['uuid']}").text
    shown = page[page.index('id="decision-saved"'):]
    assert "Image not suitable — retake or refer" in shown and "no class given" in shown
    assert radios(page)[0] == "not_suitable" and 'value="not_suitable" required checked' in page
    printed = nurse.get(f"/exams/{exam['uuid']}/print").text
    assert "Image not suitable — retake or refer" in printed and "no class given" in printed


def test_a_clinician_may_still_name_the_class_of_a_flagged_image_explicitly(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", flagged=True, pid="JU-000502")
    nurse = login(staffed_server)
    nurse.get(f"/exams/{exam['uuid']}")
    assert nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "no", "label": "abnormal"}).status == 303
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["decision"]["agrees"] is True


def test_retake_records_not_suitable_and_opens_a_new_image_step(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", flagged=True, pid="JU-000503")
    nurse = login(staffed_server)
    nurse.get(f"/exams/{exam['uuid']}")
    res = nurse.post(f"/exams/{exam['uuid']}/retake")
    assert res.status == 303 and "/drafts/" in res.location
    draft = staffed_server.ctx.drafts.get(res.location.rsplit("/", 1)[-1])
    assert draft.patient_uuid == exam["patient_uuid"] and draft.analysis == "pap_smear" and not draft.has_image
    record = staffed_server.ctx.store.exams.get(exam["uuid"])
    assert record["final_label"] == "not_suitable" and record["decision"]["by"] == NURSE[0]


def test_retake_by_a_nurse_leaves_a_histopathology_decision_to_the_doctor(staffed_server):
    exam = save_exam(staffed_server, "breast_histopathology", flagged=True, pid="JU-000504")
    nurse = login(staffed_server)
    page = nurse.get(f"/exams/{exam['uuid']}").text
    assert 'id="retake-form"' in page and 'id="decision-form"' not in page
    res = nurse.post(f"/exams/{exam['uuid']}/retake")
    assert res.status == 303 and "/drafts/" in res.location
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["decision"] is None     # the doctor decides


def test_retake_needs_the_diagnose_role(staffed_server):
    exam = save_exam(staffed_server, flagged=True, pid="JU-000505")
    supervisor = login(staffed_server, SUPERVISOR)
    page = supervisor.get(f"/exams/{exam['uuid']}").text
    assert 'id="retake-form"' not in page
    assert supervisor.post(f"/exams/{exam['uuid']}/retake").status == 403
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["decision"] is None


def test_uncertain_result_puts_refer_for_a_second_opinion_first(staffed_server):
    exam = save_exam(staffed_server, label="abnormal", uncertain=True, pid="JU-000506")
    doctor = login(staffed_server, DOCTOR)
    page = doctor.get(f"/exams/{exam['uuid']}").text
    assert radios(page) == ["refer", "yes", "no"]
    form = page[page.index('id="decision-form"'):]
    assert form.index("Uncertain — refer for a second opinion") < form.index("Agree: Abnormal (the model is not confident)")
    assert 'id="retake-form"' in page                                            # a retake may help, not first
    assert doctor.post(f"/exams/{exam['uuid']}/decide", {"agrees": "refer", "note": "to Jimma"}).status == 303
    record = staffed_server.ctx.store.exams.get(exam["uuid"])
    assert record["final_label"] == "refer" and record["status"] == "decided"
    assert staffed_server.ctx.store.stats()["by_decision"].get("referred") == 1


def test_plain_result_keeps_the_one_tap_agree(staffed_server):
    exam = save_exam(staffed_server, label="normal", pid="JU-000507")
    nurse = login(staffed_server)
    page = nurse.get(f"/exams/{exam['uuid']}").text
    assert radios(page) == ["yes", "no"] and "Agree: Normal" in page and 'id="retake-form"' not in page
    # Referrals stay reachable for any result, under "Another class".
    assert 'value="not_suitable"' in page and 'value="refer"' in page
    assert nurse.post(f"/exams/{exam['uuid']}/decide", {"agrees": "yes"}).status == 303
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["final_label"] == "normal"


@pytest.mark.parametrize("form, words", [
    ({"agrees": "maybe"}, "Choose whether you agree"),
    ({"agrees": "no", "label": "lung"}, "Choose the class you found"),
    ({}, "Choose whether you agree"),
])
def test_bad_decisions_are_refused_and_change_nothing(staffed_server, form, words):
    exam = save_exam(staffed_server, uncertain=True, pid="JU-000508")
    nurse = login(staffed_server)
    nurse.get(f"/exams/{exam['uuid']}")
    res = nurse.post(f"/exams/{exam['uuid']}/decide", form)
    assert res.status == 400 and words in res.text
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["decision"] is None


@pytest.mark.browser
def test_flagged_result_on_the_800x480_touchscreen(staffed_server, browser, artifacts_dir):
    """What the nurse sees: the red banner, then "Retake the image" as the big first button."""
    from webutil import browser_login
    exam = save_exam(staffed_server, label="abnormal", flagged=True, pid="JU-000509")
    page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
    browser_login(page, staffed_server.url, *NURSE)
    page.goto(f"{staffed_server.url}/exams/{exam['uuid']}")
    page.locator("#decision").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "result_out_of_scope_800x480.png"))
    assert page.locator("#retake").is_visible() and page.locator("text=Agree:").count() == 0
    page.locator("#retake").tap()
    page.wait_for_url(f"{staffed_server.url}/drafts/*")
    assert staffed_server.ctx.store.exams.get(exam["uuid"])["final_label"] == "not_suitable"


def test_statistics_and_records_show_referrals_apart_from_the_classes(staffed_server):
    store = staffed_server.ctx.store
    first = save_exam(staffed_server, label="abnormal", pid="JU-000510")
    second = save_exam(staffed_server, label="abnormal", flagged=True, pid="JU-000511")
    store.exams.decide(first["uuid"], "abnormal", by=NURSE[0])
    store.exams.decide(second["uuid"], "not_suitable", by=NURSE[0])
    nurse = login(staffed_server)
    page = nurse.get("/statistics").text
    table = page[page.index('<table class="list stats-table" data-analysis="pap_smear">'):]
    table = table[:table.index("</table>")]
    assert "<td>Abnormal</td><td>1</td><td>100.0 %</td>" in table          # the referral is no finding
    assert '<tr class="referred"><td>Image not suitable — retake or refer</td><td>1</td>' in table
    assert "Referred without a class" in page
    records = nurse.get("/records").text
    assert 'value="not_suitable"' in records and "Image not suitable — retake or refer" in records
