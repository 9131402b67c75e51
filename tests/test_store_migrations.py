"""Schema versions: the prototype's single-file TinyDB layout (format 1) is migrated to the
partitioned layout (format 2); a newer format is refused; an interrupted migration is redone."""
from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from tinydb import TinyDB

from appliance.errors import StoreError
from appliance.store import Store
from appliance.store.migrations import SCHEMA_VERSION, stored_version


def write_legacy_db(data_dir):
    """A ``db.json`` as the prototype wrote it: stock TinyDB, no uuids, exams linked by card number."""
    db = TinyDB(data_dir / "db.json")
    db.table("users").insert_multiple([
        {"username": "Hana", "password_hash": PasswordHasher().hash("old password"), "role": "doctor"},
    ])
    db.table("patients").insert_multiple([
        {"pid": "JU-1", "full_name": "አበበች ከበደ", "phone": "0911234567", "created_at": "2024-03-02T09:00:00.000Z"},
        {"pid": "JU-2", "full_name": "Almaz Tadesse", "age_years": 45, "created_at": "2025-07-10T10:00:00.000Z"},
    ])
    db.table("exams").insert_multiple([
        {"pid": "JU-1", "analysis": "pap_smear", "label": "abnormal", "created_at": "2024-03-02T09:05:00.000Z",
         "result": {"label": "abnormal"}},
        {"pid": "JU-2", "analysis": "cervix_type", "label": "type_2", "created_at": "2025-07-10T10:05:00.000Z",
         "decision": {"label": "type_3", "agrees": False, "note": "", "by": "Hana", "at": "2025-07-10T10:09:00.000Z"}},
        {"pid": "JU-404", "analysis": "pap_smear", "label": "normal", "created_at": "2025-08-01T08:00:00.000Z"},
    ])
    db.table("audit").insert({"actor": "Hana", "action": "login", "target_type": "user",
                              "created_at": "2025-07-10T08:00:00.000Z"})
    db.close()


def test_prototype_layout_is_migrated_with_nothing_dropped(cfg):
    write_legacy_db(cfg.data_dir)
    assert stored_version(cfg.data_dir) == 1
    with Store.open(cfg) as store:
        assert any("converted (1 users, 3 patients, 3 exams, 1 audit entries)" in w for w in store.warnings)
        assert store.users.authenticate("hana", "old password")["role"] == "doctor"
        abebech = store.patients.by_pid("JU-1")
        assert abebech["full_name"] == "አበበች ከበደ" and abebech["post_id"] == store.post_id
        assert [p["pid"] for p in store.patients.search("ከበ")] == ["JU-1"]
        [exam] = store.exams.for_patient(abebech["uuid"])
        assert exam["analysis"] == "pap_smear" and exam["status"] == "awaiting_decision"
        almaz = store.patients.by_pid("JU-2")
        [decided] = store.exams.for_patient(almaz["uuid"])
        assert decided["final_label"] == "type_3" and decided["status"] == "decided"
        orphan = store.patients.by_pid("JU-404")          # the exam is kept; its patient is recreated
        assert orphan["full_name"].startswith("(unknown") and len(store.exams.for_patient(orphan["uuid"])) == 1
        assert store.audit.query(action="login")[1] == 1
        assert store.meta_get("schema_version") == SCHEMA_VERSION
        assert store.stats()["by_month"] == {"2024-03": 1, "2025-07": 1, "2025-08": 1}
        post_id = store.post_id
    assert not (cfg.data_dir / "db.json").exists() and (cfg.data_dir / "db.json.format1").exists()
    with Store.open(cfg) as store:                    # once only
        assert store.post_id == post_id and not store.warnings and store.exams.query()[1] == 3


def test_interrupted_migration_is_done_again(cfg):
    write_legacy_db(cfg.data_dir)
    half = cfg.data_dir / "store.migrating" / "exams" / "2024-03"
    half.mkdir(parents=True)
    (half / "000.json").write_text('{"exams": {"1": {"uuid": "half-written"')
    with Store.open(cfg) as store:
        assert store.exams.query()[1] == 3
    assert not (cfg.data_dir / "store.migrating").exists()


def test_records_from_a_newer_version_are_refused(cfg):
    with Store.open(cfg) as store:
        store.meta_set("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer version"):
        Store.open(cfg)
    meta = json.loads((cfg.data_dir / "store" / "meta.json").read_text())
    assert {"key": "schema_version", "value": SCHEMA_VERSION + 1} in meta["meta"].values()    # untouched
