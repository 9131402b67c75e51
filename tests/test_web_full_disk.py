"""A full disk on the kiosk (a real small tmpfs under the data folder): records stay readable
(the audit entry of a view is best-effort, and the self-check says it was lost), a change the
store cannot make says so, and the error pages never claim nothing was saved when that is not known."""
from __future__ import annotations

import os
import subprocess

import pytest

from appliance.config import load_config
from webutil import DOCTOR, NURSE, live_server, make_users, staffed_server, start_server, web_cfg, web_config  # noqa: F401

SLIDE = "herlev/originals/normal_superficiel"


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("This test mounts a real tmpfs and must run as root (CI does); non-root: -m 'not root'.")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk) -> None:
    """Write until the disk refuses: nothing more fits."""
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    for n in range(1000):                    # and the last few blocks, file by file
        try:
            (disk / f"crumb-{n}").write_bytes(b"\0" * 4096)
        except OSError:
            break


@pytest.mark.root
def test_a_full_disk_does_not_stop_clinicians_reading_records(small_disk, tiny_pack, pack_key, datasets):
    cfg = web_config(load_config(data_dir=small_disk / "data", environ={}), tiny_pack, pack_key)
    live = start_server(cfg)
    try:
        make_users(live)
        nurse = live.logged_in(NURSE)
        res = nurse.register_patient("DISK-1", "Full Disk")
        patient_uuid = res.location.rsplit("/", 1)[-1]
        draft = nurse.new_draft(patient_uuid, "pap_smear")
        nurse.upload(draft, sorted((datasets / SLIDE).glob("*.jpg"))[0].read_bytes())
        exam_uuid = nurse.process(draft).location.rsplit("/", 1)[-1]
        fill(small_disk)

        for path in (f"/exams/{exam_uuid}", f"/patients/{patient_uuid}", "/records", f"/exams/{exam_uuid}/print"):
            page = nurse.get(path)
            assert page.status == 200, (path, page.text[:400])
            assert "Full Disk" in page.text or path == "/records"
        assert nurse.get(f"/exams/{exam_uuid}/report.pdf").body.startswith(b"%PDF")
        # A doctor arriving now can log in and read too.
        reader = live.logged_in(DOCTOR)
        assert "Full Disk" in reader.get(f"/exams/{exam_uuid}").text
        # The lost audit entries are not silent: the self-check reports them.
        assert any("audit" in w for w in live.ctx.store.warnings)
        from appliance.doctor import run_checks
        report = run_checks(cfg, store=live.ctx.store, engine=live.ctx.engine, include_server=False).text()
        assert "audit" in report

        # A change the store cannot make is refused in a sentence, and nothing changed.
        refused = nurse.post(f"/exams/{exam_uuid}/decide", {"agrees": "yes"})
        assert refused.status in (400, 507) and "disk is full" in refused.text
        assert live.ctx.store.exams.get(exam_uuid)["decision"] is None

        # Room again: everything works and is audited as before.
        for crumb in small_disk.glob("crumb-*"):
            crumb.unlink()
        (small_disk / "filler").unlink()
        assert nurse.get(f"/exams/{exam_uuid}").status == 200
        doctor = live.logged_in(DOCTOR)
        assert doctor.post(f"/exams/{exam_uuid}/decide", {"agrees": "yes"}).status == 303
    finally:
        live.stop()


def test_the_unexpected_error_page_never_claims_nothing_was_saved(staffed_server, monkeypatch):
    ctx = staffed_server.ctx
    nurse = staffed_server.client()
    nurse.login(*NURSE)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug after the record was written")
    monkeypatch.setattr(ctx.store.patients, "search", broken)
    nurse.post("/diagnose/search", {"q": "anyone"})
    page = nurse.get("/diagnose")
    assert page.status == 500
    assert "nothing was saved" not in page.text.lower()
    assert "may not have been saved" in page.text and "before doing it again" in page.text


def test_changes_are_audited_once_by_the_store(staffed_server):
    ctx = staffed_server.ctx
    admin = staffed_server.client()
    from webutil import ADMIN
    admin.login(*ADMIN)
    admin.post("/admin/users", {"username": "nurse9", "display_name": "Nurse Nine", "role": "nurse",
                                "language": "en", "calendar": "gregorian", "password": "nurse-nine-pass",
                                "password2": "nurse-nine-pass"})
    nurse = staffed_server.client()
    nurse.login(*NURSE)
    res = nurse.register_patient("AUD-1", "Audit Once")
    assert res.status == 303
    entries = ctx.store.audit.query(limit=500)[0]
    actions = [(e["action"], e["target_type"]) for e in entries]
    assert actions.count(("user.create", "user")) >= 1 and ("create", "user") not in actions
    assert actions.count(("patient.register", "patient")) == 1 and ("create", "patient") not in actions
