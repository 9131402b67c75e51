"""One table of image formats for the whole appliance: what the image step accepts is what the
model reads and what the record store keeps. A phone's multi-picture JPEG (MPO) is stored as it
came, as a .jpg; a GIF is refused when it is attached, before anything runs."""
from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from webutil import NURSE, live_server, staffed_server, web_cfg  # noqa: F401

SLIDE = "herlev/originals/normal_superficiel"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture
def slide(datasets) -> Image.Image:
    return Image.open(sorted((datasets / SLIDE).glob("*.jpg"))[0]).convert("RGB")


@pytest.fixture
def mpo(slide) -> bytes:
    """What a phone camera with two lenses writes: a JPEG with a second picture appended (MPO)."""
    data = encoded(slide, "MPO", save_all=True, append_images=[slide.rotate(180)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    return data


@pytest.fixture
def nurse(staffed_server):
    return staffed_server.logged_in(NURSE)


def open_draft(nurse, pid: str) -> str:
    res = nurse.register_patient(pid, "Format Test")
    return nurse.new_draft(res.location.rsplit("/", 1)[-1], "pap_smear")


def test_a_phone_mpo_is_analysed_and_stored_as_it_came(staffed_server, nurse, mpo):
    draft = open_draft(nurse, "FMT-1")
    assert nurse.upload(draft, mpo, filename="IMG_0001.JPG").status == 303
    res = nurse.process(draft)
    assert res.status == 303, res.text[:500]
    exam = staffed_server.ctx.store.exams.get(res.location.rsplit("/", 1)[-1])
    sha = hashlib.sha256(mpo).hexdigest()
    assert exam["image"]["sha256"] == sha == exam["result"]["image_info"]["sha256"]
    assert exam["image"]["ext"] == "jpg"
    stored = staffed_server.ctx.store.images.path(sha)
    assert stored.suffix == ".jpg" and stored.read_bytes() == mpo


def test_a_gif_is_refused_when_it_is_attached(staffed_server, nurse, slide):
    ctx = staffed_server.ctx
    draft = open_draft(nurse, "FMT-2")
    res = nurse.upload(draft, encoded(slide, "GIF"), filename="slide.gif", content_type="image/gif")
    assert res.status == 400 and "GIF" in res.text and "JPEG" in res.text
    assert not ctx.drafts.get(draft).has_image
    assert ctx.store.exams.query()[1] == 0 and not list((ctx.cfg.data_dir / "images").rglob("*.gif"))


@pytest.mark.parametrize("fmt, options, ext", [
    ("JPEG", {}, "jpg"), ("MPO", {"save_all": True}, "jpg"), ("PNG", {}, "png"),
    ("TIFF", {}, "tif"), ("BMP", {}, "bmp"), ("WEBP", {"lossless": True}, "webp"),
])
def test_every_accepted_format_decodes_and_is_stored(cfg, slide, fmt, options, ext):
    from appliance.inference import imageio
    from appliance.store import Store
    data = encoded(slide.resize((96, 72)), fmt, **options)
    decoded = imageio.decode(data, 10**8)
    assert imageio.extension(decoded.format) == ext
    with Store.open(cfg) as store:
        assert store.images.put(data)["ext"] == ext


def test_the_image_step_offers_exactly_the_accepted_types(staffed_server, nurse):
    from appliance.inference import imageio
    page = nurse.get(f"/drafts/{open_draft(nurse, 'FMT-3')}").text
    assert f'accept="{imageio.accept_attribute()}"' in page
    assert "image/gif" not in page and "image/jpeg" in page
