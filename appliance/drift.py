"""Drift watch: do this month's images and answers still look like the model's validation images?

A new camera changes colours, a new stain changes the cells, a dirty objective blurs every field:
the model then meets images unlike the ones it was validated on, and its figures no longer hold.
Per month and per model version, the post compares five distributions of its exams with those the
pack measured on the model's validation images (``validation.drift`` in the manifest, written by
``bccdms-export evaluate``):

- the model's top class (the first model of the analysis),
- its calibrated confidence (10 bins),
- the quality gate's brightness, contrast and sharpness (log) of the images (deciles of validation).

**The statistic** is the population stability index, PSI = Σ (o - e) · ln(o / e) over the bins, o
the month's shares, e the validation shares (each share smoothed by half an image, so an empty
bin is finite).

**What "large" means** is measured on the validation images themselves, not guessed: at pack time
``reference`` draws many months of ``n`` images *from the validation set* (with replacement), the
sampling noise alone, and keeps the 99th percentile of their PSI for each ``n`` of ``SIZES``
(a larger month has less noise, so a lower threshold). A month whose PSI on any of the five is
above the threshold for its size (interpolated on log n) is a **large shift**: sampling alone would
make one that large in fewer than 1 month in 100 per distribution. Months with fewer than
``SIZES[0]`` exams are not judged. ``appliance doctor`` shows large shifts with a next step.

Pure NumPy: the ML side calls ``reference`` (``export/evaluate.py``), the box ``month_shifts``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = 1
SIZES = (20, 40, 80, 160, 320, 640, 1280, 2560)
QUANTILE = 0.99
RESAMPLES = 2000
CONFIDENCE_BINS = 10
QUALITY = ("brightness", "contrast", "sharpness")
FEATURES = ("top_class", "confidence", *QUALITY)
MONTHS_WATCHED = 3
RULE = (f"population stability index of a month against the validation images above the {QUANTILE:.0%} point "
        "of the PSI of same-sized samples drawn from the validation images themselves")


def _quality_value(name: str, metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get(name)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return math.log1p(max(float(value), 0.0)) if name == "sharpness" else float(value)


def _bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, np.float64), values, side="right")


def psi(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """PSI of observed bin counts (``...×k``) against expected shares (``k``), each smoothed by half an image."""
    counts = np.asarray(counts, np.float64)
    n = counts.sum(axis=-1, keepdims=True)
    k = counts.shape[-1]
    observed = (counts + 0.5) / (n + 0.5 * k)
    expected = np.clip(np.asarray(expected, np.float64), 1e-4, None)
    expected = expected / expected.sum()
    return ((observed - expected) * np.log(observed / expected)).sum(axis=-1)


def reference(classes: Sequence[str], probabilities: np.ndarray, metrics: Sequence[Mapping[str, Any]], *,
              form: str | None = None, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The validation figures a pack carries for the drift watch (``validation.drift``).

    ``probabilities``: the deployed form's calibrated probabilities of the validation images;
    ``metrics``: their quality-gate measurements (``appliance.inference.quality.measure``)."""
    probabilities = np.asarray(probabilities, np.float64)
    n = len(probabilities)
    k = len(classes)
    values = {"top_class": probabilities.argmax(1).astype(np.float64),
              "confidence": probabilities.max(1)}
    for name in QUALITY:
        values[name] = np.asarray([_quality_value(name, m) if m else None for m in metrics], np.float64) \
            if metrics else np.full(n, np.nan)
    features: dict[str, Any] = {}
    binned: dict[str, np.ndarray] = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        if len(v) < SIZES[0]:
            continue
        if name == "top_class":
            edges = [i + 0.5 for i in range(k - 1)]
        elif name == "confidence":
            edges = list(np.linspace(1 / k, 1, CONFIDENCE_BINS + 1)[1:-1])
        else:
            edges = sorted(set(np.round(np.quantile(v, np.linspace(0.1, 0.9, 9)), 6).tolist()))
        index = _bins(v, edges)
        shares = np.bincount(index, minlength=len(edges) + 1) / len(v)
        features[name] = {"edges": [float(e) for e in edges], "shares": [float(s) for s in shares]}
        binned[name] = index
    rng = np.random.default_rng(seed)
    thresholds: dict[str, list[float]] = {}
    for name, index in binned.items():
        bins = len(features[name]["shares"])
        row = []
        for size in SIZES:
            draws = index[rng.integers(0, len(index), size=(resamples, size))]
            flat = (draws + np.arange(resamples)[:, None] * bins).ravel()      # one bincount for every draw
            counts = np.bincount(flat, minlength=resamples * bins).reshape(resamples, bins)
            row.append(float(np.quantile(psi(counts, features[name]["shares"]), QUANTILE)))
        thresholds[name] = row
    return {"format": FORMAT, "images": n, "form": form, "classes": list(classes), "features": features,
            "thresholds": {"sizes": list(SIZES), "quantile": QUANTILE, "resamples": resamples, "psi": thresholds},
            "rule": RULE}


def threshold(ref: Mapping[str, Any], feature: str, n: int) -> float | None:
    """The large-shift PSI for a month of ``n`` images (log-log interpolation; None below the smallest size)."""
    table = ref["thresholds"]
    sizes, values = table["sizes"], table["psi"].get(feature)
    if not values or n < sizes[0]:
        return None
    n = min(n, sizes[-1])
    return float(math.exp(np.interp(math.log(n), np.log(sizes), np.log(np.maximum(values, 1e-9)))))


@dataclass
class Shift:
    """One month of one model version against its validation figures."""
    analysis: str
    model: str
    version: str
    month: str
    exams: int
    psi: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def large(self) -> list[str]:
        return [f for f, v in self.psi.items() if self.thresholds.get(f) is not None and v > self.thresholds[f]]

    @property
    def judged(self) -> bool:
        return any(t is not None for t in self.thresholds.values())


def first_step(result: Mapping[str, Any]) -> tuple[dict | None, dict]:
    steps = result.get("steps") if isinstance(result, Mapping) else None
    step = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else None
    quality = result.get("quality") if isinstance(result, Mapping) else None
    return step, ((quality or {}).get("metrics") or {}) if isinstance(quality, Mapping) else {}


def month_shifts(exams: Iterable[Mapping[str, Any]], references: Mapping[tuple[str, str], Mapping[str, Any]]
                 ) -> list[Shift]:
    """Shifts of every (month, model, version) with a reference. ``exams``: stored exam records;
    ``references``: (model id, version) → the pack's ``validation.drift``."""
    groups: dict[tuple[str, str, str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for exam in exams:
        step, metrics = first_step(exam.get("result") or {})
        if not step or exam.get("demo"):
            continue
        key = (str(step.get("model")), str(step.get("version")))
        if key in references:
            groups[(str(exam.get("created_at", ""))[:7], str(exam.get("analysis")), *key)].append((step, metrics))
    out = []
    for (month, analysis, model, version), items in sorted(groups.items()):
        ref = references[(model, version)]
        shift = Shift(analysis, model, version, month, len(items))
        classes = ref["classes"]
        for name, feature in ref["features"].items():
            values = np.asarray([_value(name, step, metrics, classes) for step, metrics in items], np.float64)
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            counts = np.bincount(_bins(values, feature["edges"]), minlength=len(feature["shares"]))
            shift.psi[name] = float(psi(counts, feature["shares"]))
            shift.thresholds[name] = threshold(ref, name, len(values))
        out.append(shift)
    return out


def _value(name: str, step: Mapping[str, Any], metrics: Mapping[str, Any], classes: Sequence[str]) -> float:
    if name == "top_class":
        return float(classes.index(step["top"])) if step.get("top") in classes else math.nan
    if name == "confidence":
        value = step.get("confidence")
        return float(value) if isinstance(value, (int, float)) else math.nan
    value = _quality_value(name, metrics)
    return math.nan if value is None else value
