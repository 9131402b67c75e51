"""`bccdms-export dataset`: research exports of real posts → one training set with a locked held-out set."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from appliance.errors import UserError
from export.cli import main
from export.datasets import labelled_for, open_dataset
from export.field_dataset import build, read_holdout

from learning_helpers import close, posts


def _herlev(datasets, n: int, start: int = 0):
    """``n`` Herlev cells (path, normal|abnormal), the two groups alternating."""
    rows = [r for r in csv.DictReader(open(datasets / "herlev" / "manifest.csv")) if r["split"] == "eval"]
    normal, abnormal = ([r for r in rows if r["group"] == g] for g in ("normal", "abnormal"))
    mixed = [r for pair in zip(normal, abnormal) for r in pair][start:start + n]
    return [(datasets / "herlev" / r["file"], r["group"]) for r in mixed]


def _rows(out):
    return list(csv.DictReader(open(out / "manifest.csv")))


@pytest.fixture
def two_posts(tmp_path, datasets):
    world, (a, b) = posts(tmp_path, datasets, 2)
    yield world, a, b
    close(world, [a, b])


def test_only_confirmed_trained_model_labels_are_used_each_image_once(two_posts, datasets, tmp_path, capsys):
    world, a, b = two_posts
    images = _herlev(datasets, 40, start=100)
    for i, (path, group) in enumerate(images[:30]):
        a.exam(f"A-{i % 15}", path, model_label="normal", decide=group)        # 15 women, 2 images each
    a.exam("A-99", images[30][0], model_label="abnormal")                       # awaiting: the model's guess
    a.exam("A-98", images[31][0], model_label="normal", demo=True, decide="normal")   # demo model
    a.exam("A-97", images[32][0], model_label="normal", decide="refer")         # a referral: no class
    b.exam("B-1", images[0][0], model_label="normal", decide=images[0][1])     # the same image at another post
    for i, (path, group) in enumerate(images[33:40]):
        b.exam(f"B-{i + 2}", path, decide=group)
    exports = [a.research_export(), b.research_export()]
    records = [json.loads(line) for line in (exports[0] / "records" / "exams.jsonl").read_text().splitlines()]
    assert {r["label_source"] for r in records} == {"clinician", "model", None}

    code = main(["dataset", "--from", str(exports[0].parent), "--out", str(tmp_path / "ds"), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    rows = _rows(tmp_path / "ds")
    assert len(rows) == 30 + 7                       # the shared image once; guess, demo and referral left out
    assert len({r["sha256"] for r in rows}) == len(rows)
    assert {r["label_source"] for r in rows} == {"clinician"}
    for reason in ("unconfirmed (the model's own label)", "made with demo models", "no class (a referral)",
                   "duplicate image (kept once)"):
        assert f"not used: {reason}: 1" in printed
    assert "by class" in printed and "by post" in printed and "by label source" in printed
    # One woman's images are on one side only, and the held-out set is a part of the patients.
    sides = {}
    for r in rows:
        sides.setdefault(r["patient"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    held = [r for r in rows if r["split"] == "holdout"]
    assert 0 < len(held) < len(rows) and {r["label"] for r in held} == {"normal", "abnormal"}
    for r in rows:
        assert (tmp_path / "ds" / r["file"]).is_file()
    # Training sees the training side only.
    train = labelled_for(open_dataset(tmp_path / "ds"), "pap_smear")
    assert len(train.items) == len(rows) - len(held)
    assert len(labelled_for(open_dataset(tmp_path / "ds", subset="holdout"), "pap_smear").items) == len(held)


def test_the_held_out_set_never_changes_and_grows_only_on_request(two_posts, datasets, tmp_path):
    world, a, b = two_posts
    images = _herlev(datasets, 60, start=200)
    for i, (path, group) in enumerate(images[:24]):
        a.exam(f"A-{i % 12}", path, decide=group)
    first = build([a.research_export()], tmp_path / "ds", progress=False)
    locked = (tmp_path / "ds" / "holdout.json").read_bytes()
    held_patients = {r["patient"] for r in _rows(tmp_path / "ds") if r["split"] == "holdout"}
    assert first.holdout_created and held_patients

    # A second build with the same export and a new one: the held-out set is byte for byte the same.
    held_pid = next(p for p in (f"A-{i}" for i in range(12))
                    if any(r["patient"].endswith(":" + _pseudonym(a, p)) for r in _rows(tmp_path / "ds")
                           if r["split"] == "holdout"))
    a.exam(held_pid, images[24][0], decide=images[24][1])            # a new image of a held-out woman
    for i, (path, group) in enumerate(images[25:40]):
        b.exam(f"B-{i}", path, decide=group)
    earlier = list(a.extracted)
    again = build(earlier + [b.research_export(), a.research_export()], tmp_path / "ds", progress=False)
    assert (tmp_path / "ds" / "holdout.json").read_bytes() == locked
    assert again.holdout_id == first.holdout_id and not again.holdout_created
    rows = _rows(tmp_path / "ds")
    excluded = [r for r in rows if r["split"] == "excluded"]
    assert len(excluded) == 1 and excluded[0]["reason"] == "patient in the held-out set"
    assert {r["patient"] for r in rows if r["split"] == "holdout"} == held_patients
    assert len(again.exports_known) == 1          # the first export is not read twice

    # --extend-holdout keeps every old case, adds the held-out woman's new image and some new women.
    for i, (path, group) in enumerate(images[40:60]):
        b.exam(f"B-{100 + i}", path, decide=group)
    grown = build([b.research_export()], tmp_path / "ds", extend_holdout=True, progress=False)
    doc = read_holdout(tmp_path / "ds")
    old = json.loads(locked)
    assert {c["sha256"] for c in old["cases"]} < {c["sha256"] for c in doc["cases"]}
    assert grown.holdout_extended == len(doc["cases"]) - len(old["cases"]) >= 2
    assert doc["extensions"][-1]["previous_id"] == old["id"]
    rows = _rows(tmp_path / "ds")
    assert not [r for r in rows if r["split"] == "excluded"]
    sides = {}
    for r in rows:
        sides.setdefault(r["patient"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())


def _pseudonym(post, pid: str) -> str:
    """The pseudonym a post's research export gives one of its patients."""
    from appliance.exchange import deidentify, keys
    person = post.store.patients.by_pid(pid)
    return deidentify.Pseudonyms(keys.pseudonym_secret(post.box.cfg)).of("patient", person["uuid"])


def test_public_data_joins_the_training_side_only(two_posts, datasets, tmp_path):
    world, a, _ = two_posts
    for i, (path, group) in enumerate(_herlev(datasets, 20, start=300)):
        a.exam(f"A-{i % 10}", path, decide=group)
    report = build([a.research_export()], tmp_path / "ds", public=[str(datasets / "lbc_pap")], progress=False)
    rows = _rows(tmp_path / "ds")
    public = [r for r in rows if r["origin"].startswith("public:")]
    assert len(public) == 950 and {r["split"] for r in public} == {"train"}
    assert {r["label"] for r in public} == {"normal", "abnormal"}
    assert {r["cluster"].split(":", 2)[2] for r in public} >= {"cluster:NL:NL_10", "cluster:HSIL:HSIL_1"}
    assert report.counts["by_label_source"]["public"] == {"train": 950}
    held = read_holdout(tmp_path / "ds")
    assert not {c["sha256"] for c in held["cases"]} & {r["sha256"] for r in public}


def test_bad_input_is_refused_with_a_sentence_and_nothing_written(two_posts, datasets, tmp_path):
    world, a, _ = two_posts
    for i, (path, group) in enumerate(_herlev(datasets, 8, start=400)):
        a.exam(f"A-{i}", path, decide=group)
    export = a.research_export()
    with pytest.raises(UserError, match="not an unpacked research export"):
        build([tmp_path], tmp_path / "ds", progress=False)
    with pytest.raises(UserError, match="No usable case") as refused:
        build([export], tmp_path / "ds", labels="expert", progress=False)
    assert "expert+clinician" in refused.value.hint
    assert not (tmp_path / "ds" / "dataset.json").exists()
    build([export], tmp_path / "ds", progress=False)
    with pytest.raises(UserError, match="was built with --labels expert\\+clinician"):
        build([export], tmp_path / "ds", labels="expert", progress=False)
    doc = json.loads((tmp_path / "ds" / "holdout.json").read_text())
    doc["cases"] = doc["cases"][1:]
    (tmp_path / "ds" / "holdout.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="damaged or was edited"):
        build([export], tmp_path / "ds", progress=False)
    shutil.rmtree(export / "records")
    with pytest.raises(UserError, match="not an unpacked research export"):
        build([export], tmp_path / "other", progress=False)
