"""Frame helpers shared by the backends and the manager: scale to the preview size, encode JPEG.

Pillow does both (it is a core dependency and carries libjpeg-turbo); a 640×480 frame
encodes in a few milliseconds, which keeps the preview at 15 fps on two slow cores.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PREVIEW_QUALITY = 80      # the live view: small and quick
STILL_QUALITY = 95        # the image that gets analysed and archived: keep the detail


def fit_within(frame: "np.ndarray", width: int, height: int) -> "np.ndarray":
    """Scale ``frame`` down (never up) to fit inside width × height, keeping its aspect ratio."""
    import numpy as np
    from PIL import Image

    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    if scale >= 1:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # reducing_gap: a cheap integer pre-shrink before the filter; visually the same for a preview.
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR, reducing_gap=2.0))


def encode_jpeg(frame: "np.ndarray", quality: int = PREVIEW_QUALITY) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()
