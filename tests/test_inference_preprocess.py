"""The appliance's NumPy preprocessing equals the torch evaluation transform the models
were trained and validated with (export.transforms.eval_transform), to 1e-5, on real images."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from appliance.inference.imageio import load_image
from appliance.inference.pack import InputSpec
from appliance.inference.preprocess import center_crop_box, preprocess, resized_size

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SPEC_224 = InputSpec(224, 256, "resize_shorter_center_crop", *IMAGENET)
# Odd sizes make torchvision's int() and round-half-to-even visible.
SPEC_ODD = InputSpec(63, 73, "resize_shorter_center_crop", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
SPEC_EXACT = InputSpec(224, 224, "resize_exact", *IMAGENET)
TOLERANCE = 1e-5
PER_SPLIT = 12     # images per dataset and split, spread over the labels (manifest order)


def sample_files(datasets, dataset: str, split: str) -> list:
    with open(datasets / dataset / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    assert rows, f"{dataset} has no {split} images"
    step = max(1, len(rows) // PER_SPLIT)
    return [datasets / dataset / r["file"] for r in rows[::step]][:PER_SPLIT]


def torch_tensor(path, spec: InputSpec) -> np.ndarray:
    from export.transforms import eval_transform
    with Image.open(path) as im:
        return eval_transform(spec)(im).numpy()


@pytest.mark.parametrize("dataset", ["breakhis", "herlev", "iarc_colposcopy"])
@pytest.mark.parametrize("split", ["originals", "eval"])
def test_parity_with_the_torch_transform_on_real_images(datasets, dataset, split):
    files = sample_files(datasets, dataset, split)
    for spec in (SPEC_224, SPEC_ODD, SPEC_EXACT):
        worst = 0.0
        for path in files:
            ours = preprocess(load_image(path, 60_000_000), spec)
            theirs = torch_tensor(path, spec)
            assert ours.shape == (1,) + theirs.shape and ours.dtype == np.float32
            worst = max(worst, float(np.abs(ours[0] - theirs).max()))
        assert worst <= TOLERANCE, f"{dataset}/{split} {spec.policy} {spec.size}: max |diff| {worst:g}"


def test_parity_with_exif_rotated_and_odd_sized_images():
    rng = np.random.default_rng(7)
    for w, h, orientation in ((301, 227, 6), (227, 301, 3), (513, 257, 8), (260, 900, 1)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
        for spec in (SPEC_224, SPEC_ODD, SPEC_EXACT):
            ours = preprocess(load_image(buf.getvalue(), 60_000_000), spec)
            theirs = torch_tensor(io.BytesIO(buf.getvalue()), spec)
            assert float(np.abs(ours[0] - theirs).max()) <= TOLERANCE


def _encoded(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _unusual_images() -> dict[str, bytes]:
    """Files whose pixels Pillow's plain convert("RGB") would change differently from the box
    (alpha dropped, 16-bit data clipped): training must see what the box sees."""
    rng = np.random.default_rng(11)
    h, w = 229, 301
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    grey = rgb[..., :1]
    palette = Image.fromarray(rgb).quantize(64)
    palette.info["transparency"] = 5                 # one palette entry is see-through
    exif = Image.Exif()
    exif[0x0112] = 6                                 # stored sideways
    return {
        "RGBA": _encoded(Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), "PNG"),
        "RGBA rotated": _encoded(Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), "PNG",
                                 exif=exif.tobytes()),
        "LA": _encoded(Image.fromarray(np.concatenate([grey, alpha], 2), "LA"), "PNG"),
        "P with transparency": _encoded(palette, "PNG", transparency=5),
        "I;16 (16-bit)": _encoded(Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)), "PNG"),
        "I;16 (12-bit)": _encoded(Image.fromarray(rng.integers(0, 4096, (h, w), dtype=np.uint16)), "PNG"),
        "CMYK": _encoded(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
    }


@pytest.mark.parametrize("kind", list(_unusual_images()))
def test_parity_with_transparent_16_bit_and_cmyk_images(kind):
    data = _unusual_images()[kind]
    with Image.open(io.BytesIO(data)) as probe:          # the case really is what its name says
        assert probe.mode == kind.split()[0]
    for spec in (SPEC_224, SPEC_ODD, SPEC_EXACT):
        ours = preprocess(load_image(data, 60_000_000), spec)
        theirs = torch_tensor(io.BytesIO(data), spec)
        worst = float(np.abs(ours[0] - theirs).max())
        assert worst <= TOLERANCE, f"{kind} {spec.policy} {spec.size}: max |diff| {worst:g}"


def test_geometry_follows_torchvision_rounding():
    assert resized_size(700, 460, SPEC_224) == (389, 256)       # int(256 * 700 / 460) = 389
    assert resized_size(460, 700, SPEC_224) == (256, 389)
    assert resized_size(2592, 1936, SPEC_224) == (342, 256)
    assert resized_size(123, 77, SPEC_EXACT) == (224, 224)
    # (389 - 224) / 2 = 82.5 rounds to even: 82
    assert center_crop_box(389, 256, 224) == (82, 16, 306, 240)


def test_the_crop_only_resize_of_a_reduced_decode_is_within_one_grey_level(datasets):
    """The engine resizes only the centre crop of a JPEG decoded at reduced scale (already an
    approximation, measured in bench/bench_imageio.py); against the exact transform of the same
    pixels that moves a rare pixel by one grey level, never more."""
    files = sample_files(datasets, "iarc_colposcopy", "originals") + sample_files(datasets, "breakhis", "originals")
    differing = total = 0
    for path in files:
        img = load_image(path, 60_000_000)
        big = img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC)   # a >= 2x downscale follows
        for spec in (SPEC_224, SPEC_ODD):
            exact, cropped = preprocess(big, spec), preprocess(big, spec, exact=False)
            assert cropped.shape == exact.shape and cropped.dtype == np.float32
            assert np.abs(cropped - exact).max() <= 1 / 255 / min(spec.std) + 1e-6
            differing += int((cropped != exact).sum())
            total += exact.size
    assert differing <= total * 1e-3
