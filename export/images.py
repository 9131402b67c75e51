"""Preprocessed image batches for calibration, checks and evaluation (``eval_transform``)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from appliance import catalogue
from appliance.errors import UserError

# Synthetic texture kind for each catalogue image domain (checks when no real images are at hand).
DOMAIN_TEXTURES = {catalogue.HISTOPATHOLOGY: "he", catalogue.CYTOLOGY: "pap", catalogue.COLPOSCOPY: "colposcopy"}


def load_batch(paths: list[Path], spec) -> np.ndarray:
    """N×3×H×W float32, exactly as the appliance preprocesses (see ``transforms.eval_transform``)."""
    from PIL import Image
    from .transforms import eval_transform
    transform = eval_transform(spec)
    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                out.append(transform(im).numpy())
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UserError(f"The image {path} cannot be read ({exc}).", "Remove or replace the file.") from None
    return np.stack(out).astype(np.float32)


def batches(paths: list[Path], spec, size: int = 16) -> Iterator[np.ndarray]:
    for start in range(0, len(paths), size):
        yield load_batch(paths[start:start + size], spec)


def synthetic_batch(model_id: str, spec, count: int, seed: int = 0) -> np.ndarray:
    """Synthetic textures of the model's image domain, preprocessed like real images."""
    from .synthetic import synthetic_images
    from .transforms import eval_transform
    kind = DOMAIN_TEXTURES[catalogue.model(model_id).domain]
    transform = eval_transform(spec)
    images = synthetic_images(count, int(spec["resize"]) + 32, seed, kinds=(kind,))
    return np.stack([transform(im).numpy() for im in images]).astype(np.float32)


def recorded_split_paths(split_doc: dict | None, side: str) -> list[Path]:
    """The files of one side of a recorded split, if that dataset is still where it was."""
    if not split_doc or side not in split_doc:
        return []
    root = Path(split_doc["dataset"])
    paths = [root / rel for rel in split_doc[side]["files"]]
    return paths if paths and all(p.is_file() for p in paths) else []
