"""``bccdms-export compare``: the champion (the pack the posts run) against a challenger, on the same
locked held-out cases, and whether the challenger is recommended (``promotion.py``).

For every model both hold whose analysis has held-out cases, each model's INT8 form (the one the
box runs: OpenVINO by default, ``--runtime onnxruntime`` for ARM boxes) classifies every held-out
image with the box's preprocessing; probabilities are calibrated with the model's temperature.

- **Exam level**: the fields of one exam are combined by the appliance's own rule
  (``appliance.inference.aggregate``: the mean of the calibrated probabilities over the usable
  fields); the rule is judged there. Image-level figures are reported beside them.
- Figures: accuracy, balanced accuracy, sensitivity (abnormal/malignant found: the catalogue's
  positive classes), specificity (and its complement, false alarms), ECE, the refer band's
  coverage (share of cases above the model's ``refer_below``) and the accuracy there.
- **Uncertainty**: 95 % percentile intervals from a bootstrap that resamples *patients* (a woman's
  exams move together), for each model and for the paired difference; and McNemar's exact test on
  the cases one model gets right and the other wrong (it treats cases as independent: read it
  beside the patient bootstrap, not instead of it).
- **INT8 against FP32**: where a pack carries FP32 files, top-1 agreement of each INT8 runtime
  with them on the same images.

The comparison (JSON) is written to ``--out`` and into the challenger: a model folder from
``export`` gets it in ``model.json`` (``pack`` carries it into the manifest) and its model card; a
pack gets it in its manifest and cards, signed again with ``--key``.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance import catalogue
from appliance.errors import UserError
from appliance.inference.aggregate import RULE as EXAM_RULE
from appliance.inference.aggregate import exam_probabilities

from . import promotion
from .calibration import expected_calibration_error
from .field_dataset import HELD_OUT, MANIFEST, read_holdout
from .metrics import softmax
from .progress import Progress

FORMAT = "bccdms-comparison/1"
RUNTIMES = {"openvino": ("openvino_int8", "onnx_int8"), "onnxruntime": ("onnx_int8", "openvino_int8")}
INT8_FORMS = ("onnx_int8", "openvino_int8")
FP32_FORMS = ("onnx_fp32", "openvino_fp32")
BOOTSTRAP = 2000
BATCH = 16
FIGURES = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")


# ---------------------------------------------------------------- inputs

@dataclass
class Side:
    """The models of the champion or the challenger: a pack, or model folders from ``export``."""
    path: Path
    kind: str                                  # pack | model folders
    pack_id: str | None
    version: str | None
    models: dict[str, tuple[dict, dict[str, Path], Path]]   # model id -> (meta, files by role, folder)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "pack_id": self.pack_id, "version": self.version,
                "models": {m: meta.get("version") for m, (meta, _, _) in self.models.items()}}


def open_side(paths: list[str | Path], what: str) -> Side:
    from .packing import read_model_folder
    paths = [Path(p) for p in paths]
    first = paths[0]
    if len(paths) == 1 and (first / "manifest.json").is_file():
        manifest = json.loads((first / "manifest.json").read_text())
        models = {m: (*read_model_folder(first / m), first / m) for m in manifest.get("models", {})}
        return Side(first, "pack", manifest.get("pack_id"), manifest.get("version"), models)
    models = {}
    for path in paths:
        if not (path / "model.json").is_file():
            raise UserError(f"The {what} {path} is neither a model pack nor a model folder from 'bccdms-export export'.",
                            "Pass a pack folder (with manifest.json) or model folders (with model.json).")
        meta, files = read_model_folder(path)
        models[meta["model_id"]] = (meta, files, path)
    return Side(first if len(paths) == 1 else first.parent, "model folders", None, None, models)


@dataclass
class Case:
    """One held-out image with what groups it: its exam, its patient (the bootstrap unit), its post."""
    path: Path
    label: str
    analysis: str
    exam: str
    patient: str
    post: str
    label_source: str
    usable: bool


def held_out_cases(data: str | Path) -> tuple[list[Case], dict[str, Any]]:
    """The held-out side of a field dataset, checked against its locked manifest of hashes."""
    root = Path(data)
    if not (root / "holdout.json").is_file():
        raise UserError(f"{root} has no locked held-out set (holdout.json).",
                        "Pass the --out folder of 'bccdms-export dataset'.")
    locked = read_holdout(root)
    with open(root / MANIFEST, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == HELD_OUT]
    if {r["sha256"] for r in rows} != {c["sha256"] for c in locked["cases"]}:
        raise UserError(f"The held-out rows of {root / MANIFEST} differ from its locked holdout.json.",
                        "Restore the dataset folder from its backup; a held-out set is never edited.")
    cases = [Case(root / r["file"], r["label"], r["analysis"], f"{r['post']}:{r['exam']}", r["patient"], r["post"],
                  r["label_source"], r.get("usable", "yes") != "no") for r in rows]
    missing = [c.path for c in cases if not c.path.is_file()]
    if missing:
        raise UserError(f"{len(missing)} held-out images are missing (first: {missing[0]}).",
                        "Restore the dataset folder from its backup.")
    meta = json.loads((root / "dataset.json").read_text())
    return cases, {"dataset": str(root.resolve()), "holdout_id": locked["id"], "labels": meta.get("labels")}


# ---------------------------------------------------------------- figures

def confusion_figures(m: np.ndarray, positives: list[int], negatives: list[int]) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, sensitivity, specificity from confusion matrices ``...×C×C``
    (rows truth): any leading shape, so the bootstrap computes all its resamples at once."""
    m = np.asarray(m, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        totals = m.sum(axis=-1)
        recall = np.diagonal(m, axis1=-2, axis2=-1) / totals
        out = {"accuracy": np.trace(m, axis1=-2, axis2=-1) / m.sum(axis=(-2, -1)),
               "balanced_accuracy": np.nanmean(np.where(totals > 0, recall, np.nan), axis=-1)}
        if positives and negatives:
            tp = m[..., positives, :][..., :, positives].sum(axis=(-2, -1))
            fn = m[..., positives, :][..., :, negatives].sum(axis=(-2, -1))
            tn = m[..., negatives, :][..., :, negatives].sum(axis=(-2, -1))
            fp = m[..., negatives, :][..., :, positives].sum(axis=(-2, -1))
            out["sensitivity"] = tp / (tp + fn)
            out["specificity"] = tn / (tn + fp)
    return out


def mcnemar(champion_right: np.ndarray, challenger_right: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test: b = champion right and challenger wrong, c = the reverse; two-sided p."""
    b = int((champion_right & ~challenger_right).sum())
    c = int((~champion_right & challenger_right).sum())
    n, k = b + c, min(b, c)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"champion_only_right": b, "challenger_only_right": c, "p_value": p,
            "test": "McNemar exact (binomial), two-sided, cases as independent"}


def _interval(values: np.ndarray) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"low": None, "high": None}
    low, high = np.percentile(values, [2.5, 97.5])
    return {"low": float(low), "high": float(high)}


def _plain(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


@dataclass
class Units:
    """Cases (exams or images) of one model: truth, each side's calibrated probabilities, patients."""
    truth: np.ndarray
    probs: dict[str, np.ndarray]
    patients: list[str]


def _exam_units(cases: list[Case], truth: np.ndarray, probs: dict[str, np.ndarray], classes) -> Units:
    """Fields combined per exam by the appliance's rule (its usable fields; all if none is marked so)."""
    by_exam: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        by_exam[case.exam].append(i)
    order = sorted(by_exam)
    out = {}
    for side, p in probs.items():
        rows = []
        for exam in order:
            members = by_exam[exam]
            usable = [cases[i].usable for i in members]
            fields = [dict(zip(classes, p[i])) for i in members]
            combined = exam_probabilities(fields, usable if any(usable) else None)
            rows.append([combined[c] for c in classes])
        out[side] = np.asarray(rows)
    # An exam's class: its fields' (one label per exam; the most common if they ever differ).
    exam_truth = np.asarray([np.bincount(truth[by_exam[e]]).argmax() for e in order])
    return Units(exam_truth, out, [cases[by_exam[e][0]].patient for e in order])


def side_figures(units: Units, side: str, classes, positives, negatives, refer_below) -> dict[str, Any]:
    probs, truth = units.probs[side], units.truth
    predicted = probs.argmax(1)
    n = len(classes)
    confusion = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    figures = {k: _plain(v) for k, v in confusion_figures(confusion, positives, negatives).items()}
    figures["false_alarm"] = None if figures.get("specificity") is None else 1 - figures["specificity"]
    figures["ece"] = expected_calibration_error(probs, truth)
    confidence = probs.max(1)
    kept = confidence >= refer_below if refer_below is not None else np.ones(len(truth), bool)
    figures["refer_below"] = refer_below
    figures["refer_coverage"] = float(kept.mean())
    figures["accepted_accuracy"] = float((predicted[kept] == truth[kept]).mean()) if kept.any() else None
    figures["cases"] = int(len(truth))
    figures["confusion"] = {"classes": list(classes), "matrix": confusion.tolist()}
    return figures


def bootstrap(units: Units, classes, positives, negatives, resamples: int, seed: int) -> dict[str, Any]:
    """Percentile intervals of each side's figures and of their paired difference, resampling patients."""
    patients = sorted(set(units.patients))
    index = {p: i for i, p in enumerate(patients)}
    g = np.asarray([index[p] for p in units.patients])
    n = len(classes)
    per_group = {}
    for side, probs in units.probs.items():
        cells = units.truth * n + probs.argmax(1)
        counts = np.zeros((len(patients), n * n))
        np.add.at(counts, (g, cells), 1)
        per_group[side] = counts
    weights = np.random.default_rng(seed).multinomial(len(patients), np.full(len(patients), 1 / len(patients)),
                                                      size=resamples).astype(np.float64)
    drawn = {side: confusion_figures((weights @ c).reshape(resamples, n, n), positives, negatives)
             for side, c in per_group.items()}
    out: dict[str, Any] = {side: {k: _interval(v) for k, v in figs.items()} for side, figs in drawn.items()}
    out["difference"] = {k: _interval(drawn["challenger"][k] - drawn["champion"][k]) for k in drawn["champion"]}
    return out


# ---------------------------------------------------------------- running the models

def _forms(files: dict[str, Path], runtime: str) -> tuple[str, list[str]]:
    """The deployed INT8 form (the runtime's, else the other's), and every form to run: with an FP32
    file, both INT8 runtimes and the FP32 reference (their agreement); without, the deployed one only."""
    deployed = next((f for f in RUNTIMES[runtime] if f in files), None)
    if deployed is None:
        raise UserError("A model to compare has no INT8 file.", "Compare packs built by 'bccdms-export pack'.")
    if not any(f in files for f in FP32_FORMS):
        return deployed, [deployed]
    return deployed, [f for f in (*INT8_FORMS, *FP32_FORMS) if f in files]


def run_model(meta: dict, files: dict[str, Path], paths: list[Path], runtime: str, say: Progress,
              desc: str) -> tuple[str, dict[str, np.ndarray], dict[str, float]]:
    """Logits of every form on the images (the box's preprocessing); the INT8 forms' agreement with FP32."""
    from .evaluate import runners, run_forms
    from .images import batches
    deployed, wanted = _forms(files, runtime)
    run = runners({f: files[f] for f in wanted})
    out = run_forms(run, batches(paths, meta["input"], BATCH), meta["input"], say, -(-len(paths) // BATCH), desc=desc)
    reference = next((f for f in FP32_FORMS if f in out.logits), None)
    agreement = {}
    if reference is not None:
        top = out.logits[reference].argmax(1)
        agreement = {f: float((out.logits[f].argmax(1) == top).mean()) for f in INT8_FORMS if f in out.logits}
    return deployed, out.logits, agreement


def compare(champion: list[str | Path], challenger: list[str | Path], data: str | Path, *,
            models: list[str] | None = None, runtime: str = "openvino", resamples: int = BOOTSTRAP, seed: int = 0,
            progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """The comparison document (see the module docstring); writes nothing."""
    say = Progress(progress)
    started = time.monotonic()
    if runtime not in RUNTIMES:
        raise UserError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
    if resamples < 100:
        raise UserError("--bootstrap needs at least 100 resamples.", "Use e.g. 2000.")
    champ, chall = open_side(champion, "champion"), open_side(challenger, "challenger")
    cases, heldout = held_out_cases(data)
    common = [m for m in catalogue.MODELS if m in champ.models and m in chall.models]
    if models:
        unknown = [m for m in models if m not in common]
        if unknown:
            raise UserError(f"Both sides must hold {', '.join(unknown)} to compare it.",
                            f"Models both sides hold: {', '.join(common) or 'none'}.")
        common = models
    sections: dict[str, Any] = {}
    for model_id in common:
        section = _compare_model(model_id, champ, chall, cases, runtime, resamples, seed, say)
        if section is not None:
            sections[model_id] = section
    if not sections:
        raise UserError("No model of both sides has held-out cases of two classes or more to be compared on.",
                        "Build the held-out set from exams of these analyses ('bccdms-export dataset').")
    recommended, verdicts = promotion.judge_all(sections)
    for model_id, verdict in verdicts.items():
        sections[model_id].update(passes=verdict.passes, reasons=verdict.reasons, checks=verdict.checks)
    used = [c for c in cases if any(c.analysis == catalogue.analysis_of_model(m).id for m in sections)]
    label_sources: dict[str, int] = defaultdict(int)
    for c in used:
        label_sources[c.label_source] += 1
    heldout.update(images=len(used), exams=len({c.exam for c in used}), patients=len({c.patient for c in used}),
                   posts=len({c.post for c in used}), label_sources=dict(label_sources))
    return {"format": FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command, "rule": {"text": promotion.TEXT, "module": "export/promotion.py",
                                         "max_sensitivity_drop": promotion.MAX_SENSITIVITY_DROP},
            "exam_rule": EXAM_RULE, "recommended": recommended, "champion": champ.describe(),
            "challenger": chall.describe(), "heldout": heldout, "runtime": runtime,
            "bootstrap": {"resamples": resamples, "seed": seed, "unit": "patient"},
            "models": sections, "seconds": round(time.monotonic() - started, 1)}


def _compare_model(model_id: str, champ: Side, chall: Side, cases: list[Case], runtime: str, resamples: int,
                   seed: int, say: Progress) -> dict[str, Any] | None:
    spec = catalogue.model(model_id)
    analysis = catalogue.analysis_of_model(model_id).id
    classes = spec.class_ids
    mine, truth = [], []
    for case in cases:
        cls = catalogue.class_path(analysis, case.label).get(model_id) if case.analysis == analysis else None
        if cls is not None:
            mine.append(case)
            truth.append(classes.index(cls))
    truth = np.asarray(truth, int)
    if len(set(truth.tolist())) < 2:
        say.say(f"{model_id}: not compared (its held-out cases hold {len(set(truth.tolist()))} class)")
        return None
    positives = [classes.index(c) for c in catalogue.positive_classes(model_id)]
    negatives = [i for i in range(len(classes)) if i not in positives] if positives else []
    paths = [c.path for c in mine]
    probs, agreement, refer, forms, versions = {}, {}, {}, {}, {}
    for name, side in (("champion", champ), ("challenger", chall)):
        meta, files, _ = side.models[model_id]
        form, logits, agreement[name] = run_model(meta, files, paths, runtime, say, f"{model_id}: {name}")
        probs[name] = softmax(logits[form], float(meta.get("temperature", 1.0)))
        refer[name], forms[name], versions[name] = meta.get("refer_below"), form, meta.get("version")
    images = Units(truth, probs, [c.patient for c in mine])
    exams = _exam_units(mine, truth, probs, classes)
    figures = {level: {name: side_figures(units, name, classes, positives, negatives, refer[name])
                       for name in ("champion", "challenger")}
               for level, units in (("exam", exams), ("image", images))}
    intervals = bootstrap(exams, classes, positives, negatives, resamples, seed)
    difference = {k: {"point": _plain(figures["exam"]["challenger"][k] - figures["exam"]["champion"][k])
                      if figures["exam"]["challenger"].get(k) is not None else None, **intervals["difference"][k]}
                  for k in intervals["difference"]}
    if not positives:
        difference.pop("sensitivity", None)
    right = {name: exams.probs[name].argmax(1) == exams.truth for name in probs}
    return {"analysis": analysis, "classes": list(classes), "positive_classes": list(catalogue.positive_classes(model_id)),
            "level": "exam", "exams": len(exams.truth), "images": len(mine), "patients": len(set(exams.patients)),
            "posts": len({c.post for c in mine}), "versions": versions, "forms": forms,
            "champion": figures["exam"]["champion"], "challenger": figures["exam"]["challenger"],
            "image_level": figures["image"], "intervals": {k: intervals[k] for k in ("champion", "challenger")},
            "difference": difference, "mcnemar": mcnemar(right["champion"], right["challenger"]),
            "int8_agreement_with_fp32": agreement}


# ---------------------------------------------------------------- printing and the nurse's summary

def summary(comparison: dict[str, Any]) -> dict[str, Any]:
    """The few facts the post shows (``appliance models install``, the Admin page): the manifest's
    ``comparison`` object. Sensitivity and false alarms of each model with a positive class."""
    held = comparison["heldout"]
    models = {}
    for model_id, s in comparison["models"].items():
        models[model_id] = {
            "analysis": s["analysis"], "positive_classes": s["positive_classes"], "exams": s["exams"],
            "passes": s["passes"], "reasons": s["reasons"],
            **{f"{k}_{side}": s[side].get(k) for side in ("champion", "challenger")
               for k in ("sensitivity", "false_alarm", "balanced_accuracy")}}
    return {"format": FORMAT, "created": comparison["created"], "recommended": comparison["recommended"],
            "rule_passed": comparison["recommended"], "override": None, "rule": comparison["rule"]["text"],
            "champion": {k: comparison["champion"].get(k) for k in ("pack_id", "version", "models")},
            "cases": held["exams"], "images": held["images"], "posts": held["posts"],
            "label_sources": held["label_sources"], "holdout_id": held["holdout_id"], "models": models}


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:5.1f}%"


def format_comparison(comparison: dict[str, Any]) -> str:
    held = comparison["heldout"]
    lines = [f"held-out set {held['holdout_id'][:12]}: {held['exams']} exams, {held['images']} images, "
             f"{held['patients']} patients, {held['posts']} posts; labels "
             + ", ".join(f"{k} {v}" for k, v in sorted(held["label_sources"].items()))
             + f"; runtime {comparison['runtime']}; {comparison['bootstrap']['resamples']} patient resamples"]
    for model_id, s in comparison["models"].items():
        lines.append(f"{model_id} ({s['exams']} exams of {s['patients']} patients; champion {s['versions']['champion']} "
                     f"{s['forms']['champion']}, challenger {s['versions']['challenger']} {s['forms']['challenger']})")
        lines.append(f"  {'figure':<20} {'champion':>9} {'95 % interval':>17} {'challenger':>11} {'95 % interval':>17} "
                     f"{'change':>8} {'95 % interval':>17}")
        for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity"):
            a, b, d = s["champion"].get(key), s["challenger"].get(key), s["difference"].get(key)
            if a is None and b is None:
                continue
            ia, ib = s["intervals"]["champion"].get(key) or {}, s["intervals"]["challenger"].get(key) or {}
            lines.append(f"  {key:<20} {_pct(a):>9} {_span(ia):>17} {_pct(b):>11} {_span(ib):>17} "
                         f"{_pct(d and d['point']):>8} {_span(d or {}):>17}")
        for key in ("ece", "refer_coverage", "accepted_accuracy"):
            lines.append(f"  {key:<20} {_pct(s['champion'].get(key)):>9} {'':>17} {_pct(s['challenger'].get(key)):>11}")
        m = s["mcnemar"]
        lines.append(f"  McNemar: champion alone right {m['champion_only_right']}, challenger alone right "
                     f"{m['challenger_only_right']}, p = {m['p_value']:.3g}")
        for side in ("champion", "challenger"):
            agree = s["int8_agreement_with_fp32"][side]
            lines.append(f"  INT8 agreement with FP32 ({side}): "
                         + (", ".join(f"{f} {_pct(v).strip()}" for f, v in agree.items()) or "not measured (no FP32 files)"))
        if s["image_level"]["champion"]["cases"] != s["exams"]:
            lines.append(f"  image level: balanced accuracy {_pct(s['image_level']['champion']['balanced_accuracy'])} "
                         f"→ {_pct(s['image_level']['challenger']['balanced_accuracy'])}")
        lines += [f"  rule: {c}" for c in s["checks"]]
    lines.append(("RECOMMENDED" if comparison["recommended"] else "NOT RECOMMENDED")
                 + f" (rule: {comparison['rule']['text']}; export/promotion.py)")
    return "\n".join(lines)


def _span(interval: dict) -> str:
    if interval.get("low") is None:
        return ""
    return f"{100 * interval['low']:+.1f} … {100 * interval['high']:+.1f}" if "point" in interval else \
        f"{100 * interval['low']:.1f} … {100 * interval['high']:.1f}"
