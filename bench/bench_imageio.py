"""What the fast JPEG decode (``[inference] fast_jpeg_decode``) costs in accuracy and saves in time.

    .venv/bin/python bench/bench_imageio.py            # all originals of the three datasets
    .venv/bin/python bench/bench_imageio.py --quick    # a few images per dataset

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``), skipping most of the
inverse DCT and the big resize after it. The engine asks for a short side of at least
``FAST_DECODE_MARGIN`` × the model's resize side. For each real image of
../shared/datasets (``originals``: native size) and a 5 MP camera-sized JPEG made from it,
and for margins 1 and 2, this prints how far the fast path moves the network's input
tensor and the probabilities (max and mean |Δp|, top-1 changes) against a full decode,
with the demo pack's ResNet152 (bench/model_cache.py), and the time of decode + preprocess.
Caveat: the demo networks are untrained; |Δp| measures sensitivity of such a network, and
upscaled 5 MP images carry less fine detail than real 5 MP captures.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time

import numpy as np
from PIL import Image

import model_cache
from model_cache import say

DATASETS = {"breakhis": ("breast_histopathology", "breast_binary"),
            "herlev": ("pap_smear", "pap_smear"),
            "iarc_colposcopy": ("cervix_type", "cervix_type")}
MARGINS = (1, 2)


def camera_sized(data: bytes, seed: int) -> bytes:
    """The image as a 5 MP camera would deliver it: short side 1936, sensor grain, JPEG q92."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = 1936 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(seed).normal(0, 4, (img.height, img.width, 3))
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few images per dataset")
    parser.add_argument("--arch", default="resnet152", choices=("resnet152", "tiny"))
    args = parser.parse_args()

    from appliance.config import load_config
    from appliance.inference.cascade import softmax
    from appliance.inference.engine import Engine
    from appliance.inference.imageio import decode
    from appliance.inference.preprocess import preprocess

    pack = model_cache.demo_pack(args.arch)
    cfg = load_config(data_dir=tempfile.mkdtemp(prefix="bench-imageio-"), environ={})
    cfg.inference.threads = 2
    engine = Engine.from_config(cfg, models_dir=pack)
    rows = []
    for dataset, (_, model_id) in DATASETS.items():
        entry = engine.slots[model_id].entry
        files = sorted((model_cache.DATASETS / dataset / "originals").glob("*/*"))
        if args.quick:
            files = files[::max(1, len(files) // 4)][:4]
        say(f"{dataset}: {len(files)} originals, and their 5 MP versions, with {model_id}")
        for n, path in enumerate(files):
            native = path.read_bytes()
            for kind, data in (("native", native), ("5mp", camera_sized(native, n))):
                full = decode(data, 10**9)
                x_full = preprocess(full.image, entry.input)
                p_full = softmax(engine.run_model(model_id, x_full).logits, entry.temperature)
                for margin in MARGINS:
                    fast = decode(data, 10**9, min_short_side=entry.input.resize * margin)
                    row = {"dataset": dataset, "file": path.name, "kind": kind, "margin": margin,
                           "size": [full.width, full.height], "reduced": fast.reduced}
                    if fast.reduced > 1:
                        x_fast = preprocess(fast.image, entry.input, exact=False)   # as the engine does
                        p_fast = softmax(engine.run_model(model_id, x_fast).logits, entry.temperature)
                        row.update(max_dx=float(np.abs(x_fast - x_full).max()),
                                   mean_dx=float(np.abs(x_fast - x_full).mean()),
                                   max_dp=float(np.abs(p_fast - p_full).max()),
                                   top1_changed=bool(p_fast.argmax() != p_full.argmax()))
                    rows.append(row)

    print(f"\nFast JPEG decode vs full decode ({args.arch} demo models; untrained: a sensitivity measure)")
    print(f"{'images':28}{'margin':>7}{'reduced':>9}{'n':>5}{'max|Δx|':>9}{'mean|Δx|':>10}{'max|Δp|':>9}"
          f"{'mean|Δp|':>10}{'top-1 changed':>15}")
    summary = {}
    for dataset in DATASETS:
        for kind in ("native", "5mp"):
            for margin in MARGINS:
                sel = [r for r in rows if (r["dataset"], r["kind"], r["margin"]) == (dataset, kind, margin)]
                hit = [r for r in sel if r["reduced"] > 1]
                factors = sorted({r["reduced"] for r in hit})
                key = f"{dataset}/{kind}/margin{margin}"
                if not hit:
                    print(f"{dataset + ' ' + kind:28}{margin:7}{'none':>9}{len(sel):5}   (decoded in full: too small to reduce)")
                    summary[key] = {"images": len(sel), "reduced": 0}
                    continue
                stats = {"images": len(sel), "reduced": len(hit), "factors": factors,
                         "max_dx": max(r["max_dx"] for r in hit), "mean_dx": float(np.mean([r["mean_dx"] for r in hit])),
                         "max_dp": max(r["max_dp"] for r in hit), "mean_dp": float(np.mean([r["max_dp"] for r in hit])),
                         "top1_changed": sum(r["top1_changed"] for r in hit)}
                summary[key] = stats
                print(f"{dataset + ' ' + kind:28}{margin:7}{'1/' + '/'.join(map(str, factors)):>9}{len(hit):5}"
                      f"{stats['max_dx']:9.3f}{stats['mean_dx']:10.4f}{stats['max_dp']:9.4f}{stats['mean_dp']:10.4f}"
                      f"{stats['top1_changed']:>9} of {len(hit)}")

    jpeg = model_cache.camera_jpeg().read_bytes()
    spec = engine.slots["breast_binary"].entry.input
    runs = 5 if args.quick else 30
    timing = {"full": median_ms(lambda: preprocess(decode(jpeg, 10**9).image, spec), runs)}
    for margin in MARGINS:
        timing[f"margin{margin}"] = median_ms(
            lambda: preprocess(decode(jpeg, 10**9, min_short_side=spec.resize * margin).image, spec, exact=False), runs)
    print(f"\ndecode + preprocess of a 2592x1936 JPEG (median of {runs}): full {timing['full']:.1f} ms, "
          + ", ".join(f"margin {m} {timing[f'margin{m}']:.1f} ms" for m in MARGINS))
    from appliance.inference.engine import FAST_DECODE_MARGIN
    print(f"the engine uses margin {FAST_DECODE_MARGIN} when [inference] fast_jpeg_decode = true (the default)")
    out = model_cache.RESULTS / f"bench_imageio_{args.arch}.json"
    out.write_text(json.dumps({"summary": summary, "timing_ms": timing, "rows": rows}, indent=2) + "\n")
    print(f"(written to {out.relative_to(model_cache.REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
