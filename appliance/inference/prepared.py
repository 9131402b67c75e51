"""One image made ready for an analysis, once: decoded, quality-checked, cropped for the models.

An upload is decoded, gated and prepared when it arrives (the kiosk shows its preview and
quality warnings at once); "Start processing" then runs the models on what was prepared, and
nothing of the image is decoded, hashed or checked a second time. What a `PreparedImage`
keeps is small whatever the file's size: the network crops (size × size RGB per input spec),
a screen-sized copy for the heatmap (`heatmap.display_image`, the very pixels `overlay` would
draw on), the preview JPEG, the quality report and the file's facts. The full decode is freed
as soon as these are made, and the file's bytes stay where they are (the draft's file on disk,
or the caller's bytes).
"""
from __future__ import annotations

import io
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from PIL import Image

from . import heatmap, quality
from .imageio import FORMATS, DecodedImage
from .pack import InputSpec
from .preprocess import crop_to_model

PREVIEW_SIDE = 1024
PREVIEW_QUALITY = 85


@dataclass(frozen=True)
class PreparedImage:
    """What one image file becomes for the models and the screen (see the module docstring)."""
    width: int                      # of the original, upright
    height: int
    format: str | None
    sha256: str | None
    nbytes: int | None              # the file's size
    reduced: int                    # the original's side / the side the crops were made from
    quality: quality.QualityReport
    crops: dict[InputSpec, Image.Image]
    display: Image.Image            # heatmap.display_image of the decoded image
    preview_jpeg: bytes | None = field(default=None, repr=False)
    timings_ms: dict = field(default_factory=dict)
    # The file's bytes when the caller keeps them in memory (the CLI saves them); None when
    # they are on disk (a kiosk draft's file) — ``source`` then says where.
    data: bytes | None = field(default=None, repr=False)
    source: Path | None = None

    @property
    def exact(self) -> bool:
        """The crops come from the full-size decode: preprocessing exactly as in training."""
        return self.reduced == 1

    @property
    def ext(self) -> str | None:
        return FORMATS[self.format][0] if self.format in FORMATS else None

    def info(self) -> dict:
        return {"sha256": self.sha256, "width": self.width, "height": self.height, "format": self.format}


def prepare(decoded: DecodedImage, specs: Iterable[InputSpec], domain: str | None, *,
            preview: bool = True, keep_bytes: bool = True, source: Path | None = None,
            report: quality.QualityReport | None = None, timings_ms: dict | None = None) -> PreparedImage:
    """The quality gate (unless its ``report`` is known), the crops for ``specs`` and the
    pictures for the screen, from one decode.

    Every step is single-threaded in Pillow or NumPy: the preview (the longest, a bicubic
    resize) runs on the other core (`beside`) while this thread gates and crops, so a 2-core box
    does it all in about the time of the preview alone.
    """
    timings = dict(timings_ms or {})
    image = decoded.image
    shown = beside(timed, preview_jpeg, image) if preview else None
    if report is None:
        report, timings["quality"] = timed(quality.check, image, domain, width=decoded.width, height=decoded.height)
    start = time.perf_counter()
    crops = {spec: crop_to_model(image, spec, exact=decoded.reduced == 1) for spec in dict.fromkeys(specs)}
    timings["preprocess"] = timings.get("preprocess", 0.0) + (time.perf_counter() - start) * 1000.0
    display = heatmap.display_image(image)
    jpeg = None
    if shown is not None:
        jpeg, timings["preview"] = shown.result()
    return PreparedImage(decoded.width, decoded.height, decoded.format, decoded.sha256, decoded.nbytes,
                         decoded.reduced, report, crops, display, jpeg, timings,
                         decoded.data if keep_bytes else None, source)


def preview_jpeg(image: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    """The image as the kiosk shows it: what ``Image.thumbnail((side, side))`` of a copy gives
    (same size, filter and reducing gap), without copying the full image first."""
    size = thumbnail_size(image.size, side)
    small = image if size == image.size else image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    small.convert("RGB").save(buf, "JPEG", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def thumbnail_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The size ``Image.thumbnail((side, side))`` gives an image of ``size`` (Pillow 10-13)."""
    width, height = size
    if side >= width and side >= height:
        return size
    aspect = width / height

    def round_aspect(number: float, key) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    if 1 >= aspect:
        return round_aspect(side * aspect, key=lambda n: abs(aspect - n / side)), side
    return side, round_aspect(side / aspect, key=lambda n: 0 if n == 0 else abs(aspect - side / n))


_side_worker: ThreadPoolExecutor | None = None
_side_worker_lock = threading.Lock()


def beside(fn, *args, **kwargs) -> Future:
    """Run ``fn`` on the one worker thread that the whole process shares for single-threaded
    work done beside a request's own (2-core boxes: one more thread is all that helps)."""
    global _side_worker
    with _side_worker_lock:
        if _side_worker is None:
            _side_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-beside")
    return _side_worker.submit(fn, *args, **kwargs)


def timed(fn, *args, **kwargs) -> tuple:
    """``fn``'s result and how long it took, in ms."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, (time.perf_counter() - start) * 1000.0


__all__ = ["PREVIEW_SIDE", "PreparedImage", "beside", "prepare", "preview_jpeg", "thumbnail_size"]
