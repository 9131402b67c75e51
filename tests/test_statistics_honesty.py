"""Statistics say what they count: one vocabulary of decisions, prevalence from clinicians' decisions
only, demo-model exams and exams awaiting a decision reported apart (store, CLI, kiosk, cross-post)."""
from __future__ import annotations

from appliance.exchange import stats
from appliance.store import Store, exams
from appliance.web import routes_browse, routes_exchange

from test_store_support import register, save_exam


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
