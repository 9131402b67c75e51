"""``bccdms-export evaluate``: how well a model classifies a labelled set, how far each exported
form is from the trained one, how honest its percentages are, when it should refer, and
which images it should not classify at all.

For every form available — torch (from the checkpoint), ONNX FP32, ONNX Runtime INT8,
OpenVINO FP32, OpenVINO INT8 — it runs the same preprocessed images and reports:

- parity against the reference (torch when the checkpoint is given, else ONNX FP32):
  top-1 agreement and max / mean |Δlogit|;
- with labels: accuracy, balanced accuracy, NLL (temperature-scaled), confusion matrix,
  per-class recall/precision, ROC curves and AUC (one class against the rest), expected
  calibration error before and after temperature scaling (``calibration.py``), and what the
  refer band does (coverage, accuracy of accepted and referred images).

On the validation side of the split recorded at training (the default for the dataset the
model was trained on), and when the model folder is one ``export`` wrote, it also *fits*:

- ``refer_below``: chosen on the calibrated validation probabilities of the INT8 forms the box
  runs (the reference's when there is none) by the rule in ``calibration.choose_refer_threshold``,
  the highest of their thresholds (``choose_refer_threshold_for_forms``);
- the out-of-scope gate (``ood.py``): statistics of the training images' features as the box
  computes them (the INT8 form it runs), thresholds at a false-alarm rate on validation
  images; its catch rate is measured on other datasets (``--ood-data``) and synthetic blanks.

and writes them, with the model card (``model_card.md``/``.json``, ``roc.png``,
``reliability.png``, see ``model_card.py``), into the model folder, where ``pack`` picks them up.
On other images (``--split all`` on another dataset, a model inside a pack) it only measures.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import UserError

from .calibration import REFER_TARGET, calibration_report, choose_refer_threshold_for_forms, refer_band
from .datasets import label_mapping, labelled_for, open_dataset, sample_paths, select_files, subset_of
from .images import batches, recorded_split_paths
from .metrics import classification_metrics, softmax
from .ood import FALSE_ALARM, Gate, appearance_statistics, pooled_features
from .progress import Progress
from .roc import headline_auc, roc_analysis

FORMS = ("torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8")
SPLIT_SIDES = ("auto", "val", "train", "all")
# The form whose features the box's gate sees, best first (what the box runs by default).
GATE_FORMS = ("onnx_int8", "openvino_int8", "onnx_fp32", "openvino_fp32", "torch")
# The forms the box runs: OpenVINO INT8 on x86-64 (the default there), ONNX Runtime INT8 on ARM.
DEPLOYED_FORMS = ("openvino_int8", "onnx_int8")
OOD_TRAIN_IMAGES = 400
OOD_IMAGES_PER_SET = 150
BATCH = 16


# ---------------------------------------------------------------- running the forms

def runners(files: dict[str, Path], checkpoint: str | Path | None = None) -> dict[str, Callable]:
    """A ``batch (N×3×H×W) → (logits N×C, pooled features N×F)`` function for every form present."""
    out: dict[str, Callable] = {}
    if checkpoint is not None:
        import torch
        from .checkpoint import load_checkpoint, network_from_checkpoint
        from .models import FeatureNet
        net = FeatureNet(network_from_checkpoint(load_checkpoint(checkpoint))).eval()

        def run_torch(batch):
            with torch.no_grad():
                logits, features = net(torch.from_numpy(batch))
            return logits.numpy(), pooled_features(features.numpy())
        out["torch"] = run_torch
    for role in ("onnx_fp32", "onnx_int8"):
        if role in files:
            from .onnx_export import ort_session, run_onnx

            def run_ort(batch, s=ort_session(files[role])):
                logits, features = run_onnx(None, batch, s)
                return logits, pooled_features(features)
            out[role] = run_ort
    for role in ("openvino_fp32", "openvino_int8"):
        if role in files:
            import openvino as ov
            # f32: OpenVINO would otherwise run float parts in BF16 on CPUs that have it (as the box does).
            compiled = ov.Core().compile_model(str(files[role]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

            def run_ov(batch, c=compiled):
                result = c(batch)
                return result[c.output("logits")], pooled_features(result[c.output("features")])
            out[role] = run_ov
    return out


@dataclass
class Outputs:
    """What the forms made of a set of images: logits and pooled features per form, appearance
    statistics per image (the same for every form: they are computed from the input)."""
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    pooled: dict[str, np.ndarray] = field(default_factory=dict)
    appearance: np.ndarray | None = None


def run_forms(run: dict[str, Callable], image_batches: Iterable[np.ndarray], spec, progress: Progress,
              total: int | None = None, desc: str = "evaluating") -> Outputs:
    logits: dict[str, list] = {name: [] for name in run}
    pooled: dict[str, list] = {name: [] for name in run}
    appearance = []
    for batch in progress.bar(image_batches, total=total, desc=desc, unit="batch", leave=False):
        appearance.append(appearance_statistics(batch, spec["mean"], spec["std"]))
        for name, fn in run.items():
            z, f = fn(batch)
            logits[name].append(np.asarray(z, np.float32))
            pooled[name].append(np.asarray(f, np.float64))
    if not appearance:
        return Outputs()
    return Outputs({n: np.concatenate(v) for n, v in logits.items()}, {n: np.concatenate(v) for n, v in pooled.items()},
                   np.concatenate(appearance))


def parity(logits: dict[str, np.ndarray], reference: str) -> dict[str, dict[str, float] | None]:
    ref = logits[reference]
    out: dict[str, dict[str, float] | None] = {}
    for name, values in logits.items():
        if name == reference:
            out[name] = None
            continue
        diff = np.abs(values - ref)
        out[name] = {"top1_agreement": float((values.argmax(1) == ref.argmax(1)).mean()),
                     "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean())}
    return out


# ---------------------------------------------------------------- figures (shared with the GPU script)

def form_figures(logits: np.ndarray, targets: np.ndarray, classes: tuple[str, ...], temperature: float,
                 refer_below: float | None) -> dict[str, Any]:
    """Everything measured on one form's logits of a labelled set."""
    metrics = classification_metrics(logits, targets, classes, temperature)
    probs = softmax(logits, temperature)
    metrics["roc"] = roc_analysis(probs, targets, classes)
    metrics["calibration"] = calibration_report(logits, targets, temperature)
    metrics["refer"] = refer_band(probs, targets, refer_below)
    return metrics


def gate_section(gate: Gate, *, fitted: bool, form: str, in_scope: dict[str, Outputs],
                 other: dict[str, Outputs], synthetic: dict[str, Outputs], false_alarm: float | None = None,
                 false_alarm_cross_fitted: float | None = None, train_images: int | None = None) -> dict[str, Any]:
    """The out-of-scope gate's report: false alarms on in-scope images, catches on the rest."""
    from .ood import gate_rates

    def rates(sets: dict[str, Outputs], forms: Iterable[str]) -> dict[str, Any]:
        return {f"{name} ({f})" if f != form else name: gate_rates(gate, out.pooled[f], out.appearance)
                for name, out in sets.items() for f in forms if out.appearance is not None and f in out.pooled}

    int8 = [f for f in ("onnx_int8", "openvino_int8") if any(f in o.pooled for o in in_scope.values())]
    section = {"form": form, "fitted": fitted, "false_alarm_target": false_alarm,
               "false_alarm_cross_fitted": false_alarm_cross_fitted, "train_images": train_images,
               "components": int(gate.feature_components.shape[0]),
               "in_scope": rates(in_scope, [form] + [f for f in int8 if f != form]),
               "other_data": rates(other, [form]), "synthetic": rates(synthetic, [form])}
    section["catch_rate"] = _pooled_rate({**section["other_data"], **section["synthetic"]})
    section["catch_rate_other_data"] = _pooled_rate(section["other_data"])
    section["catch_rate_synthetic"] = _pooled_rate(section["synthetic"])
    return section


def _pooled_rate(rates: dict[str, Any]) -> float | None:
    n = sum(r["images"] for r in rates.values())
    return sum(r["flagged"] for r in rates.values()) / n if n else None


# ---------------------------------------------------------------- evaluate

def evaluate(model_folder: str | Path, *, checkpoint: str | Path | None = None, data: str | None = None,
             layout: str = "auto", subset: str | None = None, split_side: str = "auto",
             limit: int | None = None, images: np.ndarray | None = None, progress: bool = True,
             write: bool = True, card_dir: str | Path | None = None, ood_data: list[str] | None = None,
             refer_target: float = REFER_TARGET, false_alarm: float = FALSE_ALARM,
             commands: list[str] | None = None) -> dict[str, Any]:
    """The report of one model folder (and, see the module docstring, what it fits and writes).

    ``split_side``: ``val``/``train`` keep that side of the split recorded at training (when
    ``data`` is the dataset trained on); ``all`` every image of the model; ``auto`` the
    validation side when there is a recorded split for this dataset, else all.
    ``images``: evaluate these preprocessed images (no labels) instead of a dataset.
    ``write``: store the fitted refer band, gate and card in the model folder (only an
    ``export`` model folder, only on the recorded validation side). ``card_dir``: write the
    card there instead (or as well, for a model inside a pack). ``commands``: shown on the card.
    """
    from .packing import read_model_folder
    say = Progress(progress)
    folder = Path(model_folder)
    meta, files = read_model_folder(folder)
    if split_side not in SPLIT_SIDES:
        raise UserError(f"Unknown split {split_side!r}.", f"Use one of: {', '.join(SPLIT_SIDES)}.")
    if not 0 < refer_target <= 1 or not 0 < false_alarm < 1:
        raise UserError("--refer-target must be in (0, 1] and --false-alarm in (0, 1).", "Use e.g. 0.95 and 0.05.")
    other_sets = [open_dataset(path) for path in ood_data or []]      # a wrong path fails before any work
    run = runners(files, checkpoint)
    if len(run) < 1:
        raise UserError(f"{model_folder} holds no model file to evaluate.", "Run 'bccdms-export export' first.")
    spec = meta["input"]
    temperature = float(meta.get("temperature", 1.0))
    classes = tuple(meta["classes"])
    report: dict[str, Any] = {"model": meta["model_id"], "classes": list(classes), "temperature": temperature,
                              "architecture": meta.get("architecture"), "commands": list(commands or [])}
    if images is not None:
        outputs = run_forms(run, [images], spec, say, 1)
        report.update(images=len(images), source="given images", split=None)
        targets = None
    else:
        labelled, side, whole = _labelled(meta, data, layout, subset, split_side, limit)
        paths = [i.path for i in labelled.items]
        outputs = run_forms(run, batches(paths, spec, BATCH), spec, say, -(-len(paths) // BATCH))
        targets = np.asarray(labelled.targets)
        report.update(images=len(paths), source=str(labelled.dataset.root), split=side,
                      patients=len({i.patient for i in labelled.items if i.patient}) or None,
                      groups=len({i.split_key for i in labelled.items}),
                      classes_with_few_patients=classes_with_few_patients(patients_per_class(whole)),
                      label_mapping=label_mapping(whole))
    reference = "torch" if "torch" in outputs.logits else next(iter(outputs.logits))
    report["reference"] = reference
    report["split_recorded"] = split_summary(meta.get("split"))
    report["provenance"] = provenance_summary(meta)
    fit = (write and targets is not None and report["split"] == "val" and (folder / "model.json").is_file())

    refer_below = meta.get("refer_below")
    if fit:
        # Chosen on what the box runs (the INT8 forms), else on the reference.
        deployed = [f for f in DEPLOYED_FORMS if f in outputs.logits] or [reference]
        report["refer"] = choose_refer_threshold_for_forms(
            {f: softmax(outputs.logits[f], temperature) for f in deployed}, targets, target_accuracy=refer_target)
        refer_below = report["refer"]["threshold"]
        report["drift"] = drift_reference(meta, [i.path for i in labelled.items], outputs, deployed[0], temperature)
    report["refer_below"] = refer_below
    agreement = parity(outputs.logits, reference)
    report["forms"] = {
        name: {"parity": agreement[name],
               "metrics": None if targets is None else form_figures(values, targets, classes, temperature, refer_below)}
        for name, values in outputs.logits.items()}

    gate = _out_of_scope(report, meta, folder, files, run, outputs, other_sets, fit, false_alarm, say)
    if targets is not None and (fit or card_dir):
        _write(report, folder, gate, fit, card_dir, say)
    return report


def drift_reference(meta: dict, paths: list[Path], outputs: Outputs, form: str, temperature: float) -> dict:
    """What the post's drift watch compares its months with (``appliance/drift.py``): the deployed
    form's top class and confidence on the validation images, and the quality gate's measurements
    of those images as the box takes them; with the thresholds of a large shift measured on them."""
    from PIL import Image

    from appliance.drift import reference
    from appliance.inference.quality import measure

    from .transforms import upright_rgb
    metrics = []
    for path in paths:
        with Image.open(path) as image:
            metrics.append(measure(upright_rgb(image)))
    return reference(meta["classes"], softmax(outputs.logits[form], temperature), metrics, form=form)


def _out_of_scope(report: dict, meta: dict, folder: Path, files: dict, run: dict, outputs: Outputs,
                  other_sets: list, fit: bool, false_alarm: float, say: Progress) -> Gate | None:
    """Fit the gate (or take the stored one) and add its section to ``report``."""
    form = next(f for f in GATE_FORMS if f in run)
    found = _fit_gate(meta, run, form, outputs, say, false_alarm) if fit else _gate_in(folder, files)
    if found is None:
        return None
    gate, facts = found
    in_scope = {"validation" if report["split"] == "val" else "evaluated images": outputs} \
        if outputs.appearance is not None else {}
    report["out_of_scope"] = gate_section(gate, fitted=fit, form=form, in_scope=in_scope,
                                          other=_other_data(run, form, meta["input"], other_sets, say),
                                          synthetic=synthetic_outputs(run, form, meta["input"]), **facts)
    return gate


def _write(report: dict, folder: Path, gate: Gate | None, fit: bool, card_dir, say: Progress) -> None:
    """The card where ``pack`` takes it from (the model folder) when fitted, and into ``card_dir``."""
    from .model_card import store_fitted, write_card
    destinations = ([folder] if fit else []) + ([Path(card_dir)] if card_dir else [])
    report["written"] = [str(p) for d in destinations for p in write_card(d, report)]
    if fit:
        store_fitted(folder, report, gate)
    say.say(f"model card written to {', '.join(map(str, destinations))}"
            + (f"; refer band and out-of-scope gate stored in {folder}" if fit else ""))


def _labelled(meta: dict, data: str | None, layout: str, subset: str | None, split_side: str, limit: int | None):
    if data is None:
        raise UserError("evaluate needs labelled images.", "Pass a dataset folder or manifest with --data.")
    whole = labelled_for(open_dataset(data, layout, subset), meta["model_id"])
    labelled, side = _split_side(whole, meta.get("split"), split_side)
    if limit and limit < len(labelled.items):   # a seeded sample, so every class can appear
        labelled = subset_of(labelled, sorted(random.Random(0).sample(range(len(labelled.items)), limit)))
    if not labelled.items:
        raise UserError(f"No images of {meta['model_id']} are left to evaluate in {data}.", "Check --data and --split.")
    return labelled, side, whole


def patients_per_class(labelled) -> dict[str, int]:
    """How many patients each class's images come from (empty when patients are unknown)."""
    if not any(i.patient for i in labelled.items):
        return {}
    patients: dict[str, set] = {name: set() for name in labelled.classes}
    for item, target in zip(labelled.items, labelled.targets):
        patients[labelled.classes[target]].add(item.patient)
    return {name: len(p) for name, p in patients.items()}


def classes_with_few_patients(counts: dict[str, int]) -> dict[str, int]:
    """The classes whose images come from fewer than ``FEW_PATIENTS`` patients in the whole dataset."""
    from .model_card import FEW_PATIENTS
    return {name: n for name, n in counts.items() if 0 < n < FEW_PATIENTS}


def _split_side(labelled, split_doc: dict | None, side: str):
    recorded = split_doc is not None and Path(split_doc.get("dataset", "")) == labelled.dataset.root
    if side == "all" or (side == "auto" and not recorded):
        return labelled, "all"
    if not recorded:
        raise UserError(f"There is no recorded split for {labelled.dataset.root}.",
                        "Use --split all, or pass the dataset the model was trained on.")
    side = "val" if side == "auto" else side
    return select_files(labelled, set(split_doc[side]["files"])), side


def split_summary(split_doc: dict | None) -> dict[str, Any] | None:
    """The recorded split without its file lists: method, seed and what each side holds."""
    if not split_doc:
        return None
    sides = {side: {"images": split_doc[side]["images"], "classes": split_doc[side]["classes"],
                    "patients": len(split_doc[side]["patients"]) or None}
             for side in ("train", "val") if side in split_doc}
    return {k: split_doc.get(k) for k in ("dataset", "layout", "method", "seed", "val_fraction")} | sides


def provenance_summary(meta: dict) -> dict[str, Any]:
    prov = meta.get("provenance") or {}
    training = prov.get("training") or {}
    return {"initial_weights": prov.get("initial_weights"), "init_from": prov.get("init_from"),
            "recipe": prov.get("recipe"),
            "trained": prov.get("trained"), "torch": prov.get("torch"), "created": prov.get("created"),
            "best_epoch": (prov.get("checkpoint") or {}).get("best_epoch") or training.get("best_epoch"),
            "image_size": meta["input"]["size"], "version": meta.get("version"),
            "quantization": meta.get("quantization"), "validation_at_training": {
                k: (meta.get("validation") or {}).get(k) for k in ("accuracy", "balanced_accuracy", "nll",
                                                                    "nll_uncalibrated", "best_epoch")}}


# ---------------------------------------------------------------- the out-of-scope gate

def _fit_gate(meta: dict, run: dict[str, Callable], form: str, val: Outputs, say: Progress,
              false_alarm: float) -> tuple[Gate, dict[str, Any]] | None:
    """Fit the gate on the training images' features (the form the box runs); None without them."""
    from .ood import false_alarm_cross_fitted, fit_gate
    train_paths = sample_paths(recorded_split_paths(meta.get("split"), "train"), OOD_TRAIN_IMAGES)
    if len(train_paths) < 3 or val.appearance is None or len(val.appearance) < 4:
        say.say("no out-of-scope gate: the recorded training images are not here (or too few images)")
        return None
    spec = meta["input"]
    train = run_forms({form: run[form]}, batches(train_paths, spec, BATCH), spec, say,
                      -(-len(train_paths) // BATCH), desc="training features")
    gate = fit_gate(train.pooled[form], train.appearance, val.pooled[form], val.appearance, false_alarm=false_alarm)
    crossed = false_alarm_cross_fitted(train.pooled[form], train.appearance, val.pooled[form], val.appearance,
                                       false_alarm=false_alarm)
    return gate, {"false_alarm": false_alarm, "false_alarm_cross_fitted": crossed, "train_images": len(train_paths)}


def _gate_in(folder: Path, files: dict[str, Path]) -> tuple[Gate, dict[str, Any]] | None:
    """The gate a model folder (or pack) already carries, to measure it on these images."""
    if "ood" not in files:
        return None
    try:
        return Gate.from_bytes(files["ood"].read_bytes()), {}
    except ValueError as exc:
        raise UserError(f"The out-of-scope statistics in {folder} cannot be read ({exc}).",
                        "Evaluate on the validation split again to fit them anew.") from None


def _other_data(run, form: str, spec, sets: list, say: Progress) -> dict[str, Outputs]:
    """Features of images from other datasets (``--ood-data``): a seeded sample of each."""
    out = {}
    for dataset in sets:
        paths = sample_paths([i.path for i in dataset.items], OOD_IMAGES_PER_SET)
        out[dataset.root.name] = run_forms({form: run[form]}, batches(paths, spec, BATCH), spec, say,
                                           -(-len(paths) // BATCH), desc=f"out-of-scope: {dataset.root.name}")
    return out


def synthetic_outputs(run, form: str, spec, progress=None) -> dict[str, Outputs]:
    """Features of the synthetic out-of-scope images (``ood.synthetic_out_of_scope``)."""
    from .ood import synthetic_out_of_scope
    from .transforms import eval_transform
    transform = eval_transform(spec)
    out = {}
    for kind, pictures in synthetic_out_of_scope().items():
        batch = np.stack([transform(p).numpy() for p in pictures]).astype(np.float32)
        out[f"synthetic {kind}"] = run_forms({form: run[form]}, [batch], spec, progress or Progress(False))
    return out


# ---------------------------------------------------------------- printing

def format_report(report: dict[str, Any]) -> str:
    """The report as plain-text tables: per form, then the refer band, the gate and the confusion."""
    def pct(v):
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    def num(v, fmt=".3f"):
        return "   -" if v is None else format(v, fmt)
    lines = [f"{report['model']}: {report['images']} images ({report.get('split') or report['source']}), "
             f"reference {report['reference']}, temperature {report['temperature']:.2f}",
             f"{'form':<14} {'top-1 agree':>11} {'max|Δlogit|':>11} {'accuracy':>9} {'balanced':>9} {'NLL':>7} "
             f"{'AUC':>6} {'ECE raw':>7} {'ECE T':>7} {'covered':>8}"]
    for name, form in report["forms"].items():
        p, m = form["parity"], form["metrics"] or {}
        cal, roc, refer = m.get("calibration") or {}, m.get("roc") or {}, m.get("refer") or {}
        lines.append(f"{name:<14} {pct(p and p['top1_agreement']):>11} "
                     f"{'   -' if p is None else format(p['max_abs_logit_diff'], '.4f'):>11} "
                     f"{pct(m.get('accuracy')):>9} {pct(m.get('balanced_accuracy')):>9} {num(m.get('nll')):>7} "
                     f"{num(headline_auc(roc) if roc else None):>6} {num(cal.get('ece_uncalibrated')):>7} "
                     f"{num(cal.get('ece_temperature_cross_fitted')):>7} {pct(refer.get('coverage')):>8}")
    if report.get("refer"):
        r = report["refer"]
        lines.append(f"refer band: refer_below {num(r['threshold'])} ({r['rule']}): coverage {pct(r['coverage'])}, "
                     f"accepted accuracy {pct(r['accepted_accuracy'])}, referred accuracy {pct(r['referred_accuracy'])}")
    gate = report.get("out_of_scope")
    if gate:
        lines.append(f"out-of-scope gate ({gate['form']} features, {'fitted now' if gate['fitted'] else 'as stored'}): "
                     f"false alarms (cross-fitted) {pct(gate['false_alarm_cross_fitted'])}, "
                     f"catch rate {pct(gate['catch_rate'])}")
        for group in ("in_scope", "other_data", "synthetic"):
            for name, r in gate[group].items():
                lines.append(f"    {name:<34} flagged {r['flagged']:>4} of {r['images']:<4} {pct(r['rate'])}")
    ref_metrics = report["forms"][report["reference"]]["metrics"]
    if ref_metrics:
        names = ref_metrics["confusion"]["classes"]
        width = max(len(c) for c in names) + 2
        lines.append(f"confusion ({report['reference']}; rows truth, columns prediction):")
        lines.append(" " * width + "".join(f"{c[:10]:>11}" for c in names))
        for name, row in zip(names, ref_metrics["confusion"]["matrix"]):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>11}" for v in row))
    return "\n".join(lines)
