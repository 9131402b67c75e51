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


def fitted_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int] | None:
    """The size that fits width × height inside the box keeping the aspect ratio, or None when
    it fits already (frames are never scaled up)."""
    scale = min(max_width / width, max_height / height)
    if scale >= 1:
        return None
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_within(frame: "np.ndarray", width: int, height: int) -> "np.ndarray":
    """Scale ``frame`` down (never up) to fit inside width × height, keeping its aspect ratio."""
    import numpy as np
    from PIL import Image

    size = fitted_size(frame.shape[1], frame.shape[0], width, height)
    if size is None:
        return frame
    # reducing_gap: a cheap integer pre-shrink before the filter; visually the same for a preview.
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR, reducing_gap=2.0))


def encode_jpeg(frame: "np.ndarray", quality: int = PREVIEW_QUALITY) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()
