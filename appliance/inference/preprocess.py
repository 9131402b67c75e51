"""The training-time evaluation transform, in NumPy and Pillow (no torch on the box).

It reproduces ``export.transforms.eval_transform`` step by step — torchvision's
``Resize(resize)`` on a PIL image (Pillow bilinear, which antialiases), ``CenterCrop(size)``
with torchvision's rounding, ``ToTensor`` (/255) and ``Normalize(mean, std)`` in float32 —
so the appliance feeds the network what it was trained and validated on. The parity test
(tests/test_inference_preprocess.py) holds it to 1e-5 on real images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .pack import InputSpec


def resized_size(width: int, height: int, spec: InputSpec) -> tuple[int, int]:
    """The (width, height) torchvision's Resize gives a PIL image of that size."""
    if spec.policy == "resize_exact":
        return spec.size, spec.size
    # torchvision: the short side becomes `resize`, the long side int(resize * long / short).
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.resize, int(spec.resize * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The crop box (left, top, right, bottom) of torchvision's CenterCrop, which rounds half
    to even through Python's round(); it may extend past the image (padded with black)."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def crop_to_model(image: Image.Image, spec: InputSpec, *, exact: bool = True) -> Image.Image:
    """The RGB image the network sees, before scaling and normalisation (size × size).

    ``exact=False`` resizes only the part of the image that the centre crop keeps (Pillow's
    ``box``), a third less work for a big photo: the same filter at the same positions, but
    the box's float coordinates move a few pixels by one grey level (about 1 in 10,000), so it
    is used only where the image is already an approximation (a JPEG decoded at reduced
    scale, whose whole effect bench/bench_imageio.py measures).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    target = resized_size(image.width, image.height, spec)
    if not exact and target != image.size and min(target) >= spec.size:
        left, top, right, bottom = center_crop_box(*target, spec.size)
        sx, sy = image.width / target[0], image.height / target[1]
        return image.resize((spec.size, spec.size), Image.Resampling.BILINEAR,
                            box=(left * sx, top * sy, right * sx, bottom * sy))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
    if image.size == (spec.size, spec.size):
        return image
    if image.width < spec.size or image.height < spec.size:
        return _pad_then_crop(image, spec.size)
    return image.crop(center_crop_box(image.width, image.height, spec.size))


def _pad_then_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision pads a too-small image with zeros (left/top get the smaller half) before
    cropping; only reachable with `resize_exact` smaller than size, kept for exactness."""
    pad_w, pad_h = max(0, size - image.width), max(0, size - image.height)
    canvas = Image.new("RGB", (image.width + pad_w, image.height + pad_h))
    canvas.paste(image, (pad_w // 2, pad_h // 2))
    return canvas.crop(center_crop_box(canvas.width, canvas.height, size))


def normalise(crop: Image.Image, spec: InputSpec) -> np.ndarray:
    """HWC uint8 → 1×3×H×W float32: /255 then (x - mean) / std, in float32 like torch.

    A pixel has 256 possible values per channel, so each channel is one table lookup into
    the same float32 arithmetic done once per value: the identical numbers, one pass.
    """
    planes = np.ascontiguousarray(np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1))  # CHW, 1 byte each
    tables = _normalise_tables(tuple(spec.mean), tuple(spec.std))
    out = np.empty((1,) + planes.shape, dtype=np.float32)
    for channel in range(3):
        np.take(tables[channel], planes[channel], out=out[0, channel])
    return out


@lru_cache(maxsize=16)
def _normalise_tables(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: ((v / 255) - mean) / std for every 8-bit value v, per channel."""
    levels = np.arange(256, dtype=np.float32)[np.newaxis, :] / np.float32(255.0)
    tables = (levels - np.asarray(mean, dtype=np.float32)[:, np.newaxis]) / np.asarray(std, dtype=np.float32)[:, np.newaxis]
    tables.setflags(write=False)
    return tables


def preprocess(image: Image.Image, spec: InputSpec, *, exact: bool = True) -> np.ndarray:
    """An RGB PIL image → the network's input tensor (1×3×size×size float32); ``exact`` as
    in `crop_to_model`."""
    return normalise(crop_to_model(image, spec, exact=exact), spec)
