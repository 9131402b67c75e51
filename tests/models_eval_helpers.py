"""A tiny but really trained Pap-smear model on real Herlev cells, evaluated (refer band, out-of-
scope gate, model card) and packed, for the evaluation and out-of-scope tests (fixture `tiny_pap`
in conftest.py). Small manifests of real images are written with absolute paths, so nothing is
copied out of ../shared/datasets."""
from __future__ import annotations

import csv
import random
from pathlib import Path

PER_GROUP = 48          # Herlev cells per group (normal / abnormal) for training + validation
HELD_OUT = 40           # other Herlev cells: in-scope images the model never saw
OTHER_DOMAIN = 30       # BreakHis and IARC images: out of scope for a Pap-smear model


def _rows(datasets: Path, name: str) -> list[dict]:
    with open(datasets / name / "manifest.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "eval"]


def write_manifest(path: Path, datasets: Path, name: str, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "split", "label", "group", "patient"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"file": str(datasets / name / r["file"]), "split": "eval", "label": r["label"],
                             "group": r["group"], "patient": r["patient"]})
    return path


def sample_sets(datasets: Path, base: Path) -> dict[str, Path]:
    """Manifests: the training set, held-out Herlev cells, and two other-domain sets."""
    rng = random.Random(7)
    herlev = _rows(datasets, "herlev")
    chosen, rest = [], []
    for group in ("normal", "abnormal"):
        rows = [r for r in herlev if r["group"] == group]
        rng.shuffle(rows)
        chosen += rows[:PER_GROUP]
        rest += rows[PER_GROUP:PER_GROUP + HELD_OUT // 2]
    sets = {"train": write_manifest(base / "pap" / "manifest.csv", datasets, "herlev", chosen),
            "held_out": write_manifest(base / "pap_held_out" / "manifest.csv", datasets, "herlev", rest)}
    for name in ("breakhis", "iarc_colposcopy"):
        rows = _rows(datasets, name)
        sets[name] = write_manifest(base / name / "manifest.csv", datasets, name,
                                    rng.sample(rows, OTHER_DOMAIN))
    return sets


def build_tiny_pap(base: Path, datasets: Path, key) -> dict:
    """train (tiny ResNet, 64 px, 8 epochs) → export → quantize → evaluate (fit) → pack."""
    from export.evaluate import evaluate
    from export.pipeline import build_pack, export_checkpoint, quantize_model_folder
    from export.train import TrainOptions, train

    sets = sample_sets(datasets, base / "data")
    checkpoint = train(TrainOptions(model_id="pap_smear", data=str(sets["train"]), out=str(base / "run"), arch="tiny",
                                    weights="none", image_size=64, epochs=8, batch_size=16, lr=2e-3, workers=0,
                                    val_fraction=0.25), progress=False)
    model_dir = export_checkpoint(checkpoint, base / "models" / "pap_smear", version="9.0.0", progress=False)
    quantize_model_folder(model_dir, calibration_images=24, progress=False)
    report = evaluate(model_dir, checkpoint=checkpoint, data=str(sets["train"]), progress=False,
                      ood_data=[str(sets["breakhis"].parent), str(sets["iarc_colposcopy"].parent)])
    pack = build_pack([model_dir], base / "pack", key, pack_id="pap-eval", version="9.0.0", progress=False)
    return {"base": base, "sets": sets, "checkpoint": checkpoint, "model_dir": model_dir, "report": report,
            "pack": pack}
