"""Synthetic textures that look roughly like the appliance's three image domains.

They are not medical images and teach a model nothing about disease. They serve two
purposes for packs built without training data (demo packs, test packs): setting the
BatchNorm running statistics of an untrained network so that its activations have sane
ranges, and calibrating INT8 quantization on inputs whose colour statistics resemble H&E
slides, Pap smears and colposcope photos rather than uniform noise.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("he", "pap", "colposcopy")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    out = []
    for _ in range(channels):
        coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float32) / 255)
    return np.stack(out, -1)


def _mix(base: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    return base * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]


def _blobs(rng, size, count, radius, elongation=1.6, blur=1.0) -> np.ndarray:
    """A soft mask of random ellipses (nuclei, cells, patches) in [0, 1]."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(count):
        x, y = rng.uniform(0, size, 2)
        r = radius * rng.uniform(0.6, 1.4)
        e = rng.uniform(1.0, elongation)
        draw.ellipse([x - r * e, y - r / e, x + r * e, y + r / e], fill=int(rng.uniform(160, 255)))
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255


def he_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Pink eosin stroma with fibres, purple hematoxylin nuclei, pale lumina."""
    stain = _smooth_noise(rng, size, 6)[..., 0]
    base = np.empty((size, size, 3), np.float32)
    base[:] = np.array([235, 175, 205], np.float32) * rng.uniform(0.9, 1.05)
    base = _mix(base, (205, 120, 175), stain * rng.uniform(0.3, 0.8))
    fibres = np.sin((np.arange(size)[None, :] * rng.uniform(0.2, 0.6)
                     + _smooth_noise(rng, size, 4)[..., 0] * 40)) * 0.5 + 0.5
    base = _mix(base, (190, 95, 150), fibres * 0.25)
    base = _mix(base, (248, 240, 245), _blobs(rng, size, int(rng.integers(1, 5)), size / 8, 2.0, size / 40))
    nuclei = _blobs(rng, size, int(rng.integers(size // 6, size // 2)), max(2.0, size / 60), 1.8, 0.8)
    base = _mix(base, (75, 45, 125), nuclei * rng.uniform(0.7, 1.0))
    return _finish(rng, base)


def pap_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Pale background, translucent cyan and pink cytoplasm, small dark nuclei."""
    base = np.empty((size, size, 3), np.float32)
    base[:] = (232, 234, 238)
    base = _mix(base, (215, 220, 230), _smooth_noise(rng, size, 5)[..., 0] * 0.5)
    for colour in ((120, 190, 200), (230, 150, 170)):
        base = _mix(base, colour, _blobs(rng, size, int(rng.integers(3, 10)), size / 9, 1.5, 1.5) * 0.6)
    base = _mix(base, (60, 50, 110), _blobs(rng, size, int(rng.integers(3, 14)), max(2.0, size / 45), 1.3, 0.7))
    return _finish(rng, base)


def colposcopy_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Red-pink mucosa, a dark os, white acetowhite patches, specular glints, dark vignette."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    radius = np.sqrt(xx ** 2 + yy ** 2)
    base = np.empty((size, size, 3), np.float32)
    base[:] = np.array([205, 95, 100], np.float32) * rng.uniform(0.85, 1.1)
    base = _mix(base, (230, 150, 150), _smooth_noise(rng, size, 7)[..., 0] * 0.6)
    base = _mix(base, (240, 225, 225), _blobs(rng, size, int(rng.integers(1, 6)), size / 10, 2.0, size / 30) * 0.8)
    os_mask = np.clip(1 - (xx / rng.uniform(0.08, 0.2)) ** 2 - (yy / 0.03) ** 2, 0, 1)
    base = _mix(base, (90, 20, 30), os_mask)
    base = _mix(base, (255, 255, 255), _blobs(rng, size, int(rng.integers(2, 12)), max(1.5, size / 120), 2.5, 0.5))
    base = base * np.clip(1.25 - radius * 1.4, 0.15, 1)[..., None]
    return _finish(rng, base)


def _finish(rng: np.random.Generator, base: np.ndarray) -> Image.Image:
    """Camera noise and a random white balance, then 8-bit RGB."""
    base = base * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 4, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


_MAKERS = {"he": he_texture, "pap": pap_texture, "colposcopy": colposcopy_texture}


def synthetic_images(count: int, size: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[Image.Image]:
    """``count`` RGB images of ``size``×``size`` pixels, cycling through ``kinds``."""
    rng = np.random.default_rng(seed)
    return [_MAKERS[kinds[i % len(kinds)]](rng, size) for i in range(count)]
