"""Kiosk latency: from the tap on "Start processing" to the result rendered in Chromium.

Breast histopathology (the two- or three-model cascade) on a 2592×1936 JPEG made from a real
BreakHis image, through the real server (waitress, store on a temporary data folder) and
real Chromium (Playwright, system binary). Baselines measured in the same run on the same
engine: the engine's whole diagnosis from the JPEG's bytes (decode, quality, cascade,
heatmap map), and the pure model inference (the cascade's model runs only).

    .venv/bin/python bench/bench_kiosk.py            # ResNet152 demo pack (built once: minutes)
    .venv/bin/python bench/bench_kiosk.py --quick    # tiny models, 3 runs: checks it works

Prints median, p90, peak RSS of this process (server + engine; Chromium is separate) and
the ratios kiosk / engine and kiosk / inference, and the tap count of the quick journey (existing
patient found by card number, PIN login -> result, by touch at 800x480; see existing_patient_taps). The kiosk figure is the browser's own
Navigation Timing (from the POST that the tap sends to the result page's load event, images
included); the wall clock seen by Playwright adds its automation round trips (~0.1-0.2 s).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from model_cache import camera_jpeg, demo_pack, say

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ANALYSIS = "breast_histopathology"
USER = ("benchdoctor", "bench-pass-2026")
# Where the browser's time goes, from the Navigation Timing entry of the result page (its
# start is the POST of "Start processing"; the redirect to the result is inside it).
NAVIGATION_PHASES = """() => { const n = performance.getEntriesByType('navigation')[0];
  return {'POST /process (server: diagnose + save)': n.redirectEnd - n.startTime,
          'result page HTML received': n.responseEnd - n.startTime,
          'DOM ready (scripts run)': n.domContentLoadedEventEnd - n.startTime,
          'load event (images, fonts)': n.loadEventEnd - n.startTime}; }"""


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def start_server(cfg):
    from appliance.web.server import serve
    ready, holder = threading.Event(), {}

    def on_ready(server, ctx):
        holder.update(server=server, ctx=ctx)
        ready.set()

    def run():
        try:
            serve(cfg, host="127.0.0.1", port=0, on_ready=[on_ready])
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(300)
    if "error" in holder:
        raise holder["error"]
    return holder["server"], holder["ctx"], thread


NURSE = ("benchnurse", "bench-nurse-2026", "482913")
CARD = "40217"


def existing_patient_taps(p, base: str, ctx, image: Path) -> dict:
    """Tap count of the quick journey by touch at 800x480: tap one's name, the 6-digit PIN, the
    card number on the on-screen keyboard and its enter key (an exact card number opens the
    patient), the analysis, the image file (one tap: the picker stands for it), Start processing."""
    ctx.store.users.create(NURSE[0], NURSE[1], "nurse", display_name="Bench Nurse", by=None)
    ctx.store.users.set_pin(NURSE[0], NURSE[2], by=None)
    ctx.store.patients.register(CARD, "Tap Patient", age_years=41, by=NURSE[0])
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True).new_page()
    steps: dict[str, int] = {}

    def tap(step: str, selector: str) -> None:
        page.locator(selector).first.tap()
        steps[step] = steps.get(step, 0) + 1

    started = time.perf_counter()
    page.goto(base + "/login")
    tap("name", f'.person[data-username="{NURSE[0]}"]')
    for digit in NURSE[2]:
        tap("PIN", f'.pin-key[data-key="{digit}"]')
    page.wait_for_url(base + "/diagnose**")
    page.wait_for_load_state("load")
    if not page.locator('.hg-button[data-skbtn="{enter}"]').first.is_visible():
        tap("search field", "input[name=q]")
    for char in CARD:
        tap("card number", f'.hg-button[data-skbtn="{char}"]')
    tap("card number", '.hg-button[data-skbtn="{enter}"]')
    page.wait_for_url(f"{base}/patients/**")
    tap("analysis", f'button[data-analysis="{ANALYSIS}"]')
    page.wait_for_url(f"{base}/drafts/**")
    page.set_input_files("#image-file", str(image))
    steps["image file"] = 1
    page.wait_for_selector("#start-processing")
    tap("Start processing", "#start-processing")
    page.wait_for_url(f"{base}/exams/**")
    page.wait_for_selector(".bar-row.top .bar-value", state="visible")
    seconds = time.perf_counter() - started
    browser.close()
    return {"total": sum(steps.values()), "by_step": steps, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 3 runs: checks the benchmark works")
    parser.add_argument("--arch", choices=("resnet152", "tiny"), help="model architecture (default resnet152; --quick: tiny)")
    parser.add_argument("--runs", type=int, help="timed runs (default 15; --quick 3)")
    parser.add_argument("--runtime", default="auto", choices=("auto", "openvino", "onnxruntime"))
    args = parser.parse_args()
    arch = args.arch or ("tiny" if args.quick else "resnet152")
    runs = args.runs or (3 if args.quick else 15)

    from playwright.sync_api import sync_playwright

    from appliance.config import load_config

    pack = demo_pack(arch)
    image = camera_jpeg()
    data = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-kiosk-") as tmp:
        cfg = load_config(data_dir=Path(tmp) / "data", environ={})
        cfg.inference.demo_pack = str(pack)
        cfg.inference.runtime = args.runtime
        cfg.camera.backend = "none"
        cfg.server.idle_logout_minutes = 60
        server, ctx, thread = start_server(cfg)
        base = f"http://127.0.0.1:{server.effective_port}"
        ctx.store.users.create(*USER, "doctor", by=None)
        patient = ctx.store.patients.register("BENCH-1", "Bench Patient", age_years=50, by=USER[0])
        say(f"server on {base}; loading the models")
        ctx.engine.preload()

        # Baselines in this run, on the same engine and image.
        engine_ms, inference_ms = [], []
        models = set(__import__("appliance.catalogue", fromlist=["x"]).analysis(ANALYSIS).model_ids)
        for _ in range(2):                               # warm-up
            ctx.engine.diagnose(data, ANALYSIS)
        for _ in range(runs):
            started = time.perf_counter()
            result = ctx.engine.diagnose(data, ANALYSIS)
            engine_ms.append((time.perf_counter() - started) * 1000)
            inference_ms.append(sum(v for k, v in result.timings_ms.items() if k in models))

        taps = None
        kiosk_ms, phases = [], []
        with sync_playwright() as p:
            taps = existing_patient_taps(p, base, ctx, image)
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.goto(base + "/login")
            page.fill("input[name=username]", USER[0])
            page.fill("input[name=password]", USER[1])
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            for i in range(runs + 1):                    # the first one warms the page caches
                page.goto(f"{base}/patients/{patient['uuid']}")
                page.click(f'button[data-analysis="{ANALYSIS}"]')
                page.wait_for_url(f"{base}/drafts/**")
                page.set_input_files("#image-file", str(image))
                page.wait_for_selector("#start-processing")
                started = time.perf_counter()
                page.click("#start-processing")
                page.wait_for_url(f"{base}/exams/**")
                page.wait_for_selector(".bar-row.top .bar-value", state="visible")
                page.wait_for_function("document.getElementById('exam-image').complete")
                if i:
                    kiosk_ms.append((time.perf_counter() - started) * 1000)
                    phases.append(page.evaluate(NAVIGATION_PHASES))
            browser.close()
        server.close()
        thread.join(30)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = statistics.median
    print(f"bench_kiosk: {ANALYSIS}, {arch} INT8 ({ctx.engine.status()['runtime']}), image 2592x1936 JPEG "
          f"{len(data) / 1e6:.1f} MB, {runs} runs, Chromium {browser.version if hasattr(browser, 'version') else ''}")
    print(f"{'':38} {'median ms':>10} {'p90 ms':>10}")
    in_browser = [ph["load event (images, fonts)"] for ph in phases]
    for name, values in (("kiosk: tap -> result loaded (browser)", in_browser),
                         ("  same, seen by Playwright", kiosk_ms),
                         ("engine.diagnose (bytes in)", engine_ms),
                         ("pure model inference", inference_ms)):
        print(f"{name:38} {med(values):10.1f} {p90(values):10.1f}")
    for name in phases[0]:
        values = [ph[name] for ph in phases]
        print(f"  browser: {name:41} {med(values):8.1f} {p90(values):10.1f}")
    print(f"ratio kiosk / engine.diagnose    {med(in_browser) / med(engine_ms):10.2f}")
    print(f"ratio kiosk / pure inference     {med(in_browser) / med(inference_ms):10.2f}")
    print(f"peak RSS (server + engine)       {peak_mb:10.0f} MB")
    print(f"taps: existing patient by card number, PIN login -> result: {taps['total']} "
          f"({', '.join(f'{k} {v}' for k, v in taps['by_step'].items())}); "
          f"{taps['seconds']:.1f} s scripted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
