"""Safe image decoding: whatever a camera, a phone or a USB stick hands us becomes an
upright RGB image, or a `BadImage` with a sentence a nurse can act on.

Uploads are untrusted, so the size is checked from the header before any pixel is decoded
(decompression bombs), only common photo formats are opened, and a truncated file is an
error rather than a half-grey image.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import BadImage
from ..i18n import N_, translatable

# The appliance's one table of image formats: Pillow's name -> (the record store's file
# extension, MIME type). It is what the image step offers, what is decoded and what the store
# keeps, so an image that passes the image step is never refused when it is saved. These are
# what a microscope camera, a phone or a slide scanner export produce; anything else (PDF, PSD,
# ICO, EPS — the last one runs Ghostscript, GIF — 256 colours) is refused before it is parsed.
# A phone's multi-picture JPEG (MPO) opens through the JPEG plugin; it is a JPEG whose first
# picture every reader shows, so it is kept as it came, as a .jpg.
FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "TIFF": ("tif", "image/tiff"),
    "BMP": ("bmp", "image/bmp"),
    "WEBP": ("webp", "image/webp"),
}
# The Pillow plugins allowed to open a file (the JPEG plugin opens MPO files itself).
ACCEPTED_FORMATS = tuple(fmt for fmt in FORMATS if fmt != "MPO")
_FORMAT_NAMES = "JPEG, PNG, TIFF, BMP or WebP"
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
# Background for images with transparency: a glass slide is white.
_BACKGROUND = (255, 255, 255)

# Pillow's own bomb check warns at 89 Mpx and raises at 179 Mpx; ours is stricter and
# configurable, and runs first. Partial decodes are never accepted.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class DecodedImage:
    """The upright RGB image and what we know about the file it came from."""
    image: Image.Image
    width: int              # of the original, upright (before any reduced decode)
    height: int
    format: str | None
    sha256: str | None      # of the file's bytes; None when we were handed pixels
    data: bytes | None      # the file's bytes (the store keeps them as they came)
    reduced: int = 1        # the original's side / the decoded image's side (1: full size)
    nbytes: int | None = None   # the file's size in bytes

    def info(self) -> dict:
        return {"sha256": self.sha256, "width": self.width, "height": self.height, "format": self.format}

    @property
    def ext(self) -> str | None:
        """The record store's file extension for this file ("jpg", "png", …); None for pixels."""
        return FORMATS[self.format][0] if self.format in FORMATS else None


def load_image(source: bytes | str | os.PathLike | Image.Image, max_pixels: int, *,
               min_short_side: int | None = None) -> Image.Image:
    """Decode ``source`` into an upright RGB PIL image; raise `BadImage` for anything unsafe.

    ``min_short_side``: when given and the file is a JPEG, decode it directly at a reduced
    scale (libjpeg DCT scaling, 1/2 to 1/8) that keeps the short side at least this long.
    """
    return decode(source, max_pixels, min_short_side=min_short_side).image


def decode(source: bytes | str | os.PathLike | Image.Image, max_pixels: int, *,
           min_short_side: int | None = None, working_pixels: int | None = None) -> DecodedImage:
    """`load_image` plus the file's facts (size, format, sha256, bytes)."""
    if isinstance(source, Image.Image):
        return _from_pixels(source, max_pixels)
    return probe(source, max_pixels, min_short_side=min_short_side, working_pixels=working_pixels).decode()


def probe(source: bytes | str | os.PathLike, max_pixels: int, *, min_short_side: int | None = None,
          working_pixels: int | None = None) -> "Probe":
    """Read the file and its header only (no pixel is decoded): its facts, the safety checks
    on its size, and what decoding it will cost (`Probe.memory_bytes`), so a caller can wait
    for memory before `Probe.decode`.

    ``working_pixels``: decode an image larger than this at a reduced size of at most that many
    pixels (JPEG: libjpeg scaling while decoding; others: whole-pixel averaging right after),
    an approximation like ``min_short_side``'s; images up to that size decode exactly as before.
    """
    data = _read_bytes(source)
    if not data:
        raise BadImage(N_("The image file is empty."), N_("Capture the image again, or choose another file."))
    if data[:6] in _GIF_SIGNATURES:
        raise translatable(BadImage)(N_("GIF images cannot be used: they keep only 256 colours (use %(formats)s)."),
                                     N_("Save the image as JPEG or PNG and try again."), formats=_FORMAT_NAMES)
    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise translatable(BadImage)(N_("This file is not an image the appliance can read (%(formats)s)."),
                                     N_("Choose a photo or a microscope image, or save it as JPEG and try again."),
                                     formats=_FORMAT_NAMES) from None
    except Image.DecompressionBombError:
        raise _too_large(None) from None
    except (OSError, SyntaxError, ValueError):
        raise _damaged() from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise _damaged()
    if width * height > max_pixels:
        raise _too_large((width, height), max_pixels)
    return Probe(img, data, max_pixels, min_short_side, working_pixels)


class Probe:
    """An opened, size-checked image file whose pixels are not decoded yet."""

    def __init__(self, img: Image.Image, data: bytes, max_pixels: int, min_short_side: int | None,
                 working_pixels: int | None):
        self._img, self.data, self._max_pixels = img, data, max_pixels
        self.width, self.height = img.size
        self.format, self.mode = img.format, img.mode
        self._min_short_side, self._working_pixels = min_short_side, working_pixels
        self.scale = _decode_scale(img, min_short_side, working_pixels)

    def memory_bytes(self) -> int:
        """A generous estimate of the memory that decoding the file and preparing it for the
        models takes at its peak: the pixels as decoded (and converted, where averaging needs
        it), then, at the working size, their RGB copy, the transparency flattening and the
        quality gate's grey copy."""
        decoded = self.width * self.height / (self.scale * self.scale)
        factor = _working_factor(decoded, self._working_pixels)
        total = decoded * _bytes_per_pixel(self.mode)
        if factor > 1 and self.mode in _CONVERTED_BEFORE_AVERAGING:
            total += decoded * 4
        extra = 0 if self.mode == "RGB" else 4
        if self.mode in _ALPHA_MODES or "transparency" in self._img.info:
            extra += 12
        return int(total + decoded / (factor * factor) * (extra + 4 + 2))

    def decode(self) -> DecodedImage:
        img, width, height = self._img, self.width, self.height
        orientation = _exif_orientation(img)
        if self.scale > 1:
            img.draft("RGB" if img.mode == "RGB" else None,
                      (max(1, width // self.scale), max(1, height // self.scale)))
        try:
            img.load()
        except Image.DecompressionBombError:
            raise _too_large((width, height), self._max_pixels) from None
        except OSError as exc:
            if "truncated" in str(exc).lower() or "premature" in str(exc).lower():
                raise BadImage(N_("The image file is incomplete (it was cut short while copying or uploading)."),
                               N_("Copy or capture the image again.")) from None
            raise _damaged() from None
        except (SyntaxError, ValueError, MemoryError):
            raise _damaged() from None
        # A big non-JPEG image is averaged down to the working size before any copy is made.
        factor = _working_factor(img.width * img.height, self._working_pixels)
        if factor > 1:
            img = _reduce(img, factor)
        reduced = max(1, round(width / img.width))
        rgb = upright(to_rgb(img), orientation)
        del img
        self._img = None
        if orientation in (5, 6, 7, 8):          # rotated by 90°: the original's sides swap
            width, height = height, width
        return DecodedImage(rgb, width, height, self.format, hashlib.sha256(self.data).hexdigest(), self.data,
                            reduced, len(self.data))


def extension(fmt: str | None) -> str:
    """The record store's file extension for an accepted format ("MPO" -> "jpg")."""
    if fmt not in FORMATS:
        raise translatable(BadImage)(N_("Images in this format cannot be used (%(formats)s)."),
                                     N_("Save the image as JPEG or PNG and try again."), formats=_FORMAT_NAMES)
    return FORMATS[fmt][0]


def accept_attribute() -> str:
    """The MIME types of the accepted formats, for a file input's ``accept`` attribute."""
    return ",".join(dict.fromkeys(mime for _ext, mime in FORMATS.values()))


def _from_pixels(img: Image.Image, max_pixels: int) -> DecodedImage:
    if img.width <= 0 or img.height <= 0:
        raise _damaged()
    if img.width * img.height > max_pixels:
        raise _too_large(img.size, max_pixels)
    rgb = to_rgb(img)
    return DecodedImage(rgb, rgb.width, rgb.height, img.format, None, None)


def _read_bytes(source: bytes | str | os.PathLike) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadImage(f"The image file {path} does not exist.", "Check the file name and try again.") from None
    except IsADirectoryError:
        raise BadImage(f"{path} is a folder, not an image file.", "Give the path of an image file.") from None
    except OSError as exc:
        raise BadImage(f"The image file {path} cannot be read ({exc.strerror}).",
                       "Check that the file or USB stick is readable.") from None


def _too_large(size: tuple[int, int] | None, max_pixels: int | None = None) -> BadImage:
    hint = N_("Capture it again at the camera's normal resolution, or reduce its size.")
    if size is None or not max_pixels:
        return BadImage(N_("The image is too large to process safely."), hint)
    return translatable(BadImage)(
        N_("The image is too large to process safely (%(width)d×%(height)d pixels; the limit is %(limit)d megapixels)."),
        hint, width=size[0], height=size[1], limit=round(max_pixels / 1e6))


def _damaged() -> BadImage:
    return BadImage(N_("The image file is damaged and cannot be read."),
                    N_("Capture the image again, or copy the file again from its source."))


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright). A broken EXIF block is ignored, not fatal."""
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF comes in endless shapes; the pixels may still be fine
        return 1


def _decode_scale(img: Image.Image, min_short_side: int | None, working_pixels: int | None) -> int:
    """The libjpeg DCT scale (1, 2, 4 or 8) to decode a JPEG at: the largest that keeps the
    short side >= ``min_short_side``, and at least the smallest that brings the image within
    ``working_pixels``. 1 for other formats.

    Decoding fewer pixels is the largest saving for a 5 MP photo feeding a 224-pixel model;
    the effect on probabilities is measured by bench/bench_imageio.py.
    """
    if img.format not in ("JPEG", "MPO"):
        return 1
    width, height = img.size
    scale = 1
    if min_short_side:
        while scale < 8 and min(width, height) // (scale * 2) >= min_short_side:
            scale *= 2
    if working_pixels:
        while scale < 8 and width * height > working_pixels * scale * scale:
            scale *= 2
    return scale


def _working_factor(pixels: float, working_pixels: int | None) -> int:
    """The whole factor that brings an image of ``pixels`` within ``working_pixels`` (1: none)."""
    if not working_pixels or pixels <= working_pixels:
        return 1
    return math.ceil(math.sqrt(pixels / working_pixels))


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """Whole-pixel averaging by ``factor`` in the image's own mode (palette images first become
    what they show: averaging palette indices would mix unrelated colours)."""
    if img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode in _CONVERTED_BEFORE_AVERAGING:
        img = img.convert("I")
    return img.reduce(factor)


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow stores a decoded pixel in (RGB is padded to 4 bytes)."""
    return {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}.get(mode, 4)


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes that Image.reduce cannot average as they are.
_CONVERTED_BEFORE_AVERAGING = ("P", "PA", "1", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, scaling high-bit-depth data and flattening transparency."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError:
        raise translatable(BadImage)(N_("The image uses a colour format the appliance cannot read (%(mode)s)."),
                                     N_("Save it as an ordinary RGB JPEG or PNG and try again."), mode=mode) from None


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float greyscale to 8 bits by its value range, not by clipping
    (Pillow's own convert clips everything above 255 to white)."""
    import numpy as np

    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and top <= 1.0:
        scale = 255.0                         # float images in [0, 1]
    elif top <= 255:
        scale = 1.0                           # 8-bit data stored in a wide mode
    elif top <= 4095:
        scale = 255.0 / 4095.0                # 12-bit camera data
    else:
        scale = 255.0 / 65535.0
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def upright(img: Image.Image, orientation: int) -> Image.Image:
    """Apply the EXIF orientation as ImageOps.exif_transpose does (the tests compare the two);
    the tag is read before decoding, and the transposed copy carries no stale tag."""
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return img.transpose(method) if method is not None else img


__all__ = ["ACCEPTED_FORMATS", "FORMATS", "DecodedImage", "Probe", "accept_attribute", "decode", "extension",
           "load_image", "probe"]
