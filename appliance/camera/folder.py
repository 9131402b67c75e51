"""A folder of real image files played as a camera (demo mode and tests).

Like OctoPrint's virtual printer: the rest of the appliance cannot tell it from a real
camera. It shows each image for ``[camera] folder_seconds_per_image`` seconds, in name
order, and a capture returns the image on show at full resolution. Removing the folder (or
emptying it) behaves like unplugging a camera; putting it back is plugging it in again.

Files are decoded with the same safe decoder as uploads, so a damaged or enormous file in
the folder is skipped, never trusted.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalogue import N_
from ..errors import BadImage
from .base import Camera, CameraUnavailable
from .frames import fit_within

if TYPE_CHECKING:
    import numpy as np

    from ..config import CameraConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# The folder backend decodes whole files; refuse anything a real camera could not produce.
MAX_PIXELS = 50_000_000


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class FolderCamera(Camera):
    backend = "folder"

    def __init__(self, settings: "CameraConfig"):
        super().__init__(settings)
        self.folder = Path(settings.folder).expanduser() if settings.folder else None
        self._files: list[Path] = []
        self._listing_key: tuple | None = None
        self._started_at = 0.0
        # The decoded image on show: (path, full-resolution frame, preview frame).
        self._current: tuple[Path, "np.ndarray", "np.ndarray"] | None = None
        self._bad: set[Path] = set()

    @classmethod
    def devices(cls, settings: "CameraConfig") -> list[dict]:
        if not settings.folder:
            return []
        folder = Path(settings.folder).expanduser()
        try:
            if not _image_files(folder):
                return []
        except OSError:
            return []
        return [{"id": str(folder), "backend": cls.backend, "name": f"Image folder {folder.name}"}]

    @classmethod
    def detect(cls, settings: "CameraConfig") -> "FolderCamera | None":
        """The demo folder whenever one is set: an empty or missing folder then reads as an
        unplugged camera (the kiosk says so) rather than as no camera."""
        return cls(settings) if settings.folder else None

    def start(self) -> None:
        self._scan()
        self._started_at = time.monotonic()

    def stop(self) -> None:
        pass  # nothing streams; the decoded image stays cached for a quick restart

    def close(self) -> None:
        self._current = None
        self._listing_key = None
        self._files = []

    def preview_frame(self) -> "np.ndarray":
        return self._on_show()[2]

    def still(self) -> "np.ndarray":
        return self._on_show()[1]

    def describe(self) -> dict:
        current = self._current
        full = current[1].shape if current else None
        preview = current[2].shape if current else None
        return {
            "name": f"Image folder {self.folder}" if self.folder else "Image folder (not set)",
            "resolution": [full[1], full[0]] if full else None,
            "preview": [preview[1], preview[0]] if preview else None,
            "source": current[0].name if current else None,
            "images": len(self._files),
            "controls": {},
        }

    # --- internals ---------------------------------------------------------------------------
    def _scan(self) -> None:
        """Re-read the listing when the folder changed; raise as an unplugged camera would."""
        if self.folder is None:
            raise CameraUnavailable(N_("No image folder is set for the demo camera."),
                                    N_("Set [camera] folder in the configuration file."))
        try:
            st = os.stat(self.folder)
            key = (st.st_ino, st.st_mtime_ns)
            if key != self._listing_key:
                self._files = _image_files(self.folder)
                self._listing_key = key
                self._bad.clear()   # a changed folder may hold repaired files
        except OSError:
            self._files, self._listing_key, self._current = [], None, None
            log.warning("demo camera: the folder %s is gone", self.folder)
            raise CameraUnavailable(N_("The demo camera's image folder is gone."),
                                    N_("Put the folder back (or plug the camera in); the preview restarts by itself.")) from None
        if not [p for p in self._files if p not in self._bad]:
            self._current = None
            raise CameraUnavailable(N_("The demo camera's image folder has no readable images."),
                                    N_("Copy JPEG or PNG images into it; the preview restarts by itself."))

    def _on_show(self) -> tuple[Path, "np.ndarray", "np.ndarray"]:
        self._scan()
        playable = [p for p in self._files if p not in self._bad]
        step = max(self.settings.folder_seconds_per_image, 0.001)
        path = playable[int((time.monotonic() - self._started_at) / step) % len(playable)]
        if self._current is None or self._current[0] != path:
            try:
                self._current = self._decode(path)
            except (BadImage, OSError) as exc:
                # A bad file is skipped like a dropped frame; the next call shows the next one.
                log.warning("demo camera: skipping %s: %s", path, exc)
                self._bad.add(path)
                return self._on_show()
        return self._current

    def _decode(self, path: Path) -> tuple[Path, "np.ndarray", "np.ndarray"]:
        import numpy as np

        from ..inference.imageio import load_image

        image = load_image(path, MAX_PIXELS)
        full = self.orientation.apply(np.asarray(image.convert("RGB")))
        preview = fit_within(full, self.settings.preview_width, self.settings.preview_height)
        return path, full, np.ascontiguousarray(preview)
