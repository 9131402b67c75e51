"""The export side of the out-of-scope gate: fit it on training images, choose its thresholds
on validation images, and measure what it catches.

The gate itself (how an image is scored on the box, and the pack file format) is
``appliance.inference.ood``; this module only makes its statistics:

- features: probabilistic PCA of the pooled training features (mean, the ``k`` leading
  directions and their variances, and the mean variance of all other directions);
- appearance: mean and covariance of ``appearance_statistics`` (colour and texture) on the
  training images, the covariance shrunk a little towards its diagonal (9 numbers from a few
  hundred images are noisy);
- thresholds: each distance's (1 - ``false_alarm``/2) quantile on the **validation** images,
  so that flagging by either of the two stays near ``false_alarm`` on images like the
  training ones (Bonferroni); ``false_alarm_cross_fitted`` measures it honestly (thresholds
  chosen on one half of the validation set, counted on the other).

Synthetic out-of-scope images (blank white/grey/black frames and a smooth skin-coloured
frame standing in for a photo of a hand) are made here; they are synthetic, and the reports
say so. NumPy and Pillow only (the GPU training script uses this module too).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from appliance.inference.ood import Gate, appearance_statistics, pooled_features

__all__ = ["Gate", "FALSE_ALARM", "fit_gate", "gate_rates", "false_alarm_cross_fitted", "synthetic_out_of_scope",
           "appearance_statistics", "pooled_features"]

FALSE_ALARM = 0.05
COMPONENTS = 64
APPEARANCE_SHRINKAGE = 0.1
_VARIANCE_FLOOR = 1e-8


def _ppca(train_pooled: np.ndarray, components: int) -> dict[str, np.ndarray | float]:
    x = np.asarray(train_pooled, np.float64)
    n, f = x.shape
    if n < 3:
        raise ValueError("the out-of-scope gate needs at least 3 training images")
    mean = x.mean(axis=0)
    _, singular, directions = np.linalg.svd(x - mean, full_matrices=False)
    variances = singular ** 2 / (n - 1)
    k = max(1, min(components, n - 2, f - 1))
    total = float(variances.sum())
    floor = max(total / f * 1e-3, _VARIANCE_FLOOR)
    residual = max((total - float(variances[:k].sum())) / (f - k), floor)
    return {"feature_mean": mean, "feature_components": directions[:k],
            "feature_variances": np.maximum(variances[:k], floor), "residual_variance": residual}


def _appearance_model(train_appearance: np.ndarray) -> dict[str, np.ndarray]:
    c = np.asarray(train_appearance, np.float64)
    covariance = np.cov(c, rowvar=False)
    shrunk = (1 - APPEARANCE_SHRINKAGE) * covariance + APPEARANCE_SHRINKAGE * np.diag(np.diag(covariance))
    shrunk += np.eye(len(shrunk)) * 1e-6
    return {"appearance_mean": c.mean(axis=0), "appearance_precision": np.linalg.inv(shrunk)}


def fit_gate(train_pooled: np.ndarray, train_appearance: np.ndarray, val_pooled: np.ndarray, val_appearance: np.ndarray,
             *, false_alarm: float = FALSE_ALARM, components: int = COMPONENTS) -> Gate:
    """Training statistics, thresholds at ``false_alarm`` on the validation images."""
    if not 0 < false_alarm < 1:
        raise ValueError("the false-alarm rate must be between 0 and 1")
    unscaled = Gate(**_ppca(train_pooled, components), **_appearance_model(train_appearance),
                    feature_threshold=1.0, appearance_threshold=1.0)
    return _with_thresholds(unscaled, val_pooled, val_appearance, false_alarm)


def _with_thresholds(gate: Gate, pooled: np.ndarray, appearance: np.ndarray, false_alarm: float) -> Gate:
    quantile = 1 - false_alarm / 2
    feature = float(np.quantile(gate.feature_distance(pooled), quantile))
    look = float(np.quantile(gate.appearance_distance(appearance), quantile))
    fields = {name: getattr(gate, name) for name in gate.__dataclass_fields__}
    fields.update(feature_threshold=max(feature, _VARIANCE_FLOOR), appearance_threshold=max(look, _VARIANCE_FLOOR))
    return Gate(**fields)


def gate_rates(gate: Gate, pooled: np.ndarray, appearance: np.ndarray) -> dict[str, Any]:
    """How many of these images the gate flags, and why."""
    verdict = gate.judge(pooled, appearance)
    n = len(verdict["flagged"])
    reasons = {r: int((verdict["reason"] == r).sum()) for r in ("features", "appearance", "blank")}
    return {"images": n, "flagged": int(verdict["flagged"].sum()),
            "rate": float(verdict["flagged"].mean()) if n else None, "reasons": reasons,
            "median_score": float(np.median(verdict["score"])) if n else None}


def false_alarm_cross_fitted(train_pooled, train_appearance, val_pooled, val_appearance, *,
                             false_alarm: float = FALSE_ALARM, components: int = COMPONENTS,
                             seed: int = 0) -> float | None:
    """The false-alarm rate on validation images whose thresholds were chosen on the other half."""
    val_pooled, val_appearance = np.asarray(val_pooled), np.asarray(val_appearance)
    if len(val_pooled) < 4:
        return None
    half = np.random.default_rng(seed).permutation(len(val_pooled)) < len(val_pooled) // 2
    base = Gate(**_ppca(train_pooled, components), **_appearance_model(train_appearance),
                feature_threshold=1.0, appearance_threshold=1.0)
    flagged = 0
    for chosen in (half, ~half):
        gate = _with_thresholds(base, val_pooled[chosen], val_appearance[chosen], false_alarm)
        flagged += int(gate.judge(val_pooled[~chosen], val_appearance[~chosen])["flagged"].sum())
    return flagged / len(val_pooled)


def synthetic_out_of_scope(side: int = 320, seed: int = 0) -> dict[str, list]:
    """Synthetic images no model should classify, as PIL images by kind (3 of each).

    ``blank_white``/``blank_grey``/``blank_black``: empty frames with a little sensor noise (an
    empty slide, a covered lens). ``skin``: a smooth, softly shaded skin-coloured frame in three
    tones, standing in for a photo of a hand — synthetic, not a photograph.
    """
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    yy, xx = np.mgrid[0:side, 0:side] / side

    def frame(rgb, noise: float, shading: float):
        light = 1 + shading * (0.5 - np.hypot(xx - 0.4, yy - 0.45))     # a soft highlight off-centre
        pixels = np.asarray(rgb, np.float64)[None, None, :] * light[..., None]
        pixels = pixels + rng.normal(0, noise, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        return image.filter(ImageFilter.GaussianBlur(1.5))

    out["blank_white"] = [frame((v, v, v - 3), 1.5, 0.02) for v in (246, 238, 230)]
    out["blank_grey"] = [frame((v, v, v), 1.5, 0.03) for v in (160, 128, 96)]
    out["blank_black"] = [frame((v, v, v), 1.0, 0.0) for v in (2, 8, 16)]
    out["skin"] = [frame(rgb, 3.0, 0.35) for rgb in ((224, 172, 138), (198, 134, 96), (141, 85, 54))]
    return out
