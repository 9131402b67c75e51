"""Server memory under concurrent large uploads (issue 13, item 1), and one normal upload's time.

The attack measured: users each upload a 7,700×7,700 PNG (tens of KB on the wire, inside
``max_image_pixels``) at the same moment. For 1, 4 and 8 such users, on a fresh real
``appliance serve`` with all seven models of the ResNet152 demo pack loaded (``weights/demo``),
this prints the server's RSS before (baseline, after a warm-up upload per user), its peak
during the uploads, while the drafts are open, and once every draft has been replaced by a
new one (retained), and how the uploads were answered: accepted (303), refused with the
"busy" sentence, or anything else (lost: must be 0).

Then the time of one normal upload (a 2592×1936 JPEG) until its preview is received, median
and p90 of ``--runs``, on every checkout's server started together and measured in turns.

    .venv/bin/python bench/bench_upload_memory.py                        # this checkout
    .venv/bin/python bench/bench_upload_memory.py --baseline /tmp/main   # and another one, same run

``--baseline`` runs the same measurements on another checkout's code (its ``.venv``, e.g. a
``git worktree`` of main) first, so before and after come from one run on one machine.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from pathlib import Path

from served import REPO, Served, checkouts_to_measure, in_turns, print_in_turns, register_patient, say

ANALYSIS = "breast_histopathology"
BUSY = "busy"          # the refusal sentence: "The box is busy analysing other images; …"


def big_png(side: int, mode: str) -> bytes:
    from PIL import Image
    colour = {"L": 200, "RGB": (200, 180, 190), "RGBA": (200, 180, 190, 255), "P": 7}[mode]
    buf = io.BytesIO()
    Image.new(mode, (side, side), colour).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def camera_jpeg() -> bytes:
    from model_cache import camera_jpeg as build
    return build().read_bytes()


def round_of(checkout: Path, users: int, png: bytes, normal: bytes, pack: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        served = Served(checkout, Path(tmp), users=users, pack=pack)
        try:
            say(f"{checkout.name}: {users} user(s), server pid {served.proc.pid}; loading the models")
            served.wait_idle()
            clients = [served.client(name) for name in served.users]
            patients = [register_patient(c, f"BENCH-{i:03d}") for i, c in enumerate(clients)]
            for client, patient in zip(clients, patients):     # warm-up: one normal upload each
                assert client.upload(client.new_draft(patient, ANALYSIS), normal).status == 303
            drafts = [c.new_draft(p, ANALYSIS) for c, p in zip(clients, patients)]
            time.sleep(2)
            baseline = served.rss_mb()
            served.reset_peak()
            answers: list = [None] * users
            start = threading.Barrier(users)

            def upload(i: int) -> None:
                start.wait()
                try:
                    res = clients[i].post(f"/drafts/{drafts[i]}/image",
                                          files={"image": ("big.png", png, "image/png")})
                    answers[i] = (res.status, BUSY in res.text)
                except Exception as exc:   # noqa: BLE001 - a lost answer is what this counts
                    answers[i] = (type(exc).__name__, False)
            threads = [threading.Thread(target=upload, args=(i,)) for i in range(users)]
            began = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - began
            peak = served.peak_mb()
            time.sleep(2)
            held = served.rss_mb()
            for client, patient in zip(clients, patients):
                client.new_draft(patient, ANALYSIS)              # replaces the big draft
            time.sleep(3)
            retained = served.rss_mb()
            accepted = sum(1 for a in answers if a[0] == 303)
            refused = sum(1 for a in answers if a[0] != 303 and a[1])
            return {"users": users, "baseline": baseline, "peak": peak, "held": held, "retained": retained,
                    "accepted": accepted, "refused": refused, "lost": users - accepted - refused,
                    "answers": answers, "seconds": elapsed}
        finally:
            served.stop()


def upload_to_preview(client, patient: str, normal: bytes) -> float:
    """One POST of a normal JPEG until its preview JPEG is received, in ms."""
    draft = client.new_draft(patient, ANALYSIS)
    client.get(f"/drafts/{draft}")
    started = time.perf_counter()
    res = client.post(f"/drafts/{draft}/image", files={"image": ("camera.jpg", normal, "image/jpeg")})
    preview = client.get(f"/drafts/{draft}/image.jpg")
    elapsed = (time.perf_counter() - started) * 1000
    assert res.status == 303 and preview.status == 200, (res.status, preview.status)
    return elapsed


def report(label: str, rounds: list[dict]) -> None:
    print(f"\n{label}")
    print(f"{'users':>5} {'baseline MB':>12} {'peak MB':>9} {'held MB':>9} {'retained MB':>12} "
          f"{'peak-base':>10} {'ret-base':>9} {'accepted':>9} {'refused':>8} {'lost':>5} {'s':>6}")
    for r in rounds:
        print(f"{r['users']:5d} {r['baseline']:12.0f} {r['peak']:9.0f} {r['held']:9.0f} {r['retained']:12.0f} "
              f"{r['peak'] - r['baseline']:10.0f} {r['retained'] - r['baseline']:9.0f} {r['accepted']:9d} "
              f"{r['refused']:8d} {r['lost']:5d} {r['seconds']:6.1f}")
        if r["lost"]:
            print(f"      answers: {r['answers']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (with its .venv) measured first")
    parser.add_argument("--baseline-only", action="store_true", help="measure only the --baseline checkout")
    parser.add_argument("--users", default="1,4,8", help="concurrent large uploads per round (default 1,4,8; 0: none, the timing only)")
    parser.add_argument("--side", type=int, default=7700, help="side of the square PNG (default 7700: 59 Mpx)")
    parser.add_argument("--mode", default="L", choices=("L", "RGB", "RGBA", "P"),
                        help="the PNG's pixel mode (default L: grey, ~70 KB on the wire)")
    parser.add_argument("--runs", type=int, default=10, help="normal upload -> preview runs (default 10)")
    parser.add_argument("--pack", type=Path, default=REPO / "weights" / "demo",
                        help="the model pack (default weights/demo: ResNet152, seven models)")
    args = parser.parse_args()
    counts = [int(n) for n in args.users.split(",") if int(n) > 0]       # --users 0: the timing only
    png, normal = big_png(args.side, args.mode), camera_jpeg()
    say(f"large upload: {args.side}x{args.side} {args.mode} PNG, {len(png) / 1e3:.0f} KB; "
        f"normal: {len(normal) / 1e6:.1f} MB JPEG")
    checkouts = checkouts_to_measure(args.baseline, baseline_only=args.baseline_only)
    results = [(label, [round_of(checkout, n, png, normal, args.pack.resolve()) for n in counts])
               for label, checkout in checkouts]
    times = in_turns(checkouts, args.pack.resolve(), args.runs, 1,
                     lambda client, patient: upload_to_preview(client, patient, normal)) if args.runs else {}
    print(f"bench_upload_memory: {args.side}x{args.side} {args.mode} PNG ({len(png) / 1e3:.0f} KB) uploaded by "
          f"1..N users at once; server RSS from /proc (peak: VmHWM after clear_refs)")
    for label, rounds in results:
        report(label, rounds)
    if times:
        print(f"\nnormal upload (2592x1936 JPEG, {len(normal) / 1e6:.1f} MB) -> preview received, "
              f"servers measured in turns, {args.runs} runs each")
        print_in_turns(times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
