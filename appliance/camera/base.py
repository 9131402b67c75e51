"""The one small Camera interface that every backend implements.

A backend owns one device and knows nothing of threads, clients or JPEG: the
:class:`~appliance.camera.manager.CameraManager` calls it from a single thread at a time,
turns its frames into JPEGs and decides when to stream. Frames travel as NumPy arrays,
height × width × 3, uint8, in RGB order.

Backends import their camera library inside their own module (``picamera2``, ``cv2``), and
this module imports neither, so ``appliance`` starts without them and an absent library
becomes a :class:`CameraUnavailable` with a sentence a nurse can act on.
"""
from __future__ import annotations

import abc
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError
from ..i18n import N_, translatable

if TYPE_CHECKING:  # numpy is a core dependency, but only annotations need it here
    import numpy as np

    from ..config import CameraConfig


log = logging.getLogger(__name__)

# The backends: name (``[camera] backend``) -> "module:class", one line per backend file, in the
# order ``backend = "auto"`` tries them. A module is imported only when it is needed.
REGISTRY = {
    "picamera2": "appliance.camera.picamera2:Picamera2Camera",
    "opencv": "appliance.camera.opencv:OpenCVCamera",
    "folder": "appliance.camera.folder:FolderCamera",
}


class CameraUnavailable(UserError):
    """No camera, an absent camera library, or a camera that stopped answering (unplugged)."""


def backend_class(name: str) -> "type[Camera]":
    """The Camera class registered as ``name``; CameraUnavailable when it cannot be loaded."""
    module_name, _, class_name = REGISTRY[name].partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        log.warning("camera backend %s cannot be loaded: %s", name, exc)
        raise translatable(CameraUnavailable)(
            N_("The camera support for %(backend)s is not installed."),
            N_("Reinstall the appliance (./start.sh --install-only), or set [camera] backend to another camera."),
            backend=name) from None


def backend_classes() -> "list[type[Camera]]":
    """Every backend that loads, in ``auto`` order (one that does not is left out)."""
    found = []
    for name in REGISTRY:
        try:
            found.append(backend_class(name))
        except CameraUnavailable:
            continue
    return found


@dataclass(frozen=True)
class Orientation:
    """How the picture must be turned so that the slide appears the way it lies on the stage."""
    rotation: int = 0       # clockwise degrees: 0, 90, 180, 270
    hflip: bool = False
    vflip: bool = False

    @classmethod
    def from_config(cls, settings: "CameraConfig") -> "Orientation":
        return cls(settings.rotation, settings.hflip, settings.vflip)

    def as_flips(self) -> tuple[bool, bool, bool]:
        """(hflip, vflip, transpose) equivalent to this orientation, applied in that order.

        Rotating by 180° is a horizontal plus a vertical flip, which every sensor pipeline can
        do in hardware; 90° and 270° need a transpose, which most cannot.
        """
        hflip, vflip = self.hflip, self.vflip
        if self.rotation == 180:
            hflip, vflip = not hflip, not vflip
        return hflip, vflip, self.rotation in (90, 270)

    def apply(self, frame: "np.ndarray") -> "np.ndarray":
        """Flip first, then rotate clockwise; the result is a contiguous array."""
        import numpy as np

        if self.identity:
            return frame
        if self.hflip:
            frame = frame[:, ::-1]
        if self.vflip:
            frame = frame[::-1]
        if self.rotation:
            # np.rot90 turns counter-clockwise for positive k.
            frame = np.rot90(frame, k=-(self.rotation // 90))
        return np.ascontiguousarray(frame)

    @property
    def identity(self) -> bool:
        return not (self.rotation or self.hflip or self.vflip)


class Camera(abc.ABC):
    """One capture device. Not thread-safe: the manager serialises every call."""

    #: the name used in ``[camera] backend`` and shown in the UI
    backend: str = ""

    def __init__(self, settings: "CameraConfig"):
        self.settings = settings
        self.orientation = Orientation.from_config(settings)

    # --- discovery ---------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def devices(cls, settings: "CameraConfig") -> list[dict]:
        """The devices this backend can see now: ``{"id", "backend", "name"}`` each; never raises."""

    @classmethod
    def detect(cls, settings: "CameraConfig") -> "Camera | None":
        """For ``backend = "auto"``: this backend on its first device, or None when it sees none."""
        return cls(settings) if cls.devices(settings) else None

    # --- life cycle --------------------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Acquire the device if needed and start streaming. Raises CameraUnavailable."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop streaming but keep the device, so that the next start is quick."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device (server shutdown, or before reconnecting after an unplug)."""

    # --- pictures ----------------------------------------------------------------------------
    @abc.abstractmethod
    def preview_frame(self) -> "np.ndarray":
        """The next live frame, at most the preview size, oriented. Raises CameraUnavailable."""

    @abc.abstractmethod
    def still(self) -> "np.ndarray":
        """A full-resolution still, oriented. Raises CameraUnavailable."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """``{"name", "resolution": [w, h], "preview": [w, h], "controls": {...}}``."""

