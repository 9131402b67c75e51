"""The model card: what ``evaluate`` measured, written for people (markdown) and programs (JSON),
with the ROC and reliability figures, plus the fitted refer band and out-of-scope gate stored
in the model folder for ``pack``.

A card states its split, the paper's figure beside ours, and what the data cannot support
(few patients, small validation sets, in-sample numbers): generated from the report, so it
cannot drift from the figures.

The markdown and key figures need nothing beyond the standard library (the GPU training
script writes its cards on a machine without the appliance's dependencies); writing files
imports the packing helpers.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

from .roc import headline_auc

# The paper's validation accuracy per model (Zewde, Degu, Simegn; ResNet152 from ImageNet,
# image-level train/validation split, their own and public data). Its conclusion quotes 76.53 %
# for cervix type, which its results section gives as the *training* accuracy; 67.91 % is the
# validation figure.
PAPER_VALIDATION_ACCURACY = {
    "breast_binary": 0.9462, "breast_benign_subtype": 0.8283, "breast_malignant_subtype": 0.9542,
    "cervix_histopathology": 0.9617, "cervix_type": 0.6791, "pap_smear": 0.8727,
}
FEW_PATIENTS = 3
FORM_TITLES = {"torch": "PyTorch FP32", "onnx_fp32": "ONNX FP32", "onnx_int8": "ONNX Runtime INT8",
               "openvino_fp32": "OpenVINO FP32", "openvino_int8": "OpenVINO INT8"}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion (honest for small n and rates near 0 or 1)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _form(report: dict, name: str) -> dict | None:
    form = report["forms"].get(name)
    return form["metrics"] if form else None


def _fp32_form(report: dict) -> str:
    return next((f for f in ("torch", "onnx_fp32", "openvino_fp32") if f in report["forms"]), report["reference"])


def key_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the manifest's ``validation`` carries (Admin page, ``models list``)."""
    fp32 = _form(report, _fp32_form(report)) or {}
    out: dict[str, Any] = {"images": report["images"], "split": (report.get("split_recorded") or {}).get("method"),
                           "side": report.get("split"), "patients": report.get("patients"),
                           "accuracy_fp32": fp32.get("accuracy"), "balanced_accuracy_fp32": fp32.get("balanced_accuracy"),
                           "auc": headline_auc(fp32["roc"]) if fp32.get("roc") else None,
                           "ece_uncalibrated": (fp32.get("calibration") or {}).get("ece_uncalibrated"),
                           "ece_calibrated": (fp32.get("calibration") or {}).get("ece_temperature_cross_fitted"),
                           "paper_accuracy": PAPER_VALIDATION_ACCURACY.get(report["model"]),
                           "evaluated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    for form, key in (("onnx_int8", "onnxruntime"), ("openvino_int8", "openvino")):
        m = _form(report, form)
        parity = (report["forms"].get(form) or {}).get("parity")
        out[f"accuracy_int8_{key}"] = m["accuracy"] if m else None
        out[f"agreement_int8_{key}"] = parity["top1_agreement"] if parity else None
    # The band as the box applies it: on its INT8 probabilities where measured.
    deployed = next((f for f in ("openvino_int8", "onnx_int8") if _form(report, f)), None)
    refer = (_form(report, deployed) if deployed else fp32).get("refer") or {}
    out.update(refer_below=report.get("refer_below"), refer_coverage=refer.get("coverage"),
               refer_accepted_accuracy=refer.get("accepted_accuracy"), refer_form=deployed or _fp32_form(report))
    gate = report.get("out_of_scope") or {}
    out.update(out_of_scope_false_alarm=gate.get("false_alarm_cross_fitted"),
               out_of_scope_catch=gate.get("catch_rate"), out_of_scope_catch_other_data=gate.get("catch_rate_other_data"),
               out_of_scope_catch_synthetic=gate.get("catch_rate_synthetic"))
    return out


# ---------------------------------------------------------------- markdown

def _pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def _num(v, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def split_sentence(report: dict[str, Any]) -> str:
    s = report.get("split_recorded")
    if not s:
        return f"Evaluated on {report['images']} images of {report['source']} (no split recorded)."
    method = {"patient": "patient-disjoint (no patient has images on both sides)",
              "group": "grouped by source image (Herlev has no patient ids; the cells of one source image stay on "
                       "one side)",
              "stratified": "stratified by class, by image (no patient or source ids known)"}.get(s["method"], s["method"])
    sides = "; ".join(f"{side} {s[side]['images']} images"
                      + (f" of {s[side]['patients']} patients" if s[side].get("patients") else "")
                      + f" ({', '.join(f'{k} {v}' for k, v in s[side]['classes'].items())})"
                      for side in ("train", "val") if side in s)
    return (f"Split {method}, seed {s['seed']}, validation fraction {s['val_fraction']}: {sides}. "
            f"This card evaluates the **{report.get('split') or 'given'}** side.")


def limitations(report: dict[str, Any]) -> list[str]:
    """What the figures cannot support, read off the report."""
    notes = []
    ref = _form(report, _fp32_form(report)) or {}
    n = report["images"]
    if ref.get("accuracy") is not None:
        low, high = wilson_interval(round(ref["accuracy"] * n), n)
        notes.append(f"{n} evaluation images: the 95 % interval of the FP32 accuracy is {_pct(low)} – {_pct(high)}.")
    s = report.get("split_recorded") or {}
    if s.get("method") == "patient" and (s.get("val") or {}).get("patients"):
        notes.append(f"The validation side holds {s['val']['patients']} patients; images of one patient are alike, "
                     "so the figures rest on far fewer independent cases than images.")
    for name, c in (ref.get("per_class") or {}).items():
        if c["support"] and c["support"] < 10:
            notes.append(f"Class {name} has only {c['support']} evaluation images: its recall and precision are anecdotal.")
        if not c["support"]:
            notes.append(f"Class {name} has no evaluation image: nothing is known about it here.")
    few = report.get("classes_with_few_patients") or {}
    for name, count in few.items():
        notes.append(f"Class {name} comes from {count} patient(s) in the whole dataset: no claim about it "
                     "generalising to new patients can be made.")
    if report.get("split") == "val":
        notes.append("The temperature and the refer threshold were chosen on this same validation set: the in-sample "
                     "ECE and the refer band's accepted accuracy flatter the model; the cross-fitted ECE does not.")
    prov = report.get("provenance") or {}
    if prov.get("initial_weights") == "none":
        notes.append("Trained from scratch: no ImageNet weights could be obtained offline, unlike the paper's recipe.")
    paper = PAPER_VALIDATION_ACCURACY.get(report["model"])
    if paper is not None:
        notes.append(f"The paper's {_pct(paper, 2)} used an image-level split of different and larger data; it is "
                     "shown for orientation, not as a like-for-like comparison.")
    if (report.get("out_of_scope") or {}).get("synthetic"):
        notes.append("The blank frames and the skin-coloured frame standing in for a photo of a hand are synthetic "
                     "images, not photographs.")
    return notes


def label_mapping_lines(report: dict[str, Any]) -> list[str]:
    """The dataset labels → model classes section (which lesions each class was taught with)."""
    rows = report.get("label_mapping")
    if not rows:
        return []
    how = {"label": "same name", "label alias": "alias of the label", "group": "by its group",
           "group alias": "alias of the group"}
    lines = ["## Dataset labels → model classes", "",
             "Each label of the dataset (whole dataset, both split sides) and the model class its images were "
             "filed under (aliases: `export/datasets.py`).", "",
             "| dataset label | group | model class | how | images |", "|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r.get('group') or '–'} | {r['class']} | {how.get(r['via'], r['via'])} | "
              f"{r['images']} |" for r in rows]
    return lines + [""]


def card_markdown(report: dict[str, Any], figures: bool = True) -> str:
    """The card for people; ``figures``: link ``roc.png``/``reliability.png`` (written beside it)."""
    model = report["model"]
    fp32_name = _fp32_form(report)
    fig = key_figures(report)
    lines = [f"# Model card: {model}", "",
             f"Classes: {', '.join(report['classes'])}. Architecture {report.get('architecture')}, input "
             f"{(report.get('provenance') or {}).get('image_size')} px, temperature {report['temperature']:.3f}, "
             f"version {(report.get('provenance') or {}).get('version')}.", "",
             split_sentence(report), "", "## Summary", "",
             "| figure | this project | paper |", "|---|---|---|",
             f"| accuracy FP32 ({FORM_TITLES.get(fp32_name, fp32_name)}) | {_pct(fig['accuracy_fp32'])} | "
             f"{_pct(fig['paper_accuracy'], 2)} (validation, image-level split) |",
             f"| accuracy INT8 ONNX Runtime / OpenVINO | {_pct(fig['accuracy_int8_onnxruntime'])} / "
             f"{_pct(fig['accuracy_int8_openvino'])} | – |",
             f"| top-1 agreement INT8 vs reference (ORT / OV) | {_pct(fig['agreement_int8_onnxruntime'])} / "
             f"{_pct(fig['agreement_int8_openvino'])} | – |",
             f"| balanced accuracy FP32 | {_pct(fig['balanced_accuracy_fp32'])} | – |",
             f"| ROC AUC FP32 | {_num(fig['auc'])} | ROC plotted, AUC not stated |",
             f"| ECE before → after temperature (cross-fitted) | {_num(fig['ece_uncalibrated'])} → "
             f"{_num(fig['ece_calibrated'])} | – |",
             f"| refer band: refer below | {_num(fig['refer_below'])} ({FORM_TITLES.get(fig['refer_form'], '')}: coverage "
             f"{_pct(fig['refer_coverage'])}, accepted accuracy {_pct(fig['refer_accepted_accuracy'])}) | – |",
             f"| out of scope: false alarms / catch rate | {_pct(fig['out_of_scope_false_alarm'])} / "
             f"{_pct(fig['out_of_scope_catch'])} (other datasets {_pct(fig['out_of_scope_catch_other_data'])}, "
             f"synthetic {_pct(fig['out_of_scope_catch_synthetic'])}) | – |", ""]
    lines += ["## Every form of the model", "",
              "| form | accuracy | balanced | NLL | AUC | ECE raw | ECE at the pack's T | ECE T cross-fitted | "
              "top-1 agreement | max abs Δlogit |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, form in report["forms"].items():
        m, p = form["metrics"] or {}, form["parity"]
        cal = m.get("calibration") or {}
        lines.append(f"| {FORM_TITLES.get(name, name)} | {_pct(m.get('accuracy'))} | {_pct(m.get('balanced_accuracy'))} | "
                     f"{_num(m.get('nll'))} | {_num(headline_auc(m['roc']) if m.get('roc') else None)} | "
                     f"{_num(cal.get('ece_uncalibrated'))} | {_num(cal.get('ece_temperature_in_sample'))} | "
                     f"{_num(cal.get('ece_temperature_cross_fitted'))} | "
                     f"{'reference' if p is None else _pct(p['top1_agreement'])} | "
                     f"{'–' if p is None else _num(p['max_abs_logit_diff'], '.4f')} |")
    ref = _form(report, fp32_name)
    if ref:
        lines += ["", f"## Per class ({FORM_TITLES.get(fp32_name, fp32_name)})", "",
                  "| class | images | recall | precision | AUC (one vs rest) |", "|---|---|---|---|---|"]
        for name, c in ref["per_class"].items():
            auc = ref["roc"]["per_class"][name]["auc"]
            lines.append(f"| {name} | {c['support']} | {_pct(c['recall'])} | {_pct(c['precision'])} | {_num(auc)} |")
        names = ref["confusion"]["classes"]
        lines += ["", "Confusion matrix (rows: truth, columns: prediction):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(str(v) for v in row) + " |" for n, row in zip(names, ref["confusion"]["matrix"])]
        lines += ["", "![ROC](roc.png) ![Reliability](reliability.png)", ""] if figures else [""]
    if report.get("refer"):
        r = report["refer"]
        lines += ["## Refer band", "", f"Rule: {r['rule']}.", "",
                  f"`refer_below` = {_num(r['threshold'], '.4f')}. Target {'met' if r['target_met'] else 'NOT met'}.", "",
                  "| form | images keeping their class (coverage) | their accuracy | referred | accuracy of the referred |",
                  "|---|---|---|---|---|"]
        for name, form in report["forms"].items():
            band = (form["metrics"] or {}).get("refer") or {}
            if band.get("images"):
                lines.append(f"| {FORM_TITLES.get(name, name)} | {band['accepted']} of {band['images']} "
                             f"({_pct(band['coverage'])}) | {_pct(band['accepted_accuracy'])} | {band['referred']} | "
                             f"{_pct(band['referred_accuracy'])} |")
        lines.append("")
    gate = report.get("out_of_scope")
    if gate:
        lines += ["## Out-of-scope gate", "",
                  f"Mahalanobis distance of the pooled features ({gate['form']}, probabilistic PCA with "
                  f"{gate['components']} directions) and of appearance statistics (colour, texture) to the training images"
                  + (f" ({gate['train_images']} images)" if gate.get("train_images") else "")
                  + (f"; thresholds at {_pct(gate['false_alarm_target'])} false alarms on validation images "
                     f"(cross-fitted false-alarm rate {_pct(gate['false_alarm_cross_fitted'])})" if gate["fitted"] else
                     "; the thresholds stored with the model") + ".", "",
                  "| images | flagged | rate | by features / appearance / blank |", "|---|---|---|---|"]
        for group in ("in_scope", "other_data", "synthetic"):
            for name, r in gate[group].items():
                why = r["reasons"]
                lines.append(f"| {name} ({group.replace('_', ' ')}) | {r['flagged']} of {r['images']} | {_pct(r['rate'])} | "
                             f"{why['features']} / {why['appearance']} / {why['blank']} |")
        lines.append("")
    lines += label_mapping_lines(report)
    lines += ["## What these figures cannot support", ""] + [f"- {n}" for n in limitations(report)] + [""]
    if report.get("notes"):       # observations added by the people who ran it
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    prov = report.get("provenance") or {}
    lines += ["## Provenance", ""]
    if prov.get("init_from"):
        start = prov["init_from"]
        lines += [f"Fine-tuned from the deployed model's checkpoint `{start.get('file')}` (sha256 "
                  f"`{start.get('sha256')}`).", ""]
    lines += [f"Initial weights: {prov.get('initial_weights')}; recipe: {prov.get('recipe')}; best epoch "
              f"{prov.get('best_epoch')}; torch {prov.get('torch')}; trained {prov.get('created')}.",
              f"Evaluated on {report['images']} images from `{report['source']}`.", ""]
    if report.get("commands"):
        lines += ["Commands:", "", "```sh", *report["commands"], "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- files

def write_card(destination: Path, report: dict[str, Any]) -> list[Path]:
    """``model_card.md``/``.json``, ``roc.png`` and ``reliability.png`` into ``destination``."""
    from .packing import FILE_NAMES
    from .plots import draw_reliability, draw_roc
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    ref = _form(report, _fp32_form(report))
    if ref:
        title = f"{report['model']} ({report['images']} {report.get('split') or ''} images)"
        written.append(draw_roc(ref["roc"], f"ROC: {title}", destination / FILE_NAMES["figure_roc"]))
        written.append(draw_reliability(ref["calibration"], f"Reliability: {title}",
                                        destination / FILE_NAMES["figure_reliability"]))
    card = {"format": "bccdms-model-card/1", "key_figures": key_figures(report), "report": report}
    path = destination / FILE_NAMES["card_json"]
    path.write_text(json.dumps(card, indent=1, default=json_default) + "\n")
    written.append(path)
    path = destination / FILE_NAMES["card"]
    path.write_text(card_markdown(report))
    written.append(path)
    return written


def store_fitted(folder: Path, report: dict[str, Any], gate) -> None:
    """The refer band, the gate and the key figures into an ``export`` model folder (for ``pack``)."""
    from .packing import FILE_NAMES, read_model_folder, write_model_json
    folder = Path(folder)
    meta, _files = read_model_folder(folder)
    meta["refer_below"] = report.get("refer_below")
    if gate is not None:
        (folder / FILE_NAMES["ood"]).write_bytes(gate.to_bytes())
        section = report["out_of_scope"]
        meta["ood"] = {"method": "ppca-mahalanobis+appearance", "format": 1, "form": section["form"],
                       "components": section["components"], "false_alarm_target": section["false_alarm_target"],
                       "false_alarm_cross_fitted": section["false_alarm_cross_fitted"],
                       "catch_rate": section["catch_rate"], "train_images": section["train_images"]}
    validation = dict(meta.get("validation") or {})
    validation["figures"] = key_figures(report)
    if report.get("drift"):
        validation["drift"] = report["drift"]        # the post's drift watch (appliance/drift.py)
    meta["validation"] = validation
    write_model_json(folder, meta)


def json_default(value):
    """NumPy scalars and arrays as plain JSON (for ``json.dumps(default=...)``)."""
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
