"""Exams being prepared: patient and analysis chosen, image not yet processed.

A draft is what the image step works on. Any image source attaches its picture through
``DraftStore.attach_image`` — the file upload, the microscope camera and the phone
colposcope alike — so the image that is shown, quality-checked and analysed is always the
one that arrived last. Drafts are kept in memory for an hour: nothing is written to the
record store until "Start processing".

"Start processing" takes the draft with ``claim``: under the lock, and only when the image
is still the version the nurse looked at, the draft leaves the store as an immutable
``ClaimedDraft``. An image arriving while the models run then finds no open exam (it can
never be paired with the result), and a second tap on the button waits for the first and is
sent to the same exam (``processed_exam``).
"""
from __future__ import annotations

import io
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BadImage, NotFound, UserError
from ..i18n import N_, translatable

PREVIEW_SIDE = 1024
# How long a processed draft remembers its exam (a late second tap is sent there), and how many.
PROCESSED_TTL_SECONDS = 600
MAX_PROCESSED = 64


class ImageChanged(UserError):
    """The draft's image is not the one the nurse looked at when she pressed the button."""


@dataclass
class Draft:
    id: str
    owner: str
    patient_uuid: str
    analysis: str
    created: float
    version: int = 0
    source: str | None = None
    image_bytes: bytes | None = None
    decoded: Any = None                 # imageio.DecodedImage: upright RGB pixels + file facts
    image_info: dict = field(default_factory=dict)
    preview_jpeg: bytes | None = None
    quality: dict | None = None

    @property
    def has_image(self) -> bool:
        return self.image_bytes is not None

    def summary(self) -> dict:
        """What the image-step page polls for (no patient data)."""
        return {"id": self.id, "version": self.version, "has_image": self.has_image,
                "source": self.source, "image_info": self.image_info, "quality": self.quality}


@dataclass(frozen=True)
class ClaimedDraft:
    """A draft taken for processing: the image the nurse saw, with its decode, facts and preview,
    frozen together so the result, the stored bytes and the shown picture are one image."""
    id: str
    owner: str
    patient_uuid: str
    analysis: str
    created: float
    version: int
    source: str
    image_bytes: bytes
    decoded: Any
    image_info: dict
    preview_jpeg: bytes | None
    quality: dict | None


@dataclass
class _Processing:
    """A claimed draft: being processed (``done`` not set) or finished with ``exam_uuid``."""
    owner: str
    since: float
    done: threading.Event = field(default_factory=threading.Event)
    exam_uuid: str | None = None


class DraftStore:
    def __init__(self, *, max_bytes: int,
                 decode: Callable[[bytes, str], Any],
                 check_quality: Callable[[Any, str], Any] | None = None,
                 ttl_seconds: float = 3600, max_drafts: int = 16,
                 clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self._decode = decode
        self._check_quality = check_quality
        self.ttl_seconds = ttl_seconds
        self.max_drafts = max_drafts
        self._clock = clock
        self._drafts: dict[str, Draft] = {}
        self._processing: dict[str, _Processing] = {}     # claimed drafts, by draft id
        self._lock = threading.Lock()
        # Waiters on new images (the image-step page long-polls for phone/camera arrivals).
        self._changed = threading.Condition(self._lock)

    def create(self, owner: str, patient_uuid: str, analysis: str) -> Draft:
        draft = Draft(id=secrets.token_urlsafe(16), owner=owner, patient_uuid=patient_uuid,
                      analysis=analysis, created=self._clock())
        with self._lock:
            self._expire()
            # One draft per person at a time keeps memory bounded on a 2 GB box.
            for old in [d.id for d in self._drafts.values() if d.owner == owner]:
                del self._drafts[old]
            while len(self._drafts) >= self.max_drafts:
                oldest = min(self._drafts.values(), key=lambda d: d.created)
                del self._drafts[oldest.id]
            self._drafts[draft.id] = draft
        return draft

    def get(self, draft_id: str, owner: str | None = None) -> Draft:
        """The draft, or NotFound when it expired, was processed or belongs to someone else."""
        with self._lock:
            self._expire()
            draft = self._drafts.get(draft_id)
        if draft is None or (owner is not None and draft.owner != owner):
            raise NotFound(N_("This exam is no longer open (it was finished, or it waited too long)."),
                           N_("Open the patient again and choose the analysis."))
        return draft

    def claim(self, draft_id: str, owner: str, version) -> ClaimedDraft:
        """Take the draft out for processing, if its image is still ``version`` (what the page
        showed). Raises NotFound (closed, someone else's, or already claimed), UserError (no image)
        or ImageChanged (a newer image arrived: the draft stays open)."""
        with self._changed:
            self._expire()
            draft = self._drafts.get(draft_id)
            if draft is None or draft.owner != owner:
                raise NotFound(N_("This exam is no longer open (it was finished, or it waited too long)."),
                               N_("Open the patient again and choose the analysis."))
            if not draft.has_image:
                raise UserError(N_("There is no image yet."), N_("Capture or choose an image first."))
            if _version(version) != draft.version:
                raise ImageChanged(N_("The image changed — look at it again before processing."),
                                   N_("The newest image is shown now; press “Start processing” when it is the right one."))
            del self._drafts[draft_id]
            self._processing[draft_id] = _Processing(owner, self._clock())
            self._changed.notify_all()          # long polls of the image step see it closed
            return ClaimedDraft(draft.id, draft.owner, draft.patient_uuid, draft.analysis, draft.created,
                                draft.version, draft.source or "file", draft.image_bytes, draft.decoded,
                                dict(draft.image_info), draft.preview_jpeg, draft.quality)

    def finish(self, claimed: ClaimedDraft, exam_uuid: str) -> None:
        """The claimed draft is saved as ``exam_uuid`` (a second tap waiting for it goes there)."""
        with self._lock:
            entry = self._processing.get(claimed.id)
            if entry is not None:
                entry.exam_uuid = exam_uuid
                entry.done.set()

    def give_back(self, claimed: ClaimedDraft) -> None:
        """Processing failed (nothing saved): reopen the draft as it was, so the nurse can retry —
        unless she has opened another exam meanwhile."""
        with self._changed:
            entry = self._processing.pop(claimed.id, None)
            if not any(d.owner == claimed.owner for d in self._drafts.values()):
                draft = Draft(id=claimed.id, owner=claimed.owner, patient_uuid=claimed.patient_uuid,
                              analysis=claimed.analysis, created=claimed.created, version=claimed.version,
                              source=claimed.source, image_bytes=claimed.image_bytes, decoded=claimed.decoded,
                              image_info=dict(claimed.image_info), preview_jpeg=claimed.preview_jpeg,
                              quality=claimed.quality)
                self._drafts[draft.id] = draft
            self._changed.notify_all()
        if entry is not None:
            entry.done.set()

    def processed_exam(self, draft_id: str, owner: str, timeout: float) -> str | None:
        """The exam a claimed draft became, waiting up to ``timeout`` s while it is processed;
        None when the draft was never claimed by ``owner`` or its processing failed."""
        with self._lock:
            self._expire()
            entry = self._processing.get(draft_id)
        if entry is None or entry.owner != owner:
            return None
        entry.done.wait(timeout)
        return entry.exam_uuid

    def attach_image(self, draft_id: str, data: bytes, source: str) -> Draft:
        """Decode ``data`` safely, check its quality and make it the draft's image.

        Raises BadImage (nothing changes) for anything that is not a readable image of an
        accepted type and size.
        """
        analysis = self.get(draft_id).analysis
        if not data:
            raise BadImage(N_("The file is empty."), N_("Choose an image file from the microscope or camera."))
        if len(data) > self.max_bytes:
            raise translatable(BadImage)(N_("The image is too large (%(size)d MB; the limit is %(limit)d MB)."),
                                         N_("Use a smaller image or a lower camera resolution."),
                                         size=round(len(data) / 1e6), limit=round(self.max_bytes / 1e6))
        decoded = self._decode(data, analysis)      # BadImage for anything unsafe or unreadable
        quality = _quality_dict(self._check_quality(decoded, analysis)) if self._check_quality else None
        preview = _preview_jpeg(decoded.image)
        info = dict(decoded.info(), bytes=len(data))
        with self._changed:
            draft = self._drafts.get(draft_id)
            if draft is None:
                raise NotFound(N_("This exam is no longer open."), N_("Open the patient again and choose the analysis."))
            draft.image_bytes, draft.decoded, draft.image_info = data, decoded, info
            draft.preview_jpeg, draft.quality, draft.source = preview, quality, source
            draft.version += 1
            self._changed.notify_all()
        return draft

    def wait_for_change(self, draft_id: str, owner: str, seen_version: int, timeout: float) -> Draft:
        """Block up to ``timeout`` seconds until the draft's image is newer than ``seen_version``."""
        deadline = self._clock() + timeout
        with self._changed:
            while True:
                draft = self._drafts.get(draft_id)
                if draft is None or draft.owner != owner or draft.version != seen_version:
                    break
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._changed.wait(min(left, 1.0))
        return self.get(draft_id, owner)

    def discard(self, draft_id: str) -> None:
        with self._lock:
            self._drafts.pop(draft_id, None)

    def discard_owner(self, owner: str) -> None:
        with self._lock:
            for old in [d.id for d in self._drafts.values() if d.owner == owner]:
                del self._drafts[old]

    def _expire(self) -> None:
        now = self._clock()
        for old in [d.id for d in self._drafts.values() if now - d.created > self.ttl_seconds]:
            del self._drafts[old]
        finished = [k for k, p in self._processing.items() if p.done.is_set()]
        for old in [k for k in finished if now - self._processing[k].since > PROCESSED_TTL_SECONDS]:
            del self._processing[old]
        for old in finished[:max(0, len(self._processing) - MAX_PROCESSED)]:
            self._processing.pop(old, None)


def _version(value) -> int | None:
    """The image version a form posted (a whole number), else None (never matches)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _quality_dict(report) -> dict:
    if report is None:
        return None
    if isinstance(report, dict):
        return report
    return report.to_json()


def _preview_jpeg(image) -> bytes:
    preview = image.copy()
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    preview.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()
