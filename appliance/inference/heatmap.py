"""Class-activation heatmaps: where in the image the model found evidence for a class.

For a ResNet, logits = W · mean(features) + b, so the map of class c is
``CAM_c = ReLU(Σ_k W[c, k] · features[k])`` (Zhou et al., 2016): no gradients, just the
feature map the runtime already returned and the final layer's weights from the pack.

The map covers only the centre crop the network saw; the rest of the image is dimmed, so
nobody reads heat into a region the model never looked at.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from .pack import InputSpec
from .preprocess import center_crop_box, resized_size

OVERLAY_ALPHA = 0.45
OUTSIDE_DIM = 0.55
# The longest side of the heatmap picture (the kiosk's screen and the PDF need no more).
DISPLAY_SIDE = 1024


def class_activation_map(features: np.ndarray, weight: np.ndarray, class_index: int) -> np.ndarray:
    """(F, h, w) features and (C, F) weights → (h, w) map scaled to [0, 1]."""
    cam = np.tensordot(weight[class_index].astype(np.float32), features.astype(np.float32), axes=(0, 0))
    cam = np.maximum(cam, 0.0)
    top = float(cam.max())
    return (cam / top).astype(np.float32) if top > 0 else np.zeros_like(cam, dtype=np.float32)


def jet(values: np.ndarray) -> np.ndarray:
    """A jet-like colormap (blue → cyan → yellow → red) for values in [0, 1]; uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)[..., np.newaxis]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)   # red, green, blue peak at 3/4, 1/2, 1/4
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


# The colormap as a 256-entry palette: colouring a whole map is then one C-level lookup.
JET_PALETTE = jet(np.arange(256, dtype=np.float32) / 255.0).reshape(-1).tolist()
_DIM_TABLE = [int(v * OUTSIDE_DIM + 0.5) for v in range(256)] * 3


def crop_box_in_image(width: int, height: int, spec: InputSpec) -> tuple[float, float, float, float]:
    """Where the network's crop lies in an image of this size (its coordinates)."""
    rw, rh = resized_size(width, height, spec)
    left, top, right, bottom = center_crop_box(rw, rh, spec.size)
    sx, sy = width / rw, height / rh
    return (max(0.0, left * sx), max(0.0, top * sy), min(width, right * sx), min(height, bottom * sy))


def display_image(image: Image.Image, max_side: int = DISPLAY_SIDE) -> Image.Image:
    """The RGB image reduced by a whole factor to at most ``max_side`` px: what `overlay` draws
    on. Kept instead of the image itself, it draws the very same overlay for that ``max_side``."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    factor = math.ceil(max(img.size) / max_side)
    if factor > 1:    # a picture for the screen: whole-pixel box averaging, 10x faster than a resize
        img = img.reduce(factor)
    return img


def overlay(image: Image.Image, cam: np.ndarray, spec: InputSpec, max_side: int = DISPLAY_SIDE) -> Image.Image:
    """The image (`display_image`) with the map blended over the network's crop and the rest
    dimmed. Pillow does the pixel work (lookup tables, blend, paste): a few ms for a
    screen-sized image."""
    img = display_image(image, max_side)
    left, top, right, bottom = (round(v) for v in crop_box_in_image(img.width, img.height, spec))
    out = img.point(_DIM_TABLE)
    if right > left and bottom > top:
        region = img.crop((left, top, right, bottom))
        heat = Image.fromarray(np.asarray(cam, np.float32) * 255.0).resize(region.size, Image.Resampling.BICUBIC)
        colours = heat.convert("L")                      # clamps the bicubic overshoot to 0..255
        colours.putpalette(JET_PALETTE)
        out.paste(Image.blend(region, colours.convert("RGB"), OVERLAY_ALPHA), (left, top))
    return out


def to_png(image: Image.Image) -> bytes:
    """The overlay as an uncompressed PNG (stored deflate blocks, no row filters).

    The PNG goes to a browser on this box or its LAN, where 2 MB cost nothing, while
    compressing it would cost more than the whole cascade's pre- and post-processing
    (zlib on a 1024-px photo: ~25 ms on the target CPUs; this: ~2 ms). OpenCV's encoder is
    used because it lets us turn the row filters off; Pillow's is the fallback.
    """
    try:
        import cv2
    except ImportError:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 0,
                                             cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE])
    if not ok:
        raise RuntimeError("OpenCV could not encode the heatmap as PNG")
    return encoded.tobytes()


def load_classifier(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The pack's ``classifier`` .npz (``weight`` C×F, ``bias`` C), read without pickles."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return np.asarray(npz["weight"], dtype=np.float32), np.asarray(npz["bias"], dtype=np.float32)
