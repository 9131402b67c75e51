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
