"""Copy the shared sample datasets into ``.device_data/`` for the GPU training script.

    .venv/bin/python -m export.recipes.pack_device_data [--datasets ../shared/datasets] [--out .device_data]

The device machine receives only the repository's working tree (and the ignored paths named
in ``carry``), so the images travel in a folder at the repository root, kept out of git by a
line in ``.git/info/exclude`` (this script adds it). It copies each dataset's ``eval/`` images
(short side 256 px, JPEG) and a ``manifest.csv`` of those rows, and writes ``splits.json``:
the training/validation split of every model the data allows, made here by the same code as
``bccdms-export train`` (patient-disjoint for BreakHis and IARC, by source image for Herlev,
stratified, seed 0), so the device needs no scikit-learn and the split is known before the
run. About 27 MiB; the device limit for carried paths is 64 MiB.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from appliance.errors import UserError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
DEFAULT_OUT = REPO / ".device_data"
# dataset folder -> the models it trains (the catalogue ids), in training order.
DATASET_MODELS = {
    "herlev": ("pap_smear",),
    "iarc_colposcopy": ("cervix_type",),
    "breakhis": ("breast_binary", "breast_benign_subtype", "breast_malignant_subtype"),
}
SUBSET = "eval"
VAL_FRACTION = 0.2
SEED = 0
MAX_BYTES = 40 * 1024 * 1024


def copy_dataset(source: Path, target: Path) -> int:
    """The ``eval`` rows of ``source/manifest.csv`` and their images into ``target``; bytes copied."""
    with open(source / "manifest.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = [r for r in reader if r["split"] == SUBSET]
    if not rows:
        raise UserError(f"{source}/manifest.csv has no {SUBSET!r} rows.", "Check the shared datasets folder.")
    total = 0
    for row in rows:
        dst = target / row["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["file"], dst)
        total += dst.stat().st_size
    with open(target / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return total


def model_splits(folder: Path) -> dict[str, dict]:
    """``split.json``-style documents (relative file lists) for the models of one dataset folder."""
    from export.datasets import label_mapping, labelled_for, open_dataset, split
    from export.evaluate import patients_per_class
    dataset = open_dataset(folder, "manifest", SUBSET)
    out = {}
    for model_id in DATASET_MODELS[folder.name]:
        labelled = labelled_for(dataset, model_id)
        parts = split(labelled, VAL_FRACTION, SEED)
        doc = parts.describe()
        doc["dataset"] = folder.name          # relative: the device has its own root
        doc["patients_per_class"] = patients_per_class(labelled)
        doc["label_mapping"] = label_mapping(labelled)      # for the model card
        doc["items"] = {side: [[dataset.relpath(i), int(t)] for i, t in zip(part.items, part.targets)]
                        for side, part in (("train", parts.train), ("val", parts.val))}
        out[model_id] = doc
    return out


def exclude_from_git(out: Path) -> None:
    """Keep the copied images out of git without touching the shared .gitignore."""
    try:
        rel = out.resolve().relative_to(REPO)
    except ValueError:
        return
    exclude = REPO / ".git" / "info" / "exclude"
    if not exclude.parent.is_dir():
        return
    line = f"/{rel.as_posix()}/"
    text = exclude.read_text() if exclude.is_file() else ""
    if line not in text.splitlines():
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")


def pack(datasets: Path, out: Path) -> dict:
    if not all((datasets / name / "manifest.csv").is_file() for name in DATASET_MODELS):
        raise UserError(f"The shared datasets are not complete in {datasets}.",
                        f"Pass --datasets with the folder holding {', '.join(DATASET_MODELS)}.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    exclude_from_git(out)
    total, splits = 0, {}
    for name in DATASET_MODELS:
        total += copy_dataset(datasets / name, out / name)
        splits.update(model_splits(out / name))
    if total > MAX_BYTES:
        raise UserError(f"The copied images take {total / 2**20:.1f} MiB, more than the "
                        f"{MAX_BYTES // 2**20} MiB the device run may carry.", "Copy fewer images.")
    summary = {"format": "bccdms-device-data/1", "subset": SUBSET, "val_fraction": VAL_FRACTION, "seed": SEED,
               "datasets": list(DATASET_MODELS), "bytes": total, "models": splits}
    (out / "splits.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.recipes.pack_device_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS), help="the shared datasets folder")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write (default: .device_data)")
    args = parser.parse_args(argv)
    from appliance.cli import run_reporting_errors

    def work() -> int:
        summary = pack(Path(args.datasets), Path(args.out))
        for model_id, doc in summary["models"].items():
            print(f"{model_id:<26} train {doc['train']['images']:>4}  val {doc['val']['images']:>4}  "
                  f"({doc['method']} split)")
        print(f"{summary['bytes'] / 2**20:.1f} MiB in {args.out}")
        return 0
    return run_reporting_errors("pack_device_data", work, "the ML team")


if __name__ == "__main__":
    sys.exit(main())
