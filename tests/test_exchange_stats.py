"""Statistics across posts and the DHIS2 dataValueSets output, on a supervisor store filled by real imports."""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import pytest

from appliance.errors import UserError
from appliance.exchange import dhis2, importer, stats
from appliance.exchange.export import export_bundle

from test_exchange_support import build_world

PERIOD = datetime.now(timezone.utc).strftime("%Y%m")


@pytest.fixture(scope="module")
def merged(tmp_path_factory, datasets):
    """Two posts' exams imported on the supervisor's box (built once: the tests only read it)."""
    w = build_world(tmp_path_factory.mktemp("merged"), datasets)
    w.add_exam("A-1", "Almaz Kebede", decide="normal", birth_date="1990-01-01")
    w.add_exam("A-2", "Hana Girma", decide="normal", age_years=35)
    w.add_exam("A-3", "Selam Tesfaye", label="abnormal", decide="abnormal", age_years=52)
    w.add_exam("A-4", "Meron Assefa", label="abnormal")                            # awaiting a decision
    w.add_exam("A-5", "Tigist Alemu", analysis="breast_histopathology", label="fibroadenoma", decide="fibroadenoma")
    w.add_exam("A-6", "Genet Haile", analysis="breast_histopathology", label="ductal_carcinoma",
               decide="lobular_carcinoma")
    w.add_exam("A-7", "Demo Patient", decide="abnormal", demo=True)               # untrained models
    other = w.new_post("Bedele health post")
    w.trust(other)
    w.add_exam("B-1", "Yeshi Bekele", box=other, analysis="cervix_type", label="type_2", decide="type_2")
    for box in (w.post, other):
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg,
                               export_bundle(box.store, box.cfg, w.stick).path)
    w.other = other
    yield w
    other.store.close()
    w.close()


def _mapping(w, tmp_path, **changes) -> None:
    text = dhis2.DEFAULT_MAPPING.read_text()
    text = text.replace("[org_units]\n", f'[org_units]\n"{w.post.store.post_id}" = "OU_AGARO"\n'
                                         f'"{w.other.store.post_id}" = "OU_BEDELE"\n')
    for old, new in changes.items():
        text = text.replace(old, new)
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    w.supervisor.cfg.exchange.dhis2_mapping = str(path)


def test_cross_post_statistics(merged):
    w = merged
    summary = stats.cross_post(w.supervisor.store)
    a, b = w.post.store.post_id, w.other.store.post_id
    assert (summary["exams"], summary["demo_exams"], summary["awaiting_decision"]) == (7, 1, 1)
    assert stats.count_cube(w.supervisor.store) == stats.store_cube(w.supervisor.store)
    assert summary["posts"] == {a: "Agaro health post", b: "Bedele health post"}
    pap = summary["by_post"][a]["by_analysis"]["pap_smear"]
    # Decided, non-demo exams only: A-4 awaits a decision, A-7 was made with demo models.
    assert pap["by_class"] == {"normal": 2, "abnormal": 1} and pap["prevalence"]["abnormal"] == 0.3333
    assert (pap["exams"], pap["awaiting_decision"]) == (4, 1)
    assert summary["by_post"][b]["by_analysis"]["cervix_type"]["by_class"] == {"type_2": 1}
    assert summary["by_group"]["breast_histopathology"]["by_class"] == {"benign": 1, "malignant": 1}
    assert summary["by_decision"] == {"agrees": 5, "disagrees": 1, "awaiting_decision": 1}
    ages = summary["by_age_group"]
    assert ages["30-39"]["exams"] == 2 and ages["50-59"]["exams"] == 1 and ages["unknown"]["exams"] == 4
    assert list(summary["by_month"]) == [f"{PERIOD[:4]}-{PERIOD[4:]}"]


def test_dhis2_data_values_as_json(merged, tmp_path):
    w = merged
    _mapping(w, tmp_path)
    out = tmp_path / "values.json"
    summary = dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    doc = json.loads(out.read_text())
    assert doc["dataSet"] == "BCCDMS_MONTHLY" and summary["values"] == len(doc["dataValues"])
    values = {(v["dataElement"], v["orgUnit"], v.get("categoryOptionCombo")): v["value"] for v in doc["dataValues"]}
    assert all(v["period"] == PERIOD for v in doc["dataValues"])
    # Decided, non-demo exams only: 2 normal and 1 abnormal Pap smears at Agaro.
    assert values[("BCCDMS_PAP_SMEAR", "OU_AGARO", "BCCDMS_NORMAL")] == "2"
    assert values[("BCCDMS_PAP_SMEAR", "OU_AGARO", "BCCDMS_ABNORMAL")] == "1"
    assert values[("BCCDMS_PAP_SMEAR_TOTAL", "OU_AGARO", None)] == "3"
    assert values[("BCCDMS_BREAST_HISTO", "OU_AGARO", "BCCDMS_BENIGN")] == "1"
    assert values[("BCCDMS_BREAST_HISTO", "OU_AGARO", "BCCDMS_MALIGNANT")] == "1"
    assert values[("BCCDMS_CERVIX_TZ_TYPE", "OU_BEDELE", "BCCDMS_TZ_TYPE_2")] == "1"
    assert values[("BCCDMS_CERVIX_TZ_TYPE", "OU_BEDELE", "BCCDMS_TZ_TYPE_1")] == "0"   # zeros are explicit
    assert ("BCCDMS_PAP_SMEAR", "OU_BEDELE", "BCCDMS_NORMAL") not in values


def test_dhis2_csv_and_counting_undecided(merged, tmp_path):
    w = merged
    _mapping(w, tmp_path, **{'count = "decided"': 'count = "all"'})
    out = tmp_path / "values.csv"
    dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == list(dhis2.CSV_COLUMNS)
    found = {(r[0], r[2], r[3]): r[5] for r in rows[1:]}
    assert found[("BCCDMS_PAP_SMEAR", "OU_AGARO", "BCCDMS_ABNORMAL")] == "2"
    assert all(r[1] == PERIOD for r in rows[1:])


@pytest.mark.parametrize("change, words", [
    ({'"OU_BEDELE"': '""'}, "no valid code"),
    ({"type_3 = ": "type_9 = "}, "unknown label 'type_9'"),
    ({'abnormal = "BCCDMS_ABNORMAL"\n': ""}, "does not map the labels ['abnormal']"),
    ({"[analyses.pap_smear]": "[analyses.lung]"}, "unknown analysis"),
    ({'count = "decided"': 'count = "most"'}, "count"),
    ({"[dhis2]": "[dhis2"}, "not valid TOML"),
])
def test_a_bad_mapping_is_refused_and_nothing_is_written(merged, tmp_path, change, words):
    w = merged
    _mapping(w, tmp_path, **change)
    out = tmp_path / "values.json"
    with pytest.raises(UserError) as err:
        dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    assert words in str(err.value)
    assert not out.exists()


def test_a_post_without_org_unit_is_named(merged, tmp_path):
    w = merged
    _mapping(w, tmp_path, **{f'"{merged.other.store.post_id}" = "OU_BEDELE"\n': ""})
    out = tmp_path / "values.json"
    with pytest.raises(UserError) as err:
        dhis2.write_data_value_set(w.supervisor.store, w.supervisor.cfg, out)
    assert w.other.store.post_id in err.value.message and "[org_units]" in err.value.hint
    assert not out.exists()


# -- DHIS2 from the store's statistics cells: the same values as a pass over every record ----------

def _varied_store(data_dir, rnd):
    """A supervisor's store with three posts' records over two years: every analysis and class,
    decisions that agree, disagree and refer, exams awaiting one, demo exams, ages known from a
    birth date, from an approximate age, or not at all."""
    from appliance import catalogue
    from appliance.config import load_config
    from appliance.store import Store
    from appliance.store.fields import new_uuid

    store = Store.open(load_config(data_dir=data_dir, environ={}))
    decisions = catalogue.all_decision_ids()
    patients, exams = [], []
    for n in range(120):
        post = f"post-{n % 3}"
        born = rnd.choice([None, f"{rnd.randrange(1940, 2010)}-{rnd.randrange(1, 13):02d}-15"])
        registered = f"{rnd.choice((2025, 2026))}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 28):02d}T08:00:00.000Z"
        patient = {"uuid": new_uuid(), "post_id": post, "created_at": registered, "updated_at": registered,
                   "pid": f"P-{n:04d}", "full_name": f"Patient {n}", "address": "", "phone": "", "sex": "F",
                   "birth_date": born, "age_years": None if born or rnd.random() < 0.3 else rnd.randrange(15, 85),
                   "created_by": "nurse1"}
        patients.append(patient)
        for _ in range(rnd.randrange(1, 5)):
            analysis = rnd.choice(sorted(catalogue.ANALYSES))
            label = rnd.choice(catalogue.all_label_ids()[analysis])
            when = f"{registered[:4]}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 28):02d}T1{rnd.randrange(10)}:00:00.000Z"
            final = rnd.choice([None, label, rnd.choice(decisions[analysis])])
            exams.append({"uuid": new_uuid(), "post_id": post, "created_at": when, "updated_at": when,
                          "created_by": "nurse1", "patient_uuid": patient["uuid"], "patient_pid": patient["pid"],
                          "analysis": analysis, "source": "file", "result": {},
                          "image": {"sha256": "%064x" % rnd.getrandbits(256), "ext": "jpg", "width": 8, "height": 8},
                          "label": label, "demo": rnd.random() < 0.15, "final_label": final or label,
                          "decision": None if final is None else {"label": final, "agrees": final == label,
                                                                  "note": "", "by": "doctor1", "at": when},
                          "status": "awaiting_decision" if final is None else "decided"})
    store.bulk_insert("patients", patients)
    store.bulk_insert("exams", exams)
    return store


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    import random
    store = _varied_store(tmp_path_factory.mktemp("varied") / "supervisor", random.Random(2026))
    yield store
    store.close()


@pytest.mark.parametrize("changes", [
    {},
    {'count = "decided"': 'count = "all"'},
    {"include_demo = false": "include_demo = true", "zeros = true": "zeros = false"},
    {'count = "decided"': 'count = "all"', "include_demo = false": "include_demo = true",
     'attribute_option_combo = ""': 'attribute_option_combo = "BCCDMS_ATTR"'},
])
@pytest.mark.parametrize("period", [(None, None), ("2025-03-15", "2026-02-10"), ("2026-01-01", None)])
def test_dhis2_from_the_store_cells_equals_the_pass_over_every_record(varied, tmp_path, monkeypatch, changes, period):
    store, (date_from, date_to) = varied, period
    text = dhis2.DEFAULT_MAPPING.read_text().replace(
        "[org_units]\n", "[org_units]\n" + "".join(f'"post-{n}" = "OU_{n}"\n' for n in range(3)))
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "mapping.toml").write_text(text)
    monkeypatch.setattr(store.cfg.exchange, "dhis2_mapping", str(tmp_path / "mapping.toml"))
    streamed = dhis2.data_values(stats.count_cube(store, date_from=date_from, date_to=date_to),
                                 dhis2.load_mapping(store.cfg))
    assert len(streamed) > 20                          # a real test: many posts, months and classes

    def every_record(*args, **kwargs):
        raise AssertionError("the DHIS2 output read every exam record")
    monkeypatch.setattr(store, "changes", every_record)
    out = tmp_path / "values.json"
    summary = dhis2.write_data_value_set(store, store.cfg, out, date_from=date_from, date_to=date_to)
    assert json.loads(out.read_text())["dataValues"] == streamed and summary["values"] == len(streamed)
