"""A clinician's decision that is changed is never lost: the earlier one stays on the record and
in the store's history, and the result page says what it was changed from, by whom and when."""
from __future__ import annotations

import html
import re

from appliance.store import Store
from test_store_support import register, save_exam
from webutil import DOCTOR, live_server, staffed_server, web_cfg  # noqa: F401


def test_a_changed_decision_keeps_the_earlier_one(cfg):
    with Store.open(cfg) as store:
        exam = save_exam(store, register(store), demo=False)                    # the model said abnormal
        first = store.exams.decide(exam["uuid"], "abnormal", note="clear case", by="nurse1")
        assert "decision_history" not in first
        assert store.exams.decide(exam["uuid"], "abnormal", note="clear case", by="nurse1") == first   # a second tap
        second = store.exams.decide(exam["uuid"], "normal", note="on review", by="doctor1")
        assert second["decision"]["label"] == "normal" and second["decision"]["by"] == "doctor1"
        assert second["decision_history"] == [first["decision"]]
        third = store.exams.decide(exam["uuid"], "abnormal", by="doctor2")
        assert [(d["label"], d["by"], d["note"]) for d in third["decision_history"]] == [
            ("abnormal", "nurse1", "clear case"), ("normal", "doctor1", "on review")]
        kept = store._history.versions(exam["uuid"])
        assert [v["decision"]["label"] for v in kept] == ["abnormal", "normal"]
        assert [e["detail"].get("previous") for e in store.audit.query(action="exam.decide")[0]] == [
            "normal", "abnormal", None]
    with Store.open(cfg) as store:                                                # durable
        assert store.exams.get(exam["uuid"])["decision_history"] == third["decision_history"]


def test_the_result_page_says_what_a_decision_was_changed_from(staffed_server):
    store = staffed_server.ctx.store
    exam = save_exam(store, register(store), demo=False)
    store.exams.decide(exam["uuid"], "abnormal", by="nurse1")
    earlier = store.exams.get(exam["uuid"])["decision"]["at"]
    store.exams.decide(exam["uuid"], "normal", note="on review", by="doctor1")
    doctor = staffed_server.logged_in(DOCTOR)
    page = doctor.get(f"/exams/{exam['uuid']}")
    assert page.status == 200
    box = html.unescape(re.sub(r"<[^>]+>", " ", re.search(r'id="decision-saved">(.*?)</div>', page.text, re.S).group(1)))
    assert "Normal" in box and "on review" in box
    changed = re.search(r"Changed from (\w+), decided by (\w+) on (.+)", box)
    assert changed and changed.groups()[:2] == ("Abnormal", "Nurse1")      # by display name, not username
    assert earlier[:4] in changed.group(3)            # the day of the earlier decision
