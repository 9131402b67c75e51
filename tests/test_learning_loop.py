"""The learning loop end to end, on the CPU with the tiny network of the unit tests:

a first model (trained on Herlev cells, four normal to one abnormal) runs at three simulated posts;
the posts diagnose real Herlev and LBC images with it, the clinicians decide, the posts make their
de-identified research exports; the ML team pools them (`dataset`), fine-tunes from the first
model (`train --init-from`), compares (`compare`), packs the recommended challenger, and a post
installs it; in the next round a challenger trained on shuffled labels is not recommended against
it, is refused by `pack --recommended` without an override, needs an admin's confirmation at the
post, and a rollback brings the good pack back.
"""
from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest

from appliance import signing
from appliance.inference.engine import Engine
from appliance.models_admin import NotRecommended, PackManager
from export.cli import main as export_main
from export.datasets import open_dataset

from learning_helpers import close, posts

pytestmark = pytest.mark.slow

SIZE = 64
POSTS = 3
PATIENTS_PER_POST = 36


def _tiny_model(base: Path, data: str, name: str, *extra: str, epochs: int = 4) -> Path:
    """train → export → quantize → evaluate (refer band, gate, drift figures, card): a model folder."""
    run, model = base / "runs" / name, base / "models" / name
    assert export_main(["train", "--model", "pap_smear", "--data", data, "--out", str(run), "--arch", "tiny",
                        "--weights", "none", "--image-size", str(SIZE), "--epochs", str(epochs), "--batch-size", "16",
                        "--workers", "0", "--val-fraction", "0.25", "--quiet", *extra]) == 0
    assert export_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(model), "--version",
                        name, "--quiet"]) == 0
    assert export_main(["quantize", str(model), "--calibration-images", "24", "--quiet"]) == 0
    assert export_main(["evaluate", str(model), "--data", data, "--quiet"]) == 0
    return model


def _first_model_data(datasets: Path, base: Path, cells: list[dict]) -> Path:
    """The first model's training set: Herlev cells, four normal to one abnormal (so it leans to normal)."""
    normal = [r for r in cells if r["group"] == "normal"][:100]
    abnormal = [r for r in cells if r["group"] == "abnormal"][:25]
    path = base / "first" / "manifest.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "split", "label", "group", "patient"])
        w.writeheader()
        for r in normal + abnormal:
            w.writerow({"file": str(datasets / "herlev" / r["file"]), "split": "", "label": r["label"],
                        "group": r["group"], "patient": ""})
    return path


def _field_images(datasets: Path, used: set[str]) -> list[tuple[Path, str, str]]:
    """(path, normal|abnormal, cluster) of the Herlev cells the first model never saw and the LBC fields."""
    rows = []
    for r in csv.DictReader(open(datasets / "herlev" / "manifest.csv")):
        if r["split"] == "eval" and r["file"] not in used:
            rows.append((datasets / "herlev" / r["file"], r["group"], "herlev:" + Path(r["file"]).stem.split("-")[0]))
    for r in csv.DictReader(open(datasets / "lbc_pap" / "manifest.csv")):
        rows.append((datasets / "lbc_pap" / r["file"], r["group"], "lbc:" + r["slide_group"]))
    return rows


def test_field_data_makes_a_better_model_that_the_posts_install(tmp_path, datasets, pack_key, capsys):
    key_file = tmp_path / "packs.key"
    signing.write_private_key(pack_key, key_file)
    cells = [r for r in csv.DictReader(open(datasets / "herlev" / "manifest.csv")) if r["split"] == "eval"]
    random.Random(3).shuffle(cells)

    # The first model and its pack (the champion), signed by the ML team's key.
    first = _first_model_data(datasets, tmp_path, cells)
    champion_dir = _tiny_model(tmp_path, str(first), "1.0.0", "--sampling", "shuffle", "--lr", "0.002")
    champion = tmp_path / "packs" / "pap-1"
    assert export_main(["pack", str(champion_dir), "--out", str(champion), "--key", str(key_file),
                        "--pack-id", "pap-1", "--version", "1.0.0", "--quiet"]) == 0
    manifest = json.loads((champion / "manifest.json").read_text())
    assert manifest["models"]["pap_smear"]["validation"]["drift"]["thresholds"]["psi"]["confidence"]

    # Three posts run it on real images; clinicians decide; each post exports for research.
    world, boxes = posts(tmp_path / "world", datasets, POSTS)
    try:
        used = {Path(r["file"]).as_posix() for r in csv.DictReader(open(first))}
        field = _field_images(datasets, {str(Path(u).relative_to(datasets / "herlev")) for u in used})
        random.Random(5).shuffle(field)
        by_cluster: dict[str, list] = {}
        for item in field:
            by_cluster.setdefault(item[2], []).append(item)
        # Two images per woman, from one slide (or source image); each post gets its own women.
        women = [group[i:i + 2] for group in by_cluster.values() for i in range(0, len(group) - 1, 2)]
        random.Random(7).shuffle(women)
        for n, post in enumerate(boxes):
            post.box.cfg.security.trusted_model_keys = [signing.public_b64(pack_key)]
            post.box.cfg.inference.demo_pack = str(tmp_path / "no-demo")
            PackManager(post.box.cfg).install(champion)
            engine = Engine.from_config(post.box.cfg)
            for w, images in enumerate(women[n * PATIENTS_PER_POST:(n + 1) * PATIENTS_PER_POST]):
                for path, truth, _cluster in images:
                    result = engine.diagnose(path.read_bytes(), "pap_smear", name=path.name).to_json()
                    post.exam(f"P{n}-{w}", path.read_bytes(), result=result, decide=truth)
            post.research_export()

        # The ML team pools the exports; the held-out set is locked, and a second build keeps it.
        data = tmp_path / "field"
        research = tmp_path / "world" / "research"
        assert export_main(["dataset", "--from", str(research), "--out", str(data), "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "by post" in printed and "held-out" in printed
        locked = (data / "holdout.json").read_bytes()
        assert export_main(["dataset", "--from", *map(str, sorted(research.iterdir())), "--out", str(data),
                            "--quiet"]) == 0
        assert (data / "holdout.json").read_bytes() == locked
        assert "already in the dataset 3" in capsys.readouterr().out
        held = json.loads(locked)
        assert len({c["post"] for c in held["cases"]}) == POSTS and len(held["cases"]) >= 30

        # Fine-tuned from the deployed model on the pooled training side: the challenger.
        challenger_dir = _tiny_model(tmp_path, str(data), "2.0.0", "--init-from",
                                     str(tmp_path / "runs" / "1.0.0" / "checkpoint.pt"), "--lr", "0.002", epochs=6)
        meta = json.loads((challenger_dir / "model.json").read_text())
        start = meta["provenance"]["init_from"]
        assert start["sha256"] == meta_sha(tmp_path / "runs" / "1.0.0" / "checkpoint.pt")
        assert start["sha256"] in (challenger_dir / "model_card.md").read_text()
        train_side = {p.name for p in (i.path for i in open_dataset(data).items)}
        assert not train_side & {Path(c["sha256"]).name for c in held["cases"]}

        assert export_main(["compare", "--champion", str(champion), "--challenger", str(challenger_dir),
                            "--data", str(data), "--bootstrap", "500", "--quiet"]) == 0
        report = capsys.readouterr().out
        comparison = json.loads((challenger_dir / "comparison.json").read_text())
        section = comparison["models"]["pap_smear"]
        assert comparison["recommended"], report
        assert section["challenger"]["balanced_accuracy"] >= section["champion"]["balanced_accuracy"]
        assert section["int8_agreement_with_fp32"]["challenger"]["openvino_int8"] > 0.8
        assert "RECOMMENDED" in report and "McNemar" in report
        assert "Champion / challenger" in (challenger_dir / "model_card.md").read_text()

        good = tmp_path / "packs" / "pap-2"
        assert export_main(["pack", str(challenger_dir), "--out", str(good), "--key", str(key_file),
                            "--pack-id", "pap-2", "--version", "2.0.0", "--recommended", "--quiet"]) == 0
        good_manifest = json.loads((good / "manifest.json").read_text())
        assert good_manifest["comparison"]["recommended"] and not good_manifest["comparison"]["override"]
        assert good_manifest["models"]["pap_smear"]["provenance"]["init_from"]["sha256"] == start["sha256"]

        # The next round: against the pack the posts now run (pap-2), a challenger taught with
        # shuffled labels fails the rule and is refused without an override.
        shuffled = tmp_path / "shuffled"
        shutil.copytree(data, shuffled, symlinks=True)
        _shuffle_training_labels(shuffled)
        bad_dir = _tiny_model(tmp_path, str(shuffled), "2.0.1", "--init-from",
                              str(tmp_path / "runs" / "1.0.0" / "checkpoint.pt"), "--lr", "0.01", epochs=6)
        assert export_main(["compare", "--champion", str(good), "--challenger", str(bad_dir),
                            "--data", str(data), "--bootstrap", "500", "--quiet"]) == 0
        assert "NOT RECOMMENDED" in capsys.readouterr().out
        refused = export_main(["pack", str(bad_dir), "--out", str(tmp_path / "packs" / "bad"), "--key", str(key_file),
                               "--pack-id", "pap-bad", "--version", "2.0.1", "--recommended", "--quiet"])
        err = capsys.readouterr().err
        assert refused != 0 and "fails the promotion rule" in err and "Traceback" not in err
        assert not (tmp_path / "packs" / "bad").exists()
        bad = tmp_path / "packs" / "bad"
        assert export_main(["pack", str(bad_dir), "--out", str(bad), "--key", str(key_file), "--pack-id", "pap-bad",
                            "--version", "2.0.1", "--recommended", "--override", "stain study, ML lead's decision",
                            "--quiet"]) == 0
        assert "stain study, ML lead's decision" in (bad / "pap_smear" / "model_card.md").read_text()
        plain = tmp_path / "packs" / "bad-plain"
        assert export_main(["pack", str(bad_dir), "--out", str(plain), "--key", str(key_file), "--pack-id",
                            "pap-bad-plain", "--version", "2.0.2", "--quiet"]) == 0

        # At a post: the good challenger installs, the not-recommended one needs the admin's yes.
        manager = PackManager(boxes[0].box.cfg)
        info = manager.install(good)
        assert info.pack_id == "pap-2" and info.recommended
        assert any("Abnormal found" in line for line in info.comparison_lines())
        with pytest.raises(NotRecommended):
            manager.install(plain)
        assert manager.current().pack_id == "pap-2"
        assert manager.install(plain, confirmed_not_recommended=True).pack_id == "pap-bad-plain"
        assert manager.rollback().pack_id == "pap-2"
        assert manager.current().pack_id == "pap-2"
    finally:
        close(world, boxes)


def meta_sha(path: Path) -> str:
    from appliance.inference.pack import file_sha256
    return file_sha256(path)


def _shuffle_training_labels(folder: Path) -> None:
    """The training side's labels permuted (the held-out side untouched, so the lock still holds)."""
    path = folder / "manifest.csv"
    rows = list(csv.DictReader(open(path)))
    train = [r for r in rows if r["split"] == "train"]
    labels = [r["label"] for r in train]
    random.Random(11).shuffle(labels)
    for r, label in zip(train, labels):
        r["label"] = r["group"] = label
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
