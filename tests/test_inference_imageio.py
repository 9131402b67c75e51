"""Safe decoding: every bad upload is a clear BadImage, every odd but valid image comes out
upright, 8-bit RGB, with the colours a person would see."""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from appliance.errors import BadImage
from appliance.inference.imageio import decode, load_image

LIMIT = 60_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 96, h: int = 64) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 128, np.float32)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width×height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"%PDF-1.7\n1 0 obj<<>>endobj\n", "not an image"),
    (b"hello, this is a text file\n" * 20, "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS would run Ghostscript
])
def test_non_images_are_refused_with_a_sentence(data, words):
    with pytest.raises(BadImage) as err:
        load_image(data, LIMIT)
    assert words in err.value.message and err.value.hint


def test_truncated_jpeg_is_refused_not_half_grey():
    data = encode(gradient(640, 480), "JPEG", quality=90)
    with pytest.raises(BadImage) as err:
        load_image(data[: len(data) // 2], LIMIT)
    assert "incomplete" in err.value.message


def test_truncated_png_is_refused():
    data = encode(Image.effect_noise((300, 300), 60).convert("RGB"), "PNG")
    with pytest.raises(BadImage) as err:
        load_image(data[: len(data) // 3], LIMIT)
    assert "incomplete" in err.value.message or "damaged" in err.value.message


def test_garbage_inside_a_jpeg_is_a_clear_error():
    data = bytearray(encode(gradient(320, 240), "JPEG"))
    data[200:2000] = bytes(1800)      # scan data wiped after the header
    data[2:4] = b"\xff\xc0"           # and a broken marker where the APP0 was
    with pytest.raises(BadImage):
        load_image(bytes(data), LIMIT)


def test_decompression_bomb_is_refused_from_the_header_alone():
    bomb = png_claiming(50_000, 50_000)            # 2.5 gigapixels, 100 bytes of file
    assert len(bomb) < 200
    with pytest.raises(BadImage) as err:
        load_image(bomb, LIMIT)
    assert "too large" in err.value.message


def test_the_pixel_limit_is_the_configured_one():
    data = encode(gradient(400, 300), "PNG")
    assert load_image(data, 120_000).size == (400, 300)
    with pytest.raises(BadImage, match="too large"):
        load_image(data, 119_999)


def test_missing_file_and_folder_are_user_errors(tmp_path):
    with pytest.raises(BadImage, match="does not exist"):
        load_image(tmp_path / "nope.jpg", LIMIT)
    with pytest.raises(BadImage, match="folder"):
        load_image(tmp_path, LIMIT)


def test_cmyk_jpeg_becomes_rgb_with_the_same_colours():
    rgb = gradient()
    data = encode(rgb.convert("CMYK"), "JPEG", quality=95)
    out = load_image(data, LIMIT)
    assert out.mode == "RGB" and out.size == rgb.size
    assert np.abs(np.asarray(out, np.int16) - np.asarray(rgb, np.int16)).mean() < 6


def test_16_bit_greyscale_is_scaled_not_clipped_to_white():
    ramp = (np.linspace(0, 65535, 128 * 32).reshape(32, 128)).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(load_image(data, LIMIT))
    assert out.shape == (32, 128, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert 100 < out[16, 64, 0] < 155               # mid-grey stays mid-grey


def test_palette_with_transparency_and_alpha_sit_on_white():
    rgba = Image.new("RGBA", (40, 20), (200, 30, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 20))        # left half fully transparent
    palette = Image.new("P", (40, 20), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30])
    palette.paste(0, (0, 0, 20, 20))                  # index 0 is the transparent one
    cases = ((encode(rgba, "PNG"), "RGBA"), (encode(rgba.convert("LA"), "PNG"), "LA"),
             (encode(palette, "PNG", transparency=0), "P"))
    for data, mode in cases:
        out = np.asarray(load_image(data, LIMIT))
        assert out.shape == (20, 40, 3)
        assert (out[:, :20] == 255).all(), f"{mode} transparency is not white"
        assert (out[:, 30] != 255).any()
    with pytest.raises(BadImage, match="GIF"):       # not in the one format table (256 colours)
        load_image(encode(palette, "GIF", transparency=0), LIMIT)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_imageops(orientation):
    img = gradient(90, 60)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    decoded = decode(data, LIMIT)
    assert decoded.image.size == expected.size
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))
    assert (decoded.width, decoded.height) == expected.size


def test_broken_exif_is_ignored_not_fatal():
    img = gradient(80, 60)
    data = encode(img, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # Pillow warns "Corrupt EXIF data"
        assert load_image(data, LIMIT).size == (80, 60)


def test_decoded_facts_describe_the_file():
    data = encode(gradient(300, 200), "PNG")
    d = decode(data, LIMIT)
    assert d.info()["width"] == 300 and d.info()["height"] == 200 and d.info()["format"] == "PNG"
    import hashlib
    assert d.sha256 == hashlib.sha256(data).hexdigest() and d.data == data and d.reduced == 1


def test_fast_jpeg_decode_keeps_the_short_side_it_was_asked_for():
    data = encode(gradient(2592, 1936), "JPEG", quality=90)
    full = decode(data, LIMIT)
    fast = decode(data, LIMIT, min_short_side=512)
    assert full.image.size == (2592, 1936) and full.reduced == 1
    assert fast.reduced == 2 and fast.image.size == (1296, 968)
    assert (fast.width, fast.height) == (2592, 1936)      # the file's size is still reported
    tiny_target = decode(data, LIMIT, min_short_side=200)
    assert tiny_target.reduced == 8 and min(tiny_target.image.size) >= 200
    # PNG and small JPEGs decode in full whatever is asked.
    assert decode(encode(gradient(2000, 1500), "PNG"), LIMIT, min_short_side=200).reduced == 1
    assert decode(encode(gradient(300, 300), "JPEG"), LIMIT, min_short_side=256).reduced == 1


def test_a_pil_image_is_accepted_as_pixels():
    d = decode(gradient(50, 40).convert("L"), LIMIT)
    assert d.image.mode == "RGB" and d.sha256 is None and (d.width, d.height) == (50, 40)


def test_images_up_to_the_working_size_decode_exactly_and_bigger_ones_are_reduced_to_it():
    from appliance.inference.imageio import probe
    small = encode(gradient(1200, 900), "PNG")
    assert np.array_equal(np.asarray(decode(small, LIMIT, working_pixels=1_080_000).image),
                          np.asarray(decode(small, LIMIT).image))          # 1.08 Mpx: untouched
    big = encode(gradient(3000, 2000), "PNG")
    reduced = decode(big, LIMIT, working_pixels=1_000_000)
    assert reduced.image.width * reduced.image.height <= 1_000_000 and reduced.reduced == 3
    assert (reduced.width, reduced.height, reduced.nbytes) == (3000, 2000, len(big))   # the file's facts
    jpeg = decode(encode(gradient(3000, 2000), "JPEG", quality=90), LIMIT, working_pixels=1_000_000)
    assert jpeg.image.size == (750, 500) and jpeg.reduced == 4            # scaled while decoding
    # Palette and 16-bit images are averaged as what they show.
    palette = decode(encode(gradient(3000, 2000).quantize(64), "PNG"), LIMIT, working_pixels=1_000_000)
    assert palette.image.mode == "RGB" and palette.reduced == 3
    # What decoding will cost is known from the header, before any pixel is decoded.
    assert probe(big, LIMIT, working_pixels=1_000_000).memory_bytes() < probe(big, LIMIT).memory_bytes()
    assert probe(big, LIMIT).memory_bytes() >= 3000 * 2000 * 4


def test_the_preview_is_the_thumbnail_of_the_image_without_a_full_copy():
    from appliance.inference.prepared import preview_jpeg, thumbnail_size
    for size in ((2592, 1936), (1936, 2592), (1000, 1000), (700, 460), (4001, 3)):
        expected = Image.new("RGB", size)
        expected.thumbnail((1024, 1024))
        assert thumbnail_size(size, 1024) == expected.size
    image = gradient(2592, 1936)
    old = image.copy()
    old.thumbnail((1024, 1024))
    buf = io.BytesIO()
    old.save(buf, "JPEG", quality=85)
    assert preview_jpeg(image) == buf.getvalue()
