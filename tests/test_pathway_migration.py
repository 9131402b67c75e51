"""A store written before the screening pathway (format 2) opens as format 4: every exam stays as it
was and valid without a visit, and visits can be added to it."""
from __future__ import annotations

import json
from datetime import date

from appliance.store import Store
from appliance.store.migrations import SCHEMA_VERSION, stored_version

from pathway_support import save
from test_store_support import register, save_exam


def _set_format(data_dir, version: int) -> None:
    meta = data_dir / "store" / "meta.json"
    doc = json.loads(meta.read_text())
    for entry in doc["meta"].values():
        if entry["key"] == "schema_version":
            entry["value"] = version
    meta.write_text(json.dumps(doc))


def test_a_format_2_store_is_upgraded_and_keeps_its_exams(cfg):
    with Store.open(cfg) as store:
        woman = register(store)
        exam = save_exam(store, woman, "pap_smear", "abnormal")
        store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
        before = (store.exams.get(exam["uuid"]), store.patients.get(woman["uuid"]), store.stats()["exams"])
    _set_format(cfg.data_dir, 2)
    assert stored_version(cfg.data_dir) == 2
    with Store.open(cfg) as store:
        assert SCHEMA_VERSION == 4 and store.meta_get("schema_version") == 4
        assert any("upgraded to format 4" in w for w in store.warnings)
        assert (store.exams.get(exam["uuid"]), store.patients.get(woman["uuid"]), store.stats()["exams"]) == before
        assert store.care.for_patient(woman["uuid"])["visits"] == []
        done = save(store, woman, "2026-02-02", exam_uuids=[exam["uuid"]])
        assert done["visit"]["cytology"] == {"result": "abnormal", "exam_uuid": exam["uuid"]}
    with Store.open(cfg) as store:                     # once only, and the visit is there after a restart
        assert not store.warnings
        assert store.visits.get(done["visit"]["uuid"])["exam_uuids"] == [exam["uuid"]]
        assert store.care.summary()["indicators"]["screened"]["numerator"] == 1


def test_the_visit_index_is_rebuilt_from_the_files_without_its_cache(cfg):
    with Store.open(cfg) as store:
        woman = register(store)
        done = save(store, woman, "2026-02-02", via="positive")
    for cache in (cfg.data_dir / "store" / "index").glob("*/*"):
        cache.unlink()
    with Store.open(cfg) as store:
        listed = store.care.followup_list(today=date(2026, 4, 1))
        assert listed["overdue"]["items"][0]["uuid"] == done["followup"]["uuid"]
        assert store.care.summary()["indicators"]["screen_positive_via"]["numerator"] == 1
