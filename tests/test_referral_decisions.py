"""Referrals: a clinician may record "image not suitable — retake or refer" or "uncertain — refer
for a second opinion" instead of a class. They are decision values, never model classes: the
store keeps them, the image library files no image under them, statistics count them apart
from the classes (no prevalence share), and they travel to the supervisor and into DHIS2/CSV
outputs correctly."""
from __future__ import annotations

import csv
import json

import pytest

from appliance import catalogue
from appliance.errors import UserError
from appliance.exchange import dhis2, importer, stats
from appliance.exchange.export import export_bundle

from test_exchange_support import world  # noqa: F401


def test_referrals_are_decision_values_not_model_classes():
    assert {"not_suitable", "refer"} == set(catalogue.REFERRAL_IDS)
    for analysis_id, labels in catalogue.all_label_ids().items():
        assert not set(labels) & catalogue.REFERRAL_IDS          # never a class, never a training label
        assert set(catalogue.all_decision_ids()[analysis_id]) == set(labels) | catalogue.REFERRAL_IDS
    for model in catalogue.MODELS.values():
        assert not set(model.class_ids) & catalogue.REFERRAL_IDS


def test_store_records_a_referral_and_files_no_image_under_it(world):
    store = world.post.store
    _, exam = world.add_exam("JU-1", "Almaz Kebede", label="abnormal", decide="abnormal")
    sha = exam["image"]["sha256"]
    assert [i["sha256"] for i in store.images.browse(analysis="pap_smear", label="abnormal")[0]] == [sha]
    decided = store.exams.decide(exam["uuid"], "not_suitable", note="blurred, retaken", by="nurse1")
    assert decided["final_label"] == "not_suitable" and decided["status"] == "decided"
    assert decided["decision"]["label"] == "not_suitable" and decided["decision"]["agrees"] is False
    library = store.images.library / "pap_smear"
    assert not (library / "confirmed" / "abnormal" / f"{sha}.{exam['image']['ext']}").exists()   # un-filed from its class
    assert not list(library.rglob(f"{sha}.*")) and store.images.filed_path(decided) is None      # and filed nowhere
    assert store.images.reconcile() == 0                                             # the same after a rebuild
    counts = store.stats()
    assert counts["by_decision"] == {"referred": 1}
    assert "not_suitable" not in counts["by_class"].get("pap_smear", {})      # no finding, no class count
    assert [c["label"] for c in counts["cells"]] == ["not_suitable"]


def test_a_model_label_or_decision_outside_the_choices_is_refused(world):
    store = world.post.store
    _, exam = world.add_exam("JU-2", "Hana Girma")
    before = store.exams.get(exam["uuid"])
    with pytest.raises(UserError, match="not a class .* nor a referral"):
        store.exams.decide(exam["uuid"], "maybe", by="nurse1")
    patient = store.patients.by_pid("JU-2")
    with pytest.raises(UserError, match="not a class"):      # a referral is never the model's answer
        store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear", "source": "file",
                          "result": {"label": "not_suitable"}}, world.next_image("pap_smear").read_bytes(),
                         by="nurse1")
    assert store.exams.get(exam["uuid"]) == before and len(store.exams.for_patient(patient["uuid"])) == 1


def _mapping(w, tmp_path, extra: str = "") -> None:
    text = dhis2.DEFAULT_MAPPING.read_text().replace(
        "[org_units]\n", f'[org_units]\n"{w.post.store.post_id}" = "OU_AGARO"\n')
    text = text.replace('abnormal = "BCCDMS_ABNORMAL"\n', 'abnormal = "BCCDMS_ABNORMAL"\n' + extra)
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    w.supervisor.cfg.exchange.dhis2_mapping = str(path)


def test_referrals_reach_the_supervisor_and_count_apart_from_the_classes(world, tmp_path):
    w = world
    w.add_exam("A-1", "Almaz Kebede", decide="normal")
    w.add_exam("A-2", "Hana Girma", label="abnormal", decide="abnormal")
    w.add_exam("A-3", "Selam Tesfaye", label="abnormal", decide="not_suitable")
    w.add_exam("A-4", "Meron Assefa", decide="refer")
    bundle = export_bundle(w.post.store, w.post.cfg, w.stick, csv=True).path
    (report,) = importer.import_bundles(w.supervisor.store, w.supervisor.cfg, [bundle], by="super1")
    assert report.merged["exams"]["inserted"] == 4                 # the import checks accept referrals

    summary = stats.cross_post(w.supervisor.store)
    pap = summary["by_analysis"]["pap_smear"]
    assert pap["exams"] == 4 and pap["decided"] == 2 and pap["referred"] == 2
    assert pap["by_class"] == {"normal": 1, "abnormal": 1}
    assert pap["by_referral"] == {"not_suitable": 1, "refer": 1}
    assert pap["prevalence"] == {"abnormal": 0.5, "normal": 0.5}   # a referral is no finding
    assert summary["by_decision"] == {"agrees": 2, "referred": 2}
    assert stats.count_cube(w.supervisor.store) == stats.store_cube(w.supervisor.store)

    # DHIS2: referrals are left out of the class counts and the total, unless mapped.
    _mapping(w, tmp_path)
    out = tmp_path / "values.json"
    dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    values = {(v["dataElement"], v.get("categoryOptionCombo")): v["value"]
              for v in json.loads(out.read_text())["dataValues"]}
    assert values[("BCCDMS_PAP_SMEAR", "BCCDMS_NORMAL")] == "1"
    assert values[("BCCDMS_PAP_SMEAR", "BCCDMS_ABNORMAL")] == "1"
    assert values[("BCCDMS_PAP_SMEAR_TOTAL", None)] == "2"
    _mapping(w, tmp_path, 'not_suitable = "BCCDMS_NOT_SUITABLE"\n')
    dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    values = {(v["dataElement"], v.get("categoryOptionCombo")): v["value"]
              for v in json.loads(out.read_text())["dataValues"]}
    assert values[("BCCDMS_PAP_SMEAR", "BCCDMS_NOT_SUITABLE")] == "1"

    # The CSV in the bundle names the referral as the final label.
    staged = tmp_path / "staged"
    importer.extract_bundle(w.supervisor.cfg, bundle, staged)
    (table,) = staged.rglob("exams.csv")
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert sorted(r["final_label"] for r in rows) == ["abnormal", "normal", "not_suitable", "refer"]


def test_a_deidentified_export_keeps_the_referral(world, tmp_path):
    w = world
    w.add_exam("A-1", "Almaz Kebede", label="abnormal", decide="not_suitable")
    bundle = export_bundle(w.post.store, w.post.cfg, w.stick, deidentified=True).path
    out = tmp_path / "research"
    importer.extract_bundle(w.supervisor.cfg, bundle, out)
    (records,) = out.rglob("exams.jsonl")
    (record,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert record["final_label"] == "not_suitable" and record["decision"]["label"] == "not_suitable"
    assert record["label"] == "abnormal"
