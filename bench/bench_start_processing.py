""""Start processing" -> saved record, server side (issue 12, "one pass per image").

The real handler path: a real ``appliance serve`` (waitress, the record store on a temporary
data folder, all seven models of the ResNet152 demo pack loaded), a nurse's client that opens
an exam, uploads a 2592×1936 JPEG (a 5 MP microscope capture made from a real BreakHis image)
and posts "Start processing"; the figure is that POST until the server's redirect to the
saved exam (diagnosis + save; loopback HTTP adds well under a millisecond), median and p90 of
``--runs``. Untimed per run: the upload and the image step page (what the nurse looks at).

    .venv/bin/python bench/bench_start_processing.py                        # this checkout
    .venv/bin/python bench/bench_start_processing.py --baseline /tmp/main   # and another, same run

With ``--baseline`` both servers run at once and are measured in turns (one run on each, then
the next), so the machine's load falls on both alike; the ratio after / before is printed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from served import REPO, checkouts_to_measure, in_turns, print_in_turns
from webutil import VERSION_RE

ANALYSIS = "breast_histopathology"


def one_run(client, patient: str, jpeg: bytes) -> float:
    draft = client.new_draft(patient, ANALYSIS)
    assert client.upload(draft, jpeg).status == 303
    version = int(VERSION_RE.search(client.get(f"/drafts/{draft}").text).group(1))
    started = time.perf_counter()
    res = client.post(f"/drafts/{draft}/process", {"version": version})
    elapsed = (time.perf_counter() - started) * 1000
    assert res.status == 303 and "/exams/" in res.location, (res.status, res.text[:300])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (with its .venv) measured in turns")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per checkout (default 20)")
    parser.add_argument("--pack", type=Path, default=REPO / "weights" / "demo",
                        help="the model pack (default weights/demo: ResNet152, seven models)")
    args = parser.parse_args()
    from model_cache import camera_jpeg
    jpeg = camera_jpeg().read_bytes()
    times = in_turns(checkouts_to_measure(args.baseline), args.pack.resolve(), args.runs, 2, lambda client, patient: one_run(client, patient, jpeg))
    print(f"bench_start_processing: {ANALYSIS}, 2592x1936 JPEG ({len(jpeg) / 1e6:.1f} MB), ResNet152 demo pack, "
          f"POST /drafts/<id>/process -> 303 to the saved exam, {args.runs} runs each, in turns")
    print_in_turns(times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
