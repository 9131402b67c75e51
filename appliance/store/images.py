"""The labelled image library on disk.

Each analysed image is stored once, named by its content hash:
``<data>/images/<sha256[:2]>/<sha256>.<ext>``. It also appears, as a hard link (no second
copy), in the labelled library, where a researcher copying the folder must never mistake a
model's guess for a diagnosis:

- ``<data>/library/<analysis>/confirmed/<class>/<sha256>.<ext>``: the class a clinician decided,
  on exams made with trained models — the labelled dataset (one ImageFolder per analysis);
- ``<data>/library/<analysis>/unconfirmed/<class>/<sha256>.<ext>``: everything else, under the
  exam's current label: results still awaiting a decision (the model's class), and exams made
  with demo models (whatever was decided). An image moves to ``confirmed`` when decided.

A decision without a class (a referral) files the image nowhere. ``library/README.txt`` says
the same to whoever opens the folder. The folders are derived from the exam records:
:meth:`ImageLibrary.reconcile` re-creates them after a crash or restore, and a library in the
older layout (``<analysis>/<class>/``, model and clinician labels mixed) is re-filed at start.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from .. import catalogue
from ..errors import BadImage, NotFound, UserError
from ..fsutil import is_sha256
from ..i18n import N_, translatable
# The image step's own table of formats: what was accepted there is stored here.
from ..inference.imageio import FORMATS, extension
from .core import StoreCore
from .durable import atomic_write, batch, os_error, remove_stale_tmp_files
from .exam_index import ExamIndex
from .vocabulary import AWAITING, decision_of, research_label

log = logging.getLogger("appliance.store")

# Files being written wait here (same file system), so a killed writer's leftovers are found
# without listing hundreds of thousands of images.
INCOMING = ".incoming"
THUMB_SIZES = (32, 1024)
CONFIRMED, UNCONFIRMED = "confirmed", "unconfirmed"
README = """BCCDMS labelled image library (made by the appliance from its records; do not edit)

<analysis>/confirmed/<class>/    the class a clinician decided, on exams made with trained models:
                                 the labelled dataset (torchvision ImageFolder: root=<analysis>/confirmed)
<analysis>/unconfirmed/<class>/  NOT labels: results still awaiting a clinician's decision (filed
                                 under the model's class) and exams made with untrained demo models.
                                 Never train on these as if they were labels.

Images are named by the sha256 of their bytes; the same image may appear under several classes
when several exams of it were decided differently. Decisions without a class (image not
suitable, referred) are not filed.
"""


def library_place(analysis: str, final_label, decision: str, demo: bool) -> tuple[str, str] | None:
    """(folder, class) an exam's image is filed under: (CONFIRMED, the clinician's class) when
    :func:`~appliance.store.vocabulary.research_label` allows it, (UNCONFIRMED, its label) for an
    undecided or demo exam, None for a decision without a class."""
    confirmed = research_label(analysis, final_label, decision, demo)
    if confirmed is not None:
        return CONFIRMED, confirmed
    if final_label in catalogue.all_label_ids().get(analysis, ()):
        return UNCONFIRMED, final_label
    return None


@functools.cache
def _stored_extensions() -> tuple[str, ...]:
    """The extensions images are stored under, JPEG's first (the image step's own format table)."""
    return tuple(dict.fromkeys(ext for ext, _ in FORMATS.values()))


# The first bytes of each stored format, to check a caller's extension without parsing the file.
_SIGNATURES = {"jpg": (b"\xff\xd8\xff",), "png": (b"\x89PNG\r\n\x1a\n",), "tif": (b"II*\x00", b"MM\x00*"),
               "bmp": (b"BM",)}


def _looks_like(data: bytes, ext: str) -> bool:
    if ext == "webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return data.startswith(_SIGNATURES[ext])


@dataclass(frozen=True)
class ImageFacts:
    """What is known about an image's bytes: the sha256 of the bytes, the stored extension and the
    size in pixels. Made by a caller that decoded the image already (``from_info``: the kiosk's
    draft), or by :meth:`ImageLibrary.describe`."""
    sha256: str
    ext: str
    width: int
    height: int
    # The bytes object the library itself described (bytes are immutable: those facts hold for it).
    _described: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_info(cls, info: dict) -> "ImageFacts":
        """From a decoder's ``{sha256, width, height, format}`` (``DecodedImage.info()``, a result's
        ``image_info``)."""
        return cls(info["sha256"], extension(info.get("format")), info["width"], info["height"])

    def made_from(self, data: bytes) -> bool:
        """Were these facts made by the library from this very bytes object?"""
        return self._described is data

    def as_record(self) -> dict:
        return {"sha256": self.sha256, "ext": self.ext, "width": self.width, "height": self.height}


def identify(image_bytes: bytes, max_bytes: int) -> tuple[str, int, int]:
    """(extension, width, height) of an image, from its header only; ``BadImage`` otherwise."""
    if not isinstance(image_bytes, (bytes, bytearray, memoryview)) or not image_bytes:
        raise BadImage("The image is empty.", "Capture or choose the image again.")
    if len(image_bytes) > max_bytes:
        raise BadImage(f"The image is too large ({len(image_bytes) / 1e6:.0f} MB; at most {max_bytes / 1e6:.0f} MB).",
                       "Use a smaller image, or lower the camera's resolution.")
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            fmt, (width, height) = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadImage("This file is not an image the appliance can read.",
                       "Use a JPEG, PNG, TIFF, BMP or WebP image.") from None
    return extension(fmt), width, height


def _facts_refused(why: str) -> UserError:
    # The caller's facts describe other bytes: to the nurse, the result's image is not this one.
    log.warning("image refused: %s", why)
    return UserError(N_("This result was made from another image, not the image being saved."),
                     N_("Nothing was saved. Process the image again."))


class ImageLibrary:
    """The images, their class folders and thumbnails; ``exams`` is the exams' index, which says
    under which classes each image is filed."""

    def __init__(self, core: StoreCore, exams: ExamIndex):
        self._core = core
        self._exams = exams
        self.root = core.data_dir / "images"
        self.library = core.data_dir / "library"
        self.thumbs = core.data_dir / "thumbs"

    def remove_leftovers(self) -> None:
        """Delete half-written files of killed writers (call under the writer lock)."""
        for folder in (self.root, self.library, self.thumbs):
            remove_stale_tmp_files(folder / INCOMING)

    def _file(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    @property
    def max_bytes(self) -> int:
        return self._core.cfg.server.max_upload_mb * 1024 * 1024

    def describe(self, image_bytes: bytes) -> ImageFacts:
        """The facts of an image from its header and one hash of its bytes (``BadImage`` for what
        is not an image the appliance stores)."""
        ext, width, height = identify(image_bytes, self.max_bytes)
        data = bytes(image_bytes)          # no copy for bytes; a frozen copy of anything mutable
        return ImageFacts(hashlib.sha256(data).hexdigest(), ext, width, height, data)

    def put(self, image_bytes: bytes, facts: ImageFacts | None = None) -> dict:
        """Store an image once (durably); returns ``{sha256, ext, width, height}``.

        ``facts``: what the caller's decoder found (``ImageFacts``), so the image is not parsed
        again here. The library still never files bytes under a wrong name: bytes it writes are
        hashed first, and refused (nothing written) when that is not the sha256 given. Bytes whose
        name is stored already are not hashed, since nothing of them reaches the disk: they must
        have the stored file's length and their format's signature. That catches a caller handing
        in the facts of another image; in the rare case it would not (same format and length) the
        exam names the stored image — the one the facts, and so the result, were made from.
        Facts made by :meth:`describe` from these very bytes are taken as they are."""
        if facts is None:
            facts = self.describe(image_bytes)
        data = bytes(image_bytes)
        vouched = facts.made_from(data)
        if not vouched:
            self._check_facts(data, facts)
        path = self._file(facts.sha256, facts.ext)
        try:
            stored_size = os.stat(path).st_size
        except FileNotFoundError:
            stored_size = None
        if not vouched and stored_size != len(data) and hashlib.sha256(data).hexdigest() != facts.sha256:
            raise _facts_refused("its bytes are not those of the image that was analysed")
        if stored_size is None:
            try:
                # Outside a batch this is on disk, folder entry included, before it returns: so
                # before the exam that names it (exams.save puts images outside its writer batch).
                atomic_write(path, data, tmp_dir=self.root / INCOMING)
            except OSError as exc:
                raise os_error(exc, path, "save the image") from None
        return facts.as_record()

    def _check_facts(self, data: bytes, facts: ImageFacts) -> None:
        """A caller's facts, checked without parsing the image (the hash is checked when written)."""
        if not data:
            raise BadImage("The image is empty.", "Capture or choose the image again.")
        if len(data) > self.max_bytes:
            identify(data, self.max_bytes)          # its sentence about the size limit
        if not is_sha256(facts.sha256) or facts.ext not in _stored_extensions():
            raise _facts_refused(f"its description ({facts.sha256!r}, {facts.ext!r}) is not valid")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (facts.width, facts.height)):
            raise _facts_refused("its size in pixels is not valid")
        if facts.ext in _SIGNATURES or facts.ext == "webp":
            if not _looks_like(data, facts.ext):
                raise _facts_refused(f"its bytes are not a {facts.ext} file")
        else:                          # a format of the image step without a signature here
            if identify(data, self.max_bytes)[0] != facts.ext:
                raise _facts_refused(f"its bytes are not a {facts.ext} file")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many ``put`` calls made durable together when the block ends: each image is written as it
        comes, then all are fsynced in one parallel round, renamed into place and each folder is
        fsynced once, instead of one disk flush per image (an import's thousands of images). When
        the block returns every image is in the library, durably, so the records naming them may
        follow; an exception inside leaves none of them. Use it on its own, not inside a transaction."""
        with batch(defer=True):
            yield

    def path(self, sha256: str, ext: str | None = None) -> Path:
        """The stored file of an image, ``images/<sha[:2]>/<sha>.<ext>``: the exam's ``ext`` first (when
        given), then the few extensions ``put`` writes, each one stat; never a folder listing."""
        if not is_sha256(sha256):
            raise NotFound(N_("There is no such image."), N_("Open the exam again."))
        stored = _stored_extensions()
        stem = os.path.join(self.root, sha256[:2], sha256)       # plain strings: this runs per image
        for candidate in ((ext,) if ext in stored and ext != stored[0] else ()) + stored:
            if os.path.isfile(f"{stem}.{candidate}"):
                return self._file(sha256, candidate)
        raise translatable(NotFound)(N_("The image %(image)s… is not on this box."),
                                     N_("It may have come in a bundle without images."), image=sha256[:12])

    # --- the class folders ---------------------------------------------------------------

    def _class_file(self, analysis: str, folder: str, label: str, sha256: str, ext: str) -> Path:
        return self.library / analysis / folder / label / f"{sha256}.{ext}"

    def filed_path(self, exam: dict) -> Path | None:
        """Where an exam's image appears in the library (None: filed nowhere)."""
        image = exam.get("image") or {}
        place = library_place(exam.get("analysis"), exam.get("final_label"), decision_of(exam), bool(exam.get("demo")))
        if place is None or not image.get("sha256"):
            return None
        return self._class_file(exam["analysis"], *place, image["sha256"], image.get("ext", ""))

    def file_exam(self, exam: dict) -> None:
        """File a new exam's image in the library (confirmed, unconfirmed, or nowhere)."""
        image = exam.get("image") or {}
        place = library_place(exam["analysis"], exam.get("final_label"), decision_of(exam), bool(exam.get("demo")))
        if place is not None and image.get("sha256"):
            self.file_under(exam["analysis"], *place, image["sha256"], image["ext"])

    def file_under(self, analysis: str, folder: str, label: str, sha256: str, ext: str) -> None:
        """Make the image appear in a class folder (a hard link; a copy where links fail)."""
        source = self._file(sha256, ext)
        target = self._class_file(analysis, folder, label, sha256, ext)
        if target.exists() or not source.exists():
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                atomic_write(target, source.read_bytes(), sync=False, tmp_dir=self.library / INCOMING)
        except OSError as exc:   # derived data: the record is saved; reconcile() repairs this later
            self._core.warn(f"The image {sha256[:12]} could not be filed under {analysis}/{folder}/{label} "
                              f"({exc.strerror}); it will be filed at the next start.")

    def unfile(self, analysis: str, folder: str, label: str, sha256: str, ext: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._class_file(analysis, folder, label, sha256, ext).unlink()

    def refile(self, exam_rows: Iterable, shas: set[str] | None = None) -> int:
        """Make the class folders agree with the exams: each image in every place its exams give it.

        ``exam_rows`` are all exam index rows; ``shas`` limits the work to those images (None: all).
        Returns how many links were added or removed.
        """
        wanted: dict[tuple[str, str], set[tuple[str, str]]] = {}
        exts: dict[str, str] = {}
        for row in exam_rows:
            if row.sha256 and (shas is None or row.sha256 in shas):
                places = wanted.setdefault((row.analysis, row.sha256), set())
                place = library_place(row.analysis, row.final_label, row.decision, row.demo)
                if place is not None:
                    places.add(place)
                exts[row.sha256] = row.ext
        changed = 0
        labels = catalogue.all_label_ids()
        every = {a: [(folder, label) for folder in (CONFIRMED, UNCONFIRMED) for label in labels[a]] for a in labels}
        if shas is None:
            present: dict[tuple[str, str], set[tuple[str, str]]] = {}
            for analysis, places in every.items():
                for folder, label in places:
                    with contextlib.suppress(FileNotFoundError):
                        for entry in os.scandir(self.library / analysis / folder / label):
                            present.setdefault((analysis, entry.name.split(".")[0]), set()).add((folder, label))
        for (analysis, sha), want in wanted.items():
            have = (present.get((analysis, sha), set()) if shas is None else
                    {place for place in every.get(analysis, ())
                     if self._class_file(analysis, *place, sha, exts[sha]).exists()})
            for place in want - have:
                self.file_under(analysis, *place, sha, exts[sha])
                changed += 1
            for place in have - want:
                self.unfile(analysis, *place, sha, exts[sha])
                changed += 1
        return changed

    def reconcile(self, shas: set[str] | None = None) -> int:
        """Rebuild the class folders from the exam records: all of them (after a restore), or
        only those of these images (after an import: its work then follows the bundle's size,
        not the store's)."""
        with self._core.reading():
            return self.refile(list(self._exams.by_uuid.values()), shas)

    def check_layout(self) -> None:
        """At start (under the writer lock): re-file a library of the older layout, where model and
        clinician labels were mixed in ``<analysis>/<class>/``, and put the README in place."""
        labels = catalogue.all_label_ids()
        old = [self.library / a / label for a in labels for label in labels[a] if (self.library / a / label).is_dir()]
        if old:
            self.refile(list(self._exams.by_uuid.values()))
            for folder in old:
                for entry in os.scandir(folder):
                    sha, _, ext = entry.name.partition(".")
                    # Links of stored images only: a file whose original is gone stays (it may be the last copy).
                    if is_sha256(sha) and self._file(sha, ext).is_file():
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                with contextlib.suppress(OSError):
                    folder.rmdir()
        readme = self.library / "README.txt"
        if not readme.exists():
            with contextlib.suppress(OSError):      # a note for people: never worth failing a start for
                atomic_write(readme, README.encode("utf-8"), sync=False, tmp_dir=self.library / INCOMING)

    # --- browsing ------------------------------------------------------------------------

    def browse(self, *, analysis: str | None = None, label: str | None = None, offset: int = 0,
               limit: int = 48, post_id: str | None = None) -> tuple[list[dict], int]:
        """Distinct images by class, newest first: ``[{sha256, ext, analysis, label, exam_uuid, created_at,
        decided, demo, confirmed, path}]`` (of the newest exam of each; ``path`` in the library, None
        when filed nowhere) and the number of images that match."""
        if analysis is not None:
            catalogue.analysis(analysis)
        offset, limit = max(0, int(offset)), max(0, min(int(limit), 500))
        with self._core.reading():
            idx = self._exams
            rows = idx.by_analysis[analysis].rows() if analysis and analysis in idx.by_analysis else (
                [] if analysis else idx.ordered.rows())
            seen: set[tuple[str, str, str]] = set()
            page: list[dict] = []
            for row in reversed(rows):
                if label is not None and row.final_label != label:
                    continue
                if post_id is not None and row.post_id != post_id:
                    continue          # one health post's images only (``post_id``)
                key = (row.analysis, row.final_label, row.sha256)
                if key in seen:
                    continue
                seen.add(key)
                if offset < len(seen) <= offset + limit:
                    place = library_place(row.analysis, row.final_label, row.decision, row.demo)
                    page.append({"sha256": row.sha256, "ext": row.ext, "analysis": row.analysis,
                                 "label": row.final_label, "exam_uuid": row.uuid, "created_at": row.created_at,
                                 "decided": row.decision != AWAITING, "demo": row.demo,
                                 "confirmed": place is not None and place[0] == CONFIRMED,
                                 "path": str(self._class_file(row.analysis, *place, row.sha256, row.ext))
                                 if place else None})
            return page, len(seen)

    def thumbnail(self, sha256: str, size: int = 256) -> bytes:
        """A JPEG no larger than ``size`` pixels a side, made once and cached under ``thumbs/``."""
        if not isinstance(size, int) or not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise UserError(f"A thumbnail size must be {THUMB_SIZES[0]} to {THUMB_SIZES[1]} pixels.",
                            "Ask for another size.")
        source = self.path(sha256)
        cached = self.thumbs / str(size) / sha256[:2] / f"{sha256}.jpg"
        with contextlib.suppress(FileNotFoundError):
            return cached.read_bytes()
        try:
            with Image.open(source) as im:
                im = ImageOps.exif_transpose(im)
                im.thumbnail((size, size))
                out = io.BytesIO()
                im.convert("RGB").save(out, "JPEG", quality=85)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise BadImage("This stored image cannot be read any more.", "The file may be damaged; "
                           "restore it from a backup.") from None
        data = out.getvalue()
        with contextlib.suppress(OSError):   # a cache: a full or read-only disk only costs speed
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, data, sync=False, tmp_dir=self.thumbs / INCOMING)
        return data
