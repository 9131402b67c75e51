"""``bccdms-export dataset``: one training set from the de-identified research exports of many posts,
with a held-out set that never changes once it is made.

Input: research exports as the supervisor unpacks them (``appliance import --extract-to DIR
BUNDLE``; see docs/exchange.md): each folder holds ``records/exams.jsonl`` (one de-identified exam
per line) and the images it names. A folder that holds such folders is read whole.

What is used (the rest is counted and named, never silently dropped):
- exams of trained models only (demo-model exams never), with a class from a source the policy
  accepts (``--labels``): ``expert`` (a reviewer's verdict, issue 17's reviews) or
  ``expert+clinician`` (the expert's where there is one, else the clinician's decided class).
  A model's own guess (``label_source: model``: awaiting a decision, unconfirmed) and referrals
  are never used;
- every image once, by the sha256 of its bytes (the same image exported by two posts, or twice
  by one, is one case; the strongest label source wins, and a tie with different labels leaves the
  image out as a conflict);
- groups: the pseudonymous patient of the post (``<post>:<patient>``), so one woman's images are
  on one side only.

Output folder ``--out DIR`` (later calls add to it)::

    dataset.json     the policy, what was read (exports by bundle id, public sets), counts
    manifest.csv     file, split (train | holdout | excluded), label, group (first model's class),
                     patient (the group), analysis, exam, post, label_source, sha256, usable,
                     origin (field | public:<name>), cluster, reason (why excluded)
    holdout.json     the LOCKED held-out set: the sha256 of every case, its exam, patient and
                     label when locked, and ``id``: the sha256 of the sorted case hashes
    images/<sha256[:2]>/<sha256>.<ext>   every image once (hard links where the disk allows)

The held-out set is drawn once, on the first build: about ``--holdout-fraction`` of the patients
of each analysis, stratified by class (scikit-learn's StratifiedGroupKFold, seeded). Later builds
never change it: new cases go to the training side; a new image of a patient who is in the
held-out set is left out (``reason: patient in the held-out set``) rather than straddle the
two sides. ``--extend-holdout`` is the one way it grows: it keeps every old case, adds those new
images of held-out patients, and draws the same fraction of the *new* patients (patients with
no image on the training side yet). Public datasets (``--add-public``) only ever join the training
side.

Training reads the folder as a manifest: ``bccdms-export train --data DIR`` sees the training side
only (``datasets.open_dataset``); ``compare --data DIR`` and ``evaluate --subset holdout`` the
held-out side.
"""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance import catalogue
from appliance.errors import UserError

from .datasets import ALIASES, FIELD_DATASET_MARK, open_dataset
from .progress import Progress

FORMAT = "bccdms-field-dataset/1"
HOLDOUT_FORMAT = "bccdms-holdout/1"
POLICIES = ("expert", "expert+clinician")
ACCEPTED = {"expert": ("expert",), "expert+clinician": ("expert", "clinician")}
STRENGTH = {"expert": 2, "clinician": 1}
HOLDOUT_FRACTION = 0.2
MANIFEST = "manifest.csv"
HOLDOUT = "holdout.json"
COLUMNS = ("file", "split", "label", "group", "patient", "analysis", "exam", "post", "label_source", "sha256",
           "usable", "origin", "cluster", "reason")
TRAIN, HELD_OUT, EXCLUDED = "train", "holdout", "excluded"
IN_HELD_OUT_PATIENT = "patient in the held-out set"
CONFLICT = "the same image with different labels"
EXAMS_FILE = Path("records") / "exams.jsonl"


@dataclass
class Row:
    file: str
    split: str
    label: str
    group: str
    patient: str
    analysis: str
    exam: str
    post: str
    label_source: str
    sha256: str
    usable: bool = True
    origin: str = "field"
    cluster: str = ""
    reason: str = ""

    def csv(self) -> dict[str, str]:
        return {k: ("yes" if v is True else "no" if v is False else str(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_csv(cls, raw: dict[str, str]) -> "Row":
        values: dict[str, Any] = {k: raw.get(k, "") or "" for k in COLUMNS}
        values["usable"] = values["usable"] != "no"
        return cls(**values)


@dataclass
class BuildReport:
    out: Path
    rows: int
    added: Counter = field(default_factory=Counter)          # split -> new rows
    skipped: Counter = field(default_factory=Counter)        # reason -> exams not used
    counts: dict[str, Any] = field(default_factory=dict)
    holdout_id: str = ""
    holdout_created: bool = False
    holdout_extended: int = 0
    exports_read: list[str] = field(default_factory=list)
    exports_known: list[str] = field(default_factory=list)
    label_changes: int = 0


# ---------------------------------------------------------------- reading research exports

def export_folders(paths: list[str | Path]) -> list[Path]:
    """Each extracted research export among ``paths`` (an export, or a folder of exports)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / EXAMS_FILE).is_file():
            found.append(path)
            continue
        below = sorted(p for p in path.iterdir() if (p / EXAMS_FILE).is_file()) if path.is_dir() else []
        if not below:
            raise UserError(f"{path} is not an unpacked research export (it has no {EXAMS_FILE.as_posix()}).",
                            "Unpack the de-identified bundles with 'appliance import --extract-to DIR BUNDLE' "
                            "and pass DIR or the folders in it.")
        found += below
    return found


def _export_manifest(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"The research export {folder} has no readable manifest.json.",
                        "Unpack the bundle again with 'appliance import --extract-to'.") from None
    if doc.get("kind") != "deidentified":
        raise UserError(f"{folder} is a {doc.get('kind') or 'unknown'} bundle, not a de-identified research export.",
                        "Export with 'appliance export --deidentified' at the post; never train on identified records.")
    return doc


def _records(folder: Path) -> Iterator[dict]:
    with open(folder / EXAMS_FILE, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise UserError(f"Line {number} of {folder / EXAMS_FILE} is not valid JSON.",
                                "Unpack the bundle again; if it stays damaged, ask the post to export again.") from None
            if isinstance(record, dict):
                yield record


def label_source_of(record: dict) -> str | None:
    """The record's label source; exports made before the field existed: a class folder image is
    the clinician's class, an unconfirmed one the model's."""
    source = record.get("label_source")
    if source is not None or "label_source" in record:
        return source
    image = record.get("image") or ""
    return "clinician" if isinstance(image, str) and image.startswith("images/") else "model"


def research_label(record: dict, policy: str) -> tuple[str | None, str | None, str]:
    """(label, its source, why not) of a record under a label policy."""
    analysis = record.get("analysis")
    if analysis not in catalogue.ANALYSES:
        return None, None, "unknown analysis"
    if record.get("demo") or (record.get("result") or {}).get("demo"):
        return None, None, "made with demo models"
    source = label_source_of(record)
    if source == "model":
        return None, source, "unconfirmed (the model's own label)"
    if source is None:
        return None, None, "no class (a referral)"
    if source not in ACCEPTED[policy]:
        return None, source, f"{source} label, not accepted by --labels {policy}"
    label = record.get("expert_label") if source == "expert" else record.get("final_label")
    if label not in catalogue.all_label_ids()[analysis]:
        return None, source, "no class (a referral)"
    return label, source, ""


def _field_images(record: dict) -> list[str]:
    """The members of an exam's images: ``image`` (one field), or ``fields`` of multi-field exams."""
    fields = record.get("fields")
    if isinstance(fields, list) and fields:
        return [f["image"] if isinstance(f, dict) else f for f in fields
                if isinstance(f, (str, dict)) and (f.get("image") if isinstance(f, dict) else f)]
    return [record["image"]] if isinstance(record.get("image"), str) else []


def _usable(record: dict) -> bool:
    return bool(((record.get("result") or {}).get("quality") or {}).get("ok", True))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _inside(folder: Path, member: str) -> Path | None:
    path = (folder / member).resolve()
    return path if path.is_relative_to(folder.resolve()) and path.is_file() else None


# ---------------------------------------------------------------- the dataset folder

class FieldDataset:
    """An existing (or new) dataset folder: its rows by sha256, its locked held-out set."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.rows: dict[str, Row] = {}
        self.meta: dict[str, Any] = {}
        self.holdout: dict[str, Any] | None = None
        if (self.out / FIELD_DATASET_MARK).is_file():
            self._load()
        # A folder holding only images/ is a first build that was cut off before it wrote the rest.
        elif self.out.exists() and any(p.name != "images" for p in self.out.iterdir()):
            raise UserError(f"{self.out} is not empty and is not a dataset built by 'bccdms-export dataset'.",
                            "Choose an empty or new --out folder (or the folder of an earlier build).")

    def _load(self) -> None:
        try:
            self.meta = json.loads((self.out / FIELD_DATASET_MARK).read_text())
            with open(self.out / MANIFEST, newline="", encoding="utf-8") as fh:
                self.rows = {r.sha256: r for r in map(Row.from_csv, csv.DictReader(fh))}
        except (OSError, ValueError, TypeError):
            raise UserError(f"The dataset in {self.out} is damaged (dataset.json or manifest.csv unreadable).",
                            "Restore the folder from its backup; a held-out set must never be rebuilt.") from None
        if (self.out / HOLDOUT).is_file():
            self.holdout = read_holdout(self.out)

    @property
    def held_out_groups(self) -> set[str]:
        return set(self.holdout["groups"]) if self.holdout else set()

    def image_path(self, row: Row) -> Path:
        return self.out / row.file


def holdout_id(cases: list[dict]) -> str:
    return hashlib.sha256("\n".join(sorted(c["sha256"] for c in cases)).encode()).hexdigest()


def read_holdout(folder: Path) -> dict[str, Any]:
    """The locked held-out set of a dataset folder, checked against its own fingerprint."""
    path = Path(folder) / HOLDOUT
    try:
        doc = json.loads(path.read_text())
        ok = doc.get("format") == HOLDOUT_FORMAT and doc["id"] == holdout_id(doc["cases"])
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"The held-out set {path} is damaged or was edited: its cases no longer match its id.",
                        "Restore it from the backup kept beside the packs; never rebuild a held-out set.")
    return doc


# ---------------------------------------------------------------- building

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_image(src: Path, out: Path, sha: str) -> str:
    ext = src.suffix.lower().lstrip(".") or "jpg"
    rel = f"images/{sha[:2]}/{sha}.{ext}"
    dest = out / rel
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return rel


def _first_model_class(analysis: str, label: str) -> str:
    path = catalogue.class_path(analysis, label)
    return path.get(catalogue.analysis(analysis).first_model, "")


def build(exports: list[str | Path], out: str | Path, *, labels: str = "expert+clinician",
          holdout_fraction: float = HOLDOUT_FRACTION, extend_holdout: bool = False,
          public: list[str] | None = None, seed: int = 0, progress: bool = True) -> BuildReport:
    """Add the exports (and public sets) to the dataset folder ``out``; see the module docstring."""
    say = Progress(progress)
    if labels not in POLICIES:
        raise UserError(f"Unknown label policy {labels!r}.", f"Use --labels {' or --labels '.join(POLICIES)}.")
    if not 0 < holdout_fraction < 1:
        raise UserError(f"--holdout-fraction {holdout_fraction} is not between 0 and 1.", "Use e.g. 0.2.")
    folders = export_folders(exports) if exports else []
    public_sets = [_public_set(p) for p in public or []]      # a wrong path fails before any work
    if not folders and not public_sets:
        raise UserError("Nothing to add: no research export and no public dataset was given.",
                        "Pass --from EXPORT (and --add-public DIR).")
    ds = FieldDataset(Path(out))
    if ds.meta and ds.meta.get("labels") != labels:
        raise UserError(f"The dataset in {ds.out} was built with --labels {ds.meta.get('labels')}; mixing "
                        "policies would change what its held-out set means.",
                        f"Pass --labels {ds.meta.get('labels')}, or build a new dataset in another folder.")
    ds.out.mkdir(parents=True, exist_ok=True)
    report = BuildReport(ds.out, 0)
    known_exports = {e["bundle_id"] for e in ds.meta.get("exports", [])}
    read_exports = list(ds.meta.get("exports", []))
    new: dict[str, Row] = {}

    manifests = [(f, _export_manifest(f)) for f in folders]
    # Oldest first within a post: a later export of the same exam (a changed decision) wins.
    manifests.sort(key=lambda fm: (str(fm[1].get("post_id")), str(fm[1].get("created"))))
    for folder, manifest in manifests:
        bundle = str(manifest.get("bundle_id") or folder.name)
        if bundle in known_exports:
            report.exports_known.append(str(folder))
            continue
        known_exports.add(bundle)
        exams = _add_export(ds, new, folder, manifest, labels, report, say)
        read_exports.append({"bundle_id": bundle, "post_id": manifest.get("post_id"), "created": manifest.get("created"),
                             "folder": str(folder.resolve()), "exams": exams, "read": _now()})
        report.exports_read.append(str(folder))
    for name, analysis, dataset in public_sets:
        _add_public(ds, new, name, analysis, dataset, report, say)

    _assign(ds, new, holdout_fraction, extend_holdout, seed, report)
    ds.rows.update(new)
    if not any(r.split == TRAIN for r in ds.rows.values()):
        hint = ("Expert reviews come with review bundles (issue 17); until then use --labels expert+clinician."
                if labels == "expert" else "Check that the posts decide their exams before they export.")
        raise UserError(f"No usable case: {dict(report.skipped) or 'the exports hold no exams'}.", hint)
    report.rows = len(ds.rows)
    report.counts = counts(ds.rows.values())
    report.holdout_id = ds.holdout["id"] if ds.holdout else ""
    meta = {"format": FORMAT, "labels": labels, "holdout_fraction": ds.meta.get("holdout_fraction", holdout_fraction),
            "seed": ds.meta.get("seed", seed), "created": ds.meta.get("created", _now()), "updated": _now(),
            "exports": read_exports, "public": sorted({*ds.meta.get("public", []), *(n for n, _, _ in public_sets)}),
            "holdout_id": report.holdout_id, "counts": report.counts,
            "skipped_last_build": dict(report.skipped)}
    _write(ds, meta)
    return report


def _add_export(ds: FieldDataset, new: dict[str, Row], folder: Path, manifest: dict, labels: str,
                report: BuildReport, say: Progress) -> int:
    post = str(manifest.get("post_id") or "")
    by_exam = {(r.post, r.exam): r for r in ds.rows.values() if r.origin == "field"}
    by_exam.update({(r.post, r.exam): r for r in new.values()})
    exams = 0
    with open(folder / EXAMS_FILE, "rb") as fh:
        lines = sum(1 for _ in fh)
    for record in say.bar(_records(folder), total=lines, desc=f"{folder.name[:40]}", unit="exam", leave=False):
        exams += 1
        label, source, why = research_label(record, labels)
        if label is None:
            report.skipped[why] += 1
            continue
        analysis = record["analysis"]
        exam = str(record.get("id") or "")
        post_of = str(record.get("post_id") or post)
        group = f"{post_of}:{record.get('patient')}"
        members = _field_images(record)
        if not members:
            report.skipped["no image in the export"] += 1
        for member in members:
            src = _inside(folder, member)
            if src is None:
                report.skipped["image missing from the export"] += 1
                continue
            sha = _sha256(src)
            row = Row(file="", split="", label=label, group=_first_model_class(analysis, label), patient=group,
                      analysis=analysis, exam=exam, post=post_of, label_source=source, sha256=sha,
                      usable=_usable(record))
            earlier = new.get(sha) or ds.rows.get(sha) or (by_exam.get((post_of, exam)) if len(members) == 1 else None)
            if earlier is not None and (earlier.post, earlier.exam) == (post_of, exam):
                if (earlier.label, earlier.label_source) != (label, source):
                    report.label_changes += 1                     # a changed decision, or a review
                    earlier.label, earlier.label_source = label, source
                    earlier.group = row.group
                continue
            if earlier is not None:
                _duplicate(earlier, row, report)
                continue
            row.file = _store_image(src, ds.out, sha)
            new[sha] = row
            by_exam[(post_of, exam)] = row
    return exams


def _duplicate(kept: Row, other: Row, report: BuildReport) -> None:
    """The same image in two exams: one case; the stronger label wins, a tie that disagrees is left out."""
    report.skipped["duplicate image (kept once)"] += 1
    if STRENGTH.get(other.label_source, 0) > STRENGTH.get(kept.label_source, 0):
        kept.label, kept.label_source, kept.group = other.label, other.label_source, other.group
    elif STRENGTH.get(other.label_source, 0) == STRENGTH.get(kept.label_source, 0) and other.label != kept.label \
            and kept.split != HELD_OUT:
        kept.split, kept.reason = EXCLUDED, CONFLICT


# ---------------------------------------------------------------- public datasets (training side only)

PUBLIC_ANALYSES = {"breakhis": "breast_histopathology", "herlev": "pap_smear", "cervix_types": "cervix_type"}
_CYTOLOGY_LABELS = {"nilm", "lsil", "hsil", "scc", "asc_us", "asc_h", "agc"}


def _public_set(spec: str):
    """``DIR`` or ``ANALYSIS=DIR`` → (name, analysis id, Dataset)."""
    head, sep, tail = spec.partition("=")
    analysis, folder = (head, tail) if sep and head in catalogue.ANALYSES else ("", spec)
    dataset = open_dataset(folder)
    if not analysis:
        analysis = PUBLIC_ANALYSES.get(dataset.layout) or _analysis_from_labels(dataset)
    if not analysis:
        raise UserError(f"Which analysis the images in {folder} are for cannot be told from their labels.",
                        f"Name it: --add-public ANALYSIS={folder} (one of {', '.join(catalogue.ANALYSES)}).")
    return f"{Path(folder).resolve().name}", analysis, dataset


def _analysis_from_labels(dataset) -> str | None:
    from .datasets import BREAKHIS_TYPES, HERLEV_CLASSES
    labels = {i.label for i in dataset.items}
    if labels & set(BREAKHIS_TYPES.values()):
        return "breast_histopathology"
    if labels & (set(HERLEV_CLASSES) | _CYTOLOGY_LABELS):
        return "pap_smear"
    if labels & {"type_1", "type_2", "type_3"}:
        return "cervix_type"
    return None


def _public_label(item, analysis: str) -> str | None:
    """The deepest class of the analysis an item's label (or its group) names."""
    classes = catalogue.all_label_ids()[analysis]
    for name in (item.label, item.group):
        if name and ALIASES.get(name, name) in classes:
            return ALIASES.get(name, name)
    return None


def _add_public(ds: FieldDataset, new: dict[str, Row], name: str, analysis: str, dataset, report: BuildReport,
                say: Progress) -> None:
    for item in say.bar(dataset.items, desc=f"public {name}", unit="image", leave=False):
        label = _public_label(item, analysis)
        if label is None:
            report.skipped[f"public {name}: label not in {analysis}"] += 1
            continue
        sha = _sha256(item.path)
        if sha in new or sha in ds.rows:
            report.skipped["duplicate image (kept once)"] += 1
            continue
        new[sha] = Row(file=_store_image(item.path, ds.out, sha), split=TRAIN, label=label,
                       group=_first_model_class(analysis, label),
                       patient=f"public:{name}:{item.patient}" if item.patient else "",
                       analysis=analysis, exam="", post="", label_source="public", sha256=sha,
                       origin=f"public:{name}", cluster=f"public:{name}:{item.split_key}")


# ---------------------------------------------------------------- sides

def _assign(ds: FieldDataset, new: dict[str, Row], fraction: float, extend: bool, seed: int,
            report: BuildReport) -> None:
    """Put each new row on a side; lock the held-out set on the first build, grow it only on ``extend``."""
    field_rows = [r for r in new.values() if r.origin == "field" and r.split != EXCLUDED]
    if ds.holdout is None:
        chosen = _draw_groups(field_rows, fraction, seed)
        for row in field_rows:
            row.split = HELD_OUT if row.patient in chosen else TRAIN
        cases = [r for r in field_rows if r.split == HELD_OUT]
        if cases:
            ds.holdout = _holdout_doc(cases, sorted(chosen), fraction, seed)
            report.holdout_created = True
        return
    if extend:      # images of held-out patients left out by earlier builds join them now
        field_rows += [r for r in ds.rows.values() if r.reason == IN_HELD_OUT_PATIENT]
    held_groups = ds.held_out_groups
    train_groups = {r.patient for r in ds.rows.values() if r.split == TRAIN and r.origin == "field"}
    fresh = [r for r in field_rows if r.patient not in held_groups and r.patient not in train_groups]
    chosen = _draw_groups(fresh, fraction, seed + len(ds.holdout.get("extensions", [])) + 1) if extend else set()
    added = []
    for row in field_rows:
        if row.patient in held_groups or row.patient in chosen:
            if extend:
                row.split, row.reason = HELD_OUT, ""
                added.append(row)
            else:
                row.split, row.reason = EXCLUDED, IN_HELD_OUT_PATIENT
        else:
            row.split = TRAIN
    if added:
        doc = ds.holdout
        cases = doc["cases"] + [_case(r) for r in added]
        ds.holdout = {**doc, "cases": sorted(cases, key=lambda c: c["sha256"]), "id": holdout_id(cases),
                      "groups": sorted(held_groups | chosen),
                      "extensions": doc.get("extensions", []) + [{"at": _now(), "cases": len(added),
                                                                   "previous_id": doc["id"]}]}
        report.holdout_extended = len(added)


def _draw_groups(rows: list[Row], fraction: float, seed: int) -> set[str]:
    """About ``fraction`` of the patients of each analysis, stratified by their class, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold
    chosen: set[str] = set()
    by_analysis: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_analysis[row.analysis].append(row)
    for analysis, part in sorted(by_analysis.items()):
        part = sorted(part, key=lambda r: r.sha256)
        groups = [r.patient for r in part]
        n_groups = len(set(groups))
        if n_groups < 2:
            continue
        # StratifiedGroupKFold needs a class with at least as many images as folds.
        folds = min(max(2, round(1 / fraction)), n_groups, max(Counter(r.label for r in part).values()))
        if folds < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "the least populated class has only N members"
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            _, held = next(splitter.split(part, [r.label for r in part], groups))
        chosen |= {groups[i] for i in held}
    return chosen


def _case(row: Row) -> dict[str, str]:
    return {"sha256": row.sha256, "analysis": row.analysis, "exam": row.exam, "patient": row.patient,
            "post": row.post, "label_at_lock": row.label, "label_source_at_lock": row.label_source}


def _holdout_doc(rows: list[Row], groups: list[str], fraction: float, seed: int) -> dict[str, Any]:
    cases = sorted((_case(r) for r in rows), key=lambda c: c["sha256"])
    return {"format": HOLDOUT_FORMAT, "created": _now(), "fraction": fraction, "seed": seed,
            "rule": "patients drawn once per analysis, stratified by class (StratifiedGroupKFold)",
            "groups": groups, "cases": cases, "id": holdout_id(cases), "extensions": []}


# ---------------------------------------------------------------- figures and files

def counts(rows) -> dict[str, Any]:
    """Images per side by analysis and class, by post and by label source (what ``dataset`` prints)."""
    out: dict[str, Any] = {"images": Counter(), "by_class": defaultdict(Counter), "by_post": defaultdict(Counter),
                           "by_label_source": defaultdict(Counter), "patients": defaultdict(set),
                           "exams": defaultdict(set), "excluded": Counter()}
    for r in rows:
        out["images"][r.split] += 1
        if r.split == EXCLUDED:
            out["excluded"][r.reason] += 1
            continue
        out["by_class"][f"{r.analysis}/{r.label}"][r.split] += 1
        out["by_post"][r.post or r.origin][r.split] += 1
        out["by_label_source"][r.label_source][r.split] += 1
        if r.patient:
            out["patients"][r.split].add(r.patient)
        if r.exam:
            out["exams"][r.split].add(f"{r.post}:{r.exam}")
    plain = {k: ({kk: dict(vv) if isinstance(vv, Counter) else vv for kk, vv in sorted(v.items())}
                 if isinstance(v, dict) else v) for k, v in out.items()}
    plain["patients"] = {k: len(v) for k, v in out["patients"].items()}
    plain["exams"] = {k: len(v) for k, v in out["exams"].items()}
    return plain


def _write(ds: FieldDataset, meta: dict[str, Any]) -> None:
    """manifest.csv and holdout.json first, dataset.json last (its presence marks a complete build)."""
    rows = sorted(ds.rows.values(), key=lambda r: (r.split, r.analysis, r.label, r.sha256))
    _atomic(ds.out / MANIFEST, lambda fh: _csv(fh, rows))
    if ds.holdout is not None:
        _atomic(ds.out / HOLDOUT, lambda fh: fh.write(json.dumps(ds.holdout, indent=1) + "\n"))
    _atomic(ds.out / FIELD_DATASET_MARK, lambda fh: fh.write(json.dumps(meta, indent=1, default=str) + "\n"))


def _csv(fh, rows: list[Row]) -> None:
    writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
    writer.writeheader()
    for row in rows:
        writer.writerow(row.csv())


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def format_report(report: BuildReport) -> str:
    """The counts as plain tables (per class, post and label source; train / held-out)."""
    c = report.counts
    lines = [f"{report.out}: {report.rows} images; train {c['images'].get(TRAIN, 0)}, held-out "
             f"{c['images'].get(HELD_OUT, 0)} (id {report.holdout_id[:12] or '-'}"
             + (", created now" if report.holdout_created else "")
             + (f", extended by {report.holdout_extended}" if report.holdout_extended else "") + "), excluded "
             f"{c['images'].get(EXCLUDED, 0)}; patients train {c['patients'].get(TRAIN, 0)}, held-out "
             f"{c['patients'].get(HELD_OUT, 0)}"]
    lines.append(f"exports read now {len(report.exports_read)}"
                 + (f", already in the dataset {len(report.exports_known)}" if report.exports_known else "")
                 + (f"; labels changed since an earlier export {report.label_changes}" if report.label_changes else ""))
    for title, key in (("class", "by_class"), ("post", "by_post"), ("label source", "by_label_source")):
        lines.append(f"{'by ' + title:<44} {'train':>7} {'held-out':>9}")
        for name, sides in c[key].items():
            lines.append(f"  {name[:42]:<42} {sides.get(TRAIN, 0):>7} {sides.get(HELD_OUT, 0):>9}")
    for reason, n in sorted(c["excluded"].items()):
        lines.append(f"excluded: {reason}: {n}")
    for reason, n in sorted(report.skipped.items()):
        lines.append(f"not used: {reason}: {n}")
    return "\n".join(lines)
