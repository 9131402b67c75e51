"""Exams being prepared (drafts): one pass per image, their files on disk, a restart survived.

Against the real server (waitress on 127.0.0.1), store and tiny models. The layout on disk
(docs/ARCHITECTURE.md, "Image step"): ``<data>/drafts/<draft_id>/draft.json`` and one file
per field, the image's bytes as they arrived.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time

import pytest

from webutil import NURSE, VERSION_RE, live_server, make_users, staffed_server, start_server, web_cfg  # noqa: F401

SLIDES = "herlev/originals/normal_superficiel"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def images(datasets) -> tuple[bytes, bytes]:
    first, second = sorted((datasets / SLIDES).glob("*.jpg"))[:2]
    return first.read_bytes(), second.read_bytes()


def open_draft(nurse, pid: str) -> str:
    res = nurse.register_patient(pid, "Draft Test")
    assert res.status == 303, res.text[:300]
    return nurse.new_draft(res.location.rsplit("/", 1)[-1], "pap_smear")


def folder_files(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_draft_keeps_its_image_on_disk_and_its_folder_goes_when_saved(staffed_server, images):
    live, (first, second) = staffed_server, images
    nurse = live.logged_in(NURSE)
    draft = open_draft(nurse, "DR-1")
    folder = live.cfg.data_dir / "drafts" / draft
    assert folder_files(folder) == {"draft.json"}

    assert nurse.upload(draft, first).status == 303
    assert nurse.upload(draft, second).status == 303            # the second replaces the first
    doc = json.loads((folder / "draft.json").read_text())
    assert doc["owner"] == NURSE[0] and doc["analysis"] == "pap_smear" and doc["version"] == 2
    (field,) = doc["fields"]
    assert field["sha256"] == sha(second) and field["bytes"] == len(second) and field["source"] == "file"
    assert field["quality"]["ok"] in (True, False) and field["format"] == "JPEG"
    assert folder_files(folder) == {"draft.json", field["file"]}
    assert (folder / field["file"]).read_bytes() == second

    res = nurse.process(draft)
    assert res.status == 303 and "/exams/" in res.location
    exam = live.ctx.store.exams.get(res.location.rsplit("/", 1)[-1])
    assert exam["image"]["sha256"] == sha(second) and not folder.exists()

    other = open_draft(nurse, "DR-2")
    third = open_draft(nurse, "DR-3")                          # opening another exam closes the open one
    assert not (live.cfg.data_dir / "drafts" / other).exists()
    assert (live.cfg.data_dir / "drafts" / third).is_dir()


def test_drafts_survive_a_restart_and_expired_ones_are_cleaned_up(web_cfg, images):  # noqa: F811
    first, _ = images
    live = start_server(web_cfg)
    try:
        make_users(live)
        nurse = live.logged_in(NURSE)
        draft = open_draft(nurse, "DR-R")
        assert nurse.upload(draft, first).status == 303
    finally:
        live.stop()
    drafts = web_cfg.data_dir / "drafts"
    # A draft opened two hours before the restart (its owner long gone): expired.
    stale = drafts / ("s" * 22)
    shutil.copytree(drafts / draft, stale)
    doc = json.loads((stale / "draft.json").read_text())
    doc.update(id=stale.name, owner="someone", created_at=time.time() - 7200)
    (stale / "draft.json").write_text(json.dumps(doc))

    live = start_server(web_cfg)            # the same data folder: a restart
    try:
        assert not stale.exists() and (drafts / draft).is_dir()
        nurse = live.logged_in(NURSE)
        page = nurse.get(f"/drafts/{draft}")
        assert page.status == 200 and VERSION_RE.search(page.text).group(1) == "1"
        assert nurse.get(f"/drafts/{draft}/image.jpg").status == 200
        res = nurse.process(draft)
        assert res.status == 303 and "/exams/" in res.location
        exam = live.ctx.store.exams.get(res.location.rsplit("/", 1)[-1])
        assert exam["image"]["sha256"] == sha(first) and exam["result"]["image_info"]["sha256"] == sha(first)
        assert not (drafts / draft).exists()
    finally:
        live.stop()


def test_each_image_is_decoded_and_quality_checked_once(staffed_server, images, monkeypatch):
    from appliance.inference import imageio, prepared
    from appliance.store.images import ImageLibrary
    live, (first, _) = staffed_server, images
    calls = {"quality": 0, "decode": 0}
    real_check, real_decode = prepared.quality.check, imageio.Probe.decode

    def check(*args, **kwargs):
        calls["quality"] += 1
        return real_check(*args, **kwargs)

    def decode(self):
        calls["decode"] += 1
        return real_decode(self)
    def describe(self, data):
        calls["store parses"] += 1
        return real_describe(self, data)
    calls["store parses"] = 0
    real_describe = ImageLibrary.describe
    monkeypatch.setattr(prepared.quality, "check", check)
    monkeypatch.setattr(imageio.Probe, "decode", decode)
    monkeypatch.setattr(ImageLibrary, "describe", describe)
    nurse = live.logged_in(NURSE)
    draft = open_draft(nurse, "DR-Q")
    assert nurse.upload(draft, first).status == 303
    shown = live.ctx.drafts.get(draft).quality
    res = nurse.process(draft)
    assert res.status == 303 and "/exams/" in res.location
    # The store took the facts the decode found (it does not describe the image again).
    assert calls == {"quality": 1, "decode": 1, "store parses": 0}
    exam = live.ctx.store.exams.get(res.location.rsplit("/", 1)[-1])
    assert exam["result"]["quality"] == shown               # the warnings saved are those the nurse saw

