"""Faults done for real: damaged files on start-up, a full disk (a real small tmpfs), a
read-only folder (a real read-only bind mount), leftovers of killed writers, two threads and
two processes writing at once."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import StoreError
from appliance.store import Store
from test_store_support import jpeg_bytes, register, result_json, save_exam, snapshot


def chunk_files(data_dir: Path, kind: str) -> list[Path]:
    return sorted((data_dir / "store" / kind).glob("*/*.json"))


# --- damaged files at start-up -----------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not tinydb", "deleted"])
def test_damaged_record_file_is_recovered_from_previous_generation(cfg, damage):
    with Store.open(cfg) as store:
        patient = register(store)
        first = save_exam(store, patient, seed=1)
        second = save_exam(store, patient, seed=2)
    [exams_file] = chunk_files(cfg.data_dir, "exams")
    whole = exams_file.read_bytes()
    if damage == "truncated":
        exams_file.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        exams_file.write_bytes(os.urandom(len(whole)))
    elif damage == "empty":
        exams_file.write_bytes(b"")
    elif damage == "not tinydb":
        exams_file.write_text('["a list", "not tables"]')
    else:
        exams_file.unlink()
    damaged = exams_file.read_bytes() if exams_file.exists() else None

    with Store.open(cfg) as store:
        [warning] = [w for w in store.warnings if "damaged" in w]
        assert str(exams_file) in warning and ".prev" in warning and "may be missing" in warning
        # The previous generation holds every write but the last one.
        assert store.exams.get(first["uuid"]) == first
        assert store.exams.get(second["uuid"]) is None
        save_exam(store, patient, seed=3)                       # and the store keeps working
    kept = list(exams_file.parent.glob(exams_file.name + ".damaged-*"))
    if damaged is not None:
        assert len(kept) == 1 and kept[0].read_bytes() == damaged and str(kept[0]) in warning
    with Store.open(cfg) as store:
        assert store.warnings == [] and store.exams.query()[1] == 2


def test_damaged_file_without_good_previous_copy_stops_with_its_name(cfg):
    with Store.open(cfg) as store:
        register(store)                     # first write of this file: there is no .prev yet
    [patients_file] = chunk_files(cfg.data_dir, "patients")
    patients_file.write_bytes(b'{"patients": {"1": {"uuid": ')
    with pytest.raises(StoreError) as exc:
        Store.open(cfg)
    assert str(patients_file) in exc.value.message and "appliance restore" in exc.value.hint
    assert patients_file.read_bytes() == b'{"patients": {"1": {"uuid": '      # left where it is, untouched


def test_damaged_meta_file_is_recovered(cfg):
    with Store.open(cfg) as store:
        post_id = store.post_id
        store.meta_set("cursor", 5)
        store.meta_set("cursor", 6)
    meta = cfg.data_dir / "store" / "meta.json"
    meta.write_bytes(meta.read_bytes()[:-9])
    with Store.open(cfg) as store:
        assert store.post_id == post_id and store.meta_get("cursor") == 5
        assert any(str(meta) in w for w in store.warnings)


def test_leftovers_of_a_killed_writer_are_removed(cfg):
    with Store.open(cfg) as store:
        register(store)
    [patients_file] = chunk_files(cfg.data_dir, "patients")
    leftover = patients_file.with_name(f".{patients_file.name}.tmp-99999-deadbeef")
    leftover.write_bytes(b'{"half": ')
    with Store.open(cfg) as store:
        assert not leftover.exists() and len(store.patients.search("")) == 1


def test_summary_cache_that_lies_is_not_trusted(cfg):
    """The cache is checked against each file's identity: a stale cache cannot hide records."""
    with Store.open(cfg) as store:
        patient = register(store)
    [cache] = (cfg.data_dir / "store" / "index" / "patients").glob("*.marshal")
    stale = cache.read_bytes()
    with Store.open(cfg) as store:
        register(store, "JU-2", "Hana Bekele")
    cache.write_bytes(stale)
    with Store.open(cfg) as store:
        assert {p["pid"] for p in store.patients.search("")} == {patient["pid"], "JU-2"}
    cache.write_bytes(b"not marshal data")
    with Store.open(cfg) as store:
        assert len(store.patients.search("")) == 2


# --- a full disk and a read-only folder ----------------------------------------------------

def _need_root_mount(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("This test mounts a real tmpfs / read-only bind mount and must run as root (CI does); "
                    "non-root developers: ./test.sh -m 'not root'.")
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if ok.returncode != 0:
        pytest.fail(f"Cannot mount a tmpfs here ({ok.stderr.decode().strip()}); the full-disk test needs it.")
    subprocess.run(["umount", str(probe)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    _need_root_mount(tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.root
def test_full_disk_gives_a_clear_error_and_changes_nothing(small_disk):
    cfg = load_config(data_dir=small_disk / "data", environ={})
    filler = small_disk / "filler"
    saved = []
    with Store.open(cfg) as store:
        patient = register(store)
        # Leave room for a handful of exams, then fill the disk with saves until it refuses.
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 400_000))
        error = None
        for seed in range(1000):
            try:
                saved.append(save_exam(store, patient, seed=seed, image_size=(160, 120)))
            except StoreError as exc:
                error = exc
                break
        assert error is not None and saved, "the disk never filled up"
        assert "disk is full" in error.message and "Nothing was changed" in error.hint
        before = snapshot(store)
        with pytest.raises(StoreError, match="disk is full"):
            save_exam(store, patient, seed=5000, image_size=(160, 120))
        assert snapshot(store) == before                            # still usable, unchanged
        assert store.exams.query(limit=1000)[1] == len(saved)
        assert not [p for p in small_disk.rglob(".*.tmp-*")]         # no half-written leftovers
    with Store.open(cfg) as store:                                   # opens on a full disk
        assert {e["uuid"] for e in store.exams.query(limit=1000)[0]} == {e["uuid"] for e in saved}
        filler.unlink()
        save_exam(store, store.patients.get(patient["uuid"]), seed=6000)
        assert store.exams.query()[1] == len(saved) + 1


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only in place: a read-only bind mount as root, else file modes."""
    mounted = []

    def make(folder: Path):
        if os.geteuid() == 0:
            _need_root_mount(tmp_path)
            subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            mounted.append(folder)
        else:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)

    def undo():
        while mounted:
            subprocess.run(["umount", str(mounted.pop())], check=True)
    yield make, undo
    with contextlib.suppress(Exception):
        undo()


def test_read_only_folder_during_saves(cfg, read_only):
    make_read_only, undo = read_only
    with Store.open(cfg) as store:
        patient = register(store)
        exam = save_exam(store, patient, seed=1)
        before = snapshot(store)
        make_read_only(cfg.data_dir)
        for attempt in (lambda: save_exam(store, patient, seed=2),
                        lambda: store.exams.decide(exam["uuid"], "normal", by="doctor1"),
                        lambda: register(store, "JU-2", "Hana"),
                        lambda: store.audit.log("doctor1", "patient.view", "patient", patient["uuid"])):
            with pytest.raises(StoreError) as exc:
                attempt()
            assert "read-only" in exc.value.message and "Nothing was changed" in exc.value.hint
            assert "%(path)s" in exc.value.msgid and exc.value.fields["path"]      # translatable sentence
        assert snapshot(store) == before                       # reads still work, nothing changed
        assert store.patients.search("alm")[0]["uuid"] == patient["uuid"]
        undo()
        store.exams.decide(exam["uuid"], "normal", by="doctor1")   # usable again
        assert store.exams.get(exam["uuid"])["final_label"] == "normal"
        make_read_only(cfg.data_dir)
    with Store.open(cfg) as store:                 # a read-only copy (a backup disk) can be opened to look
        assert store.exams.get(exam["uuid"])["final_label"] == "normal"
        with pytest.raises(StoreError, match="read-only"):
            register(store, "JU-3", "Tigist")
    undo()
    with Store.open(cfg) as store:
        assert store.exams.query()[1] == 1


def test_disk_errors_reach_the_kiosk_as_translatable_sentences(monkeypatch, tmp_path):
    import errno

    from appliance import i18n
    from appliance.store.durable import os_error

    class Marked:                          # a catalogue that marks every sentence it translates
        def gettext(self, text):
            return "«" + text + "»"
    monkeypatch.setattr(i18n, "get_translations", lambda lang: Marked())
    folder = tmp_path / "data"
    for code, english in ((errno.ENOSPC, "The disk is full, so the appliance could not save the image."),
                          (errno.EROFS, f"The data folder is read-only ({folder}), so the appliance could not "
                                        "save the image."),
                          (errno.EIO, f"The appliance could not save the image: Input/output error ({folder}).")):
        error = os_error(OSError(code, os.strerror(code)), folder, "save the image")
        assert isinstance(error, StoreError) and error.message == english and "%" not in error.message
        message, hint = i18n.error_text(error, "am")
        assert message == "«" + english + "»" and hint.startswith("«Nothing was changed.")
    backup = os_error(OSError(errno.ENOSPC, "No space left on device"), folder, "write the backup")
    assert backup.message == "The disk is full, so the appliance could not make the backup."


# --- several writers at once ---------------------------------------------------------------

def _save_many(data_dir: str, patient_uuid: str, n: int, tag: str, start, out) -> None:
    cfg = load_config(data_dir=data_dir, environ={})
    image = jpeg_bytes(7)
    with Store.open(cfg) as store:
        start.wait()
        uuids = []
        for i in range(n):
            exam = {"patient_uuid": patient_uuid, "analysis": "pap_smear", "source": "cli",
                    "result": {**result_json("pap_smear"), "image": f"{tag}-{i}"}}
            uuids.append(store.exams.save(exam, image, by=tag)["uuid"])
    out.put((tag, uuids))


def _writers(cfg, n: int) -> None:
    with Store.open(cfg) as store:
        patient_uuid = register(store)["uuid"]
    ctx = multiprocessing.get_context("spawn")      # not fork: see tests/test_store_fork.py
    start = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_save_many, args=(str(cfg.data_dir), patient_uuid, n, f"proc{i}", start, results))
             for i in range(2)]
    threads = [threading.Thread(target=_save_many, args=(str(cfg.data_dir), patient_uuid, n, f"thread{i}", start,
                                                         results)) for i in range(2)]
    for w in procs + threads:
        w.start()
    got = dict(results.get(timeout=600) for _ in range(4))
    for w in procs + threads:
        w.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    returned = [u for uuids in got.values() for u in uuids]
    assert len(returned) == 4 * n and len(set(returned)) == 4 * n

    with Store.open(cfg) as store:
        rows, total = store.exams.query(limit=1000)
        assert total == 4 * n
        by_writer = Counter(store.exams.get(u)["created_by"] for u in returned)
        assert by_writer == {tag: n for tag in got}
        seqs = [r.seq for r in store.exams.index.by_uuid.values()]
        assert len(set(seqs)) == len(seqs)                  # every write got its own number
    on_disk = Counter()
    for path in chunk_files(cfg.data_dir, "exams"):
        on_disk.update(r["uuid"] for r in json.loads(path.read_bytes())["exams"].values())
    assert set(on_disk) == set(returned) and set(on_disk.values()) == {1}     # none lost, none twice


def test_two_threads_and_two_processes_write_at_once(cfg):
    _writers(cfg, 25)


@pytest.mark.slow
def test_two_threads_and_two_processes_save_1000_exams_each(cfg):
    _writers(cfg, 1000)


def test_file_damaged_while_the_store_is_open_is_repaired_on_next_read(cfg):
    with Store.open(cfg) as store:
        patient = register(store)
        exams = [save_exam(store, patient, seed=i) for i in range(3)]
        [exams_file] = chunk_files(cfg.data_dir, "exams")
        store.exams.collection.forget_all()                 # as if the chunk had left the memory cache
        exams_file.write_bytes(b"\0" * 100)                 # the disk goes bad under a running kiosk
        assert store.exams.get(exams[0]["uuid"]) == exams[0]
        assert any(str(exams_file) in w for w in store.warnings)
        assert store.exams.get(exams[2]["uuid"]) is None     # the last write was only in the damaged file
        assert store.exams.query()[1] == 2 and len(store.exams.for_patient(patient["uuid"])) == 2


def test_crash_between_keeping_previous_and_replacing_leaves_nothing_behind(cfg):
    """Killed after .prev was linked to the current file but before the new file replaced it."""
    with Store.open(cfg) as store:
        patient = register(store)
        save_exam(store, patient, seed=1)
    [exams_file] = chunk_files(cfg.data_dir, "exams")
    prev = exams_file.with_name(exams_file.name + ".prev")
    prev.unlink(missing_ok=True)
    os.link(exams_file, prev)                     # .prev and the current file: one and the same
    with Store.open(cfg) as store:
        save_exam(store, store.patients.get(patient["uuid"]), seed=2)
        assert store.exams.query()[1] == 2
    assert not list(cfg.data_dir.rglob(".*.tmp-*"))
    assert json.loads(prev.read_bytes())["exams"] and not os.path.samefile(prev, exams_file)
