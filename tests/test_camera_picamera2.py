"""The picamera2 backend against a fake ``picamera2``/``libcamera`` pair (a contract test).

No Raspberry Pi here, so the fake implements exactly the picamera2 calls the backend makes,
with picamera2's own signatures (0.3.x, see ``API`` below) and its rules where they matter:
configuration dicts shaped like picamera2's, stream keys and control names checked, one
``Picamera2`` per camera at a time ("pipeline handler in use"), frames shaped by the
configuration and flipped by the libcamera ``Transform``, and a camera that stops answering
when its ribbon cable is pulled. Every call is recorded and bound against ``API``.
The real camera is checked by hand with the list in docs/camera.md.
"""
from __future__ import annotations

import inspect
import io
import sys
import threading
import types

import numpy as np
import pytest
from PIL import Image

from webutil import wait_until

from appliance.camera import CameraManager, CameraUnavailable
from appliance.camera.manager import State
from appliance.camera.picamera2 import Picamera2Camera

SENSOR = (4056, 3040)              # the HQ camera (IMX477)
SENSOR_MODES = [                   # as Picamera2.sensor_modes reports them for the IMX477
    {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (1332, 990), "fps": 120.05,
     "crop_limits": (696, 528, 2664, 1980), "exposure_limits": (31, 667234896, None)},
    {"format": "SRGGB12_CSI2P", "unpacked": "SRGGB12", "bit_depth": 12, "size": (2028, 1080), "fps": 50.03,
     "crop_limits": (0, 440, 4056, 2160), "exposure_limits": (60, 674181621, None)},
    {"format": "SRGGB12_CSI2P", "unpacked": "SRGGB12", "bit_depth": 12, "size": (2028, 1520), "fps": 40.01,
     "crop_limits": (0, 0, 4056, 3040), "exposure_limits": (60, 674181621, None)},
    {"format": "SRGGB12_CSI2P", "unpacked": "SRGGB12", "bit_depth": 12, "size": (4056, 3040), "fps": 10.0,
     "crop_limits": (0, 0, 4056, 3040), "exposure_limits": (114, 694422939, None)},
]
CONTROLS = {"AeEnable", "AwbEnable", "ColourGains", "ExposureTime", "AnalogueGain", "FrameDurationLimits",
            "NoiseReductionMode", "Brightness", "Contrast", "ScalerCrop"}
STREAM_KEYS = ("format", "size", "stride", "preserve_ar")


class _Default:
    """Stands for picamera2's default argument objects (libcamera.Transform(), ColorSpace.Sycc())."""
    def __repr__(self):
        return "<default>"


DEFAULT = _Default()


# The picamera2 API the backend relies on: names and signatures as in picamera2 0.3.x.
class API:
    @staticmethod
    def global_camera_info() -> list: ...
    def __init__(self, camera_num=0, verbose_console=None, tuning=None): ...
    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=DEFAULT, colour_space=DEFAULT,
                                     buffer_count=4, controls={}, display="main", encode="main", queue=True,
                                     sensor={}, use_case="preview") -> dict: ...
    def create_still_configuration(self, main={}, lores=None, raw={}, transform=DEFAULT, colour_space=DEFAULT,
                                   buffer_count=1, controls={}, display=None, encode=None, queue=True,
                                   sensor={}, use_case="still") -> dict: ...
    def configure(self, camera_config=None) -> None: ...
    def start(self, config=None, show_preview=False) -> None: ...
    def capture_array(self, name="main", wait=None, signal_function=None): ...
    def switch_mode_and_capture_array(self, camera_config, name="main", wait=None, signal_function=None, delay=0): ...
    def capture_metadata(self, wait=None, signal_function=None): ...
    def set_controls(self, controls) -> None: ...
    def cancel_all_and_flush(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...
    # properties read: sensor_resolution, sensor_modes, camera_properties
PROPERTIES = {"sensor_resolution", "sensor_modes", "camera_properties"}


class Rig:
    """The fake hardware: which cameras are attached, what every call was."""
    def __init__(self):
        self.attached = True
        self.usb_camera_first = False       # libcamera also lists UVC cameras, in plug order
        self.calls: list[tuple[str, tuple, dict]] = []
        self.instances: list["FakePicamera2"] = []
        self.open_cameras: set[int] = set()
        self.properties_read: set[str] = set()
        self.lock = threading.Lock()
        self.metadata = {"ColourGains": (2.05, 1.62), "ExposureTime": 12345, "AnalogueGain": 1.5,
                         "SensorTimestamp": 0}


def make_fake_modules(rig: Rig):
    libcamera = types.ModuleType("libcamera")

    class Transform:
        def __init__(self, rotation=0, hflip=False, vflip=False, transpose=False):
            if transpose or rotation not in (0, 180):
                raise ValueError("the Raspberry Pi ISP cannot transpose")   # as libcamera refuses it there
            self.hflip, self.vflip = bool(hflip) != (rotation == 180), bool(vflip) != (rotation == 180)
            self.transpose = False
    libcamera.Transform = Transform

    def record(name, args, kwargs):
        inspect.signature(getattr(API, name)).bind(None, *args, **kwargs) if name != "global_camera_info" \
            else inspect.signature(API.global_camera_info).bind(*args, **kwargs)
        with rig.lock:
            rig.calls.append((name, args, kwargs))

    class FakePicamera2:
        @staticmethod
        def global_camera_info():
            record("global_camera_info", (), {})
            usb = [{"Model": "USB Microscope: USB Microscope", "Location": 2,
                    "Id": "/base/axi/pcie@120000/rp1/usb@200000-1:1.0-1bcf:2283"}] if rig.usb_camera_first else []
            if not rig.attached:
                return usb
            return usb + [{"Model": "imx477", "Location": 2, "Rotation": 0,
                           "Id": "/base/soc/i2c0mux/i2c@1/imx477@1a"}]

        def __init__(self, camera_num=0, verbose_console=None, tuning=None):
            record("__init__", (camera_num,), {"verbose_console": verbose_console, "tuning": tuning})
            if not rig.attached:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            if camera_num in rig.open_cameras:
                raise RuntimeError("Failed to acquire camera: Device or resource busy (pipeline handler in use)")
            rig.open_cameras.add(camera_num)
            rig.instances.append(self)
            self.camera_num = camera_num
            self.camera_config = None
            self.controls: dict = {}
            self.started = False
            self.closed = False

        @property
        def sensor_resolution(self):
            rig.properties_read.add("sensor_resolution")
            return SENSOR

        @property
        def sensor_modes(self):
            rig.properties_read.add("sensor_modes")
            return [dict(m) for m in SENSOR_MODES]

        @property
        def camera_properties(self):
            rig.properties_read.add("camera_properties")
            return {"Model": "imx477", "PixelArraySize": SENSOR}

        def _config(self, defaults, main, lores, raw, transform, colour_space, buffer_count, controls, display,
                    encode, queue, sensor, use_case):
            for key in main:
                if key not in STREAM_KEYS:
                    raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {STREAM_KEYS}")
            if sensor and set(sensor) - {"bit_depth", "output_size"}:
                raise RuntimeError(f"Unexpected keys {set(sensor)} in sensor configuration")
            return {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                    "buffer_count": buffer_count, "queue": queue, "main": {**defaults, **main},
                    "lores": lores, "raw": raw, "controls": controls, "sensor": sensor,
                    "display": display, "encode": encode}

        def create_preview_configuration(self, main={}, lores=None, raw={}, transform=DEFAULT, colour_space=DEFAULT,
                                         buffer_count=4, controls={}, display="main", encode="main", queue=True,
                                         sensor={}, use_case="preview"):
            record("create_preview_configuration", (), dict(main=main, transform=transform, controls=controls,
                                                           sensor=sensor))
            return self._config({"format": "XBGR8888", "size": (640, 480), "preserve_ar": True}, main, lores, raw,
                                transform, colour_space, buffer_count, controls, display, encode, queue, sensor,
                                use_case)

        def create_still_configuration(self, main={}, lores=None, raw={}, transform=DEFAULT, colour_space=DEFAULT,
                                       buffer_count=1, controls={}, display=None, encode=None, queue=True,
                                       sensor={}, use_case="still"):
            record("create_still_configuration", (), dict(main=main, transform=transform, controls=controls))
            return self._config({"format": "BGR888", "size": self.sensor_resolution, "preserve_ar": True}, main,
                                lores, raw, transform, colour_space, buffer_count, controls, display, encode,
                                queue, sensor, use_case)

        def _check_controls(self, controls):
            unknown = set(controls) - CONTROLS
            if unknown:
                raise RuntimeError(f"Control {sorted(unknown)[0]} is not advertised by libcamera")

        def configure(self, camera_config=None):
            record("configure", (camera_config,), {})
            if self.started:
                raise RuntimeError("Camera must be stopped before configuring")
            self._check_controls(camera_config["controls"])
            self.camera_config = camera_config
            self.controls = dict(camera_config["controls"])   # a configuration replaces the controls

        def start(self, config=None, show_preview=False):
            record("start", (), {"config": config, "show_preview": show_preview})
            if self.camera_config is None:
                raise RuntimeError("Camera has not been configured")
            self.started = True

        def _frame(self, config, wait):
            if not rig.attached:
                raise TimeoutError("timed out")        # a pulled ribbon cable: frames stop coming
            if not self.started:
                raise RuntimeError("camera not started")
            w, h = config["main"]["size"]
            channels = 4 if config["main"]["format"] == "XBGR8888" else 3
            frame = np.zeros((h, w, channels), dtype=np.uint8)
            frame[: h // 2, : w // 2, 0] = 255      # red square top left: shows every flip and turn
            frame[..., 1] = 40
            transform = config["transform"]
            if getattr(transform, "hflip", False):
                frame = frame[:, ::-1]
            if getattr(transform, "vflip", False):
                frame = frame[::-1]
            return np.ascontiguousarray(frame)

        def capture_array(self, name="main", wait=None, signal_function=None):
            record("capture_array", (name,), {"wait": wait, "signal_function": signal_function})
            return self._frame(self.camera_config, wait)

        def switch_mode_and_capture_array(self, camera_config, name="main", wait=None, signal_function=None,
                                          delay=0):
            record("switch_mode_and_capture_array", (camera_config, name), {"wait": wait})
            preview = self.camera_config
            self.started = False
            self.configure(camera_config)
            self.started = True
            still_controls = dict(self.controls)
            try:
                frame = self._frame(camera_config, wait)
            finally:
                self.started = False
                self.configure(preview)
                self.started = True
            self.last_still_controls = still_controls
            return frame

        def capture_metadata(self, wait=None, signal_function=None):
            record("capture_metadata", (), {"wait": wait})
            if not rig.attached:
                raise TimeoutError("timed out")
            return dict(rig.metadata)

        def set_controls(self, controls):
            record("set_controls", (controls,), {})
            self._check_controls(controls)
            self.controls.update(controls)

        def cancel_all_and_flush(self):
            record("cancel_all_and_flush", (), {})

        def stop(self):
            record("stop", (), {})
            self.started = False

        def close(self):
            record("close", (), {})
            if not self.closed:
                self.closed = True
                rig.open_cameras.discard(self.camera_num)

    picamera2 = types.ModuleType("picamera2")
    picamera2.Picamera2 = FakePicamera2
    return picamera2, libcamera


@pytest.fixture
def rig(monkeypatch) -> Rig:
    rig = Rig()
    picamera2, libcamera = make_fake_modules(rig)
    monkeypatch.setitem(sys.modules, "picamera2", picamera2)
    monkeypatch.setitem(sys.modules, "libcamera", libcamera)
    return rig


@pytest.fixture
def pi_cfg(cfg):
    cfg.camera.backend = "picamera2"
    cfg.camera.preview_idle_seconds = 0.3
    return cfg


def names(rig: Rig) -> list[str]:
    return [c[0] for c in rig.calls]


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_a_whole_session_uses_only_the_picamera2_api_and_one_camera_object(rig, pi_cfg):
    cameras = CameraManager(pi_cfg)
    try:
        for _ in range(3):                                    # watch, capture, walk away; three times
            preview = decode(cameras.preview_jpeg())
            still = decode(cameras.capture())
            wait_until(lambda: cameras.describe()["state"] == State.IDLE)
        assert preview.shape == (480, 640, 3)
        assert still.shape == (SENSOR[1], SENSOR[0], 3)
        # The live view and the still show the same colours: BGR888 arrives as [R, G, B].
        assert preview[10, 10, 0] > 200 and preview[10, 10, 2] < 30
        assert still[10, 10, 0] > 200 and still[10, 10, 2] < 30
    finally:
        cameras.stop()
    used = set(names(rig))
    api = {n for n in vars(API) if not n.startswith("_")} | {"__init__"}
    assert used <= api, f"calls outside the picamera2 API: {used - api}"
    assert rig.properties_read <= PROPERTIES
    assert {"__init__", "create_preview_configuration", "create_still_configuration", "configure", "start",
            "capture_array", "switch_mode_and_capture_array", "stop", "close"} <= used
    assert len(rig.instances) == 1                        # never re-created while it works
    assert names(rig).count("configure") == 1 + 2 * 3     # once, plus each still's switch and back
    assert names(rig)[-2:] == ["stop", "close"]
    # Every frame request has a timeout, so a pulled cable can never hang the server.
    assert all(kw.get("wait") for n, _, kw in rig.calls if n.startswith(("capture", "switch_mode")))


def test_configurations_for_preview_and_full_resolution_still(rig, pi_cfg):
    pi_cfg.camera.hflip = True
    pi_cfg.camera.rotation = 180
    camera = Picamera2Camera(pi_cfg.camera)
    try:
        camera.start()
        picam = rig.instances[0]
        preview, still = camera._preview_config, camera._still_config
        assert preview["main"] == {"format": "BGR888", "size": (640, 480), "preserve_ar": True}
        assert still["main"]["size"] == SENSOR and still["main"]["format"] == "BGR888"
        # The live view uses the smallest sensor mode that sees the whole field (2028×1520 binned),
        # not the 1332×990 crop, so the preview shows what the still will contain.
        assert preview["sensor"] == {"output_size": (2028, 1520), "bit_depth": 12}
        # hflip + 180° = vflip only, done by the ISP.
        assert (preview["transform"].hflip, preview["transform"].vflip) == (False, True)
        assert still["transform"] is preview["transform"]
        assert picam.camera_config is preview and picam.started
        frame = camera.preview_frame()
        assert frame[-10, 10, 0] > 200                     # red square now bottom left
        assert camera.describe()["resolution"] == list(SENSOR)
    finally:
        camera.close()


def test_quarter_turns_are_done_in_software(rig, pi_cfg):
    pi_cfg.camera.rotation = 90
    pi_cfg.camera.still_width, pi_cfg.camera.still_height = 2028, 1520
    camera = Picamera2Camera(pi_cfg.camera)
    try:
        camera.start()
        transform = camera._preview_config["transform"]
        assert (transform.hflip, transform.vflip) == (False, False)
        preview = camera.preview_frame()
        still = camera.still()
        assert preview.shape == (640, 480, 3) and still.shape == (2028, 1520, 3)     # h × w, turned
        assert preview[10, -10, 0] > 200                   # top left turned clockwise → top right
    finally:
        camera.close()


def test_configured_white_balance_and_exposure_locks(rig, pi_cfg):
    pi_cfg.camera.lock_white_balance, pi_cfg.camera.colour_gains = True, [1.9, 1.6]
    pi_cfg.camera.lock_exposure, pi_cfg.camera.exposure_us = True, 20000
    camera = Picamera2Camera(pi_cfg.camera)
    try:
        camera.start()
        camera.still()
        picam = rig.instances[0]
        wanted = {"AwbEnable": False, "ColourGains": (1.9, 1.6), "AeEnable": False, "ExposureTime": 20000,
                  "AnalogueGain": 1.5}
        # The still (after its mode switch) and the preview both run with the locked values.
        assert {k: picam.last_still_controls[k] for k in wanted} == wanted
        assert {k: picam.controls[k] for k in wanted} == wanted
        controls = camera.describe()["controls"]
        assert controls["white_balance_locked"] and controls["exposure_locked"]
        assert controls["ColourGains"] == (1.9, 1.6)
    finally:
        camera.close()


def test_locks_without_values_take_what_the_automatic_algorithms_settled_on(rig, pi_cfg):
    pi_cfg.camera.lock_white_balance = True
    pi_cfg.camera.lock_exposure = True
    camera = Picamera2Camera(pi_cfg.camera)
    try:
        camera.start()
        assert "capture_metadata" in names(rig)
        locked = [c for c in rig.calls if c[0] == "set_controls"][-1][1][0]
        assert locked == {"AwbEnable": False, "ColourGains": (2.05, 1.62), "AeEnable": False,
                          "ExposureTime": 12345, "AnalogueGain": 1.5}
        camera.still()
        assert rig.instances[0].last_still_controls["ColourGains"] == (2.05, 1.62)
        # A restart after an idle pause keeps the lock and does not measure again.
        camera.stop()
        camera.start()
        assert names(rig).count("capture_metadata") == 15
    finally:
        camera.close()


def test_cable_pulled_during_preview_gives_a_message_and_recovers(rig, pi_cfg):
    pi_cfg.camera.preview_idle_seconds = 5
    cameras = CameraManager(pi_cfg)
    try:
        cameras.latest()
        rig.attached = False
        wait_until(lambda: cameras.describe()["state"] == State.UNAVAILABLE)
        info = cameras.describe()
        assert "Raspberry Pi camera" in info["message"] and "ribbon cable" in (info["hint"] or "")
        with pytest.raises(CameraUnavailable):
            cameras.capture()
        # The dead camera was cancelled and closed before anything new was opened.
        assert "cancel_all_and_flush" in names(rig) and rig.instances[0].closed
        gone = cameras.describe()["frame"]
        rig.attached = True
        wait_until(lambda: cameras.describe()["state"] == State.LIVE)
        assert cameras.latest(after=gone, timeout=30).seq > gone
        assert len(rig.instances) == 2                      # re-created only after the failure
        assert decode(cameras.capture()).shape == (SENSOR[1], SENSOR[0], 3)
    finally:
        cameras.stop()


def test_no_camera_attached_or_no_library(rig, pi_cfg, monkeypatch):
    rig.attached = False
    assert Picamera2Camera.devices(pi_cfg.camera) == []
    with pytest.raises(CameraUnavailable) as none:
        Picamera2Camera(pi_cfg.camera).start()
    assert "No Raspberry Pi camera is connected" in none.value.message
    rig.attached = True
    assert Picamera2Camera.devices(pi_cfg.camera) == [{"id": "0", "backend": "picamera2", "name": "imx477 (2)"}]
    monkeypatch.setitem(sys.modules, "picamera2", None)          # import picamera2 → ImportError
    assert Picamera2Camera.devices(pi_cfg.camera) == []
    with pytest.raises(CameraUnavailable) as missing:
        Picamera2Camera(pi_cfg.camera).start()
    assert "not installed" in missing.value.message and "python3-picamera2" in missing.value.hint


def test_auto_prefers_an_attached_pi_camera_and_leaves_usb_cameras_to_opencv(rig, pi_cfg):
    from appliance.camera.manager import choose_camera
    pi_cfg.camera.backend = "auto"
    rig.usb_camera_first = True
    chosen = choose_camera(pi_cfg.camera)
    assert isinstance(chosen, Picamera2Camera) and chosen.camera_num == 1     # the imx477, not the UVC one
    assert Picamera2Camera.devices(pi_cfg.camera) == [{"id": "1", "backend": "picamera2", "name": "imx477 (2)"}]
    rig.attached = False                                   # only the USB camera is left
    assert choose_camera(pi_cfg.camera) is None
    pi_cfg.camera.backend, pi_cfg.camera.device = "picamera2", "0"
    with pytest.raises(CameraUnavailable):
        Picamera2Camera(pi_cfg.camera).start()
