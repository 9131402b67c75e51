"""The image transforms of training and evaluation.

The training augmentation is ``augment.py`` (on batches of tensors, shared with the GPU recipe).

``eval_transform(input_spec)`` is the contract with the appliance: the box reproduces it
in NumPy/Pillow (``appliance.inference.preprocess``) and a test holds the two equal to 1e-5
on real images. Keep this module cheap to import (torchvision is imported inside the
functions) and change the evaluation transform only together with the appliance's.

Input spec (the ``input`` object of a pack manifest)::

    {"size": 224, "resize": 256, "policy": "resize_shorter_center_crop",
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Policies:
- ``resize_shorter_center_crop``: resize the shorter side to ``resize`` (bilinear, antialiased,
  on the PIL image), cut the central ``size``×``size`` square.
- ``resize_exact``: squeeze the whole image to ``size``×``size`` (aspect not kept, nothing cut;
  ``resize`` is not used).

Both start by turning the image upright from its EXIF orientation and converting it to RGB
with the appliance's own ``to_rgb`` (transparency flattened onto white, 16-bit and float images
scaled by their value range): a model must be trained on the pixels the box will show it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageOps

# The box's conversion, not Pillow's convert("RGB") (which drops alpha and clips 16-bit data);
# torch-free, like everything under appliance/.
from appliance.inference.imageio import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
POLICIES = ("resize_shorter_center_crop", "resize_exact")


def input_spec(size: int = DEFAULT_SIZE, resize: int | None = None,
               policy: str = "resize_shorter_center_crop",
               mean: tuple[float, float, float] = IMAGENET_MEAN,
               std: tuple[float, float, float] = IMAGENET_STD) -> dict[str, Any]:
    """A manifest ``input`` object; ``resize`` defaults to the ImageNet ratio 256/224 of ``size``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}")
    if resize is None:
        resize = round(size * 256 / 224)
    if size <= 0 or resize < size:
        raise ValueError(f"invalid input size {size} / resize {resize}")
    return {"size": int(size), "resize": int(resize), "policy": policy,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _spec(spec: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    """Accept a manifest dict, an ``appliance.inference.pack.InputSpec`` or None (defaults)."""
    if spec is None:
        return input_spec()
    if not isinstance(spec, Mapping):
        spec = {k: getattr(spec, k) for k in ("size", "resize", "policy", "mean", "std")}
    return input_spec(int(spec["size"]), int(spec["resize"]), str(spec["policy"]),
                      tuple(spec["mean"]), tuple(spec["std"]))


def upright_rgb(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, then convert to RGB exactly as the appliance's decoder does."""
    return to_rgb(ImageOps.exif_transpose(image))


def eval_transform(spec: Mapping[str, Any] | Any | None = None):
    """PIL image → normalised float tensor (3×size×size): the appliance's preprocessing."""
    from torchvision import transforms as T

    s = _spec(spec)
    if s["policy"] == "resize_shorter_center_crop":
        geometry = [T.Resize(s["resize"], interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                    T.CenterCrop(s["size"])]
    else:
        geometry = [T.Resize((s["size"], s["size"]), interpolation=T.InterpolationMode.BILINEAR,
                             antialias=True)]
    return T.Compose([T.Lambda(upright_rgb), *geometry, T.ToTensor(),
                      T.Normalize(s["mean"], s["std"])])


def load_tensor(path, spec: Mapping[str, Any] | Any | None = None):
    """Open an image file and apply the evaluation transform (a 3×H×W tensor)."""
    with Image.open(path) as im:
        return eval_transform(spec)(im)
