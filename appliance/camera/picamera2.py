"""Raspberry Pi cameras (HQ camera on a microscope, Camera Module 3) through picamera2.

One ``Picamera2`` object lives as long as the server: creating a second one, or re-creating
it for every capture, leaks memory and fails with "pipeline handler in use" (picamera2 #399,
#587, #627, #1183). It is closed and created again only after it stopped answering.

Two configurations, made once: a preview configuration at ``[camera] preview_width`` ×
``preview_height`` for the live view, on a full-field sensor mode so that the live view
shows exactly what a still will contain; and a still configuration at full resolution
(``still_width`` × ``still_height``, 0: the sensor's) used through
``switch_mode_and_capture_array``, which returns to the preview by itself.

For microscopy the colour of an H&E stain must not drift between captures, so white balance
and exposure can be locked (``lock_white_balance``/``colour_gains``,
``lock_exposure``/``exposure_us``). Without configured values the lock takes the values the
automatic algorithms settled on after start (place a blank area of the slide, then start the
preview), and ``describe()`` shows them so a technician can write them into the config.

Flips and 180° turns are done by the sensor pipeline (libcamera ``Transform``); 90° and 270°
are done in software because the Pi's ISP cannot transpose.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..catalogue import N_
from .base import Camera, CameraUnavailable, Orientation

if TYPE_CHECKING:
    import numpy as np

    from ..config import CameraConfig

log = logging.getLogger(__name__)

PREVIEW_TIMEOUT_S = 5.0
STILL_TIMEOUT_S = 20.0         # a mode switch plus long microscope exposures
SETTLE_FRAMES = 15             # frames for AWB/AE to converge before a lock takes their values
PIXEL_FORMAT = "BGR888"        # libcamera's BGR888 arrives in NumPy as [R, G, B]


def _library():
    try:
        from picamera2 import Picamera2
        import libcamera
    except ImportError:
        raise CameraUnavailable(N_("The Raspberry Pi camera library (picamera2) is not installed."),
                                N_("Install python3-picamera2 (Raspberry Pi OS) and create the venv with "
                                   "--system-site-packages, or set [camera] backend to opencv or folder.")) from None
    return Picamera2, libcamera


def _is_pi_camera(info: dict) -> bool:
    """libcamera also lists USB (UVC) cameras, which deliver MJPEG/YUYV rather than the RGB
    this backend asks for; those are the OpenCV backend's."""
    return "usb" not in str(info.get("Id", "")).lower()


class Picamera2Camera(Camera):
    backend = "picamera2"

    def __init__(self, settings: "CameraConfig", camera_num: int | None = None):
        super().__init__(settings)
        device = str(settings.device).strip()
        self.camera_num = camera_num if camera_num is not None else int(device) if device.isdigit() else 0
        self._picam = None
        self._started = False
        self._preview_config: dict | None = None
        self._still_config: dict | None = None
        self._locks: dict = {}
        self._model = ""
        self._still_size: tuple[int, int] | None = None
        hflip, vflip, transpose = self.orientation.as_flips()
        if transpose:
            self._hw_flips = (self.orientation.hflip, self.orientation.vflip)
            self._software = Orientation(self.orientation.rotation)
        else:
            self._hw_flips = (hflip, vflip)
            self._software = Orientation()

    # --- discovery ---------------------------------------------------------------------------
    @classmethod
    def devices(cls, settings: "CameraConfig") -> list[dict]:
        try:
            Picamera2, _ = _library()
            cameras = Picamera2.global_camera_info()
        except Exception:      # no library, no libcamera, no camera: nothing to list
            return []
        return [{"id": str(i), "backend": cls.backend,
                 "name": info.get("Model", "camera") + (f" ({info['Location']})" if "Location" in info else "")}
                for i, info in enumerate(cameras) if _is_pi_camera(info)]

    @classmethod
    def detect(cls, settings: "CameraConfig") -> "Picamera2Camera | None":
        cameras = cls.devices(settings)
        return cls(settings, camera_num=int(cameras[0]["id"])) if cameras else None

    # --- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._picam is None:
            self._open()
        if not self._started:
            try:
                self._picam.start()
            except Exception as exc:
                self.close()
                raise self._failed(exc) from None
            self._started = True
            self._apply_locks()

    def stop(self) -> None:
        if self._picam is not None and self._started:
            self._picam.stop()
        self._started = False

    def close(self) -> None:
        picam, self._picam = self._picam, None
        self._started = False
        if picam is None:
            return
        try:
            picam.stop()
        finally:
            picam.close()

    # --- pictures ----------------------------------------------------------------------------
    def preview_frame(self) -> "np.ndarray":
        self.start()
        try:
            frame = self._picam.capture_array("main", wait=PREVIEW_TIMEOUT_S)
        except Exception as exc:
            self._abandon()
            raise self._failed(exc) from None
        return self._software.apply(frame[:, :, :3])

    def still(self) -> "np.ndarray":
        self.start()
        try:
            frame = self._picam.switch_mode_and_capture_array(self._still_config, "main", wait=STILL_TIMEOUT_S)
        except Exception as exc:
            self._abandon()
            raise self._failed(exc) from None
        return self._software.apply(frame[:, :, :3])

    def describe(self) -> dict:
        preview = self._preview_config["main"]["size"] if self._preview_config else None
        return {"name": self._model or "Raspberry Pi camera",
                "camera": self.camera_num,
                "resolution": list(self._still_size) if self._still_size else None,
                "preview": list(preview) if preview else None,
                "controls": {"white_balance_locked": "AwbEnable" in self._locks,
                             "exposure_locked": "AeEnable" in self._locks,
                             **{k: v for k, v in self._locks.items() if k not in ("AwbEnable", "AeEnable")}},
                "transform": {"hflip": self._hw_flips[0], "vflip": self._hw_flips[1],
                              "software_rotation": self._software.rotation}}

    # --- internals ---------------------------------------------------------------------------
    def _open(self) -> None:
        Picamera2, libcamera = _library()
        try:
            cameras = Picamera2.global_camera_info()
        except Exception as exc:
            raise self._failed(exc) from None
        if self.camera_num >= len(cameras) or not _is_pi_camera(cameras[self.camera_num]):
            raise CameraUnavailable(N_("No Raspberry Pi camera is connected."),
                                    N_("Check the ribbon cable (contacts facing the right way) and restart the box."))
        try:
            picam = Picamera2(self.camera_num)
        except Exception as exc:      # RuntimeError("Camera __init__ sequence did not complete.")
            raise self._failed(exc) from None
        try:
            self._model = str(cameras[self.camera_num].get("Model", ""))
            transform = libcamera.Transform(hflip=int(self._hw_flips[0]), vflip=int(self._hw_flips[1]))
            configured_locks = self._configured_locks()
            still_size = self._even(self.settings.still_width, self.settings.still_height) or picam.sensor_resolution
            self._still_size = tuple(still_size)
            self._preview_config = picam.create_preview_configuration(
                main={"size": self._even(self.settings.preview_width, self.settings.preview_height),
                      "format": PIXEL_FORMAT},
                transform=transform, controls=dict(configured_locks),
                sensor=self._full_field_mode(picam))
            self._still_config = picam.create_still_configuration(
                main={"size": tuple(still_size), "format": PIXEL_FORMAT},
                transform=transform, controls=dict(configured_locks))
            picam.configure(self._preview_config)
        except Exception as exc:
            picam.close()
            raise self._failed(exc) from None
        self._picam = picam
        self._locks = configured_locks

    @staticmethod
    def _even(width: int, height: int) -> tuple[int, int] | None:
        """libcamera wants even sizes; 0 means "not set"."""
        if not width or not height:
            return None
        return (width - width % 2, height - height % 2)

    def _full_field_mode(self, picam) -> dict:
        """The smallest sensor mode that still sees the whole field of view at the preview rate.

        Small modes on many sensors are crops; a crop would make the live view show less of
        the slide than the still captures.
        """
        try:
            modes = picam.sensor_modes
            full = tuple(picam.camera_properties["PixelArraySize"])
        except Exception:
            return {}
        whole = [m for m in modes if tuple(m.get("crop_limits", (0, 0, 0, 0))[2:]) == full
                 and m.get("fps", 0) >= self.settings.preview_fps]
        if not whole:
            return {}
        mode = min(whole, key=lambda m: m["size"][0] * m["size"][1])
        return {"output_size": tuple(mode["size"]), "bit_depth": mode["bit_depth"]}

    def _configured_locks(self) -> dict:
        s = self.settings
        locks: dict = {}
        if s.lock_white_balance and len(s.colour_gains) == 2:
            locks.update(AwbEnable=False, ColourGains=(float(s.colour_gains[0]), float(s.colour_gains[1])))
        if s.lock_exposure and s.exposure_us:
            locks.update(AeEnable=False, ExposureTime=int(s.exposure_us))
        return locks

    def _apply_locks(self) -> None:
        """Lock what is asked for, taking the values the automatic algorithms settled on when
        the configuration gives none. The still configuration carries the same controls, since
        a mode switch replaces the controls with those of the new configuration."""
        s = self.settings
        needs_wb = s.lock_white_balance and "ColourGains" not in self._locks
        # A "locked" exposure with a free analogue gain still drifts, so the gain is measured too.
        needs_ae = s.lock_exposure and "AnalogueGain" not in self._locks
        if not (needs_wb or needs_ae):
            return
        metadata: dict = {}
        for _ in range(SETTLE_FRAMES):
            metadata = self._picam.capture_metadata(wait=PREVIEW_TIMEOUT_S)
        locks = dict(self._locks)
        if needs_wb and "ColourGains" in metadata:
            locks.update(AwbEnable=False, ColourGains=tuple(metadata["ColourGains"]))
        if needs_ae:
            locks["AeEnable"] = False
            locks.setdefault("ExposureTime", int(metadata.get("ExposureTime", 0)) or None)
            locks["AnalogueGain"] = float(metadata.get("AnalogueGain", 1.0))
            if locks["ExposureTime"] is None:
                del locks["ExposureTime"]
        self._locks = locks
        self._preview_config["controls"].update(locks)
        self._still_config["controls"].update(locks)
        self._picam.set_controls(locks)
        log.info("camera controls locked: %s", locks)

    def _abandon(self) -> None:
        """After a timeout (ribbon cable pulled): cancel picamera2's pending jobs so it can close."""
        if self._picam is not None:
            try:
                self._picam.cancel_all_and_flush()
            except Exception:
                log.exception("picamera2 cancel_all_and_flush failed")
        try:
            self.close()
        except Exception:
            log.exception("picamera2 close failed")
            self._picam = None

    @staticmethod
    def _failed(exc: Exception) -> CameraUnavailable:
        log.warning("picamera2: %s: %s", type(exc).__name__, exc)
        return CameraUnavailable(N_("The Raspberry Pi camera does not answer."),
                                 N_("Check the ribbon cable and that no other program uses the camera; "
                                    "the preview retries by itself."))
