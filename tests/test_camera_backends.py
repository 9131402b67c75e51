"""Camera backends and the CameraManager against real images and a real video capture.

The folder backend plays real sample images; the OpenCV backend opens a generated MJPG
video through cv2.VideoCapture exactly as it opens a V4L2 device. Unplugging is removing the
folder or the file; plugging back is restoring it.
"""
from __future__ import annotations

import concurrent.futures
import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webutil import wait_until

from appliance.camera import CameraManager, CameraUnavailable
from appliance.camera.base import Orientation
from appliance.camera.folder import FolderCamera
from appliance.camera.manager import State, choose_camera
from appliance.camera.opencv import OpenCVCamera

COLPOSCOPY = "iarc_colposcopy/originals/type_1/AAAX_4_After_acetic_acid.jpg"   # 800×600 JPEG
HISTOLOGY = "breakhis/originals/adenosis"                                        # 700×460 PNGs


def decode(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture
def camera_cfg(cfg):
    cfg.camera.preview_idle_seconds = 2.0
    return cfg


@pytest.fixture
def image_folder(tmp_path: Path, datasets: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for source in sorted((datasets / HISTOLOGY).iterdir())[:3]:
        shutil.copy(source, folder / source.name)
    return folder


def write_video(path: Path, source: Path, frames: int = 12) -> np.ndarray:
    """An MJPG .avi of a real photo drifting sideways; returns the first frame (RGB)."""
    import cv2
    rgb = np.asarray(Image.open(source).convert("RGB"))
    h, w = rgb.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(rgb, 4 * i, axis=1)[:, :, ::-1]))
    writer.release()
    return rgb


@pytest.fixture
def video(tmp_path: Path, datasets: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "camera.avi"
    return path, write_video(path, datasets / COLPOSCOPY)


def successive_frames(manager: CameraManager, count: int, timeout: float = 15.0) -> list:
    """``count`` preview frames in a row, each newer than the one before (long polls). How fast
    they come is a figure for bench/bench_camera.py, not a pass/fail line on a shared CI core."""
    frames = [manager.latest()]
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        frame = manager.latest(after=frames[-1].seq, timeout=max(0.1, deadline - time.monotonic()))
        assert frame.seq > frames[-1].seq, f"the preview stopped after {len(frames)} frames"
        frames.append(frame)
    return frames


def next_within(stream, seconds: float = 30.0):
    """The stream's next frame, or a failure (never a hang) when it writes nothing for ``seconds``."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(next, stream).result(timeout=seconds)


# --- orientation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
def test_orientation_flips_then_rotates_clockwise(rotation, hflip, vflip):
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    expected = frame
    if hflip:
        expected = np.fliplr(expected)
    if vflip:
        expected = np.flipud(expected)
    for _ in range(rotation // 90):
        expected = np.rot90(expected, k=-1)            # one clockwise quarter turn
    assert np.array_equal(Orientation(rotation, hflip, vflip).apply(frame), expected)
    # The hardware-flip equivalent says the same thing for 0° and 180°.
    h, v, transpose = Orientation(rotation, hflip, vflip).as_flips()
    assert transpose == (rotation in (90, 270))
    if not transpose:
        assert np.array_equal(Orientation(0, h, v).apply(frame), expected)


# --- folder backend ------------------------------------------------------------------------------
def test_folder_camera_previews_and_captures_the_real_file(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    cameras = CameraManager(camera_cfg)
    try:
        preview = decode(cameras.preview_jpeg())
        assert preview.shape[1] <= 640 and preview.shape[0] <= 480
        still = decode(cameras.capture())
        info = cameras.describe()
        assert info["backend"] == "folder" and info["state"] == State.LIVE
        source = np.asarray(Image.open(image_folder / info["source"]).convert("RGB"))
        assert still.shape == source.shape              # full resolution, not the preview
        assert mean_abs_diff(still, source) < 3          # the same picture (JPEG q95)
        assert info["resolution"] == [source.shape[1], source.shape[0]]
    finally:
        cameras.stop()
    assert cameras.describe()["state"] == State.OFF
    with pytest.raises(CameraUnavailable):          # stopped for good: no grabber comes back
        cameras.preview_jpeg()
    assert cameras._thread is None


def test_folder_camera_turns_the_picture_as_configured(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    camera_cfg.camera.rotation, camera_cfg.camera.hflip = 90, True
    cameras = CameraManager(camera_cfg)
    try:
        still = decode(cameras.capture())
        source = np.asarray(Image.open(image_folder / cameras.describe()["source"]).convert("RGB"))
        expected = np.rot90(np.fliplr(source), k=-1)
        assert still.shape == expected.shape
        assert mean_abs_diff(still, expected) < 3
    finally:
        cameras.stop()


def test_folder_camera_plays_files_in_turn_and_skips_damaged_ones(camera_cfg, image_folder):
    (image_folder / "0_damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    camera_cfg.camera.folder_seconds_per_image = 0.2
    cameras = CameraManager(camera_cfg)
    try:
        seen = set()

        def every_slide_shown():
            cameras.latest()
            seen.add(cameras.describe()["source"])
            return len(seen) >= 3
        wait_until(every_slide_shown, timeout=30)
        assert seen == {p.name for p in image_folder.iterdir() if p.suffix == ".png"}
    finally:
        cameras.stop()


def test_folder_removed_during_preview_gives_a_message_and_recovers(camera_cfg, image_folder, tmp_path):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    cameras = CameraManager(camera_cfg)
    try:
        before = cameras.latest()
        image_folder.rename(tmp_path / "unplugged")
        with pytest.raises(CameraUnavailable) as refused:
            wait_until(lambda: cameras.latest(after=before.seq, timeout=1.0) and False, timeout=30)
        assert "gone" in refused.value.message and refused.value.hint
        info = cameras.describe()
        assert info["state"] == State.UNAVAILABLE and "gone" in info["message"]
        with pytest.raises(CameraUnavailable):
            cameras.capture()
        (tmp_path / "unplugged").rename(image_folder)
        frame = wait_until(lambda: _frame_or_none(cameras, info["frame"]), timeout=30)
        assert frame.seq > info["frame"] and cameras.describe()["state"] == State.LIVE
        assert decode(cameras.capture()).shape[0] > 0
    finally:
        cameras.stop()


def _frame_or_none(cameras, after):
    try:
        return cameras.latest(after=after, timeout=0.5)
    except CameraUnavailable:
        return None


def test_folder_that_is_not_set_or_empty_says_what_to_do(camera_cfg, tmp_path):
    camera_cfg.camera.backend = "folder"
    with pytest.raises(CameraUnavailable) as not_set:
        FolderCamera(camera_cfg.camera).start()
    assert "[camera] folder" in not_set.value.hint
    camera_cfg.camera.folder = str(tmp_path)
    with pytest.raises(CameraUnavailable) as empty:
        FolderCamera(camera_cfg.camera).start()
    assert "no readable images" in empty.value.message


# --- OpenCV backend ------------------------------------------------------------------------------
def test_opencv_camera_streams_a_capture_device(camera_cfg, video):
    path, first = video
    camera_cfg.camera.backend, camera_cfg.camera.device = "opencv", str(path)
    cameras = CameraManager(camera_cfg)
    try:
        preview = decode(cameras.preview_jpeg())
        assert preview.shape == (480, 640, 3)             # 800×600 scaled into 640×480
        # Live, not one picture sent again: the video drifts, so every new frame differs from the last.
        shown = [decode(frame.jpeg) for frame in successive_frames(cameras, 6)]
        assert all(mean_abs_diff(a, b) > 1 for a, b in zip(shown, shown[1:]))
        info = cameras.describe()
        assert info["backend"] == "opencv" and info["fourcc"] == "MJPG"
        still = decode(cameras.capture())
        assert still.shape == first.shape                # the device's full resolution
        # The capture is one of the video's frames: the photo shifted by a few pixels at most.
        assert min(mean_abs_diff(still, np.roll(first, 4 * i, axis=1)) for i in range(12)) < 6
    finally:
        cameras.stop()


def test_opencv_device_removed_during_preview_gives_a_message_and_recovers(camera_cfg, video, tmp_path):
    path, _ = video
    camera_cfg.camera.backend, camera_cfg.camera.device = "opencv", str(path)
    cameras = CameraManager(camera_cfg)
    try:
        before = cameras.latest()
        path.rename(tmp_path / "unplugged.avi")
        # The open capture plays to the end of the file, then cannot open it again: unplugged.
        wait_until(lambda: cameras.describe()["state"] == State.UNAVAILABLE, timeout=30)
        info = cameras.describe()
        assert "does not answer" in info["message"] and "plug it in again" in info["hint"]
        (tmp_path / "unplugged.avi").rename(path)
        frame = wait_until(lambda: _frame_or_none(cameras, info["frame"]), timeout=30)
        assert cameras.describe()["state"] == State.LIVE and frame.seq > info["frame"]
    finally:
        cameras.stop()


def test_opencv_missing_device_is_a_clear_message(camera_cfg, tmp_path):
    camera_cfg.camera.device = str(tmp_path / "no-such-camera.avi")
    with pytest.raises(CameraUnavailable) as missing:
        OpenCVCamera(camera_cfg.camera).start()
    assert "does not answer" in missing.value.message
    camera_cfg.camera.device = "/dev/video99"
    with pytest.raises(CameraUnavailable):
        OpenCVCamera(camera_cfg.camera).start()


# --- the manager -----------------------------------------------------------------------------------
def test_preview_pauses_while_a_diagnosis_runs(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    busy = threading.Event()
    cameras = CameraManager(camera_cfg, busy=busy)
    try:
        cameras.latest()
        busy.set()
        wait_until(lambda: cameras.describe()["state"] == State.PAUSED, timeout=30)
        paused_at = cameras.describe()["frame"]
        time.sleep(0.5)
        assert cameras.describe()["frame"] == paused_at           # nothing grabbed, nothing encoded
        assert cameras.latest().seq == paused_at                  # viewers keep the last picture
        busy.clear()
        assert cameras.latest(after=paused_at, timeout=30).seq > paused_at
    finally:
        cameras.stop()


def test_preview_pauses_while_held(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    cameras = CameraManager(camera_cfg)
    try:
        cameras.latest()
        cameras.hold()
        cameras.hold()                                            # two requests at once
        wait_until(lambda: cameras.describe()["state"] == State.PAUSED, timeout=30)
        cameras.release()
        held_at = cameras.describe()["frame"]
        time.sleep(0.3)
        assert cameras.describe()["frame"] == held_at and cameras.paused
        cameras.release()
        assert cameras.latest(after=held_at, timeout=30).seq > held_at
    finally:
        cameras.stop()


def test_a_stream_keeps_writing_while_the_camera_is_gone(camera_cfg, image_folder, tmp_path):
    """A server notices a viewer that left only when it writes; so even with the camera
    unplugged, an open stream sends its last frame again every keepalive period."""
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    cameras = CameraManager(camera_cfg)
    try:
        stream = cameras.stream(keepalive=0.3)
        first = next(stream)
        image_folder.rename(tmp_path / "unplugged")
        wait_until(lambda: cameras.describe()["state"] == State.UNAVAILABLE, timeout=30)
        repeats = [next_within(stream) for _ in range(3)]          # it keeps writing, with no new frame
        assert all(frame.jpeg for frame in repeats) and repeats[-1].seq >= first.seq
        (tmp_path / "unplugged").rename(image_folder)
        fresh = wait_until(lambda: (f := next(stream)).seq > repeats[-1].seq and f, timeout=30)
        assert fresh.seq > first.seq
        # Shutting down ends the stream at once.
        ender = threading.Thread(target=lambda: list(stream))
        ender.start()
        cameras.stop()
        ender.join(2)
        assert not ender.is_alive()
    finally:
        cameras.stop()


def test_preview_stops_grabbing_when_nobody_watches(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    camera_cfg.camera.preview_idle_seconds = 0.3
    cameras = CameraManager(camera_cfg)
    try:
        cameras.latest()
        wait_until(lambda: cameras.describe()["state"] == State.IDLE, timeout=30)
        idle_at = cameras.describe()["frame"]
        time.sleep(0.4)
        assert cameras.describe()["frame"] == idle_at
        # A stale frame is not handed out as live: the next viewer waits for a fresh one.
        assert cameras.latest().seq > idle_at
    finally:
        cameras.stop()


def test_one_camera_object_for_the_life_of_the_server(camera_cfg, image_folder):
    """The backend is created once and reused across idle pauses, previews and captures
    (re-creating Picamera2 leaks and fails); only a failure makes a new one."""
    camera_cfg.camera.backend, camera_cfg.camera.folder = "folder", str(image_folder)
    camera_cfg.camera.preview_idle_seconds = 0.2
    made = []

    def chooser(settings):
        made.append(FolderCamera(settings))
        return made[-1]
    cameras = CameraManager(camera_cfg, chooser=chooser)
    try:
        for _ in range(3):
            cameras.latest()
            cameras.capture()
            wait_until(lambda: cameras.describe()["state"] == State.IDLE, timeout=30)
        assert len(made) == 1
    finally:
        cameras.stop()


def test_no_camera_at_all_says_what_to_do(camera_cfg):
    camera_cfg.camera.backend = "auto"          # this machine: no picamera2, no /dev/video*, no folder
    assert choose_camera(camera_cfg.camera) is None
    cameras = CameraManager(camera_cfg)
    try:
        with pytest.raises(CameraUnavailable) as none:
            cameras.preview_jpeg()
        assert none.value.message == "No camera found." and "phone" in none.value.hint
        assert cameras.describe()["state"] == State.NONE
        with pytest.raises(CameraUnavailable):
            cameras.capture()
    finally:
        cameras.stop()


def test_auto_falls_back_to_the_demo_folder(camera_cfg, image_folder):
    camera_cfg.camera.backend, camera_cfg.camera.folder = "auto", str(image_folder)
    assert isinstance(choose_camera(camera_cfg.camera), FolderCamera)
    assert CameraManager(camera_cfg).devices() == [
        {"id": str(image_folder), "backend": "folder", "name": f"Image folder {image_folder.name}"}]


def test_a_registered_backend_whose_module_is_missing_is_left_out_not_fatal(camera_cfg, image_folder, monkeypatch):
    from appliance.camera import base
    monkeypatch.setitem(base.REGISTRY, "ghost", "appliance.camera.ghost_backend:GhostCamera")
    camera_cfg.camera.backend, camera_cfg.camera.folder = "auto", str(image_folder)
    assert [cls.backend for cls in base.backend_classes()] == ["picamera2", "opencv", "folder"]
    assert isinstance(choose_camera(camera_cfg.camera), FolderCamera)       # auto goes on to the next one
    assert CameraManager(camera_cfg).devices()[0]["backend"] == "folder"
    camera_cfg.camera.backend = "ghost"
    with pytest.raises(CameraUnavailable) as missing:
        choose_camera(camera_cfg.camera)
    assert missing.value.message == "The camera support for ghost is not installed."
    assert "backend" in missing.value.hint
    cameras = CameraManager(camera_cfg)
    try:
        with pytest.raises(CameraUnavailable):
            cameras.capture()
        described = cameras.describe()
        assert described["state"] == State.UNAVAILABLE and described["message"] == missing.value.message
    finally:
        cameras.stop()
