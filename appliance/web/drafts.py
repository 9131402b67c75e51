"""Exams being prepared: patient and analysis chosen, image not yet processed.

A draft is what the image step works on. Any image source attaches its picture through
``DraftStore.attach_image`` — the file upload, the microscope camera and the phone
colposcope alike — so the image that is shown, quality-checked and analysed is always the
one that arrived last. Drafts are kept in memory for an hour: nothing is written to the
record store until "Start processing".
"""
from __future__ import annotations

import io
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BadImage, NotFound
from ..i18n import N_, translatable

PREVIEW_SIDE = 1024


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
