"""``bccdms-export evaluate``: how far each exported form of a model is from the trained one,
and how well it classifies a labelled set.

For every form available — torch (from the checkpoint), ONNX FP32, ONNX Runtime INT8,
OpenVINO FP32, OpenVINO INT8 — it runs the same preprocessed images and reports:

- parity against the reference (torch when the checkpoint is given, else ONNX FP32):
  top-1 agreement and max / mean |Δlogit|;
- with labels: accuracy, balanced accuracy, NLL (temperature-scaled), confusion matrix,
  per-class recall/precision.

The report is a JSON-able dict (``evaluate``) and a printed table (``format_report``); more
figures (ROC, calibration, refer band, out-of-scope) plug in as further keys per form.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import UserError

from .datasets import labelled_for, open_dataset, select_files, subset_of
from .images import batches
from .metrics import classification_metrics
from .packing import read_model_folder
from .progress import Progress

FORMS = ("torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8")
SPLIT_SIDES = ("auto", "val", "train", "all")


def runners(files: dict[str, Path], checkpoint: str | Path | None = None) -> dict[str, Callable]:
    """A ``batch (N×3×H×W) → logits`` function for every form present."""
    out: dict[str, Callable] = {}
    if checkpoint is not None:
        import torch
        from .checkpoint import load_checkpoint, network_from_checkpoint
        net = network_from_checkpoint(load_checkpoint(checkpoint))

        def run_torch(batch):
            with torch.no_grad():
                return net(torch.from_numpy(batch)).numpy()
        out["torch"] = run_torch
    for role in ("onnx_fp32", "onnx_int8"):
        if role in files:
            from .onnx_export import ort_session, run_onnx
            session = ort_session(files[role])
            out[role] = lambda batch, s=session: run_onnx(None, batch, s)[0]
    for role in ("openvino_fp32", "openvino_int8"):
        if role in files:
            import openvino as ov
            # f32: OpenVINO would otherwise run float parts in BF16 on CPUs that have it (as the box does).
            compiled = ov.Core().compile_model(str(files[role]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            out[role] = lambda batch, c=compiled: c(batch)[c.output("logits")]
    return out


def collect_logits(run: dict[str, Callable], image_batches, progress: Progress, total: int | None = None
                   ) -> dict[str, np.ndarray]:
    logits: dict[str, list[np.ndarray]] = {name: [] for name in run}
    for batch in progress.bar(image_batches, total=total, desc="evaluating", unit="batch"):
        for name, fn in run.items():
            logits[name].append(np.asarray(fn(batch), np.float32))
    return {name: np.concatenate(parts) for name, parts in logits.items() if parts}


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


def evaluate(model_folder: str | Path, *, checkpoint: str | Path | None = None, data: str | None = None,
             layout: str = "auto", subset: str | None = None, split_side: str = "auto",
             limit: int | None = None, images: np.ndarray | None = None, progress: bool = True) -> dict[str, Any]:
    """The parity (and, with ``data``, accuracy) report of one model folder.

    ``split_side``: ``val``/``train`` keep that side of the split recorded at training (when
    ``data`` is the dataset trained on); ``all`` every image of the model; ``auto`` the
    validation side when there is a recorded split for this dataset, else all.
    ``images``: evaluate these preprocessed images (no labels) instead of a dataset.
    """
    say = Progress(progress)
    meta, files = read_model_folder(Path(model_folder))
    if split_side not in SPLIT_SIDES:
        raise UserError(f"Unknown split {split_side!r}.", f"Use one of: {', '.join(SPLIT_SIDES)}.")
    run = runners(files, checkpoint)
    if len(run) < 1:
        raise UserError(f"{model_folder} holds no model file to evaluate.", "Run 'bccdms-export export' first.")
    report: dict[str, Any] = {"model": meta["model_id"], "classes": list(meta["classes"]),
                              "temperature": float(meta.get("temperature", 1.0))}
    targets = None
    if images is not None:
        logits = collect_logits(run, [images], say, 1)
        report.update(images=len(images), source="given images", split=None)
    else:
        if data is None:
            raise UserError("evaluate needs labelled images.", "Pass a dataset folder or manifest with --data.")
        labelled = labelled_for(open_dataset(data, layout, subset), meta["model_id"])
        labelled, side = _split_side(labelled, meta.get("split"), split_side)
        if limit and limit < len(labelled.items):   # a seeded sample, so every class can appear
            labelled = subset_of(labelled, sorted(random.Random(0).sample(range(len(labelled.items)), limit)))
        if not labelled.items:
            raise UserError(f"No images of {meta['model_id']} are left to evaluate in {data}.", "Check --data and --split.")
        paths = [i.path for i in labelled.items]
        logits = collect_logits(run, batches(paths, meta["input"]), say, -(-len(paths) // 16))
        targets = np.asarray(labelled.targets)
        report.update(images=len(paths), source=str(labelled.dataset.root), split=side,
                      patients=len({i.patient for i in labelled.items if i.patient}) or None)
    reference = "torch" if "torch" in logits else next(iter(logits))
    report["reference"] = reference
    agreement = parity(logits, reference)
    report["forms"] = {
        name: {"parity": agreement[name],
               "metrics": None if targets is None else
               classification_metrics(values, targets, tuple(meta["classes"]), report["temperature"])}
        for name, values in logits.items()}
    return report


def _split_side(labelled, split_doc: dict | None, side: str):
    recorded = split_doc is not None and Path(split_doc.get("dataset", "")) == labelled.dataset.root
    if side == "all" or (side == "auto" and not recorded):
        return labelled, "all"
    if not recorded:
        raise UserError(f"There is no recorded split for {labelled.dataset.root}.",
                        "Use --split all, or pass the dataset the model was trained on.")
    side = "val" if side == "auto" else side
    return select_files(labelled, set(split_doc[side]["files"])), side


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table (parity and figures per form, confusion of the reference)."""
    def pct(v):
        return "   -  " if v is None else f"{100 * v:5.1f}%"
    lines = [f"{report['model']}: {report['images']} images ({report.get('split') or report['source']}), "
             f"reference {report['reference']}, temperature {report['temperature']:.2f}",
             f"{'form':<14} {'top-1 agree':>11} {'max|Δlogit|':>11} {'accuracy':>9} {'balanced':>9} {'NLL':>7}"]
    for name, form in report["forms"].items():
        p, m = form["parity"], form["metrics"] or {}
        nll = m.get("nll")
        lines.append(f"{name:<14} {pct(p and p['top1_agreement']):>11} "
                     f"{'   -' if p is None else format(p['max_abs_logit_diff'], '.4f'):>11} "
                     f"{pct(m.get('accuracy')):>9} {pct(m.get('balanced_accuracy')):>9} "
                     f"{'   -' if nll is None else format(nll, '.3f'):>7}")
    ref_metrics = report["forms"][report["reference"]]["metrics"]
    if ref_metrics:
        classes = ref_metrics["confusion"]["classes"]
        width = max(len(c) for c in classes) + 2
        lines.append(f"confusion ({report['reference']}; rows truth, columns prediction):")
        lines.append(" " * width + "".join(f"{c[:10]:>11}" for c in classes))
        for name, row in zip(classes, ref_metrics["confusion"]["matrix"]):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>11}" for v in row))
    return "\n".join(lines)
