"""Dataset adapters, patient-disjoint splits and transforms of the torch side, on the real shared images."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import UserError
from export.datasets import (detect_layout, label_mapping, labelled_for, open_dataset, parse_breakhis_name,
                             sample_paths, select_files, split)

REPO = Path(__file__).resolve().parents[1]


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


@pytest.mark.parametrize("name, expected", [
    ("SOB_B_A-14-22549AB-40-001.png", ("benign", "adenosis", "14-22549AB", "40X")),
    ("SOB_M_DC-14-13412-100-026.png", ("malignant", "ductal_carcinoma", "14-13412", "100X")),
    ("SOB_B_PT-14-21998AB-400-015.jpg", ("benign", "phyllodes_tumor", "14-21998AB", "400X")),
    ("SOB_M_PC-14-15687B-200-003.png", ("malignant", "papillary_carcinoma", "14-15687B", "200X")),
])
def test_breakhis_names_give_class_subtype_patient_and_magnification(name, expected):
    parsed = parse_breakhis_name(name)
    assert (parsed["group"], parsed["label"], parsed["patient"], parsed["magnification"]) == expected


@pytest.mark.parametrize("name", ["SOB_X_A-14-1-40-001.png", "SOB_B_ZZ-14-1-40-001.png", "benign_001.png",
                                  "SOB_B_A-14-22549AB-40.png"])
def test_names_that_are_not_breakhis_are_not_parsed(name):
    assert parse_breakhis_name(name) is None


def _manifest_counts(manifest: Path, split_name: str, column: str) -> dict[str, int]:
    """Counts read straight from the dataset's own manifest.csv (the shared sets grow: 397 -> 506)."""
    counts: dict[str, int] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split_name:
                counts[row[column]] = counts.get(row[column], 0) + 1
    return counts


def test_shared_breakhis_manifest_feeds_the_three_breast_models(datasets):
    ds = open_dataset(datasets / "breakhis", subset="eval")
    labels = _manifest_counts(datasets / "breakhis" / "manifest.csv", "eval", "label")
    groups = _manifest_counts(datasets / "breakhis" / "manifest.csv", "eval", "group")
    assert ds.layout == "manifest" and len(ds.items) == sum(labels.values()) >= 397
    assert labelled_for(ds, "breast_binary").counts() == groups
    benign = labelled_for(ds, "breast_benign_subtype").counts()
    assert benign == {k: labels[k] for k in ("adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma")}
    malignant = labelled_for(ds, "breast_malignant_subtype").counts()
    assert malignant == {k: labels[k] for k in ("ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma",
                                                "papillary_carcinoma")}
    assert {i.patient for i in ds.items} >= {"14-22549AB", "14-13412"}


@pytest.mark.parametrize("model_id", ["breast_binary", "breast_benign_subtype", "breast_malignant_subtype"])
def test_breakhis_splits_never_share_a_patient(datasets, model_id):
    # Without --subset, originals and their resized copies in eval are both read: a split by
    # image would put the same picture on both sides.
    labelled = labelled_for(open_dataset(datasets / "breakhis"), model_id)
    parts = split(labelled, 0.2, seed=3)
    train_patients = {i.patient for i in parts.train.items}
    val_patients = {i.patient for i in parts.val.items}
    assert parts.method == "patient" and train_patients and val_patients
    assert not train_patients & val_patients
    assert len(parts.train.items) + len(parts.val.items) == len(labelled.items)
    doc = parts.describe()
    assert set(doc["val"]["patients"]) == val_patients
    assert len(doc["train"]["files"]) == len(parts.train.items)
    # The recorded files select the same side again.
    again = select_files(labelled, set(doc["val"]["files"]))
    assert sorted(map(str, (i.path for i in again.items))) == sorted(map(str, (i.path for i in parts.val.items)))


def test_splits_are_seeded(datasets):
    labelled = labelled_for(open_dataset(datasets / "breakhis", subset="eval"), "breast_binary")
    first = split(labelled, 0.2, seed=1).describe()["val"]["patients"]
    assert split(labelled, 0.2, seed=1).describe()["val"]["patients"] == first
    assert any(split(labelled, 0.2, seed=s).describe()["val"]["patients"] != first for s in (2, 3, 4))


def test_breakhis_original_folder_tree(tmp_path, datasets):
    """BreakHis as released: histology_slides/breast/<benign|malignant>/SOB/<type>/<patient>/<mag>/file."""
    root = tmp_path / "BreaKHis_v1"
    for src in sorted((datasets / "breakhis" / "originals").rglob("*.png")):
        p = parse_breakhis_name(src.name)
        folder = src.stem.rsplit("-", 2)[0].replace("-", "_", 1)      # SOB_B_A_14-22549AB
        _link(src, root / "histology_slides" / "breast" / p["group"] / "SOB" / p["label"] / folder
              / p["magnification"] / src.name)
    (root / "README.txt").write_text("not an image")
    ds = open_dataset(root)
    assert ds.layout == "breakhis" and ds.domain == "he_histopathology"
    assert len(ds.items) == 30
    assert {i.magnification for i in ds.items} >= {"40X", "100X", "200X", "400X"}
    assert labelled_for(ds, "breast_binary").counts()["malignant"] > 0


def _herlev_tree(tmp_path: Path, datasets: Path) -> Path:
    root = tmp_path / "smear2005" / "New database pictures"
    for src in sorted((datasets / "herlev" / "eval").rglob("*.jpg")):
        _link(src, root / src.parent.name / src.name)
    # Herlev ships a segmentation mask beside each cell: it is not a training image.
    mask_src = next((datasets / "herlev" / "eval" / "normal_columnar").glob("*.jpg"))
    _link(mask_src, root / "normal_columnar" / (mask_src.stem + "-d.bmp"))
    return tmp_path / "smear2005"


def test_herlev_folders_group_seven_classes_into_normal_and_abnormal(tmp_path, datasets):
    ds = open_dataset(_herlev_tree(tmp_path, datasets))
    assert ds.layout == "herlev" and ds.domain == "pap_cytology"
    assert len(ds.items) == 627    # the mask is skipped
    assert not any(i.path.stem.endswith("-d") for i in ds.items)
    assert {i.label for i in ds.items} == {"normal_superficiel", "normal_intermediate", "normal_columnar",
                                           "light_dysplastic", "moderate_dysplastic", "severe_dysplastic",
                                           "carcinoma_in_situ"}
    labelled = labelled_for(ds, "pap_smear")
    assert labelled.counts() == {"normal": 227, "abnormal": 400}


def test_herlev_cells_of_one_source_image_stay_on_one_side(tmp_path, datasets):
    labelled = labelled_for(open_dataset(_herlev_tree(tmp_path, datasets)), "pap_smear")
    parts = split(labelled, 0.25, seed=0)
    assert parts.method == "group"
    train_sources = {i.cluster for i in parts.train.items}
    val_sources = {i.cluster for i in parts.val.items}
    assert val_sources and not train_sources & val_sources
    counts = parts.val.counts()
    assert counts["normal"] > 0 and counts["abnormal"] > 0     # stratified


def test_herlev_images_cannot_train_a_breast_model(tmp_path, datasets):
    ds = open_dataset(_herlev_tree(tmp_path, datasets))
    with pytest.raises(UserError, match="breast_binary analyses he histopathology"):
        labelled_for(ds, "breast_binary")


def test_kaggle_cervix_type_folders(tmp_path, datasets):
    root = tmp_path / "intel-mobileodt"
    for i, src in enumerate(sorted((datasets / "iarc_colposcopy" / "eval").rglob("*.jpg"))):
        kind = src.parent.name.replace("type_", "Type_")
        _link(src, root / ("train" if i % 2 else "additional") / kind / f"{i}.jpg")
    ds = open_dataset(root)
    assert ds.layout == "cervix_types"
    assert labelled_for(ds, "cervix_type").counts() == {"type_1": 41, "type_2": 23, "type_3": 31}
    parts = split(labelled_for(ds, "cervix_type"), 0.2)
    assert parts.method == "stratified"      # Kaggle gives no patient ids
    assert all(v > 0 for v in parts.val.counts().values())


def test_colposcopy_manifest_splits_by_case(datasets):
    labelled = labelled_for(open_dataset(datasets / "iarc_colposcopy" / "manifest.csv"), "cervix_type")
    parts = split(labelled, 0.2, seed=0)
    assert parts.method == "patient"
    assert not {i.patient for i in parts.train.items} & {i.patient for i in parts.val.items}


def test_image_folder_named_by_class_ids(tmp_path, datasets):
    root = tmp_path / "mine"
    for src in sorted((datasets / "breakhis" / "eval" / "adenosis").glob("*.jpg"))[:5]:
        _link(src, root / "Benign" / src.name)
    for src in sorted((datasets / "breakhis" / "eval" / "ductal_carcinoma").glob("*.jpg"))[:4]:
        _link(src, root / "malignant" / "slide 1" / src.name)
    ds = open_dataset(root, layout="imagefolder")
    assert detect_layout(root) in ("imagefolder", "breakhis")
    assert labelled_for(ds, "breast_binary").counts() == {"benign": 5, "malignant": 4}


def test_cervical_precursors_are_filed_as_precancer_never_as_cancer(tmp_path, datasets):
    """Adenocarcinoma in situ, CIN and LSIL/HSIL folders train the precancer class; only invasive
    cancers reach the cancer classes (the pixels are stand-ins: only the folder names matter here)."""
    images = iter(sorted((datasets / "breakhis" / "eval" / "adenosis").glob("*.jpg")))
    root = tmp_path / "cervix"
    for folder in ("normal", "Adenocarcinoma in situ", "AIS", "CIN 2", "CIN3", "LSIL", "HSIL", "carcinoma in situ",
                   "SCC", "adenocarcinoma"):
        src = next(images)
        _link(src, root / folder / src.name)
    labelled = labelled_for(open_dataset(root, layout="imagefolder"), "cervix_histopathology")
    assert labelled.counts() == {"normal": 1, "precancer": 7, "squamous_cell_carcinoma": 1, "adenocarcinoma": 1}
    mapping = {row["label"]: (row["class"], row["via"]) for row in label_mapping(labelled)}
    assert mapping["adenocarcinoma_in_situ"] == ("precancer", "label alias")
    assert mapping["scc"] == ("squamous_cell_carcinoma", "label alias")
    assert mapping["adenocarcinoma"] == ("adenocarcinoma", "label")


def test_label_mapping_lists_every_dataset_label_with_its_class(datasets):
    labelled = labelled_for(open_dataset(datasets / "herlev", subset="eval"), "pap_smear")
    rows = label_mapping(labelled)
    assert {(r["label"], r["class"], r["via"]) for r in rows} >= {
        ("carcinoma_in_situ", "abnormal", "group"), ("light_dysplastic", "abnormal", "group"),
        ("normal_columnar", "normal", "group")}
    assert len(rows) == 7 and sum(r["images"] for r in rows) == len(labelled.items)


def test_manifest_with_missing_files_is_refused(tmp_path):
    csv_path = tmp_path / "manifest.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "split", "label", "group", "patient"])
        w.writerow(["eval/benign/x.jpg", "eval", "adenosis", "benign", "p1"])
    with pytest.raises(UserError, match="missing"):
        open_dataset(csv_path)


@pytest.mark.parametrize("problem", ["missing", "empty", "not_csv", "bad_layout"])
def test_unusable_dataset_paths_are_user_errors(tmp_path, problem):
    path = tmp_path / "data"
    layout = "auto"
    if problem == "empty":
        path.mkdir()
    elif problem == "not_csv":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif problem == "bad_layout":
        path.mkdir()
        layout = "kaggle-ish"
    with pytest.raises(UserError) as err:
        open_dataset(path, layout=layout)
    assert err.value.hint


def test_a_model_needs_two_classes_in_the_data(datasets):
    ds = open_dataset(datasets / "breakhis", subset="eval")
    ds.items = [i for i in ds.items if i.group == "benign"]
    with pytest.raises(UserError, match="at least two"):
        labelled_for(ds, "breast_binary")


def test_one_patient_cannot_be_split(datasets):
    from dataclasses import replace
    ds = open_dataset(datasets / "breakhis", subset="eval")
    benign = [i for i in ds.items if i.group == "benign"][:5]
    malignant = [i for i in ds.items if i.group == "malignant"][:5]
    ds.items = [replace(i, patient="14-22549AB") for i in benign + malignant]
    with pytest.raises(UserError, match="one patient"):
        split(labelled_for(ds, "breast_binary"))


def test_sample_paths_is_seeded_and_bounded():
    paths = [Path(f"/x/{i}.png") for i in range(50)]
    assert sample_paths(paths, 10, seed=1) == sample_paths(paths, 10, seed=1)
    assert len(sample_paths(paths, 10)) == 10 and sample_paths(paths[:3], 10) == paths[:3]


# ---------------------------------------------------------------- transforms

def test_transforms_module_does_not_import_torch_until_used():
    code = ("import sys, export.transforms as t; assert 'torch' not in sys.modules; "
            "s = t.input_spec(); assert (s['size'], s['resize']) == (224, 256); print('ok')")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_eval_transform_on_a_real_breakhis_original(datasets):
    import torch
    from PIL import Image
    from export.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, input_spec
    path = datasets / "breakhis" / "originals" / "adenosis" / "SOB_B_A-14-22549AB-40-001.png"
    tensor = eval_transform(input_spec())(Image.open(path))
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    # Undoing the normalisation gives pixel values in [0, 1].
    pixels = tensor * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_eval_transform_applies_exif_orientation_and_rgb(tmp_path):
    import numpy as np
    from PIL import Image
    from export.transforms import eval_transform, input_spec
    spec = input_spec(32, 32)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)               # left half red
    plain = Image.fromarray(wide)
    exif = Image.Exif()
    exif[0x0112] = 6                          # "rotate 90° clockwise to display"
    plain.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = eval_transform(spec)(Image.open(tmp_path / "rotated.jpg"))
    # Displayed upright the image is tall with red on top: after the crop, top rows are red.
    assert upright[0, :4].mean() > upright[0, -4:].mean() + 1.0
    grey = eval_transform(spec)(Image.fromarray(np.full((40, 40), 128, np.uint8)))
    assert grey.shape == (3, 32, 32)


def test_resize_exact_squeezes_without_cropping():
    import numpy as np
    from PIL import Image
    from export.transforms import eval_transform, input_spec
    wide = np.zeros((20, 80, 3), np.uint8)
    wide[:, :8] = 255                         # a white stripe at the left edge survives (no crop)
    tensor = eval_transform(input_spec(16, 16, policy="resize_exact"))(Image.fromarray(wide))
    assert tensor.shape == (3, 16, 16) and tensor[:, :, 0].mean() > tensor[:, :, -1].mean()


def test_train_transform_makes_tensors_of_the_input_size(datasets):
    from PIL import Image
    from export.transforms import input_spec, train_transform
    path = next((datasets / "iarc_colposcopy" / "eval" / "type_1").glob("*.jpg"))
    out = train_transform(input_spec(96), vertical_flip=False)(Image.open(path))
    assert out.shape == (3, 96, 96)


def test_input_spec_refuses_a_crop_larger_than_the_resize():
    from export.transforms import input_spec
    with pytest.raises(ValueError):
        input_spec(224, 200)
