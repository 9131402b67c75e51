"""ROC curves and their areas, one class against the rest (the paper's figures 2 and 4).

NumPy only, so the GPU training script computes them where scikit-learn is absent;
``tests/test_models_eval.py`` holds them equal to scikit-learn's ``roc_curve``/``roc_auc_score``.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score, highest threshold first.

    Starts at (0, 0) with an infinite threshold, like scikit-learn's ``roc_curve``
    (without its dropping of collinear points). ``positive`` is a boolean array.
    """
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    # The last index of each run of equal scores: a threshold takes the whole run.
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(positive)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = positive.sum(), (~positive).sum()
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(len(last) + 1, np.nan)
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(len(last) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, scores[last]]


def area_under(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def roc_analysis(probs: np.ndarray, targets, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """One-vs-rest ROC per class (curve points and AUC), their macro mean, and for two classes
    the AUC of the second class (abnormal, malignant) against the first.

    A class absent from ``targets`` (or the only one present) has no curve: ``auc`` None.
    """
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, int)
    per_class: dict[str, Any] = {}
    for i, name in enumerate(classes):
        positive = targets == i
        if positive.all() or not positive.any():
            per_class[name] = {"auc": None, "positives": int(positive.sum()), "fpr": [], "tpr": []}
            continue
        fpr, tpr, _ = roc_curve(probs[:, i], positive)
        per_class[name] = {"auc": area_under(fpr, tpr), "positives": int(positive.sum()),
                           "fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}
    aucs = [c["auc"] for c in per_class.values() if c["auc"] is not None]
    out = {"per_class": per_class, "macro_auc": float(np.mean(aucs)) if aucs else None}
    if len(classes) == 2:
        out["binary_auc"] = per_class[classes[1]]["auc"]
        out["positive_class"] = classes[1]
    return out


def headline_auc(roc: dict[str, Any]) -> float | None:
    """The one AUC a table shows: the binary AUC for two classes, else the one-vs-rest macro mean."""
    return roc["binary_auc"] if "binary_auc" in roc else roc.get("macro_auc")
