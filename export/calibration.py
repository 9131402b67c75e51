"""Calibration and the refer band: are the percentages the box shows honest, and when should
a result say "uncertain — refer" instead of a class?

- ``expected_calibration_error``: top-label ECE with equal-width confidence bins (Guo et al.
  2017): the gap between confidence and accuracy, weighted by how many images fall in each bin.
- ``calibration_report``: ECE without temperature, with the model's temperature (fitted on
  this very validation set at training, so in-sample and flattering), and **cross-fitted**
  (the temperature fitted on one half of the set and measured on the other, both ways): the
  honest figure for how the temperature will do on new images.
- ``choose_refer_threshold``: the ``refer_below`` of a model, chosen on validation data by a
  stated rule (below), with the coverage it leaves and the accuracy on either side.

NumPy (and torch for the temperature fit): it also runs in the GPU training script.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import fit_temperature, softmax

BINS = 15
REFER_TARGET = 0.95           # accuracy wanted on the results the box does not refer
REFER_MIN_ACCEPTED = 10       # a target "met" by fewer images than this is luck, not evidence
REFER_FALLBACK_COVERAGE = 0.5


def top_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) per image."""
    probs = np.asarray(probs, np.float64)
    return probs.max(axis=1), probs.argmax(axis=1)


def reliability(probs: np.ndarray, targets, bins: int = BINS) -> list[dict[str, Any]]:
    """Equal-width confidence bins: count, mean confidence and accuracy of the images in each."""
    confidence, predicted = top_label(probs)
    correct = predicted == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot occur.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        inside = index == i
        n = int(inside.sum())
        out.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": n,
                    "confidence": float(confidence[inside].mean()) if n else None,
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, targets, bins: int = BINS) -> float:
    total = len(np.asarray(targets))
    if not total:
        return float("nan")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(probs, targets, bins) if b["count"]))


def _stratified_folds(targets: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image, each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(targets), int)
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_fitted_probabilities(logits: np.ndarray, targets, folds: int = 2, seed: int = 0
                               ) -> tuple[np.ndarray, list[float]]:
    """Each image's probabilities under a temperature fitted on the *other* folds."""
    logits, targets = np.asarray(logits), np.asarray(targets, int)
    fold = _stratified_folds(targets, folds, seed)
    probs = np.empty(logits.shape, np.float64)
    temperatures = []
    for k in range(folds):
        held = fold == k
        t = fit_temperature(logits[~held], targets[~held]) if (~held).any() and held.any() else 1.0
        temperatures.append(t)
        probs[held] = softmax(logits[held], t)
    return probs, temperatures


def calibration_report(logits: np.ndarray, targets, temperature: float, bins: int = BINS) -> dict[str, Any]:
    """ECE and reliability bins before and after temperature scaling (see the module docstring)."""
    targets = np.asarray(targets, int)
    raw = softmax(logits, 1.0)
    scaled = softmax(logits, temperature)
    crossed, fold_temperatures = cross_fitted_probabilities(logits, targets)
    return {
        "bins": bins, "temperature": float(temperature),
        "ece_uncalibrated": expected_calibration_error(raw, targets, bins),
        "ece_temperature_in_sample": expected_calibration_error(scaled, targets, bins),
        "ece_temperature_cross_fitted": expected_calibration_error(crossed, targets, bins),
        "cross_fitted_temperatures": [float(t) for t in fold_temperatures],
        "reliability": {"uncalibrated": reliability(raw, targets, bins),
                        "temperature": reliability(scaled, targets, bins)},
    }


def refer_band(probs: np.ndarray, targets, threshold: float | None) -> dict[str, Any]:
    """What a ``refer_below`` threshold does on a labelled set: coverage (share of images
    given a class), accuracy on the accepted and on the referred images."""
    confidence, predicted = top_label(probs)
    correct = predicted == np.asarray(targets)
    accepted = np.ones(len(confidence), bool) if threshold is None else confidence >= threshold
    n, kept = len(confidence), int(accepted.sum())
    return {"threshold": None if threshold is None else float(threshold), "images": n,
            "coverage": kept / n if n else None,
            "accepted": kept, "accepted_accuracy": float(correct[accepted].mean()) if kept else None,
            "referred": n - kept, "referred_accuracy": float(correct[~accepted].mean()) if n - kept else None}


def _rule(target_accuracy: float, min_accepted: int) -> str:
    return (f"lowest threshold whose accepted validation images reach {target_accuracy:.0%} accuracy "
            f"(at least {min_accepted} accepted)")


def choose_refer_threshold(probs: np.ndarray, targets, target_accuracy: float = REFER_TARGET,
                           min_accepted: int = REFER_MIN_ACCEPTED,
                           fallback_coverage: float = REFER_FALLBACK_COVERAGE) -> dict[str, Any]:
    """The ``refer_below`` threshold of a model, from calibrated validation probabilities.

    Rule: the lowest threshold (so the most results keep their class) at which the images
    whose top probability reaches it are classified with at least ``target_accuracy``, counting
    only thresholds that accept at least ``min_accepted`` images. When no threshold reaches the
    target, the band refers the least confident ``1 - fallback_coverage`` of the images (the
    threshold is their top-probability quantile) and says that the target was not met.
    """
    if not 0 < target_accuracy <= 1 or not 0 < fallback_coverage <= 1 or min_accepted < 1:
        raise ValueError("target accuracy and fallback coverage must be in (0, 1], min_accepted >= 1")
    confidence, predicted = top_label(probs)
    correct = (predicted == np.asarray(targets))
    order = np.argsort(-confidence, kind="stable")
    # Accepting the k most confident images: their accuracy for every k at once.
    accuracy_top_k = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    threshold, met = None, False
    for k in range(len(order), 0, -1):        # from accepting everything down to one image
        if k < min_accepted:
            break
        threshold_k = confidence[order[k - 1]]
        # Ties: a threshold accepts every image at least as confident, so take k up to the last tie.
        k_tied = int((confidence >= threshold_k).sum())
        if accuracy_top_k[k_tied - 1] >= target_accuracy:
            threshold, met = float(threshold_k), True
            break
    rule = _rule(target_accuracy, min_accepted)
    if not met:
        threshold = float(np.quantile(confidence, 1 - fallback_coverage)) if len(confidence) else None
        rule += (f"; not reachable on this validation set, so the least confident "
                 f"{1 - fallback_coverage:.0%} are referred")
    return {"rule": rule, "target_accuracy": target_accuracy, "min_accepted": min_accepted,
            "fallback_coverage": fallback_coverage, "target_met": met, **refer_band(probs, targets, threshold)}


def choose_refer_threshold_for_forms(probs_by_form: dict[str, np.ndarray], targets, **rule) -> dict[str, Any]:
    """One ``refer_below`` for every form of the model the box may run (INT8 on ONNX Runtime or
    OpenVINO): the rule's threshold on each form, and the highest of them, so the band keeps the
    rule whichever runtime the box uses (INT8 shifts the probabilities a little). The band's
    figures are those of the first form."""
    per_form = {name: choose_refer_threshold(probs, targets, **rule) for name, probs in probs_by_form.items()}
    thresholds = [r["threshold"] for r in per_form.values() if r["threshold"] is not None]
    threshold = max(thresholds) if thresholds else None
    first_name, first = next(iter(per_form.items()))
    outcomes = ", ".join(f"{name} {r['threshold']:.3f} (" + ("met" if r["target_met"] else
                                                             f"not reachable: the least confident "
                                                             f"{1 - r['fallback_coverage']:.0%} referred") + ")"
                         for name, r in per_form.items() if r["threshold"] is not None)
    return {"rule": f"{_rule(first['target_accuracy'], first['min_accepted'])}, on each form the box may run "
                    f"({outcomes}); the highest threshold is kept",
            "target_accuracy": first["target_accuracy"], "min_accepted": first["min_accepted"],
            "target_met": all(r["target_met"] for r in per_form.values()), "form": first_name,
            "per_form": {name: {k: r[k] for k in ("threshold", "target_met", "coverage", "accepted_accuracy")}
                         for name, r in per_form.items()},
            **refer_band(probs_by_form[first_name], targets, threshold)}
