"""Classification figures shared by ``train`` (validation) and ``evaluate``; numpy only
(the GPU training script runs them where scikit-learn is not installed)."""
from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, targets, classes: tuple[str, ...] | list[str],
                           temperature: float = 1.0) -> dict[str, Any]:
    """Accuracy, balanced accuracy, NLL, confusion matrix (rows: truth, columns: prediction),
    per-class recall/precision/support. Balanced accuracy averages recall over the classes
    present, so a skewed set (BreakHis) cannot hide a class the model never gets right."""
    targets = np.asarray(targets, int)
    probs = softmax(logits, temperature)
    predicted = probs.argmax(axis=1)
    n = len(classes)
    confusion = np.bincount(targets * n + predicted, minlength=n * n).reshape(n, n)
    totals = confusion.sum(axis=1)
    recall = np.diag(confusion)[totals > 0] / totals[totals > 0]
    per_class = {}
    for i, name in enumerate(classes):
        support = int(confusion[i].sum())
        predicted_as = int(confusion[:, i].sum())
        per_class[name] = {"support": support,
                           "recall": float(confusion[i, i] / support) if support else None,
                           "precision": float(confusion[i, i] / predicted_as) if predicted_as else None}
    nll = float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1)).mean()) if len(targets) else None
    return {
        "images": int(len(targets)),
        "accuracy": float((predicted == targets).mean()) if len(targets) else None,
        "balanced_accuracy": float(recall.mean()) if len(targets) else None,
        "nll": nll,
        "temperature": float(temperature),
        "confusion": {"classes": list(classes), "matrix": confusion.tolist()},
        "per_class": per_class,
    }


def fit_temperature(logits: np.ndarray, targets) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising validation NLL of softmax(z/T).

    LBFGS on log T, so T stays positive; clipped to [0.05, 20] for tiny validation sets.
    """
    import torch
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss
    optimiser.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))
