"""USB (UVC) microscope cameras and HDMI capture dongles through OpenCV's V4L2 backend.

``[camera] device`` is a V4L2 index (``"0"``), a device path (``/dev/video2``,
``/dev/v4l/by-id/usb-...-video-index0``) or, for tests and the benchmark, a video file
that OpenCV opens like a camera.

The live view streams at the preview size, MJPG-compressed (a UVC camera sends YUYV at high
resolutions only at a few frames per second over USB 2); a still switches the stream to
``[camera] still_width`` × ``still_height`` (0: the largest the camera offers), reads one
settled frame, and switches back, as picamera2 does with its two configurations.
"""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalogue import N_
from .base import Camera, CameraUnavailable
from .frames import fitted_size

if TYPE_CHECKING:
    import numpy as np

    from ..config import CameraConfig

log = logging.getLogger(__name__)

# V4L2 drivers clamp a requested size to the nearest they support (VIDIOC_S_FMT), so asking
# for more than any microscope camera has yields the camera's largest size.
LARGEST = 16384
# Frames to drop after a resolution switch: UVC cameras often deliver a stale or half-exposed
# first frame in the new mode.
SETTLE_FRAMES = 2
# V4L2_CID_EXPOSURE_AUTO values as OpenCV's V4L2 backend passes them through.
V4L2_EXPOSURE_MANUAL = 1
V4L2_EXPOSURE_APERTURE_PRIORITY = 3


def _cv2():
    try:
        import cv2
    except ImportError:
        raise CameraUnavailable(N_("The USB camera support (OpenCV) is not installed."),
                                N_("Reinstall the appliance (./start.sh --install-only).")) from None
    return cv2


def _sysfs_name(node: str) -> str:
    try:
        return Path(f"/sys/class/video4linux/{Path(node).name}/name").read_text().strip()
    except OSError:
        return Path(node).name


def _is_capture_node(node: str) -> bool:
    """UVC cameras register two nodes; ``index`` 0 is the picture stream, 1 its metadata."""
    try:
        return Path(f"/sys/class/video4linux/{Path(node).name}/index").read_text().strip() == "0"
    except OSError:
        return True


def video_nodes() -> list[str]:
    def number(node: str) -> int:
        digits = "".join(c for c in node if c.isdigit())
        return int(digits) if digits else 0
    return sorted((n for n in glob.glob("/dev/video*") if _is_capture_node(n)), key=number)


class OpenCVCamera(Camera):
    backend = "opencv"

    def __init__(self, settings: "CameraConfig", device: str | None = None):
        super().__init__(settings)
        self.device = str(settings.device if device is None else device).strip()
        self._cap = None
        self._mode: tuple[int, int] | None = None      # the size the stream was asked for
        self._last_shape: tuple[int, ...] | None = None
        self._still_shape: tuple[int, ...] | None = None

    # --- discovery ---------------------------------------------------------------------------
    @classmethod
    def devices(cls, settings: "CameraConfig") -> list[dict]:
        return [{"id": node, "backend": cls.backend, "name": _sysfs_name(node)} for node in video_nodes()]

    @classmethod
    def detect(cls, settings: "CameraConfig") -> "OpenCVCamera | None":
        node = cls.first_that_opens(settings)
        return cls(settings, device=node) if node is not None else None

    @classmethod
    def first_that_opens(cls, settings: "CameraConfig") -> str | None:
        """The first V4L2 capture node that opens and delivers a frame (``backend = "auto"``)."""
        for node in video_nodes():
            camera = cls(settings, device=node)
            try:
                camera.start()
                camera.preview_frame()
                return node
            except CameraUnavailable:
                continue
            finally:
                camera.close()
        return None

    # --- life cycle --------------------------------------------------------------------------
    @property
    def _is_file(self) -> bool:
        """A video file or URL (tests, benchmark) rather than a V4L2 device."""
        return not (self.device.isdigit() or self.device.startswith("/dev/"))

    def start(self) -> None:
        if self._cap is not None:
            return
        cv2 = _cv2()
        if self._is_file:
            if "://" not in self.device and not os.path.exists(self.device):
                raise self._gone()
            cap = cv2.VideoCapture(self.device)
        else:
            source = int(self.device) if self.device.isdigit() else self.device
            cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise self._gone()
        self._cap = cap
        if not self._is_file:
            self._configure_device(cap)
            self._set_mode(self._preview_mode())

    def stop(self) -> None:
        # V4L2 keeps streaming into its buffers without a reader at no CPU cost; releasing would
        # make the next start take a second. Drop to a close only when asked to.
        pass

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap, self._mode = None, None

    # --- pictures ----------------------------------------------------------------------------
    def preview_frame(self) -> "np.ndarray":
        if self._mode is not None and self._mode != self._preview_mode():
            self._set_mode(self._preview_mode())
        return self._read(preview=True)

    def still(self) -> "np.ndarray":
        if self._is_file or self._still_mode() == self._preview_mode():
            frame = self._read(fresh=True)
        else:
            self._set_mode(self._still_mode())
            try:
                for _ in range(SETTLE_FRAMES):
                    self._read()
                frame = self._read()
            finally:
                if self._cap is not None:
                    self._set_mode(self._preview_mode())
        self._still_shape = self._last_shape
        return frame

    def describe(self) -> dict:
        info: dict = {"name": _sysfs_name(self.device) if not self._is_file else Path(self.device).name,
                      "device": self.device, "resolution": None, "preview": None, "controls": {}}
        shape = self._still_shape or self._last_shape
        if shape:
            info["resolution"] = [shape[1], shape[0]]
        info["preview"] = [self.settings.preview_width, self.settings.preview_height]
        cap = self._cap
        if cap is None:
            return info
        cv2 = _cv2()
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        info["api"] = cap.getBackendName()
        info["fourcc"] = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)) if fourcc > 0 else None
        info["fps"] = round(cap.get(cv2.CAP_PROP_FPS), 2)
        if not self._is_file:
            info["controls"] = {
                "auto_white_balance": cap.get(cv2.CAP_PROP_AUTO_WB),
                "white_balance_kelvin": cap.get(cv2.CAP_PROP_WB_TEMPERATURE),
                "auto_exposure": cap.get(cv2.CAP_PROP_AUTO_EXPOSURE),
                "exposure_100us": cap.get(cv2.CAP_PROP_EXPOSURE),
            }
        return info

    # --- internals ---------------------------------------------------------------------------
    def _gone(self) -> CameraUnavailable:
        log.warning("USB camera %s does not answer", self.device)
        return CameraUnavailable(N_("The USB camera does not answer (unplugged, or used by another program)."),
                                 N_("Check its cable and plug it in again; the preview restarts by itself."))

    def _preview_mode(self) -> tuple[int, int]:
        return self.settings.preview_width, self.settings.preview_height

    def _still_mode(self) -> tuple[int, int]:
        return (self.settings.still_width or LARGEST, self.settings.still_height or LARGEST)

    def _configure_device(self, cap) -> None:
        cv2 = _cv2()
        # MJPG: the only way most UVC cameras deliver full resolution at a usable rate.
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        # One buffer: a still must be a frame taken after the button was pressed, not a queued one.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        s = self.settings
        if s.lock_white_balance:
            cap.set(cv2.CAP_PROP_AUTO_WB, 0)    # holds the gains the camera had settled on
        if s.lock_exposure:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_MANUAL)
            if s.exposure_us:
                cap.set(cv2.CAP_PROP_EXPOSURE, max(1, round(s.exposure_us / 100)))

    def _set_mode(self, size: tuple[int, int]) -> None:
        cv2 = _cv2()
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._mode = size

    def _read(self, fresh: bool = False, preview: bool = False) -> "np.ndarray":
        """The next frame as RGB, oriented; with ``preview``, scaled into the preview size
        first (OpenCV's area filter: a fraction of the cost of scaling after the colour swap)."""
        if self._cap is None:
            self.start()
        if fresh and not self._is_file:
            self._cap.grab()   # drop the frame that may wait in the driver's buffer
        ok, frame = self._cap.read()
        if not ok and self._is_file:
            # End of a video file: start it again, like a camera that never stops. A file that
            # is gone by now fails to reopen, which is how tests unplug this "camera".
            self.close()
            self.start()
            ok, frame = self._cap.read()
        if not ok or frame is None:
            self.close()
            raise self._gone()
        self._last_shape = frame.shape
        cv2 = _cv2()
        if preview:
            s = self.settings
            box = (s.preview_height, s.preview_width) if self.orientation.rotation in (90, 270) else \
                (s.preview_width, s.preview_height)
            size = fitted_size(frame.shape[1], frame.shape[0], *box)
            if size is not None:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)   # OpenCV delivers BGR
        return self.orientation.apply(frame)
