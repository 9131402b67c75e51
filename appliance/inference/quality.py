"""The image-quality gate: is this image good enough to classify, and if not, what to do.

Cheap checks on a small grey copy (long side 512 px, about what the network sees):
blur (variance of the Laplacian), too dark, too bright, no contrast, too small. Warnings
do not block a result; they tell the nurse to retake before trusting it.

Thresholds are per image domain, calibrated on the real sample images in
``../shared/datasets`` (every image there passes; the same images blurred with a Gaussian
of radius 4 fail): H&E slides are sharp and often show white glass, single-cell Pap
crops are smooth by nature, colposcopy photos are never mostly white.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..catalogue import COLPOSCOPY, CYTOLOGY, HISTOPATHOLOGY, N_

ANALYSIS_SIDE = 512


@dataclass(frozen=True)
class Thresholds:
    min_sharpness: float        # variance of the Laplacian at ANALYSIS_SIDE
    max_bright_fraction: float  # share of near-white pixels (>= 247)
    max_mean: float
    min_mean: float = 40.0
    max_dark_fraction: float = 0.5   # share of near-black pixels (<= 8)
    min_contrast: float = 6.0        # standard deviation of grey levels
    min_short_side: int = 224


THRESHOLDS = {
    # BreakHis: sharpness 35..7200, up to 60 % white glass at 40X.
    HISTOPATHOLOGY: Thresholds(min_sharpness=20.0, max_bright_fraction=0.8, max_mean=240.0),
    # Herlev single cells: sharpness 3.5..140 (smooth cytoplasm), 200-px crops.
    CYTOLOGY: Thresholds(min_sharpness=2.5, max_bright_fraction=0.8, max_mean=240.0, min_short_side=128),
    # IARC colposcopy photos: sharpness 150..3000, at most 11 % white (specular glare).
    COLPOSCOPY: Thresholds(min_sharpness=40.0, max_bright_fraction=0.3, max_mean=220.0),
}
GENERIC = Thresholds(min_sharpness=2.5, max_bright_fraction=0.8, max_mean=240.0)

# The sentences a nurse reads: what is wrong, then what to do. Marked for translation.
MESSAGES = {
    "blur": N_("The image is blurred. Refocus the microscope and capture again."),
    "blur_photo": N_("The photo is blurred. Hold the phone steady, focus on the cervix and take it again."),
    "too_dark": N_("The image is too dark. Increase the light (or open the diaphragm) and capture again."),
    "too_bright": N_("The image is too bright and washed out. Reduce the light or the exposure and capture again."),
    "low_contrast": N_("The image shows almost nothing. Check that the sample is in view and in focus, "
                       "then capture again."),
    "too_small": N_("The image is too small for a reliable result. Capture it at the camera's full resolution."),
}


@dataclass
class QualityReport:
    ok: bool
    warnings: list[dict] = field(default_factory=list)   # [{"code", "message"}]
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"ok": self.ok, "warnings": [dict(w) for w in self.warnings], "metrics": dict(self.metrics)}


def grey_small(image: Image.Image, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """8-bit grey levels of a copy whose long side is at most ``side`` (box filter: fast, no ringing)."""
    grey = image.convert("L") if image.mode != "L" else image
    scale = side / max(grey.size)
    if scale < 1:
        target = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        # Whole-pixel averaging first (cheap), then the box filter for the rest of the way.
        grey = grey.resize(target, Image.Resampling.BOX, reducing_gap=2.0)
    return np.asarray(grey, dtype=np.uint8)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when edges are soft (out of focus)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    g = grey.astype(np.float32, copy=False)
    lap = g[1:-1, :-2] + g[1:-1, 2:]          # summed in place: one temporary, not five
    lap += g[:-2, 1:-1]
    lap += g[2:, 1:-1]
    lap -= 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def measure(image: Image.Image, width: int | None = None, height: int | None = None) -> dict:
    """The numbers the gate decides on; ``width``/``height`` of the original file if known.
    Brightness, contrast and the clipped fractions come from the 256-bin histogram (one pass)."""
    grey = grey_small(image)
    counts = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    total = counts.sum()
    levels = np.arange(256, dtype=np.float64)
    mean = counts @ levels / total
    return {
        "width": int(width or image.width),
        "height": int(height or image.height),
        "sharpness": round(sharpness(grey), 2),
        "brightness": round(float(mean), 2),
        "contrast": round(float(np.sqrt(counts @ (levels - mean) ** 2 / total)), 2),
        "dark_fraction": round(float(counts[:9].sum() / total), 4),
        "bright_fraction": round(float(counts[247:].sum() / total), 4),
    }


def assess(metrics: dict, domain: str | None = None) -> QualityReport:
    t = THRESHOLDS.get(domain or "", GENERIC)
    codes = []
    if min(metrics["width"], metrics["height"]) < t.min_short_side:
        codes.append("too_small")
    # One cause at a time, light first: a dark or blank frame also measures as "blurred",
    # and telling the nurse to refocus it would send her the wrong way.
    if metrics["brightness"] < t.min_mean or metrics["dark_fraction"] > t.max_dark_fraction:
        codes.append("too_dark")
    elif metrics["brightness"] > t.max_mean or metrics["bright_fraction"] > t.max_bright_fraction:
        codes.append("too_bright")
    elif metrics["contrast"] < t.min_contrast:
        codes.append("low_contrast")
    elif metrics["sharpness"] < t.min_sharpness:
        codes.append("blur")
    warnings = [{"code": c, "message": MESSAGES["blur_photo" if c == "blur" and domain == COLPOSCOPY else c]}
                for c in codes]
    return QualityReport(ok=not warnings, warnings=warnings, metrics=dict(metrics))


def check(image: Image.Image, domain: str | None = None, *, width: int | None = None,
          height: int | None = None) -> QualityReport:
    """Measure and judge ``image`` for an image domain of the catalogue (None: generic)."""
    return assess(measure(image, width, height), domain)
