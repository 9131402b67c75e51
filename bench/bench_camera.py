"""Camera figures: live-preview rate and server CPU share, capture-to-shown latency, and the
diagnosis latency with the preview running against stopped (the target ratio is ≤ 1.05).

The real server runs as its own process (``appliance serve``), so its CPU time is its own; the
camera is the OpenCV backend reading an MJPG video made from a real H&E image (decode, scale
and JPEG-encode every frame, as with a USB microscope camera in MJPG), or with
``--camera folder`` the folder backend on the 2592×1936 camera-sized JPEG (a 5 MP still).

    .venv/bin/python bench/bench_camera.py            # ResNet152 demo pack (built once: minutes)
    .venv/bin/python bench/bench_camera.py --quick    # tiny models, short windows: checks it works

Phases, all in one run against the same server:
  A. idle baseline: nobody watches (the grabber sleeps)            → server CPU
  B. preview to an HTTP client reading the MJPEG stream            → fps, frame gaps, server CPU
  C. preview in Chromium (the kiosk's image step)                  → server and browser CPU
  D. capture → image shown: POST /api/camera/capture over HTTP, and in Chromium from the tap on
     Capture to the captured image loaded on the reloaded page
  E. "Start processing" (POST /drafts/<id>/process: diagnose + save), breast cascade on the
     2592×1936 JPEG, with an MJPEG client watching vs nobody watching, interleaved pairs
Prints median, p90, CPU shares (of one core and of the machine), peak RSS (server VmHWM, this
process) and the ratios against the baselines of this run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from model_cache import REPO, camera_jpeg, demo_pack, say

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ANALYSIS = "breast_histopathology"
USER = ("benchnurse", "bench-pass-2026")
PREVIEW_IDLE_SECONDS = 1.0
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def row(name: str, values: list[float], unit: str = "ms") -> None:
    print(f"  {name:46} {statistics.median(values):10.1f} {p90(values):10.1f}  {unit}  (n={len(values)})")


# --- the server as its own process ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(path: Path, source: Path, size: tuple[int, int], frames: int = 45) -> None:
    """An MJPG .avi of the camera image drifting slowly, like a slide moved on the stage."""
    import cv2
    import numpy as np
    from PIL import Image
    rgb = np.asarray(Image.open(source).convert("RGB").resize(size, Image.Resampling.BILINEAR))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, size)
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(rgb, 3 * i, axis=1)[:, :, ::-1]))
    writer.release()


def prepare(tmp: Path, pack: Path, camera: str, image: Path, video_size: tuple[int, int]) -> tuple[Path, dict]:
    """Config file, data folder with a user and a patient; returns (config path, patient)."""
    from appliance.config import load_config
    from appliance.store import Store

    if camera == "opencv":
        device = tmp / "camera.avi"
        make_video(device, image, video_size)
        camera_toml = f'backend = "opencv"\ndevice = "{device}"\n'
    else:
        folder = tmp / "microscope"
        folder.mkdir()
        shutil.copy(image, folder)
        camera_toml = f'backend = "folder"\nfolder = "{folder}"\nfolder_seconds_per_image = 3600\n'
    config = tmp / "config.toml"
    config.write_text(f"""[inference]
demo_pack = "{pack}"
[server]
idle_logout_minutes = 120
max_upload_mb = 30
[camera]
{camera_toml}preview_idle_seconds = {PREVIEW_IDLE_SECONDS}
""")
    cfg = load_config(config_file=config, data_dir=tmp / "data", environ={})
    store = Store.open(cfg)
    try:
        store.users.create(*USER, "nurse", by=None)
        patient = store.patients.register("BENCH-CAM-1", "Bench Patient", age_years=45, by=USER[0])
    finally:
        store.close()
    return config, patient


def start_server(config: Path, data: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from appliance.cli import main; sys.exit(main())",
                             "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--config", str(config), "--data-dir", str(data)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not answer /healthz in 300 s")


def cpu_seconds(pid: int) -> float:
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- a small HTTP client with the kiosk's session ----------------------------------------------------
class Kiosk:
    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        hdrs = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **(headers or {})}
        conn.request(method, path, body=body, headers=hdrs)
        res = conn.getresponse()
        data = res.read()
        conn.close()
        for raw in res.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        match = CSRF_RE.search(data.decode("utf-8", "replace"))
        if match:
            self.csrf = match.group(1)
        return res, data

    def form(self, path: str, fields: dict):
        body = urllib.parse.urlencode({"csrf_token": self.csrf, **fields}).encode()
        return self.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self) -> None:
        self.request("GET", "/login")
        res, _ = self.form("/login", {"username": USER[0], "password": USER[1]})
        assert res.status == 303, res.status
        self.request("GET", "/")

    def new_draft(self, patient_uuid: str) -> str:
        res, _ = self.form("/drafts", {"patient_uuid": patient_uuid, "analysis": ANALYSIS})
        assert res.status == 303, res.status
        draft = res.getheader("Location").rsplit("/", 1)[-1]
        self.request("GET", f"/drafts/{draft}")
        return draft

    def upload(self, draft: str, data: bytes) -> None:
        boundary = "----benchcamera"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{self.csrf}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slide.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        res, _ = self.request("POST", f"/drafts/{draft}/image", body,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert res.status == 303, res.status

    def api(self, method: str, path: str, payload: dict | None = None):
        body = json.dumps(payload).encode() if payload is not None else None
        res, data = self.request(method, path, body, {"X-CSRF-Token": self.csrf, "Content-Type": "application/json",
                                                      "X-Passive": "1"})
        return res.status, json.loads(data) if data else None

    def camera_state(self) -> str:
        return self.api("GET", "/api/camera?passive=1")[1]["state"]

    def wait_state(self, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.camera_state() != state:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the camera did not become {state!r}")
            time.sleep(0.1)


class StreamReader(threading.Thread):
    """An MJPEG viewer: reads the stream and notes when each frame arrived."""

    def __init__(self, kiosk: Kiosk):
        super().__init__(daemon=True)
        self.kiosk, self.arrivals, self.stop_flag = kiosk, [], threading.Event()
        self.conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.kiosk.port, timeout=30)
        self.conn.request("GET", "/api/camera/stream.mjpg",
                          headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.kiosk.cookies.items())})
        res = self.conn.getresponse()
        marker = b"Content-Type: image/jpeg"
        tail = b""
        try:
            while not self.stop_flag.is_set():
                chunk = res.read1(65536)
                if not chunk:
                    break
                self.arrivals.extend([time.monotonic()] * (tail + chunk).count(marker))
                tail = chunk[-len(marker):]
        except OSError:
            pass

    def stop(self) -> None:
        self.stop_flag.set()
        if self.conn is not None:
            self.conn.close()
        self.join(5)


def window(pid: int, seconds: float) -> tuple[float, float]:
    """(server CPU seconds, wall seconds) over ``seconds``."""
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return cpu_seconds(pid) - cpu0, time.monotonic() - wall0


def settle(pid: int, timeout: float = 900) -> None:
    """Wait until the server is quiet: it compiles the models in the background after start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu, wall = window(pid, 2.0)
        if cpu / wall < 0.05:
            return
    say("warning: the server never became quiet; the idle baseline includes its background work")


def share(cpu: float, wall: float) -> str:
    cores = os.cpu_count() or 1
    return f"{100 * cpu / wall:5.1f} % of one core, {100 * cpu / wall / cores:5.1f} % of {cores} cores"


# --- the phases ------------------------------------------------------------------------------------------
def preview_over_http(kiosk: Kiosk, pid: int, seconds: float) -> dict:
    reader = StreamReader(kiosk)
    reader.start()
    kiosk.wait_state("live")
    time.sleep(1.0)                                  # past the first frames
    first = len(reader.arrivals)
    cpu, wall = window(pid, seconds)
    arrivals = reader.arrivals[first:]
    reader.stop()
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return {"fps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else 0.0,
            "gaps": gaps, "cpu": cpu, "wall": wall}


def wait_js(page, expression: str, timeout: float = 60, interval: float = 0.005) -> None:
    """Poll a JS expression (page.wait_for_function needs eval, which the kiosk's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {expression}")
        time.sleep(interval)


def chromium_phases(kiosk: Kiosk, base: str, pid: int, patient: dict, seconds: float, runs: int) -> dict:
    import psutil
    from playwright.sync_api import sync_playwright

    out: dict = {"shown_ms": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 800, "height": 480})
        context.add_cookies([{"name": k, "value": v, "url": base} for k, v in kiosk.cookies.items()])
        page = context.new_page()
        draft = kiosk.new_draft(patient["uuid"])
        page.goto(f"{base}/drafts/{draft}")
        # (No wait_for_function: the kiosk's CSP forbids the eval it relies on.)
        page.wait_for_selector("#camera-capture:enabled", timeout=60000)
        time.sleep(1.0)
        chromium = [c for c in psutil.Process().children(recursive=True) if "chrom" in c.name().lower()]

        def browser_cpu() -> float:
            total = 0.0
            for proc in chromium:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total
        b0 = browser_cpu()
        out["cpu"], out["wall"] = window(pid, seconds)
        out["browser_cpu"] = browser_cpu() - b0
        out["server_fps"] = kiosk.api("GET", "/api/camera?passive=1")[1]["preview_fps"]

        for _ in range(runs + 1):                    # the first one warms caches
            page.wait_for_selector("#camera-capture:enabled", timeout=60000)
            time.sleep(1.0)                          # a nurse looks at the live view before the tap
            started = time.perf_counter()
            # The tap posts the capture; the page's poll reloads it with the new image. Shown =
            # the image decoded on the new page (not its load event, which also waits for the
            # live view's first frame).
            with page.expect_navigation(wait_until="commit", timeout=60000):
                page.click("#camera-capture")
            wait_js(page, "(() => { const i = document.getElementById('draft-image');"
                          " return !!i && i.complete && i.naturalWidth > 0; })()")
            out["shown_ms"].append((time.perf_counter() - started) * 1000)
        out["shown_ms"] = out["shown_ms"][1:]
        browser.close()
    return out


def capture_over_http(kiosk: Kiosk, patient: dict, runs: int) -> list[float]:
    draft = kiosk.new_draft(patient["uuid"])
    reader = StreamReader(kiosk)                     # as on the kiosk: the preview is running
    reader.start()
    kiosk.wait_state("live")
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        status, body = kiosk.api("POST", "/api/camera/capture", {"draft": draft})
        assert status == 200, body
        if i:
            times.append((time.perf_counter() - started) * 1000)
    reader.stop()
    return times


def diagnosis_pairs(kiosk: Kiosk, patient: dict, data: bytes, pairs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"stopped": [], "running": [], "frames_during": []}
    for i in range(pairs + 1):                       # pair 0 warms the models
        for mode in (("stopped", "running") if i % 2 else ("running", "stopped")):
            draft = kiosk.new_draft(patient["uuid"])
            kiosk.upload(draft, data)
            reader = None
            if mode == "running":
                reader = StreamReader(kiosk)
                reader.start()
                kiosk.wait_state("live")
                time.sleep(0.5)
            else:
                kiosk.wait_state("idle", timeout=PREVIEW_IDLE_SECONDS + 10)
            started, t0 = time.perf_counter(), time.monotonic()
            res, _ = kiosk.form(f"/drafts/{draft}/process", {"version": 1})   # its one upload
            elapsed, t1 = (time.perf_counter() - started) * 1000, time.monotonic()
            assert res.status == 303, res.status
            if reader is not None:
                # Frames that reached the viewer while the diagnosis ran (should be 0 or 1).
                out["frames_during"].append(sum(1 for t in reader.arrivals if t0 < t < t1))
                reader.stop()
            if i:
                out[mode].append(elapsed)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, short windows: checks the benchmark works")
    parser.add_argument("--arch", choices=("resnet152", "tiny"), help="model architecture (default resnet152; --quick: tiny)")
    parser.add_argument("--camera", choices=("opencv", "folder"), default="opencv")
    parser.add_argument("--video-size", default="1280x960", help="frame size of the OpenCV test camera (WxH)")
    parser.add_argument("--seconds", type=float, help="length of each CPU/fps window (default 20; --quick 3)")
    parser.add_argument("--runs", type=int, help="captures and diagnosis pairs (default 15; --quick 3)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium phases (C and D in the browser)")
    args = parser.parse_args()
    arch = args.arch or ("tiny" if args.quick else "resnet152")
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    runs = args.runs or (3 if args.quick else 15)
    video_size = tuple(int(v) for v in args.video_size.lower().split("x"))

    pack = demo_pack(arch)
    image = camera_jpeg()
    data = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp_name:
        tmp = Path(tmp_name)
        config, patient = prepare(tmp, pack, args.camera, image, video_size)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        say(f"starting the server on {base} ({args.camera} camera, {arch} models)")
        server = start_server(config, tmp / "data", port)
        try:
            kiosk = Kiosk(port)
            kiosk.login()
            say("waiting for the server to load its models")
            settle(server.pid)
            say("A: idle baseline")
            idle_cpu, idle_wall = window(server.pid, seconds)
            say("B: preview to an MJPEG client")
            http_preview = preview_over_http(kiosk, server.pid, seconds)
            kiosk.wait_state("idle", timeout=PREVIEW_IDLE_SECONDS + 10)
            browser = None
            if not args.no_browser:
                say("C, D: preview and capture in Chromium")
                browser = chromium_phases(kiosk, base, server.pid, patient, seconds, runs)
            say("D: capture over HTTP")
            capture_ms = capture_over_http(kiosk, patient, runs)
            say("E: diagnosis with the preview running vs stopped")
            diagnosis = diagnosis_pairs(kiosk, patient, data, runs)
            server_peak = peak_rss_mb(server.pid)
            status = kiosk.api("GET", "/api/camera?passive=1")[1]
        finally:
            server.terminate()
            server.wait(60)

    med = statistics.median
    print(f"bench_camera: {args.camera} camera ({status.get('name')}, still {status.get('resolution')}, "
          f"preview {status.get('preview')} at target {status.get('target_fps')} fps), {arch} INT8 models, "
          f"{os.cpu_count()} CPUs; {runs} runs, {seconds:.0f} s windows")
    print(f"  {'':46} {'median':>10} {'p90':>10}")
    print(f"  preview fps to an MJPEG client                 {http_preview['fps']:10.1f}")
    row("gap between frames (MJPEG client)", http_preview["gaps"])
    print(f"  server CPU, nobody watching (baseline)         {share(idle_cpu, idle_wall)}")
    print(f"  server CPU, MJPEG client watching              {share(http_preview['cpu'], http_preview['wall'])}")
    if browser:
        print(f"  server CPU, Chromium kiosk watching            {share(browser['cpu'], browser['wall'])}"
              f"  (grabber reports {browser['server_fps']} fps)")
        print(f"  Chromium CPU while showing the preview         {share(browser['browser_cpu'], browser['wall'])}")
        row("capture tap -> captured image shown (Chromium)", browser["shown_ms"])
    row("POST /api/camera/capture (HTTP)", capture_ms)
    row("Start processing, preview stopped (baseline)", diagnosis["stopped"])
    row("Start processing, preview running", diagnosis["running"])
    print(f"  preview frames sent during a diagnosis           {max(diagnosis['frames_during']):>8}  (most in one run)")
    ratio = med(diagnosis["running"]) / med(diagnosis["stopped"])
    print(f"  ratio running / stopped (median)               {ratio:10.3f}   target <= 1.05")
    if arch == "tiny":
        print("  (tiny models run in milliseconds: one preview frame already in flight when processing"
              " starts weighs on this ratio; the target is for the ResNet152 pack)")
    print(f"  peak RSS: server {server_peak:.0f} MB, this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
