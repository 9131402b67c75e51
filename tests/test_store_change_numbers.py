"""Change numbers (schema 3): every write of a record at its home post stamps it with the post's
change counter, merges order versions by it, and a format 2 store is upgraded without a rewrite."""
from __future__ import annotations

import json

import pytest

from appliance.config import load_config
from appliance.store import Store, ordering
from appliance.store.migrations import SCHEMA_VERSION, stored_version

from test_store_support import jpeg_bytes, register, result_json, save_exam


@pytest.fixture
def store(cfg):
    with Store.open(cfg) as opened:
        yield opened


def _other(tmp_path, name="office"):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return load_config(data_dir=folder, environ={})


def test_each_write_at_the_home_post_takes_the_posts_next_change_number(store, cfg):
    patient = register(store)
    exam = save_exam(store, patient)
    assert ordering.change_of(patient) > 0 and ordering.change_of(exam) > ordering.change_of(patient)
    decided = store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    assert ordering.change_of(decided) > ordering.change_of(exam)
    updated = store.patients.update(patient["uuid"], address="Kebele 2", by="nurse1")
    assert ordering.change_of(updated) > ordering.change_of(decided)
    assert ordering.change_of(updated) <= store.change_seq()
    # They leave the store with the records (a USB bundle carries them).
    exported = {r["uuid"]: r for r in store.changes("exams")}
    assert exported[exam["uuid"]][ordering.FIELD] == ordering.change_of(decided)


def test_a_merged_record_keeps_the_change_number_its_own_post_gave_it(store, tmp_path):
    patient = register(store)
    exam = save_exam(store, patient)
    with Store.open(_other(tmp_path)) as office:
        office.images.put(jpeg_bytes(0))
        assert office.merge("patients", store.patients.get(patient["uuid"])) == "inserted"
        assert office.merge("exams", store.exams.get(exam["uuid"])) == "inserted"
        kept = office.exams.get(exam["uuid"])
        assert kept[ordering.FIELD] == exam[ordering.FIELD]
        # A later version from the post wins even when it is dated earlier (a clock put back).
        later = store.exams.decide(exam["uuid"], "normal", by="doctor1")
        back_dated = dict(later, updated_at="2001-01-01T00:00:00.000Z")
        assert office.merge("exams", back_dated) == "updated"
        assert office.merge("exams", exam) == "older"
        assert office.exams.get(exam["uuid"])["final_label"] == "normal"


def _as_format_2(data_dir):
    """Make a data folder look as format 2 software left it: schema 2, no change numbers."""
    for path in (data_dir / "store").rglob("*.json"):
        doc = json.loads(path.read_text())
        for table in doc.values():
            for record in table.values():
                record.pop(ordering.FIELD, None)
                if record.get("key") == "schema_version":
                    record["value"] = 2
        path.write_text(json.dumps(doc))
    for prev in (data_dir / "store").rglob("*.prev"):
        prev.unlink()


def test_a_format_2_store_is_upgraded_without_rewriting_a_record(cfg, tmp_path):
    with Store.open(cfg) as store:
        patient = register(store)
        exam = save_exam(store, patient)
        post_id = store.post_id
    _as_format_2(cfg.data_dir)
    assert stored_version(cfg.data_dir) == 2
    chunks = sorted(p for p in (cfg.data_dir / "store").rglob("*.json") if p.parent.name != "store")
    before = {p: p.read_bytes() for p in chunks}
    with Store.open(cfg) as store:
        assert stored_version(cfg.data_dir) == SCHEMA_VERSION == 4     # through 3 (change numbers) to 4
        assert any("upgraded to format 3" in w for w in store.warnings)
        assert {p: p.read_bytes() for p in chunks} == before, "no record file is rewritten"
        old = store.exams.get(exam["uuid"])
        assert ordering.FIELD not in old and ordering.change_of(old) == 0 and store.post_id == post_id
        # The first change after the upgrade numbers the record: later than any unnumbered version.
        decided = store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
        assert ordering.change_of(decided) > 0
        with Store.open(_other(tmp_path)) as office:
            office.images.put(jpeg_bytes(0))
            office.merge("patients", store.patients.get(patient["uuid"]))
            assert office.merge("exams", old) == "inserted"
            assert office.merge("exams", old) == "unchanged"
            assert office.merge("exams", decided) == "updated"
    with Store.open(cfg) as store:        # once upgraded, opening again changes nothing
        assert not any("upgraded" in w for w in store.warnings)


def test_an_exam_saved_by_older_software_still_saves_and_decides(cfg):
    """A format 2 record without a change number is edited like any other after the upgrade."""
    with Store.open(cfg) as store:
        patient = register(store, "JU-5", "Hana Girma")
        exam = store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear",
                                 "result": result_json("pap_smear", "normal")}, jpeg_bytes(3), by="nurse1")
    _as_format_2(cfg.data_dir)
    with Store.open(cfg) as store:
        assert store.exams.decide(exam["uuid"], "normal", by="doctor1")["status"] == "decided"
