"""The learning loop's figures (issue 18): building the pooled dataset, `compare`, one training epoch.

    .venv/bin/python bench/bench_learning.py            # 20 exports x 2,000 exams; compare on 1,000 images
                                                        # with the ResNet152 demo pack (weights/demo); one
                                                        # ResNet152 112 px epoch (minutes on 2 cores)
    .venv/bin/python bench/bench_learning.py --quick    # 4 x 200 exams; tiny models; tiny epoch (a minute)
    options: --exports N --exams E --heldout H --epoch-images I --work DIR --skip dataset,compare,epoch

1. ``dataset``: N unpacked research exports of E exams each, generated here in the layout
   ``appliance import --extract-to`` writes (records/exams.jsonl, a distinct small JPEG per exam,
   85 % decided by a clinician, 10 % awaiting, 5 % referrals), then ``field_dataset.build`` of all of
   them into a new dataset folder (every image hashed and linked in, the held-out set drawn and
   locked); then the same call again (every export already read: the incremental cost).
   Printed: seconds and the child's peak RSS.
2. ``compare``: a held-out set of H real images (Herlev and LBC, ``../shared/datasets``), and
   ``compare`` of the pap_smear model of the demo pack against itself (two sides, the deployed
   INT8 form: OpenVINO), with the 2,000-resample patient bootstrap. Printed: seconds, images/s.
3. ``epoch``: one fine-tuning epoch (``bccdms-export train --init-from CHECKPOINT``, the whole
   network) at the reduced CPU recipe's size (weights/cards/pap_smear.md: ResNet152 at 112 px,
   batch 16, the 627 images of Herlev's eval subset, a fifth held for validation), on the CPU
   with 2 threads; and the tiny network of the tests. Printed: the epoch's seconds (training and
   the validation pass) and training images per second.

Each part runs in its own spawned process (its peak RSS is its own). Results also go to
bench/results/bench_learning.json.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
DATASETS = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "bench" / "results"

from bench_exchange import in_child, peak_rss_mb  # noqa: E402  (each part in its own process)


# ---------------------------------------------------------------- 1. the dataset build

def make_exports(root: Path, exports: int, exams: int, seed: int = 0) -> list[Path]:
    """Unpacked de-identified research exports, as the supervisor's extract writes them."""
    import numpy as np
    from PIL import Image
    rng = random.Random(seed)
    pixels = np.random.default_rng(seed)
    folders = []
    for e in range(exports):
        post = f"post-{e:02d}"
        folder = root / f"{post}-deidentified"
        (folder / "records").mkdir(parents=True)
        lines = []
        for i in range(exams):
            exam_id = f"{e:04x}{i:08x}".ljust(24, "0")
            patient = f"{e:04x}{i // 2:08x}".ljust(24, "0")          # two exams per woman
            truth = "abnormal" if rng.random() < 0.35 else "normal"
            roll = rng.random()
            source, final = ("clinician", truth) if roll < 0.85 else ("model", None) if roll < 0.95 else (None, "refer")
            folder_name = f"images/pap_smear/{truth}" if source == "clinician" else "unconfirmed/pap_smear"
            member = f"{folder_name}/{exam_id}.jpg"
            path = folder / member
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(pixels.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
            path.write_bytes(buf.getvalue())
            lines.append(json.dumps({
                "id": exam_id, "patient": patient, "post_id": post, "month": "2026-11", "analysis": "pap_smear",
                "source": "camera", "label": truth, "final_label": final or truth, "status": "decided" if final
                else "awaiting_decision", "demo": False, "label_source": source, "age_group": "30-39",
                "decision": None if final is None else {"label": final, "agrees": True}, "image": member,
                "result": {"demo": False, "quality": {"ok": True, "warnings": []}, "steps": []}}))
        (folder / "records" / "exams.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "manifest.json").write_text(json.dumps({"kind": "deidentified", "bundle_id": f"bundle-{e}",
                                                          "post_id": post, "created": "2026-11-30T00:00:00Z"}))
        folders.append(folder)
    return folders


def measure_dataset(exports: list[str], out: str) -> dict:
    from export.field_dataset import build
    started = time.perf_counter()
    report = build(exports, out, progress=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    build(exports, out, progress=False)
    again = time.perf_counter() - started
    return {"seconds": round(first, 2), "again_seconds": round(again, 2), "rows": report.rows,
            "train": report.counts["images"].get("train", 0), "holdout": report.counts["images"].get("holdout", 0),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


# ---------------------------------------------------------------- 2. compare

def held_out_folder(out: Path, images: int) -> Path:
    """A field dataset whose held-out side is ``images`` real Pap images (two per patient)."""
    from export.field_dataset import FORMAT, FieldDataset, Row, _holdout_doc, _sha256, _store_image, _write
    rows = []
    for name in ("herlev", "lbc_pap"):
        for r in csv.DictReader(open(DATASETS / name / "manifest.csv")):
            if name == "herlev" and r["split"] != "eval":
                continue
            rows.append((DATASETS / name / r["file"], r["group"]))
    random.Random(0).shuffle(rows)
    ds = FieldDataset(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (path, group) in enumerate(rows[:images]):
        sha = _sha256(path)
        ds.rows[sha] = Row(file=_store_image(path, out, sha), split="holdout", label=group, group=group,
                           patient=f"bench:{i // 2}", analysis="pap_smear", exam=f"e{i}", post=f"post-{i % 7}",
                           label_source="clinician", sha256=sha)
    ds.holdout = _holdout_doc(list(ds.rows.values()), sorted({r.patient for r in ds.rows.values()}), 0.2, 0)
    _write(ds, {"format": FORMAT, "labels": "expert+clinician"})
    return out


def measure_compare(pack: str, data: str) -> dict:
    from export.compare import compare
    started = time.perf_counter()
    result = compare([pack], [pack], data, models=["pap_smear"], progress=False)
    seconds = time.perf_counter() - started
    section = result["models"]["pap_smear"]
    return {"seconds": round(seconds, 1), "images": section["images"], "forms": section["forms"],
            "images_per_second_per_side": round(section["images"] / seconds * 2, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


# ---------------------------------------------------------------- 3. one epoch

# The reduced CPU recipe of weights/cards/pap_smear.md: ResNet152 at 112 px, batch 16, Adam, on the
# eval subset of Herlev (627 images, a fifth of its source images held for validation).
REDUCED = {"arch": "resnet152", "image_size": 112, "batch_size": 16}


def epoch_manifest(out: Path, images: int | None) -> Path:
    rows = [r for r in csv.DictReader(open(DATASETS / "herlev" / "manifest.csv")) if r["split"] == "eval"]
    random.Random(1).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "split", "label", "group", "patient"])
        w.writeheader()
        for r in rows[:images]:
            w.writerow({"file": str(DATASETS / "herlev" / r["file"]), "split": "", "label": r["label"],
                        "group": r["group"], "patient": ""})
    return out / "manifest.csv"


def measure_epoch(data: str, start_data: str, out: str, arch: str, size: int, batch: int) -> dict:
    """One fine-tuning epoch (``train --init-from``) from a checkpoint of the same network, which a
    one-epoch run on a few images makes first (not timed: a deployed model costs the same)."""
    import torch
    from export.train import TrainOptions, train
    torch.set_num_threads(2)
    common = dict(model_id="pap_smear", arch=arch, weights="none", epochs=1, batch_size=batch, image_size=size,
                  workers=0, device="cpu", val_fraction=0.2)
    first = train(TrainOptions(data=start_data, out=str(Path(out) / "first"), **common), progress=False)
    checkpoint = train(TrainOptions(data=data, out=str(Path(out) / "fine-tuned"), init_from=str(first), **common),
                       progress=False)
    ckpt = torch.load(checkpoint, weights_only=True)
    history = ckpt["training"]["history"][0]
    trained = ckpt["split"]["train"]["images"]
    return {"arch": arch, "image_size": size, "batch_size": batch, "init_from": Path(first).name,
            "train_images": trained, "val_images": ckpt["split"]["val"]["images"],
            "epoch_seconds": history["seconds"], "train_images_per_second": round(trained / history["seconds"], 2),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--exports", type=int)
    p.add_argument("--exams", type=int)
    p.add_argument("--heldout", type=int)
    p.add_argument("--epoch-images", type=int)
    p.add_argument("--work", type=Path)
    p.add_argument("--skip", default="", help="comma-separated parts to skip: dataset, compare, epoch")
    args = p.parse_args()
    exports = args.exports or (4 if args.quick else 20)
    exams = args.exams or (200 if args.quick else 2000)
    heldout = args.heldout or (200 if args.quick else 1000)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-learning-"))
    results: dict = {"quick": args.quick}
    try:
        if "dataset" not in skip:
            print(f"==> generating {exports} research exports x {exams} exams", file=sys.stderr, flush=True)
            folders = make_exports(work / "exports", exports, exams)
            r = in_child(measure_dataset, [str(f) for f in folders], str(work / "dataset"))
            results["dataset"] = r
            print(f"dataset: {exports} exports x {exams} exams -> {r['rows']} images (train {r['train']}, held-out "
                  f"{r['holdout']}) in {r['seconds']:.1f} s, again (all read) {r['again_seconds']:.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        if "compare" not in skip:
            if args.quick:
                from export.demo import build_demo_pack
                pack = work / "tiny-pack"
                build_demo_pack(pack, arch="tiny", demo=True, progress=False)
            else:
                pack = REPO / "weights" / "demo"
            data = held_out_folder(work / "heldout", heldout)
            r = in_child(measure_compare, str(pack), str(data))
            results["compare"] = {**r, "pack": str(pack)}
            print(f"compare: {r['images']} held-out images, champion and challenger ({pack.name}, {r['forms']}), "
                  f"2,000 patient resamples: {r['seconds']:.1f} s ({r['images_per_second_per_side']:.1f} images/s "
                  f"per model), peak RSS {r['peak_rss_mb']:.0f} MB")
        if "epoch" not in skip:
            data = epoch_manifest(work / "epoch-data", args.epoch_images or (48 if args.quick else None))
            start = epoch_manifest(work / "epoch-start", 16)
            runs = [("tiny", 64, 16)] if args.quick else [(REDUCED["arch"], REDUCED["image_size"],
                                                          REDUCED["batch_size"]), ("tiny", 64, 16)]
            results["epoch"] = []
            for arch, size, batch in runs:
                r = in_child(measure_epoch, str(data), str(start), str(work / f"epoch-{arch}"), arch, size, batch)
                results["epoch"].append(r)
                print(f"epoch: {arch} {size} px, batch {batch}, fine-tuning from a checkpoint (--init-from), "
                      f"{r['train_images']} training + {r['val_images']} validation images: {r['epoch_seconds']:.1f} s "
                      f"({r['train_images_per_second']:.2f} training images/s), peak RSS {r['peak_rss_mb']:.0f} MB")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_learning.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
