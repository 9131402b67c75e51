"""``appliance backup`` / ``restore``: consistent while another process writes, checked before
anything is replaced, refused over records without --force, finished after a power cut."""
from __future__ import annotations

import json
import multiprocessing

import pytest

from appliance.cli import main as cli
from appliance.config import load_config
from appliance.errors import UserError
from appliance.store import Store
from appliance.store.migrations import SCHEMA_VERSION
from test_store_support import jpeg_bytes, register, result_json, save_exam, snapshot


def other_cfg(tmp_path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    return load_config(data_dir=folder, environ={})


def populate(cfg) -> dict:
    with Store.open(cfg) as store:
        store.users.create("admin", "correct horse", "admin", by=None)
        patient = register(store, "JU-1", "አበበች ከበደ")
        exam = save_exam(store, patient, "cervix_type", "type_2", seed=1)
        store.exams.decide(exam["uuid"], "type_3", by="admin")
        save_exam(store, patient, seed=2)
        return snapshot(store)


def test_backup_and_restore_round_trip(cfg, tmp_path):
    before = populate(cfg)
    (cfg.data_dir / "keys").mkdir()
    (cfg.data_dir / "keys" / "post.key").write_text("secret key of the post")
    with Store.open(cfg) as store:
        backup = store.backup(tmp_path / "usb")
    assert backup.parent == tmp_path / "usb" and backup.name.startswith("bccdms-backup-")
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["keys"] == "not included"
    assert not any(name.startswith("keys") for name in manifest["files"])    # keys only ever sealed (test_backup_keys)
    assert any(name.startswith("images/") for name in manifest["files"])
    assert not any(name.startswith(("library/", "store/index/")) or name.endswith(".prev")
                   for name in manifest["files"])

    target = other_cfg(tmp_path, "new-box")
    report = Store.restore(backup, target)
    assert (report["users"], report["patients"], report["exams"]) == (1, 1, 2) and report["kept_aside"] is None
    with Store.open(target) as store:
        assert snapshot(store) == before
        assert store.users.authenticate("admin", "correct horse")
        decided = store.exams.query(label="type_3")[0][0]
        assert store.images.filed_path(decided).exists()                   # the library is rebuilt
    assert not (target.data_dir / "keys").exists()


def test_restore_checks_everything_before_replacing_anything(cfg, tmp_path):
    populate(cfg)
    with Store.open(cfg) as store:
        backup = store.backup(tmp_path / "usb")
    target = other_cfg(tmp_path, "box")
    with Store.open(target) as store:
        register(store, "OTHER-1", "Tigist Alemu")
        mine = snapshot(store)

    with pytest.raises(UserError, match="already has records") as exc:
        Store.restore(backup, target)
    assert "--force" in exc.value.hint

    image = next((backup / "images").rglob("*.jpg"))
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(UserError, match=f"damaged: images/.*{image.name}"):
        Store.restore(backup, target, force=True)
    with pytest.raises(UserError, match="not a backup"):
        Store.restore(tmp_path, target, force=True)
    with Store.open(target) as store:
        assert snapshot(store) == mine                       # nothing was replaced


def test_restore_force_keeps_the_replaced_records_aside(cfg, tmp_path):
    before = populate(cfg)
    with Store.open(cfg) as store:
        backup = store.backup(tmp_path / "usb")
    target = other_cfg(tmp_path, "box")
    with Store.open(target) as store:
        register(store, "OTHER-1", "Tigist Alemu")
    report = Store.restore(backup, target, force=True)
    aside = target.data_dir / report["kept_aside"]
    assert (aside / "store" / "patients").exists()
    with Store.open(target) as store:
        assert snapshot(store) == before and store.patients.by_pid("OTHER-1") is None


def test_restore_is_refused_while_the_store_is_open(cfg, tmp_path):
    populate(cfg)
    with Store.open(cfg) as store:
        backup = store.backup(tmp_path / "usb")
        with pytest.raises(UserError, match="using the records right now"):
            Store.restore(backup, cfg, force=True)


def test_restore_cut_short_by_a_power_cut_is_finished_at_the_next_start(cfg, tmp_path):
    before = populate(cfg)
    with Store.open(cfg) as store:
        backup = store.backup(tmp_path / "usb")
    target = other_cfg(tmp_path, "box")
    staging = target.data_dir / "restore-staging"
    manifest = json.loads((backup / "manifest.json").read_text())
    for rel in manifest["files"]:                   # as restore leaves it just before switching
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes((backup / rel).read_bytes())
    (staging / "COMPLETE").write_text("ready")
    with Store.open(target) as store:
        assert snapshot(store) == before
    assert not staging.exists()


def _save_without_pause(data_dir: str, patient_uuid: str, report) -> None:
    """A kiosk saving exams until it is killed (in a spawned process); one message per save."""
    with Store.open(load_config(data_dir=data_dir, environ={})) as store:
        for i in range(10**6):
            store.exams.save({"patient_uuid": patient_uuid, "analysis": "pap_smear",
                              "result": result_json("pap_smear")}, jpeg_bytes(i), by="nurse1")
            report.send_bytes(b".")


def test_backup_while_another_process_saves_is_consistent(cfg, tmp_path):
    with Store.open(cfg) as store:
        patient = register(store)
    # Spawned, not forked: earlier tests may leave threads running in pytest (live servers), and a
    # fork copies whatever lock they hold at that instant (tests/test_store_fork.py covers fork).
    ctx = multiprocessing.get_context("spawn")
    saves, report = ctx.Pipe(duplex=False)
    kiosk = ctx.Process(target=_save_without_pause, args=(str(cfg.data_dir), patient["uuid"], report), daemon=True)
    kiosk.start()
    report.close()

    def wait_for_saves(count: int) -> None:
        """Until the kiosk reported ``count`` more saves (counted, not timed: a slow CI still passes)."""
        for _ in range(count):
            assert saves.poll(120), "the saving process reported nothing for 120 s"
            saves.recv_bytes()
    try:
        wait_for_saves(3)                  # the kiosk is saving now
        with Store.open(cfg) as store:
            backups = [store.backup(tmp_path / "usb") for _ in range(3)]
        wait_for_saves(1)                  # and it kept saving meanwhile
    finally:
        kiosk.kill()
        kiosk.join()
        saves.close()
    for n, backup in enumerate(backups):
        target = other_cfg(tmp_path, f"restored-{n}")
        Store.restore(backup, target)
        with Store.open(target) as store:
            assert not store.warnings
            exams = {e["uuid"]: e for e in store.exams.query(limit=1000)[0]}
            saves = {a["target_id"] for a in store.audit.query(action="exam.save", limit=1000)[0]}
            assert exams and set(exams) == saves           # each save whole: record and audit entry
            for exam in exams.values():
                assert store.images.path(exam["image"]["sha256"]).exists()


def test_backup_and_restore_commands(cfg, tmp_path, capsys):
    populate(cfg)
    assert cli(["backup", "--data-dir", str(cfg.data_dir), "--to", str(tmp_path / "usb")]) == 0
    [backup] = (tmp_path / "usb").iterdir()
    assert str(backup) in capsys.readouterr().out
    assert cli(["restore", "--data-dir", str(cfg.data_dir), str(backup)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli(["restore", str(backup), "--force", "--data-dir", str(cfg.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "Restored 1 users, 1 patients and 2 exams" in out and "kept in" in out
    assert cli(["restore", "--data-dir", str(cfg.data_dir), str(tmp_path / "nothing-here")]) == 2
    assert "not a backup" in capsys.readouterr().err
