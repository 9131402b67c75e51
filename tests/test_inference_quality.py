"""The quality gate passes the real sample images of each domain and tells the nurse what
to do about blurred, dark, washed-out, blank and too-small images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from appliance.catalogue import COLPOSCOPY, CYTOLOGY, HISTOPATHOLOGY
from appliance.inference import quality

DOMAINS = {"breakhis": HISTOPATHOLOGY, "herlev": CYTOLOGY, "iarc_colposcopy": COLPOSCOPY}


def images(datasets, dataset: str, limit: int) -> list[Image.Image]:
    files = sorted((datasets / dataset / "eval").glob("*/*"))[::7][:limit]
    files += sorted((datasets / dataset / "originals").glob("*/*"))[:4]
    return [Image.open(f).convert("RGB") for f in files]


@pytest.mark.parametrize("dataset", list(DOMAINS))
def test_real_images_pass_and_their_blurred_copies_do_not(datasets, dataset):
    domain = DOMAINS[dataset]
    for img in images(datasets, dataset, 20):
        report = quality.check(img, domain)
        assert report.ok, f"{dataset}: {report.warnings} {report.metrics}"
        blurred = quality.check(img.filter(ImageFilter.GaussianBlur(4)), domain)
        assert "blur" in [w["code"] for w in blurred.warnings], blurred.metrics


def test_dark_bright_blank_and_small_images_get_advice(datasets):
    img = images(datasets, "breakhis", 1)[0]
    dark = quality.check(ImageEnhance.Brightness(img).enhance(0.15), HISTOPATHOLOGY)
    bright = quality.check(ImageEnhance.Brightness(img).enhance(3.0), HISTOPATHOLOGY)
    blank = quality.check(Image.new("RGB", (640, 480), (236, 230, 240)), HISTOPATHOLOGY)
    small = quality.check(img.resize((120, 80)), HISTOPATHOLOGY)
    assert [w["code"] for w in dark.warnings] == ["too_dark"]
    assert "too dark" in dark.warnings[0]["message"] and "capture again" in dark.warnings[0]["message"]
    assert [w["code"] for w in bright.warnings] == ["too_bright"]
    assert [w["code"] for w in blank.warnings] == ["low_contrast"]    # not "blurred": nothing is in view
    assert "too_small" in [w["code"] for w in small.warnings]
    assert not (dark.ok or bright.ok or blank.ok or small.ok)


def test_blur_advice_fits_the_capture_device(datasets):
    photo = images(datasets, "iarc_colposcopy", 1)[0].filter(ImageFilter.GaussianBlur(6))
    slide = images(datasets, "breakhis", 1)[0].filter(ImageFilter.GaussianBlur(6))
    assert "phone" in quality.check(photo, COLPOSCOPY).warnings[0]["message"]
    assert "microscope" in quality.check(slide, HISTOPATHOLOGY).warnings[0]["message"]


def test_the_original_size_decides_too_small_not_the_reduced_decode():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8))
    assert "too_small" not in [w["code"] for w in quality.check(img, HISTOPATHOLOGY, width=2592, height=1936).warnings]
    report = quality.check(img, CYTOLOGY, width=100, height=100)
    assert [w["code"] for w in report.warnings] == ["too_small"]
    assert report.metrics["width"] == 100 and set(report.to_json()) == {"ok", "warnings", "metrics"}
