"""Stopping the kiosk server the way systemd does (SIGTERM) while a live camera preview
(MJPEG stream) is open: the streams end first, the process exits 0 promptly, and its log
holds no traceback (no "Bad file descriptor" from a stream writing to a closed server)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time

from serve_process import APPLIANCE, ServeProcess
from webutil import NURSE, Client


def wait_for_health(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited during start-up"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz?live=1")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer /healthz")


def test_sigterm_with_an_open_preview_stream_exits_cleanly(tmp_path, datasets):
    camera = tmp_path / "microscope"
    camera.mkdir()
    slide = sorted((datasets / "breakhis" / "originals" / "ductal_carcinoma").glob("*.png"))[0]
    (camera / slide.name).write_bytes(slide.read_bytes())
    config = tmp_path / "config.toml"
    config.write_text(f'[camera]\nbackend = "folder"\nfolder = {json.dumps(str(camera))}\npreview_fps = 5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCDMS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(BCCDMS_DATA_DIR=str(tmp_path / "data"), BCCDMS_CONFIG=str(config))
    subprocess.run([str(APPLIANCE), "user", "add", NURSE[0], "--role", "nurse"], input=NURSE[1] + "\n",
                   text=True, env=env, check=True, capture_output=True, timeout=60)

    served = ServeProcess(env, tmp_path / "serve.log")
    proc, port = served.proc, served.port
    try:
        wait_for_health(port, proc)
        client = Client(f"http://127.0.0.1:{port}")
        assert client.login(*NURSE).status == 303
        viewer = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        viewer.request("GET", "/api/camera/stream.mjpg",
                       headers={"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())})
        stream = viewer.getresponse()
        assert stream.status == 200 and stream.getheader("content-type").startswith("multipart/x-mixed-replace")
        assert b"image/jpeg" in stream.read1(65536)       # frames are flowing

        proc.send_signal(signal.SIGTERM)
        code = served.stop(already_signalled=True)
        stream.read()                                     # the stream was ended, not left hanging
        viewer.close()
    finally:
        served.kill()
    output = served.output()
    assert code == 0, output
    assert "Traceback" not in output and "Bad file descriptor" not in output, output
    # Promptly, told by behaviour rather than seconds: waitress did not have to wait for and give up
    # on a thread still serving the stream.
    assert "still running" not in output, output
