"""Dataset adapters: the public layouts the models are trained on, mapped to the catalogue.

Every adapter reads a folder (or a manifest CSV) into ``Item``s that keep the source's own
label, its coarse group, and whatever identifies the patient; ``labelled_for`` then keeps the
items that belong to one catalogue model and gives each its class index; ``split`` divides
them into training and validation **by patient** wherever patients are known (never by
image: images of one patient are near-duplicates), stratified by class, seeded, and says
which patients and files went where.

Layouts:
- ``breakhis``: BreakHis file names ``SOB_<B|M>_<type>-<yy>-<patient>-<magnification>-<seq>.png``,
  anywhere below the folder (the original ``histology_slides/breast/...`` tree or flat copies).
- ``herlev``: the seven Herlev class folders (``normal_columnar``, ``carcinoma_in_situ``...),
  grouped as normal/abnormal; the ``-d`` segmentation masks are skipped.
- ``cervix_types``: Kaggle Intel & MobileODT ``Type_1``/``Type_2``/``Type_3`` folders
  (``train/``, ``additional/``... below the folder).
- ``manifest``: a CSV with columns ``file, split, label, group, patient[, magnification, cluster |
  slide_group, analysis]`` (``file`` relative to the CSV), like ``../shared/datasets/*/manifest.csv``
  (``slide_group``: the LBC set's slides, kept on one side of a split; ``analysis``: the catalogue
  analysis a row belongs to, for sets that mix several).
- a *field dataset* (``bccdms-export dataset``, ``field_dataset.py``): a manifest folder with a
  ``dataset.json``; it is read as its **training side** unless ``--subset holdout`` asks for the
  locked held-out set, so no training run can see a held-out case by accident.
- ``imagefolder``: one sub-folder per class, named by a catalogue class id (or the source's label).

This module does not import torch.
"""
from __future__ import annotations

import csv
import random
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import catalogue
from appliance.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
LAYOUTS = ("auto", "breakhis", "herlev", "cervix_types", "manifest", "imagefolder")

BREAKHIS_TYPES = {
    "A": "adenosis", "F": "fibroadenoma", "PT": "phyllodes_tumor", "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma", "LC": "lobular_carcinoma", "MC": "mucinous_carcinoma", "PC": "papillary_carcinoma",
}
_BREAKHIS_NAME = re.compile(
    r"^SOB_(?P<tumour>[BM])_(?P<type>[A-Z]+)-(?P<year>\d+)-(?P<slide>[A-Za-z0-9]+)-(?P<mag>\d+)-(?P<seq>\d+)$")
HERLEV_CLASSES = {
    "normal_superficiel": "normal", "normal_intermediate": "normal", "normal_columnar": "normal",
    "light_dysplastic": "abnormal", "moderate_dysplastic": "abnormal", "severe_dysplastic": "abnormal",
    "carcinoma_in_situ": "abnormal",
}
# Herlev cell crops are named <source image>-<cell>-<n>; cells of one source image stay together.
_HERLEV_NAME = re.compile(r"^(?P<source>\d+)-\d+(-\d+)?$")
_CERVIX_TYPE = re.compile(r"^type[_ ]?([123])$", re.IGNORECASE)
# Other spellings of catalogue class ids that datasets use. Each one files a lesion under a class,
# so each must be clinically right (the model card lists the mapping a model was trained with):
# - Cervical precursors are "precancer", never a cancer class. CIN 1-3 and LSIL/HSIL (the LAST/WHO
#   names of the same squamous intraepithelial lesions, in histology and cytology) are precursors,
#   and squamous carcinoma in situ is CIN 3/HSIL. Adenocarcinoma in situ (AIS) is the glandular
#   precursor: confined to the epithelium, not invasive; filing it as "adenocarcinoma" would teach
#   the model to call a precursor an invasive cancer. The catalogue's cervical model has one
#   precursor class (no low/high grade), so LSIL/CIN 1, which mostly regresses and is followed up
#   rather than treated (WHO's treatment threshold is CIN 2+), is in it too: it is not normal
#   epithelium and it is not cancer; "precancer" here means "intraepithelial lesion, follow up".
# - "scc" is the usual abbreviation of squamous cell carcinoma; BreakHis's type codes (A, F, PT,
#   TA benign; DC, LC, MC, PC malignant) are the dataset's own abbreviations of the subtypes.
# - Phyllodes tumours can be benign, borderline or malignant: the alias only names the subtype;
#   the benign/malignant group comes from the dataset (BreakHis files its cases as benign).
CERVICAL_PRECURSORS = ("cin", "cin1", "cin2", "cin3", "cin_1", "cin_2", "cin_3", "lsil", "hsil",
                       "carcinoma_in_situ", "adenocarcinoma_in_situ", "ais")
ALIASES = {
    **{code.lower(): name for code, name in BREAKHIS_TYPES.items()},
    "phyllodes": "phyllodes_tumor", "scc": "squamous_cell_carcinoma",
    **{name: "precancer" for name in CERVICAL_PRECURSORS},
    "type1": "type_1", "type2": "type_2", "type3": "type_3",
}
LAYOUT_DOMAINS = {"breakhis": catalogue.HISTOPATHOLOGY, "herlev": catalogue.CYTOLOGY,
                  "cervix_types": catalogue.COLPOSCOPY}


@dataclass(frozen=True)
class Item:
    path: Path
    label: str                        # the source's own (finest) label, normalised
    group: str | None = None          # the source's coarse label (benign/malignant, normal/abnormal)
    patient: str | None = None
    magnification: str | None = None
    # Images that must stay on one side of a split though no patient id is known (a Herlev
    # source image, an LBC slide group); falls back to the patient, then to the file itself.
    cluster: str | None = None
    analysis: str | None = None       # set in datasets that mix analyses (field datasets)

    @property
    def split_key(self) -> str:
        if self.patient:
            return f"patient:{self.patient}"
        if self.cluster:
            return f"cluster:{self.cluster}"
        return f"file:{self.path}"


@dataclass
class Dataset:
    root: Path
    layout: str
    items: list[Item]
    domain: str | None = None     # the catalogue image domain, when the layout implies it

    def relpath(self, item: Item) -> str:
        try:
            return item.path.relative_to(self.root).as_posix()
        except ValueError:
            return str(item.path)


@dataclass
class Labelled:
    """The items of a dataset that belong to one model, with their class index."""
    dataset: Dataset
    model_id: str
    classes: tuple[str, ...]
    items: list[Item]
    targets: list[int]

    def counts(self) -> dict[str, int]:
        c = Counter(self.targets)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass
class Split:
    train: Labelled
    val: Labelled
    method: str            # "patient" | "group" | "stratified"
    seed: int
    val_fraction: float
    summary: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What went where, for the checkpoint and ``split.json``."""
        def side(part: Labelled) -> dict[str, Any]:
            return {"images": len(part.items), "classes": part.counts(),
                    "patients": sorted({i.patient for i in part.items if i.patient}),
                    "files": sorted(part.dataset.relpath(i) for i in part.items)}
        ds = self.train.dataset
        return {"dataset": str(ds.root), "layout": ds.layout, "model": self.train.model_id,
                "method": self.method, "seed": self.seed, "val_fraction": self.val_fraction,
                "train": side(self.train), "val": side(self.val)}


# ---------------------------------------------------------------- name parsing

def normalise_label(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def parse_breakhis_name(name: str) -> dict[str, str] | None:
    """``SOB_B_A-14-22549AB-40-001.png`` → tumour class, subtype, patient id, magnification."""
    m = _BREAKHIS_NAME.match(Path(name).stem)
    if not m or m["type"] not in BREAKHIS_TYPES:
        return None
    return {"group": "benign" if m["tumour"] == "B" else "malignant", "label": BREAKHIS_TYPES[m["type"]],
            "patient": f"{m['year']}-{m['slide']}", "magnification": f"{m['mag']}X"}


def herlev_source_image(name: str) -> str | None:
    m = _HERLEV_NAME.match(Path(name).stem)
    return m["source"] if m else None


# ---------------------------------------------------------------- adapters

def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def read_breakhis(root: Path) -> list[Item]:
    items = []
    for path in _images(root):
        parsed = parse_breakhis_name(path.name)
        if parsed:
            items.append(Item(path, parsed["label"], parsed["group"], parsed["patient"], parsed["magnification"]))
    return items


def read_herlev(root: Path) -> list[Item]:
    items = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir() and normalise_label(p.name) in HERLEV_CLASSES):
        label = normalise_label(folder.name)
        for path in _images(folder):
            if path.stem.lower().endswith("-d"):   # Herlev's segmentation masks
                continue
            items.append(Item(path, label, HERLEV_CLASSES[label], cluster=herlev_source_image(path.name)))
    return items


def read_cervix_types(root: Path) -> list[Item]:
    items = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir() and _CERVIX_TYPE.match(p.name)):
        label = f"type_{_CERVIX_TYPE.match(folder.name).group(1)}"
        items += [Item(path, label) for path in _images(folder)]
    return items


def read_image_folder(root: Path) -> list[Item]:
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = normalise_label(folder.name)
        items += [Item(path, label) for path in _images(folder)]
    return items


def read_manifest(csv_path: Path, subset: str | None = None) -> list[Item]:
    """Rows of a manifest CSV (``file, split, label[, group, patient, magnification]``).

    ``subset`` keeps the rows whose ``split`` column equals it (e.g. ``eval``). Patient ids,
    magnifications and Herlev source images missing from the CSV are read from BreakHis and
    Herlev file names.
    """
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"The manifest {csv_path} cannot be read ({exc}).", "Check the file.") from None
    if rows and not {"file", "label"} <= set(rows[0]):
        raise UserError(f"The manifest {csv_path} has no 'file' and 'label' columns.",
                        "Use a CSV with columns file, split, label, group, patient.")
    items, missing = [], []
    for row in rows:
        if subset and (row.get("split") or "") != subset:
            continue
        path = (csv_path.parent / row["file"]).resolve()
        if not path.is_file():
            missing.append(row["file"])
            continue
        parsed = parse_breakhis_name(path.name) or {}
        items.append(Item(path, normalise_label(row["label"]),
                          normalise_label(row["group"]) if row.get("group") else parsed.get("group"),
                          row.get("patient") or parsed.get("patient"),
                          row.get("magnification") or parsed.get("magnification"),
                          cluster=row.get("cluster") or row.get("slide_group") or herlev_source_image(path.name),
                          analysis=row.get("analysis") or None))
    if missing:
        raise UserError(f"{len(missing)} files listed in {csv_path} are missing (first: {missing[0]}).",
                        "Copy the whole dataset folder, or fix the manifest.")
    return items


_READERS = {"breakhis": read_breakhis, "herlev": read_herlev, "cervix_types": read_cervix_types,
            "imagefolder": read_image_folder}


def detect_layout(root: Path) -> str:
    if (root / "manifest.csv").is_file():
        return "manifest"
    dirs = {normalise_label(p.name) for p in root.rglob("*") if p.is_dir()}
    if len(dirs & set(HERLEV_CLASSES)) >= 2:
        return "herlev"
    if sum(1 for d in dirs if _CERVIX_TYPE.match(d)) >= 2:
        return "cervix_types"
    if any(parse_breakhis_name(p.name) for p in _images(root)[:2000]):
        return "breakhis"
    return "imagefolder"


FIELD_DATASET_MARK = "dataset.json"
FIELD_SIDES = ("train", "holdout")


def _field_side(root: Path, subset: str | None) -> str:
    """A field dataset is its training side unless the held-out side is named."""
    if subset is None:
        return "train"
    if subset not in FIELD_SIDES:
        raise UserError(f"{root} is a field dataset; its sides are {' and '.join(FIELD_SIDES)}, not {subset!r}.",
                        "Leave --subset out to train (the training side), or pass --subset holdout to evaluate.")
    return subset


def open_dataset(path: str | Path, layout: str = "auto", subset: str | None = None) -> Dataset:
    """Read a dataset folder (or a manifest CSV) in the given or detected layout."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise UserError(f"Unknown dataset layout {layout!r}.", f"Use one of: {', '.join(LAYOUTS)}.")
    if not path.exists():
        raise UserError(f"The dataset {path} does not exist.", "Check the path given to --data.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path} is neither a dataset folder nor a manifest CSV.",
                            "Pass a folder of images, or a manifest .csv file, to --data.")
        root, csv_path, layout = path.parent, path, "manifest"
    else:
        root, csv_path = path, path / "manifest.csv"
        if layout == "auto":
            layout = detect_layout(root)
    if layout == "manifest":
        if not csv_path.is_file():
            raise UserError(f"There is no manifest.csv in {root}.", "Pass the CSV file itself, or another --layout.")
        if (root / FIELD_DATASET_MARK).is_file():
            subset = _field_side(root, subset)
        items = read_manifest(csv_path, subset)
    else:
        if subset:
            raise UserError("--subset only applies to manifest CSV datasets.", "Leave it out for this folder.")
        items = _READERS[layout](root)
    if not items:
        raise UserError(f"No labelled images were found in {path} (layout {layout}).",
                        "Check the folder, or name the layout with --layout.")
    return Dataset(root.resolve(), layout, items, LAYOUT_DOMAINS.get(layout))


# ---------------------------------------------------------------- mapping to a model

def class_of(item: Item, class_ids: tuple[str, ...]) -> str | None:
    """The model class an item belongs to: its own label, else its group (aliases allowed)."""
    found = _class_and_route(item, class_ids)
    return found[0] if found else None


def _class_and_route(item: Item, class_ids: tuple[str, ...]) -> tuple[str, str] | None:
    """The class and how it was reached: ``label``, ``label alias``, ``group`` or ``group alias``."""
    for source, name in (("label", item.label), ("group", item.group)):
        if not name:
            continue
        cls = ALIASES.get(name, name)
        if cls in class_ids:
            return cls, source if cls == name else f"{source} alias"
    return None


def label_mapping(labelled: Labelled) -> list[dict[str, Any]]:
    """Each dataset label (with its group) → the model class its images trained or tested, how the
    class was reached and how many images: the model card lists it so a reader can check it."""
    counts: Counter = Counter()
    for item in labelled.items:
        cls, route = _class_and_route(item, labelled.classes)
        counts[(item.label, item.group or "", cls, route)] += 1
    return [{"label": label, "group": group or None, "class": cls, "via": route, "images": n}
            for (label, group, cls, route), n in sorted(counts.items())]


def labelled_for(dataset: Dataset, model_id: str) -> Labelled:
    """The items of ``dataset`` that train or test ``model_id``, with class indices.

    BreakHis feeds ``breast_binary`` (by group), ``breast_benign_subtype`` (benign labels) and
    ``breast_malignant_subtype`` (malignant labels); Herlev feeds ``pap_smear`` (by group);
    cervix types feed ``cervix_type``.
    """
    spec = catalogue.model(model_id)
    if dataset.domain and dataset.domain != spec.domain:
        raise UserError(f"The {dataset.layout} images in {dataset.root} are {dataset.domain.replace('_', ' ')} "
                        f"images, but {model_id} analyses {spec.domain.replace('_', ' ')} images.",
                        "Choose the model that matches the dataset with --model.")
    items, targets = [], []
    analysis_id = catalogue.analysis_of_model(model_id).id
    for item in dataset.items:
        if item.analysis is not None and item.analysis != analysis_id:
            continue                  # a normal Pap smear is not a normal cervical biopsy
        cls = class_of(item, spec.class_ids)
        if cls is not None:
            items.append(item)
            targets.append(spec.class_ids.index(cls))
    present = sorted({spec.class_ids[t] for t in targets})
    if len(present) < 2:
        found = sorted({i.label for i in dataset.items})[:12]
        raise UserError(f"The dataset {dataset.root} has images of {len(present)} of the classes of {model_id} "
                        f"({', '.join(spec.class_ids)}); it needs at least two.",
                        f"Its labels are: {', '.join(found)}. Name class folders by these class ids.")
    return Labelled(dataset, model_id, spec.class_ids, items, targets)


def subset_of(labelled: Labelled, keep: list[int]) -> Labelled:
    return Labelled(labelled.dataset, labelled.model_id, labelled.classes,
                    [labelled.items[i] for i in keep], [labelled.targets[i] for i in keep])


def select_files(labelled: Labelled, files: set[str]) -> Labelled:
    """The items whose path relative to the dataset root is in ``files`` (a recorded split side)."""
    keep = [i for i, item in enumerate(labelled.items) if labelled.dataset.relpath(item) in files]
    return subset_of(labelled, keep)


# ---------------------------------------------------------------- splitting

def split(labelled: Labelled, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Training/validation split: patient-disjoint (or source-image-disjoint), stratified, seeded.

    Uses scikit-learn's ``StratifiedGroupKFold`` with about 1/``val_fraction`` folds and keeps
    the first fold for validation: no patient is on both sides, and each class is spread over
    both sides as evenly as the patients allow.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < val_fraction < 1:
        raise UserError(f"The validation fraction {val_fraction} is not between 0 and 1.", "Use e.g. 0.2.")
    groups = [item.split_key for item in labelled.items]
    n_groups = len(set(groups))
    folds = min(max(2, round(1 / val_fraction)), n_groups)
    if n_groups < 2:
        raise UserError(f"All {len(groups)} images of {labelled.model_id} come from one patient, so no validation "
                        "set can be held out without sharing a patient.", "Add images of more patients.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "the least populated class has only N members": expected here
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(labelled.items, labelled.targets, groups))
    if any(i.patient for i in labelled.items):
        method = "patient"
    elif any(i.cluster for i in labelled.items):
        method = "group"
    else:
        method = "stratified"
    return Split(subset_of(labelled, sorted(train_idx)), subset_of(labelled, sorted(val_idx)),
                 method, seed, val_fraction)


def sample_paths(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    """Up to ``count`` of ``paths``, a seeded random sample in file order (calibration, checks)."""
    if len(paths) <= count:
        return paths
    return sorted(random.Random(seed).sample(paths, count))


def summarise(dataset: Dataset) -> dict[str, Any]:
    """Counts by label and group, patients and magnifications (for provenance)."""
    groups: dict[str, set] = defaultdict(set)
    for item in dataset.items:
        if item.patient:
            groups[item.label].add(item.patient)
    return {"root": str(dataset.root), "layout": dataset.layout, "images": len(dataset.items),
            "labels": dict(sorted(Counter(i.label for i in dataset.items).items())),
            "groups": dict(sorted(Counter(i.group for i in dataset.items if i.group).items())),
            "patients": len({i.patient for i in dataset.items if i.patient}),
            "magnifications": dict(sorted(Counter(i.magnification for i in dataset.items if i.magnification).items()))}
