"""The record store's interface (docs/ARCHITECTURE.md "Record store") on a real data folder."""
from __future__ import annotations

import hashlib
import os

import pytest

from appliance.errors import BadImage, NotFound, UserError
from appliance.store import AuthError, DuplicatePatient, Store
from test_store_support import jpeg_bytes, register, result_json, save_exam, snapshot


@pytest.fixture
def admin(store):
    return store.users.create("admin", "correct horse", "admin", display_name="Dr. Hana", by=None)


# --- users ---------------------------------------------------------------------------------

def test_first_admin_no_default_account_and_no_hash_leaks(store, admin):
    assert admin["username"] == "admin" and admin["role"] == "admin" and admin["display_name"] == "Dr. Hana"
    assert store.users.count() == 1
    for user in (admin, store.users.get("ADMIN"), store.users.list()[0]):
        assert "password_hash" not in user and "failed_logins" not in user
    assert store.users.authenticate("Admin", "correct horse")["username"] == "admin"


@pytest.mark.parametrize("username,password,role,message", [
    ("nurse1", "short", "nurse", "too short"),
    ("nurse1", "NURSE1", "nurse", "too short"),
    ("nurse123", "NURSE123", "nurse", "same as the username"),
    ("nurse1", "        ", "nurse", "only spaces"),
    ("nu", "long enough", "nurse", "3 to 32"),
    ("nurse one", "long enough", "nurse", "3 to 32"),
    ("nurse1", "long enough", "surgeon", "no role"),
    ("admin", "long enough", "nurse", "already a user"),
])
def test_account_policy_refuses_with_clear_message(store, admin, username, password, role, message):
    before = snapshot(store)
    with pytest.raises(UserError, match=message):
        store.users.create(username, password, role, by="admin")
    assert snapshot(store) == before


def test_wrong_password_locks_account_then_new_password_unlocks(cfg):
    cfg.server.lockout_failures = 2
    with Store.open(cfg) as store:
        store.users.create("admin", "correct horse", "admin", by=None)
        store.users.create("almaz", "battery staple", "nurse", by="admin")
        with pytest.raises(AuthError) as exc:
            store.users.authenticate("almaz", "wrong password")
        assert exc.value.reason == "wrong"
        with pytest.raises(AuthError) as exc:
            store.users.authenticate("almaz", "wrong again!")
        assert exc.value.reason == "locked" and exc.value.retry_at
        with pytest.raises(AuthError) as exc:     # even the right password waits for the lock
            store.users.authenticate("almaz", "battery staple")
        assert exc.value.reason == "locked"
        store.users.set_password("almaz", "new battery", by="admin")
        assert store.users.authenticate("almaz", "new battery")["last_login_at"]
        with pytest.raises(AuthError) as exc:
            store.users.authenticate("nobody", "battery staple")
        assert exc.value.reason == "wrong" and exc.value.message == "The username or password is wrong."


def test_disabled_account_and_the_last_admin(store, admin):
    store.users.create("almaz", "battery staple", "nurse", by="admin")
    store.users.set_disabled("almaz", True, by="admin")
    with pytest.raises(AuthError) as exc:
        store.users.authenticate("almaz", "battery staple")
    assert exc.value.reason == "disabled"
    with pytest.raises(UserError, match="only active administrator"):
        store.users.set_disabled("admin", True, by="admin")
    with pytest.raises(UserError, match="only active administrator"):
        store.users.update("admin", by="admin", role="nurse")
    store.users.set_disabled("almaz", False, by="admin")
    assert store.users.get("almaz")["disabled"] is False
    with pytest.raises(NotFound):
        store.users.set_disabled("ghost", True, by="admin")


def test_user_update_language_and_calendar(store, admin):
    user = store.users.update("admin", by="admin", language="am", calendar="ethiopian", display_name="ሐና")
    assert (user["language"], user["calendar"], user["display_name"]) == ("am", "ethiopian", "ሐና")
    with pytest.raises(UserError, match="no field 'password_hash'"):
        store.users.update("admin", by="admin", password_hash="x")
    with pytest.raises(UserError, match="calendar"):
        store.users.update("admin", by="admin", calendar="julian")


# --- patients ------------------------------------------------------------------------------

def test_register_amharic_patient_and_find_her_every_way(store):
    p = register(store, "JU-000123", "አበበች ከበደ ታደሰ", phone="+251 911 23 45 67", birth_date="1980-05-02",
                 address="ጅማ, ቀበሌ 04", sex="female")
    assert p["full_name"] == "አበበች ከበደ ታደሰ" and p["sex"] == "F" and p["post_id"] == store.post_id
    assert p["created_at"].endswith("Z") and p["created_by"] == "nurse1"
    register(store, "JU-000124", "Almaz Kebede", phone="0922 111111", age_years=52)
    assert [x["pid"] for x in store.patients.search("ከበ")] == ["JU-000123"]
    assert [x["pid"] for x in store.patients.search("ታደ አበ")] == ["JU-000123"]
    assert [x["pid"] for x in store.patients.search("almaz keb")] == ["JU-000124"]
    assert [x["pid"] for x in store.patients.search("0911234567")] == ["JU-000123"]
    assert [x["pid"] for x in store.patients.search("ju 00012")] == ["JU-000123", "JU-000124"]
    assert store.patients.by_pid("ju000124")["full_name"] == "Almaz Kebede"
    assert [x["pid"] for x in store.patients.search("")] == ["JU-000124", "JU-000123"]     # newest first
    assert store.patients.search("nobody") == []


def test_duplicate_card_number_offers_the_existing_patient(store):
    first = register(store, "JU-000123", "Almaz Kebede")
    before = snapshot(store)
    with pytest.raises(DuplicatePatient) as exc:
        register(store, "ju 000123", "Someone Else")
    assert exc.value.existing["uuid"] == first["uuid"] and "JU-000123" in exc.value.message
    assert snapshot(store) == before


@pytest.mark.parametrize("fields,message", [
    ({"full_name": "ሀ" * 201}, "full name is too long"),
    ({"address": "x" * 501}, "address is too long"),
    ({"pid": "J" * 41}, "card number is too long"),
    ({"full_name": "  "}, "full name is missing"),
    ({"full_name": "Almaz\x00"}, "control characters"),
    ({"phone": "call me"}, "phone number can only contain digits"),
    ({"phone": "0911 23"}, "too few digits"),
    ({"birth_date": "2999-01-01"}, "in the future"),
    ({"birth_date": "02/05/1980"}, "not a date"),
    ({"age_years": 200}, "not possible"),
    ({"age_years": "forty"}, "not a number"),
    ({"sex": "x"}, "female or male"),
])
def test_bad_patient_fields_are_refused_and_nothing_is_stored(store, fields, message):
    args = {"pid": "JU-1", "full_name": "Almaz", **fields}
    with pytest.raises(UserError, match=message):
        store.patients.register(args.pop("pid"), args.pop("full_name"), by="nurse1", **args)
    assert store.patients.search("") == [] and store.audit.query()[1] == 0


def test_long_fields_at_the_limit_are_kept_whole(store):
    p = register(store, "J" * 40, "ሀ" * 200, address="ጅ" * 500)
    assert store.patients.get(p["uuid"])["full_name"] == "ሀ" * 200


def test_update_patient_keeps_search_in_step(store):
    a = register(store, "JU-1", "Almaz Kebede")
    register(store, "JU-2", "Hana Bekele")
    updated = store.patients.update(a["uuid"], by="nurse1", full_name="Almaz Tesfaye", phone="0911000000")
    assert updated["updated_at"] > a["updated_at"] and updated["updated_by"] == "nurse1"
    assert store.patients.search("kebede") == []
    assert [p["pid"] for p in store.patients.search("tesf")] == ["JU-1"]
    with pytest.raises(DuplicatePatient):
        store.patients.update(a["uuid"], by="nurse1", pid="ju-2")
    with pytest.raises(NotFound):
        store.patients.update("no-such-uuid", by="nurse1", full_name="X")


# --- exams and the image library ---------------------------------------------------------

def test_save_exam_stores_record_image_and_library_link(store, cfg):
    patient = register(store)
    image = jpeg_bytes(3)
    exam = store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear", "source": "camera",
                             "result": {**result_json("pap_smear"), "heatmap": b"png"}}, image, by="nurse1")
    sha = hashlib.sha256(image).hexdigest()
    assert exam["image"] == {"sha256": sha, "ext": "jpg", "width": 64, "height": 48}
    assert (exam["patient_pid"], exam["label"], exam["final_label"], exam["status"]) == \
        ("JU-000001", "abnormal", "abnormal", "awaiting_decision")
    assert exam["decision"] is None and exam["demo"] is True and "heatmap" not in exam["result"]
    stored = store.images.path(sha)
    assert stored == cfg.data_dir / "images" / sha[:2] / f"{sha}.jpg" and stored.read_bytes() == image
    filed = cfg.data_dir / "library" / "pap_smear" / "unconfirmed" / "abnormal" / f"{sha}.jpg"   # awaits a decision
    assert os.path.samefile(filed, stored)       # a hard link: no second copy
    assert store.exams.get(exam["uuid"]) == exam
    assert store.exams.for_patient(patient["uuid"]) == [exam]


def test_bad_exams_are_refused_and_change_nothing(store, cfg):
    patient = register(store)
    save_exam(store, patient)
    before = snapshot(store)
    images_before = sorted(p.name for p in (cfg.data_dir / "images").rglob("*"))
    good = {"patient_uuid": patient["uuid"], "analysis": "pap_smear", "result": result_json("pap_smear")}
    cases = [
        ({**good, "analysis": "x_ray"}, jpeg_bytes(9), UserError, "no analysis called"),
        ({**good, "result": result_json("pap_smear", "type_2")}, jpeg_bytes(9), UserError, "not a class of Pap smear"),
        ({**good, "patient_uuid": "nobody"}, jpeg_bytes(9), NotFound, "not registered"),
        ({**good, "source": "fax"}, jpeg_bytes(9), UserError, "source"),
        ({**good, "decision": {"label": "grade_2"}}, jpeg_bytes(9), UserError, "not a class"),
        ({**good, "result": {"label": "normal", "x": float("nan")}}, jpeg_bytes(9), UserError, "cannot be stored"),
        (good, b"GIF89a not really", BadImage, "not an image"),
        (good, b"", BadImage, "empty"),
    ]
    for exam, image, error, message in cases:
        with pytest.raises(error, match=message):
            store.exams.save(exam, image, by="nurse1")
    assert snapshot(store) == before
    assert sorted(p.name for p in (cfg.data_dir / "images").rglob("*")) == images_before


def test_decide_records_clinician_label_and_refiles_image(store, cfg):
    exam = save_exam(store, register(store), "cervical_histopathology", "precancer", seed=4)
    sha = exam["image"]["sha256"]
    decided = store.exams.decide(exam["uuid"], "squamous_cell_carcinoma", note="ዕጢ: invasive", by="doctor1")
    assert decided["decision"]["label"] == "squamous_cell_carcinoma" and decided["decision"]["agrees"] is False
    assert decided["decision"]["by"] == "doctor1" and decided["decision"]["note"] == "ዕጢ: invasive"
    assert (decided["label"], decided["final_label"], decided["status"]) == \
        ("precancer", "squamous_cell_carcinoma", "decided")
    lib = cfg.data_dir / "library" / "cervical_histopathology" / "unconfirmed"     # a demo exam: never confirmed
    assert not (lib / "precancer" / f"{sha}.jpg").exists()
    assert (lib / "squamous_cell_carcinoma" / f"{sha}.jpg").exists()
    with pytest.raises(UserError, match="not a class"):
        store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    with pytest.raises(UserError, match="note is too long"):
        store.exams.decide(exam["uuid"], "normal", note="n" * 2001, by="doctor1")
    assert store.exams.get(exam["uuid"]) == decided
    items, total = store.images.browse(analysis="cervical_histopathology", label="squamous_cell_carcinoma")
    assert total == 1 and items[0]["sha256"] == sha and len(store.images.thumbnail(sha, 64)) > 100


def test_save_with_decision_in_one_step(store):
    exam = save_exam(store, register(store), "cervix_type", "type_2", decision={"label": "type_2", "note": ""},
                     by="doctor1")
    assert exam["status"] == "decided" and exam["decision"]["agrees"] is True


def test_query_filters_pages_and_totals(store):
    almaz = register(store, "JU-1", "Almaz Kebede")
    hana = register(store, "JU-2", "Hana Bekele")
    saved = []
    for i in range(6):
        saved.append(save_exam(store, almaz if i % 2 else hana, "pap_smear" if i < 4 else "cervix_type", seed=i))
    store.exams.decide(saved[1]["uuid"], "normal", by="doctor1")
    rows, total = store.exams.query()
    assert total == 6 and [r["uuid"] for r in rows] == [e["uuid"] for e in reversed(saved)]
    rows, total = store.exams.query(analysis="pap_smear", name_prefix="alm")
    assert total == 2 and [r["uuid"] for r in rows] == [saved[3]["uuid"], saved[1]["uuid"]]
    assert store.exams.query(pid="ju 2")[1] == 3
    assert store.exams.query(patient_uuid=hana["uuid"], analysis="cervix_type")[1] == 1
    assert store.exams.query(label="normal")[1] == 1
    page, total = store.exams.query(offset=2, limit=2)
    assert total == 6 and [r["uuid"] for r in page] == [saved[3]["uuid"], saved[2]["uuid"]]
    today = saved[0]["created_at"][:10]
    assert store.exams.query(date_from=today, date_to=today)[1] == 6
    assert store.exams.query(date_to="2000-01-01")[1] == 0
    with pytest.raises(UserError, match="not a date"):
        store.exams.query(date_from="last week")


# --- audit, statistics, exchange ---------------------------------------------------------

def test_every_change_is_audited_and_the_log_pages(store, admin):
    p = register(store, by="admin")
    e = save_exam(store, p, by="admin")
    store.exams.decide(e["uuid"], "normal", by="admin")
    store.audit.log("admin", "patient.view", "patient", p["uuid"])
    entries, total = store.audit.query()
    assert total == 5
    assert [x["action"] for x in entries] == ["patient.view", "exam.decide", "exam.save", "patient.register",
                                             "user.create"]
    assert store.audit.query(action="exam.save")[0][0]["target_id"] == e["uuid"]
    assert store.audit.query(actor="admin", offset=1, limit=2)[0][0]["action"] == "exam.decide"
    with pytest.raises(UserError, match="plain JSON"):
        store.audit.log("admin", "x", "y", detail={"bytes": b"1"})


def test_stats_counts_by_class_decision_and_age(store):
    young = register(store, "JU-1", "Almaz", age_years=28)
    old = register(store, "JU-2", "Hana", birth_date="1950-01-01")
    save_exam(store, young, "pap_smear", "abnormal", seed=1, demo=False)
    e = save_exam(store, old, "pap_smear", "abnormal", seed=2, demo=False)
    save_exam(store, old, "cervix_type", "type_2", seed=3, demo=False)
    store.exams.decide(e["uuid"], "normal", by="doctor1")
    s = store.stats()
    assert (s["exams"], s["patients"], s["patients_examined"]) == (3, 2, 2)
    assert s["by_analysis"] == {"cervix_type": 1, "pap_smear": 2}
    assert s["by_class"] == {"pap_smear": {"normal": 1}}          # decided only (test_statistics_honesty)
    assert s["by_decision"] == {"awaiting_decision": 2, "disagrees": 1}
    assert s["by_age_group"] == {"70+": 2, "20-29": 1} and s["by_post"] == {store.post_id: 3}
    assert sum(c["count"] for c in s["cells"]) == 3
    assert store.stats(date_to="2001-01-01")["exams"] == 0


def test_change_feed_and_idempotent_merge(store, admin, cfg, tmp_path):
    p = register(store)
    e = save_exam(store, p)
    start = store.change_seq()
    assert [r["uuid"] for r in store.changes("exams")] == [e["uuid"]]
    assert all("password_hash" not in u for u in store.changes("users"))
    store.exams.decide(e["uuid"], "normal", by="doctor1")
    assert store.change_seq() > start
    assert [r["final_label"] for r in store.changes("exams", since_seq=start)] == ["normal"]
    assert list(store.changes("patients", since_seq=store.change_seq())) == []

    other = load_other(cfg, tmp_path)
    with Store.open(other) as central:
        image = jpeg_bytes(0)
        central.images.put(image)
        for kind in ("users", "patients", "exams", "audit"):
            results = [central.merge(kind, r) for r in store.changes(kind)]
            assert set(results) == {"inserted"}, kind
            assert {central.merge(kind, r) for r in store.changes(kind)} == {"unchanged"}
        assert central.exams.get(e["uuid"])["final_label"] == "normal"
        assert central.users.count() == 0             # another post's accounts never log in here
        assert central.stats(include_demo=True)["by_post"] == {store.post_id: 1}
        newer = store.exams.decide(e["uuid"], "abnormal", by="doctor1")
        assert central.merge("exams", newer) == "updated"
        assert central.merge("exams", {**newer, "final_label": "normal", "updated_at": "2001-01-01T00:00:00.000Z"}) \
            == "older"
        kept = central._history.versions(e["uuid"])
        assert [v["final_label"] for v in kept] == ["normal", "normal"]
        with pytest.raises(UserError, match="cannot be imported: its analysis"):
            central.merge("exams", {**newer, "analysis": "x_ray"})
        with pytest.raises(UserError, match="no records of kind"):
            central.merge("secrets", newer)


def load_other(cfg, tmp_path):
    from appliance.config import load_config
    other = tmp_path / "central"
    other.mkdir(exist_ok=True)
    return load_config(data_dir=other, environ={})


def test_post_id_generated_once_or_configured(cfg):
    with Store.open(cfg) as s:
        generated = s.post_id
        s.meta_set("export_cursor", {"seq": 12})
    with Store.open(cfg) as s:
        assert s.post_id == generated and s.meta_get("export_cursor") == {"seq": 12}
        assert s.meta_get("missing", "default") == "default"
    cfg.post.id = "JIMMA-07"
    with Store.open(cfg) as s:
        assert s.post_id == "JIMMA-07" and register(s)["post_id"] == "JIMMA-07"


def test_a_second_process_sees_writes_of_the_first(cfg):
    with Store.open(cfg) as kiosk, Store.open(cfg) as cli:   # separate locks, as separate processes have
        assert kiosk.users.count() == 0
        p = register(cli, "JU-9", "Tigist Alemu")
        assert kiosk.patients.by_pid("JU-9")["uuid"] == p["uuid"]
        e = save_exam(kiosk, kiosk.patients.get(p["uuid"]))
        cli.exams.decide(e["uuid"], "normal", by="doctor1")
        assert kiosk.exams.get(e["uuid"])["final_label"] == "normal"
        assert kiosk.exams.query(name_prefix="tig")[1] == 1 and kiosk.change_seq() == cli.change_seq()


def test_audit_keeps_what_a_user_typed_without_refusing_it(store):
    entry = store.audit.log("ad\x00min\x1b[31m" + "x" * 100, "login_failed", "user", "n" * 300)
    assert entry["actor"].startswith("ad\ufffdmin\ufffd[31m") and len(entry["actor"]) == 64
    assert entry["target_id"].endswith("…") and len(entry["target_id"]) == 128


def test_image_library_put_path_and_thumbnail_errors(store):
    info = store.images.put(jpeg_bytes(5, (300, 200)))
    assert (info["width"], info["height"], info["ext"]) == (300, 200, "jpg")
    assert store.images.put(jpeg_bytes(5, (300, 200))) == info          # stored once
    assert store.images.path(info["sha256"]).stat().st_nlink == 1
    from PIL import Image
    import io
    thumb = Image.open(io.BytesIO(store.images.thumbnail(info["sha256"], 64)))
    assert thumb.format == "JPEG" and max(thumb.size) == 64
    with pytest.raises(NotFound):
        store.images.path("f" * 64)
    with pytest.raises(NotFound):
        store.images.path("../../etc/passwd")
    with pytest.raises(UserError, match="thumbnail size"):
        store.images.thumbnail(info["sha256"], 5000)
    with pytest.raises(BadImage, match="too large"):
        store.images.put(b"\xff\xd8" + b"0" * (store.cfg.server.max_upload_mb * 1024 * 1024))


def test_image_path_is_found_without_listing_the_image_folders(store, monkeypatch):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    png = store.images.put(buf.getvalue())
    jpg = store.images.put(jpeg_bytes(9))
    for n in range(300):                   # a busy folder: its neighbours never have to be read
        (store.images.root / png["sha256"][:2] / f"{n:064x}.jpg").write_bytes(b"x")

    def no_listing(*args, **kwargs):
        raise AssertionError("images.path listed a folder")
    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    expected = store.images.root / png["sha256"][:2] / f"{png['sha256']}.png"
    assert store.images.path(png["sha256"]) == expected                    # probed: jpg, then png
    assert store.images.path(png["sha256"], "png") == expected             # the exam's ext: one stat
    assert store.images.path(jpg["sha256"], "jpg").name == f"{jpg['sha256']}.jpg"
    assert store.images.path(jpg["sha256"], "png").suffix == ".jpg"         # a wrong ext is only a hint
    with pytest.raises(NotFound) as missing:
        store.images.path("e" * 64, "jpg")
    assert missing.value.msgid == "The image %(image)s… is not on this box." and "eeeeeeeeeeee…" in missing.value.message


def test_transaction_commits_many_writes_together_or_none(store, cfg, tmp_path):
    patient = register(store)
    exams = [save_exam(store, patient, seed=i) for i in range(3)]
    with Store.open(load_other(cfg, tmp_path)) as central:
        records = {kind: list(store.changes(kind)) for kind in ("patients", "exams")}
        for sha_seed in range(3):
            central.images.put(jpeg_bytes(sha_seed))
        with pytest.raises(RuntimeError):
            with central.transaction():
                for kind in ("patients", "exams"):
                    for record in records[kind]:
                        assert central.merge(kind, record) == "inserted"
                assert central.exams.query()[1] == 3           # visible inside the transaction
                raise RuntimeError("the bundle was pulled out")
        assert central.exams.query()[1] == 0 and central.patients.search("") == []
        assert not list(central.data_dir.rglob(".*.tmp-*"))
        with central.transaction():
            results = [central.merge(kind, r) for kind in ("patients", "exams") for r in records[kind]]
        assert results == ["inserted"] * 4
    with Store.open(load_other(cfg, tmp_path)) as central:
        assert {e["uuid"] for e in central.exams.query()[0]} == {e["uuid"] for e in exams}


def test_bulk_insert_in_a_transaction_that_fails_leaves_no_trace_after_a_restart(store, cfg, tmp_path):
    patient = register(store)
    saved = save_exam(store, patient, seed=1)
    others = [save_exam(store, patient, seed=i) for i in range(2, 5)]
    records = {kind: list(store.changes(kind)) for kind in ("patients", "exams")}
    central_cfg = load_other(cfg, tmp_path)
    with Store.open(central_cfg) as central:
        for seed in range(1, 5):
            central.images.put(jpeg_bytes(seed))
        central.bulk_insert("patients", records["patients"])
        central.bulk_insert("exams", [r for r in records["exams"] if r["uuid"] == saved["uuid"]])
        with pytest.raises(RuntimeError):
            with central.transaction():
                central.bulk_insert("exams", [r for r in records["exams"] if r["uuid"] != saved["uuid"]])
                raise RuntimeError("the import failed half-way")
        assert central.exams.query()[1] == 1
    with Store.open(central_cfg) as central:        # what the index remembers matches the files
        assert [e["uuid"] for e in central.exams.query()[0]] == [saved["uuid"]] and not central.warnings
    assert len(others) == 3


def test_transaction_over_more_files_than_are_kept_open(store, cfg, tmp_path):
    """Files waiting for their commit stay in memory even past the open-file cache limit."""
    from appliance.store.fields import new_uuid
    patient = register(store)
    model = save_exam(store, patient)
    months = [f"{2015 + m // 12}-{m % 12 + 1:02d}" for m in range(store.exams.collection._open_limit + 6)]
    with Store.open(load_other(cfg, tmp_path)) as central:
        central.merge("patients", next(store.changes("patients")))
        with central.transaction():
            for month in months + months[:1]:      # the first month's file is written again at the end
                when = f"{month}-15T08:00:00.000Z"
                assert central.merge("exams", {**model, "uuid": new_uuid(), "created_at": when,
                                               "updated_at": when}) == "inserted"
        assert central.exams.query(limit=500)[1] == len(months) + 1
    with Store.open(load_other(cfg, tmp_path)) as central:
        assert central.stats(include_demo=True)["by_month"] == {m: 1 + (m == months[0]) for m in months}
