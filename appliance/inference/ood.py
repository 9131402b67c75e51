"""The out-of-scope gate: does this image look like the images the model was trained on?

A classifier always answers with one of its classes, even for a colposcopy photo sent to a
histopathology model, a blank slide or a photo of a hand. The gate flags such images
instead of letting them pass as a diagnosis. It compares two descriptions of the image
with their distribution on the model's training images:

- the network's own view: the last feature map averaged over space (``features`` output,
  F = 2048 for ResNet152), scored by a Mahalanobis distance under a probabilistic-PCA model
  of the training features (Tipping & Bishop 1999: ``k`` principal directions with their own
  variances, one shared variance for the rest; exact, invertible and small to store even
  when there are fewer training images than feature channels);
- cheap appearance statistics of the preprocessed image (colour: channel means and
  log-spreads, saturation; texture: mean grey-level gradient), scored by a Mahalanobis
  distance with their full covariance: stains, tissue against single cells, blank frames
  and skin look different here even where the network is unsure.

Each distance has a threshold chosen on validation images at a stated false-alarm rate
(``bccdms-export evaluate`` fits and measures it, see ``export/ood.py``). The reported
``score`` is the larger of the two distances divided by its threshold: 1.0 is the border,
above it the image is flagged. An (almost) uniform frame is flagged as ``blank`` whatever
its distances: there is nothing on it to classify.

The pack carries the statistics as the model's ``ood`` file (``.npz``, format 1)::

    version            1
    feature_mean       F            mean pooled feature of the training images
    feature_components k×F          principal directions (orthonormal rows)
    feature_variances  k            variance along each direction
    residual_variance  ()           variance of every other direction
    feature_threshold  ()           squared distance at the chosen false-alarm rate
    appearance_mean      D            mean appearance statistics (``appearance_statistics``)
    appearance_precision D×D          inverse covariance of the appearance statistics
    appearance_threshold ()           squared distance at the chosen false-alarm rate

NumPy only: this runs on the box for every image (a k×F product, microseconds).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1
# An image whose every channel varies less than this (on a 0-1 scale, ~2.5 grey levels) is blank.
BLANK_SPREAD = 0.01
# Spreads are compared on a log scale; the floor keeps a blank frame finite.
_SPREAD_FLOOR = 1e-3
APPEARANCE_STATISTICS = ("mean_r", "mean_g", "mean_b", "log_spread_r", "log_spread_g", "log_spread_b",
                         "saturation_mean", "saturation_spread", "log_gradient")
_SPREADS = slice(3, 6)        # the log_spread_* columns of APPEARANCE_STATISTICS
_ARRAYS = ("feature_mean", "feature_components", "feature_variances", "residual_variance", "feature_threshold",
           "appearance_mean", "appearance_precision", "appearance_threshold")


def not_assessed() -> dict:
    """The answer when a model has no gate statistics: not flagged, and no made-up score."""
    return {"flagged": False, "score": None, "reason": None, "assessed": False}


def pooled_features(features: np.ndarray) -> np.ndarray:
    """Spatial mean of feature maps: (F, h, w) → (F,), or (N, F, h, w) → (N, F)."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=(-2, -1))


def appearance_statistics(tensor: np.ndarray, mean, std) -> np.ndarray:
    """Appearance statistics of preprocessed images (normalised N×3×H×W or 3×H×W): N×9 or 9,
    in the order of ``APPEARANCE_STATISTICS``.

    The normalisation is undone first, so the numbers are on the 0-1 RGB scale of the
    network's input crop (the same pixels the features come from). The gradient is the mean
    absolute difference of neighbouring grey levels: dense tissue against a single cell on a
    smooth background.
    """
    x = np.asarray(tensor, np.float64)
    single = x.ndim == 3
    if single:
        x = x[None]
    rgb = x * np.asarray(std, np.float64).reshape(1, 3, 1, 1) + np.asarray(mean, np.float64).reshape(1, 3, 1, 1)
    rgb = np.clip(rgb, 0.0, 1.0)
    flat = rgb.reshape(len(rgb), 3, -1)
    saturation = flat.max(axis=1) - flat.min(axis=1)
    grey = rgb.mean(axis=1)
    gradient = (np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)))
    stats = np.concatenate([flat.mean(axis=2), np.log(flat.std(axis=2) + _SPREAD_FLOOR),
                            saturation.mean(axis=1, keepdims=True), saturation.std(axis=1, keepdims=True),
                            np.log(gradient + _SPREAD_FLOOR)[:, None]], axis=1)
    return stats[0] if single else stats


def is_blank(appearance: np.ndarray) -> np.ndarray | bool:
    """Whether the appearance statistics describe an (almost) uniform frame."""
    spreads = np.exp(np.asarray(appearance)[..., _SPREADS]) - _SPREAD_FLOOR
    return spreads.max(axis=-1) < BLANK_SPREAD


@dataclass(frozen=True)
class Gate:
    feature_mean: np.ndarray
    feature_components: np.ndarray
    feature_variances: np.ndarray
    residual_variance: float
    feature_threshold: float
    appearance_mean: np.ndarray
    appearance_precision: np.ndarray
    appearance_threshold: float

    # -- the two distances (batch: rows are images) -------------------------------------------
    def feature_distance(self, pooled: np.ndarray) -> np.ndarray:
        """Squared PPCA Mahalanobis distance of pooled features to the training distribution."""
        centred = np.atleast_2d(np.asarray(pooled, np.float64)) - self.feature_mean
        projected = centred @ self.feature_components.T
        inside = (projected ** 2 / self.feature_variances).sum(axis=1)
        outside = np.maximum((centred ** 2).sum(axis=1) - (projected ** 2).sum(axis=1), 0.0)
        return inside + outside / self.residual_variance

    def appearance_distance(self, appearance: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of appearance statistics to the training images'."""
        centred = np.atleast_2d(np.asarray(appearance, np.float64)) - self.appearance_mean
        return np.einsum("ni,ij,nj->n", centred, self.appearance_precision, centred)

    def judge(self, pooled: np.ndarray, appearance: np.ndarray) -> dict[str, np.ndarray]:
        """Per image: ``score`` (max distance / threshold), ``flagged`` and ``reason``."""
        by_features = self.feature_distance(pooled) / self.feature_threshold
        by_appearance = self.appearance_distance(appearance) / self.appearance_threshold
        blank = np.atleast_1d(is_blank(appearance))
        score = np.maximum(by_features, by_appearance)
        reason = np.where(blank, "blank", np.where(score < 1.0, "", np.where(by_features >= by_appearance,
                                                                                "features", "appearance")))
        return {"score": score, "flagged": blank | (score >= 1.0), "reason": reason,
                "feature_score": by_features, "appearance_score": by_appearance}

    def assess(self, features: np.ndarray, tensor: np.ndarray, input_spec) -> dict:
        """The result JSON's ``out_of_scope`` for one image: its (F, h, w) features and its
        preprocessed 1×3×H×W (or 3×H×W) tensor."""
        image = np.asarray(tensor)
        appearance = appearance_statistics(image[0] if image.ndim == 4 else image, input_spec.mean, input_spec.std)
        verdict = self.judge(pooled_features(features)[None], appearance[None])
        flagged = bool(verdict["flagged"][0])
        return {"flagged": flagged, "score": round(float(verdict["score"][0]), 3),
                "reason": str(verdict["reason"][0]) if flagged else None, "assessed": True}

    # -- the pack file -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        # The k×F directions in float32 (half the bytes; distances need no more); the rest in float64.
        np.savez(buf, version=np.int64(FORMAT_VERSION),
                 **{name: np.asarray(getattr(self, name), np.float32 if name.startswith("feature_c") else np.float64)
                    for name in _ARRAYS})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Gate":
        """Read a pack's ``ood`` file; ``ValueError`` when it is not one this software understands."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                version = int(npz["version"])
                arrays = {name: np.asarray(npz[name], np.float64) for name in _ARRAYS if name in npz}
        except (KeyError, OSError, EOFError, ValueError) as exc:
            raise ValueError(f"not an out-of-scope statistics file ({type(exc).__name__})") from None
        if version != FORMAT_VERSION:
            raise ValueError(f"out-of-scope statistics of format {version}, this software reads format {FORMAT_VERSION}")
        if set(arrays) != set(_ARRAYS):
            raise ValueError(f"out-of-scope statistics without {', '.join(sorted(set(_ARRAYS) - set(arrays)))}")
        gate = cls(**{name: (float(v) if v.ndim == 0 else v) for name, v in arrays.items()})
        gate._check()
        return gate

    def _check(self) -> None:
        k, f = self.feature_components.shape
        d = len(APPEARANCE_STATISTICS)
        if (self.feature_mean.shape != (f,) or self.feature_variances.shape != (k,)
                or self.appearance_mean.shape != (d,) or self.appearance_precision.shape != (d, d)
                or min(self.residual_variance, self.feature_threshold, self.appearance_threshold) <= 0
                or not np.all(self.feature_variances > 0)):
            raise ValueError("out-of-scope statistics with inconsistent shapes or non-positive variances")
