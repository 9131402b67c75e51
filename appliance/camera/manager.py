"""The one owner of the camera in a server process, and its live-preview grabber.

Every web request goes through this object; none touches a camera library. A background
thread grabs low-resolution frames at ``[camera] preview_fps`` and keeps the latest one as a
JPEG for any number of viewers. It grabs only while someone watches: it pauses while a
model runs (``busy`` is set: the two CPU cores belong to the model) and while someone holds
it (``hold()``/``release()``: the web part holds it for every request a person waits for,
so decoding, checking and saving an image never share the CPU with the preview either), and
stops the stream when no client asked for a frame for ``[camera] preview_idle_seconds``.

A camera that stops answering (USB cable pulled, demo folder removed) is closed, the state
says so in a sentence for the kiosk, and the thread tries to open it again every second
while someone is watching; when it answers, the preview resumes by itself.
"""
from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ..catalogue import N_
from .base import Camera, CameraUnavailable, backend_class, backend_classes
from .frames import STILL_QUALITY, encode_jpeg

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0          # reconnect attempts while a viewer waits
FIRST_FRAME_WAIT = 5.0       # how long a request waits for the camera to produce a frame
STALE_SECONDS = 1.0          # a frame older than this is not "live" any more (after an idle pause)
BUSY_POLL_SECONDS = 0.05
KEEPALIVE_SECONDS = 1.0      # an idle MJPEG stream repeats its last frame this often


class State:
    OFF = "off"                  # the grabber is not running (server stopping, or never started)
    IDLE = "idle"                # nobody watches: not grabbing
    STARTING = "starting"
    LIVE = "live"
    PAUSED = "paused"            # a model runs, or a request a person waits for holds it
    UNAVAILABLE = "unavailable"  # configured camera does not answer; retrying
    NONE = "none"                # no camera configured or found


@dataclass(frozen=True)
class Frame:
    jpeg: bytes
    seq: int
    at: float                    # time.monotonic() when grabbed


@functools.lru_cache(maxsize=1)
def _placeholder() -> Frame:
    """A dark frame for a stream that has nothing else to send yet."""
    import numpy as np
    return Frame(encode_jpeg(np.full((48, 64, 3), 34, dtype=np.uint8)), 0, 0.0)


def _no_camera() -> CameraUnavailable:
    return CameraUnavailable(N_("No camera found."),
                             N_("Plug in the microscope camera, or use the phone or a file for this image. "
                                "A technician sets the camera in [camera] of the configuration file."))


def choose_camera(settings) -> Camera | None:
    """The backend ``[camera] backend`` asks for; for "auto" the first registered backend
    (``base.REGISTRY``: picamera2, opencv, folder) that detects a camera. None when there is
    no camera at all."""
    chosen = settings.backend
    if chosen == "none":
        return None
    if chosen != "auto":
        return backend_class(chosen)(settings)
    for backend in backend_classes():
        camera = backend.detect(settings)
        if camera is not None:
            return camera
    return None


class CameraManager:
    """See the module docstring. Thread-safe; one per server process."""

    def __init__(self, cfg, busy: threading.Event | None = None, *,
                 chooser: Callable[[object], Camera | None] = choose_camera):
        self.settings = cfg.camera
        self.busy = busy if busy is not None else threading.Event()
        self._choose = chooser
        self._device_lock = threading.RLock()        # one call into the backend at a time
        self._changed = threading.Condition()         # guards the fields below; signals new frames
        self._camera: Camera | None = None
        self._streaming = False
        self._state = State.OFF
        self._error: CameraUnavailable | None = None
        self._description: dict = {}
        self._frame: Frame | None = None
        self._seq = 0
        self._grab_times: collections.deque[float] = collections.deque(maxlen=30)
        self._last_demand = float("-inf")
        self._holds = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- the contract ----------------------------------------------------------------------
    def devices(self) -> list[dict]:
        return [device for backend in backend_classes() for device in backend.devices(self.settings)]

    def describe(self) -> dict:
        with self._changed:
            state, error, description = self._state, self._error, dict(self._description)
            times = list(self._grab_times)
            frame = self._frame
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else None
        return {
            "configured": self.settings.backend,
            "backend": description.pop("backend", None),
            "state": state,
            "message": error.message if error else None,
            "hint": error.hint if error else None,
            "resolution": description.pop("resolution", None),
            "preview": description.pop("preview", None),
            "controls": description.pop("controls", {}),
            "preview_fps": round(fps, 1) if fps else None,
            "target_fps": self.settings.preview_fps,
            "frame": frame.seq if frame else None,
            **description,
        }

    def start(self) -> None:
        """Start the grabber thread (it opens the camera when a viewer first asks). Requests
        for frames start it by themselves, until ``stop()``."""
        with self._changed:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closed = False
            self._stopping.clear()
            self._state = State.IDLE
            self._thread = threading.Thread(target=self._run, name="camera-grabber", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the grabber, end every stream and release the camera (server shutdown)."""
        with self._changed:
            self._closed = True
            self._stopping.set()
            self._changed.notify_all()          # streams and long polls end now, not at their timeout
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self._thread = None
        with self._device_lock:
            self._release()
        self._set_state(State.OFF)

    def hold(self) -> None:
        """Pause the preview until the matching ``release()`` (nested holds count)."""
        with self._changed:
            self._holds += 1

    def release(self) -> None:
        with self._changed:
            self._holds = max(0, self._holds - 1)

    @property
    def paused(self) -> bool:
        return self.busy.is_set() or self._holds > 0

    def preview_jpeg(self) -> bytes:
        """The latest low-resolution frame (while a diagnosis runs: the last one before it)."""
        return self.latest().jpeg

    def latest(self, after: int | None = None, timeout: float = FIRST_FRAME_WAIT) -> Frame:
        """The newest frame; with ``after``, wait up to ``timeout`` for a frame newer than that
        sequence number (a long poll that paces a viewer at the grabber's rate). Raises
        CameraUnavailable when there is no camera or it does not answer."""
        self._note_demand()
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._closed:
                    raise CameraUnavailable(N_("The camera is switched off."),
                                            N_("It starts again with the kiosk server."))
                frame, now = self._frame, time.monotonic()
                if frame is not None:
                    # After an idle pause the last frame is old news: wait for the next one.
                    fresh = after is None and (self._state == State.PAUSED or (
                        self._state == State.LIVE and now - frame.at < STALE_SECONDS))
                    if fresh or (after is not None and frame.seq > after):
                        return frame
                if self._state in (State.UNAVAILABLE, State.NONE) and self._error is not None:
                    raise self._error
                if now >= deadline:
                    if frame is not None:
                        return frame            # paused for a diagnosis: the viewer keeps the last frame
                    raise CameraUnavailable(N_("The camera is still starting."),
                                            N_("Wait a moment; the picture appears by itself."))
                self._changed.wait(deadline - now)

    def stream(self, alive: Callable[[], bool] = lambda: True,
               keepalive: float = KEEPALIVE_SECONDS) -> Iterator[Frame]:
        """Frames for one viewer (an MJPEG response) for as long as ``alive()`` says so.

        While no new frame comes (paused, camera gone) the last one is sent again every
        ``keepalive`` seconds: writing is the only way the server notices a viewer that went
        away, and each open stream holds one of the server's few threads. The same stream
        resumes by itself when the camera is back.
        """
        seq, last_sent = None, time.monotonic()
        while alive() and not self._stopping.is_set():
            try:
                frame = self.latest(after=seq, timeout=keepalive)
            except CameraUnavailable:
                frame = None
                self._stopping.wait(min(0.5, keepalive))
            if frame is not None and frame.seq != seq:
                seq, last_sent = frame.seq, time.monotonic()
                yield frame
            elif time.monotonic() - last_sent >= keepalive:
                last_sent = time.monotonic()
                yield frame or self._frame or _placeholder()

    def capture(self) -> bytes:
        """A full-resolution still as a JPEG. Raises CameraUnavailable."""
        self._note_demand()
        with self._device_lock:
            camera = self._ensure_open()
            frame = self._guarded(camera.still, N_("The camera failed to take the picture."),
                                  N_("Try again; if it keeps failing, restart the box."))
            self._refresh_description()
        return encode_jpeg(frame, STILL_QUALITY)

    # --- the grabber thread ------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / max(1, self.settings.preview_fps)
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            if self.paused:
                self._set_state(State.PAUSED)
                self._stopping.wait(BUSY_POLL_SECONDS)
                next_tick = time.monotonic()
                continue
            if not self._watched():
                self._go_idle()
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                next_tick = time.monotonic()
                continue
            try:
                self._grab_one()
            except CameraUnavailable:
                self._stopping.wait(RETRY_SECONDS)
                next_tick = time.monotonic()
                continue
            next_tick = max(next_tick + period, time.monotonic())
            self._stopping.wait(max(0.0, next_tick - time.monotonic()))

    def _grab_one(self) -> None:
        with self._device_lock:
            camera = self._ensure_open()
            frame = self._guarded(camera.preview_frame, N_("The camera stopped."), N_("The preview retries by itself."))
            self._refresh_description()
        jpeg = encode_jpeg(frame)
        now = time.monotonic()
        with self._changed:
            self._seq += 1
            self._frame = Frame(jpeg, self._seq, now)
            self._grab_times.append(now)
            self._state, self._error = State.LIVE, None
            self._changed.notify_all()

    def _ensure_open(self) -> Camera:
        """The camera, opened and streaming; caller holds the device lock."""
        if self._camera is None:
            try:
                camera = self._choose(self.settings)
            except CameraUnavailable as exc:        # the configured backend's support is missing
                self._set_state(State.UNAVAILABLE, exc)
                raise
            if camera is None:
                error = _no_camera()
                self._set_state(State.NONE, error)
                raise error
            self._camera = camera
        if not self._streaming:
            self._set_state(State.STARTING, self._error)
            self._guarded(self._camera.start, N_("The camera could not start."), N_("The preview retries by itself."))
            self._streaming = True
            self._refresh_description()
        return self._camera

    def _guarded(self, call, failure: str, hint: str):
        """``call()`` into the backend (caller holds the device lock). Whatever goes wrong
        becomes a CameraUnavailable and releases the camera, so the next attempt reopens it;
        a backend bug or a driver hiccup never kills the grabber thread."""
        try:
            return call()
        except CameraUnavailable as exc:
            self._lost(exc)
            raise
        except Exception as exc:
            log.exception("%s", failure)      # the details go to the log, the sentence to the nurse
            error = CameraUnavailable(failure, hint)
            self._lost(error)
            raise error from None

    def _refresh_description(self) -> None:
        """Cache the backend's description (caller holds the device lock), so that status
        requests never wait for a frame or a still in progress."""
        camera = self._camera
        try:
            description = {"backend": camera.backend, **camera.describe()} if camera else {}
        except Exception:
            log.exception("camera describe failed")
            description = {"backend": camera.backend}
        with self._changed:
            self._description = description

    def _lost(self, error: CameraUnavailable) -> None:
        """The camera stopped answering: release it (a new attempt opens it afresh)."""
        log.warning("camera unavailable: %s", error.message)
        self._release()
        self._set_state(State.UNAVAILABLE, error)

    def _release(self) -> None:
        camera, self._camera, self._streaming = self._camera, None, False
        if camera is None:
            return
        try:
            camera.close()
        except Exception:
            log.exception("closing the camera failed")

    def _go_idle(self) -> None:
        with self._device_lock:
            if self._streaming and self._camera is not None:
                try:
                    self._camera.stop()
                except Exception:
                    log.exception("stopping the camera failed")
                    self._release()
                self._streaming = False
        with self._changed:
            self._grab_times.clear()            # the rate is measured afresh when someone watches
            if self._state not in (State.UNAVAILABLE, State.NONE):
                self._state = State.IDLE

    def _set_state(self, state: str, error: CameraUnavailable | None = None) -> None:
        with self._changed:
            self._state, self._error = state, error
            self._changed.notify_all()

    def _note_demand(self) -> None:
        self._last_demand = time.monotonic()
        if self._thread is None and not self._closed:
            self.start()
        self._wake.set()

    def _watched(self) -> bool:
        return time.monotonic() - self._last_demand < self.settings.preview_idle_seconds
