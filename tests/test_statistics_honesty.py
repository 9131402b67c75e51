"""Statistics say what they count: one vocabulary of decisions, prevalence from clinicians' decisions
only, demo-model exams and exams awaiting a decision reported apart (store, CLI, kiosk, cross-post)."""
from __future__ import annotations

import html
import json
import re

import pytest

from appliance.cli import main as cli
from appliance.exchange import stats
from appliance.store import Store, exams
from appliance.web import routes_browse, routes_exchange

from test_store_support import register, result_json, save_exam
from webutil import NURSE, SUPERVISOR, live_server, staffed_server, web_cfg  # noqa: F401


def test_one_vocabulary_of_decisions(cfg):
    with Store.open(cfg) as store:
        patient = register(store)
        waiting = save_exam(store, patient, seed=1, demo=False)
        decided = save_exam(store, patient, seed=2, demo=False)
        store.exams.decide(decided["uuid"], "normal", by="doctor1")
        by_decision = store.stats()["by_decision"]
        assert by_decision == {waiting["status"]: 1, exams.DISAGREES: 1}
        assert waiting["status"] == exams.AWAITING and store.exams.get(decided["uuid"])["status"] == exams.DECIDED
        assert stats.cross_post(store)["by_decision"] == by_decision
        assert set(by_decision) <= set(exams.DECISION_NAMES)
    # One label table for the kiosk's two statistics pages.
    assert not hasattr(routes_browse, "DECISION_LABELS") and not hasattr(routes_exchange, "DECISION_LABELS")


def _fill(store) -> None:
    """Pap smears: two decided (prevalence 1 normal : 1 abnormal), two the model called abnormal
    that wait for a decision (one uncertain, one out of scope), and two made with demo models."""
    patient = register(store)
    decided_normal = save_exam(store, patient, seed=1, demo=False)
    store.exams.decide(decided_normal["uuid"], "normal", by="doctor1")
    decided_abnormal = save_exam(store, patient, seed=2, demo=False)
    store.exams.decide(decided_abnormal["uuid"], "abnormal", by="doctor1")
    uncertain = result_json("pap_smear", "abnormal") | {"uncertain": True, "demo": False}
    save_exam(store, patient, seed=3, result=uncertain, demo=False)
    out_of_scope = result_json("pap_smear", "abnormal") | {
        "demo": False, "out_of_scope": {"flagged": True, "score": 0.9, "reason": "not a Pap smear"}}
    save_exam(store, patient, seed=4, result=out_of_scope, demo=False)
    demo = save_exam(store, patient, seed=5)                                   # demo pack: demo=True
    store.exams.decide(demo["uuid"], "abnormal", by="doctor1")
    save_exam(store, patient, "cervix_type", seed=6)


def test_store_stats_count_prevalence_from_decisions_and_keep_demo_apart(cfg):
    with Store.open(cfg) as store:
        _fill(store)
        s = store.stats()
        assert (s["exams"], s["decided"], s["awaiting_decision"], s["demo_exams"]) == (4, 2, 2, 2)
        assert s["by_class"] == {"pap_smear": {"abnormal": 1, "normal": 1}}
        assert s["by_analysis"] == {"pap_smear": 4} and s["awaiting_by_analysis"] == {"pap_smear": 2}
        assert s["by_decision"] == {exams.AWAITING: 2, exams.AGREES: 1, exams.DISAGREES: 1}
        assert sum(s["by_month"].values()) == sum(s["by_post"].values()) == sum(s["by_age_group"].values()) == 4
        assert sum(c["count"] for c in s["cells"]) == 6 and sum(c["count"] for c in s["cells"] if c["demo"]) == 2

        everything = store.stats(include_demo=True)
        assert (everything["exams"], everything["decided"], everything["awaiting_decision"]) == (6, 3, 3)
        assert everything["by_class"] == {"pap_smear": {"abnormal": 2, "normal": 1}}

        # The cross-post page: the same rule, and the index's cube is the exact one (demo flag included).
        assert stats.store_cube(store) == stats.count_cube(store)
        summary = stats.cross_post(store)
        assert (summary["exams"], summary["awaiting_decision"], summary["demo_exams"]) == (4, 2, 2)
        pap = summary["by_analysis"]["pap_smear"]
        assert pap["by_class"] == {"abnormal": 1, "normal": 1} and pap["prevalence"] == {"abnormal": 0.5, "normal": 0.5}
        assert (pap["exams"], pap["decided"], pap["awaiting_decision"]) == (4, 2, 2)
        assert summary["by_post"][store.post_id]["awaiting_decision"] == 2
        assert "cervix_type" not in summary["by_analysis"]                   # only demo exams there


def test_stats_cli_json_and_text(cfg, capsys):
    with Store.open(cfg) as store:
        _fill(store)
    assert cli(["stats", "--json", "--data-dir", str(cfg.data_dir)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("exams", "demo_exams", "awaiting_decision")} == {
        "exams": 4, "demo_exams": 2, "awaiting_decision": 2}
    assert doc["patients"] == 1 and doc["by_analysis"] == {"pap_smear": 4}
    assert doc["by_class"] == {"pap_smear": {"abnormal": 1, "normal": 1}}
    assert cli(["stats", "--json", "--include-demo", "--data-dir", str(cfg.data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["by_class"]["pap_smear"] == {"abnormal": 2, "normal": 1}
    assert cli(["stats", "--data-dir", str(cfg.data_dir)]) == 0
    text = capsys.readouterr().out
    assert "awaiting decision: 2" in text and "made with demo models (not counted): 2" in text


@pytest.fixture
def kiosk(staffed_server):
    _fill(staffed_server.ctx.store)
    return staffed_server


def _cell_text(page: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}">([^<]*)<', page).group(1)


def test_kiosk_statistics_page(kiosk):
    nurse = kiosk.logged_in(NURSE)
    page = nurse.get("/statistics").text
    assert (_cell_text(page, "stat-exams"), _cell_text(page, "stat-awaiting"), _cell_text(page, "stat-demo")) == (
        "4", "2", "2")
    charts = json.loads(html.unescape(re.search(r'data-charts="([^"]*)"', page).group(1)))
    pap = next(a for a in charts["analyses"] if a["id"] == "pap_smear")
    assert (pap["exams"], pap["total"], pap["awaiting"]) == (4, 2, 2)
    assert {c["id"]: c["prevalence"] for c in pap["classes"] if c["count"]} == {"normal": 0.5, "abnormal": 0.5}
    assert next(a for a in charts["analyses"] if a["id"] == "cervix_type")["total"] == 0


def test_cross_post_page_shows_demo_and_awaiting_apart(kiosk):
    supervisor = kiosk.logged_in(SUPERVISOR)
    page = supervisor.get("/exchange/statistics").text
    assert (_cell_text(page, "stat-exams"), _cell_text(page, "stat-awaiting"), _cell_text(page, "stat-demo")) == (
        "4", "2", "2")
    row = re.search(r'<tr class="total">(.*?)</tr>', page, re.S).group(1)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[1:3] == ["4", "2"] and all("50" in c for c in cells[3:]) and len(cells) == 5
