"""USB exchange figures (issue 6): export throughput, import at scale, statistics over the merged store.

    .venv/bin/python bench/bench_exchange.py            # 10,000 images; 100 bundles x 2,000 exams (long: an hour
                                                        # or more on a slow disk, mostly the supervisor's fsyncs)
    .venv/bin/python bench/bench_exchange.py --quick    # 500 images; 4 bundles x 200 exams (about a minute)
    .venv/bin/python bench/bench_exchange.py --parts import,open   # only the supervisor's side (issue 12)
    options: --images N --image-kb K --posts P --exams E --runs R --work DIR --parts LIST

1. Export throughput: a post's store with N analysed images (distinct JPEGs of about K KB) is
   exported whole (``export_bundle(full=True)``: hash, tar, AES-256-GCM, sign, fsync) and
   compared with a plain copy of the same image files into an empty folder (``shutil.copyfile``
   of each, then ``sync``), measured in the same run, alternating. Goal: export >= 0.8x the copy.
   Both end with the data on disk; ``sync`` flushes the whole machine, so run it on a quiet one.
2. Import: P posts with E exams each (small images: the record merge is what grows) export one
   bundle each; a fresh supervisor store imports all P bundles in one child process. Printed:
   per-bundle median and p90, the median of each tenth of the bundles (goal, issue 12: the last
   tenth <= 1.3x the first), the whole import (goal at 100 x 2,000: <= 250 s) and the child's
   peak RSS (goal: bounded, not growing with P; no higher than 431 MB at 200,000 exams).
3. Statistics over the merged store: ``store.stats()`` (the store's index), the cross-post tables
   of the Statistics page (``exchange.stats.cross_post``, from that index) and the DHIS2 data value
   set (also from the index's cells, demo exams told apart there).
4. Opening the merged store: with its summary cache, and without it (``store/index`` removed
   first: the first start after an upgrade or a restore; goal at 200,000 exams: <= 8 s).

Each measured part runs in its own spawned process, so its peak RSS is its own. Results are
printed and written to bench/results/bench_exchange.json.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_inference import peak_rss_mb  # noqa: E402  (VmHWM: a spawned child's own peak, not its parent's)

GOAL_EXPORT_VS_COPY = 0.8


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def describe(values: list[float], unit: str = "s") -> str:
    return f"median {statistics.median(values):8.3f} {unit}  p90 {percentile(values, 90):8.3f} {unit}  (n={len(values)})"


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh interpreter; returns its result (which includes its peak RSS)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


# ------------------------------------------------------------------ building boxes

def _noise_jpeg(side: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def base_jpegs(kb: int, count: int = 8) -> list[bytes]:
    """A few noise JPEGs of about ``kb`` KB (noise does not compress, so the size is predictable)."""
    probe = _noise_jpeg(128, 0)
    side = max(16, int(128 * (kb * 1024 / len(probe)) ** 0.5))
    return [_noise_jpeg(side, seed) for seed in range(count)]


def distinct(base: bytes, i: int) -> bytes:
    """``base`` with a comment segment holding ``i``: a different file (sha256), the same picture."""
    return base[:2] + b"\xff\xfe\x00\x0a" + i.to_bytes(8, "big") + base[2:]


def make_post(data_dir: Path, supervisor_public: str, n_exams: int, image_kb: int, seed: int, name: str):
    """A post's store with ``n_exams`` finished exams (half as many patients), built with the bulk path."""
    from bench_store import synthetic_records
    from appliance.config import load_config
    from appliance.store import Store
    cfg = load_config(data_dir=data_dir, environ={})
    cfg.post.name = name
    cfg.exchange.supervisor_public_key = supervisor_public
    store = Store.open(cfg)
    patients, exams = synthetic_records(store, n_exams, 0, random.Random(seed))
    for record in patients + exams:                # one year of a post's work, not ten
        year = int(record["created_at"][:4])
        record["created_at"] = record["updated_at"] = f"2026{record['created_at'][4:]}" if year < 2026 else \
            record["created_at"]
        if record.get("decision"):
            record["decision"]["at"] = record["created_at"]
    bases = base_jpegs(image_kb)
    total = 0
    for i, exam in enumerate(exams):
        data = distinct(bases[i % len(bases)], seed * 10_000_000 + i)
        sha = hashlib.sha256(data).hexdigest()
        path = store.images.root / sha[:2] / f"{sha}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
        exam["image"] = {"sha256": sha, "ext": "jpg", "width": 0, "height": 0}
    store.bulk_insert("patients", patients)
    store.bulk_insert("exams", exams)
    os.sync()
    return cfg, store, total


def supervisor_config(data_dir: Path):
    from appliance import signing
    from appliance.config import load_config
    from appliance.exchange import keys
    cfg = load_config(data_dir=data_dir, environ={})
    key = keys.create_supervisor_key(keys.supervisor_key_path(cfg))
    return cfg, signing.b64(keys.x25519_public_raw(key))


# ------------------------------------------------------------------ measured parts (children)

def child_export(data_dir: str, supervisor_public: str, dest: str) -> dict:
    from appliance.config import load_config
    from appliance.exchange.export import export_bundle
    from appliance.store import Store
    cfg = load_config(data_dir=data_dir, environ={})
    cfg.exchange.supervisor_public_key = supervisor_public
    with Store.open(cfg) as store:
        start = time.perf_counter()
        result = export_bundle(store, cfg, Path(dest), full=True)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "size": result.size, "images": result.counts["images"], "peak_rss_mb": peak_rss_mb()}


def child_copy(files: list[str], dest: str) -> dict:
    """What a technician would do by hand: copy the files onto the stick, then sync before pulling it."""
    start = time.perf_counter()
    for name in files:
        shutil.copyfile(name, os.path.join(dest, os.path.basename(name)))
    copied = time.perf_counter() - start
    os.sync()
    return {"seconds": time.perf_counter() - start, "copy_only": copied, "peak_rss_mb": peak_rss_mb()}


def child_import(data_dir: str, known_posts: dict, bundles: list[str]) -> dict:
    import logging
    # The synthetic records run to the end of the year: every bundle is told "dated in the future".
    logging.getLogger("appliance.exchange").setLevel(logging.ERROR)
    from appliance.config import load_config
    from appliance.exchange import importer
    from appliance.exchange.container import BundleRefused
    from appliance.store import Store
    cfg = load_config(data_dir=data_dir, environ={})
    cfg.exchange.known_posts = known_posts
    times, cpu, rss = [], [], []
    with Store.open(cfg) as store:
        for path in bundles:
            start, start_cpu = time.perf_counter(), time.process_time()
            (report,) = importer.import_bundles(store, cfg, [Path(path)])
            if isinstance(report, BundleRefused):
                raise report
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            rss.append(peak_rss_mb())
        exams = store.stats()["exams"]
    return {"times": times, "cpu_times": cpu, "peak_rss_mb": peak_rss_mb(), "rss_after_each": rss, "exams": exams,
            "load_after": os.getloadavg()[0]}


def child_statistics(data_dir: str, org_units: dict, runs: int) -> dict:
    from appliance.config import load_config
    from appliance.exchange import dhis2, stats
    from appliance.store import Store
    cfg = load_config(data_dir=data_dir, environ={})
    mapping = Path(data_dir) / "bench-mapping.toml"
    mapping.write_text(dhis2.DEFAULT_MAPPING.read_text().replace(
        "[org_units]\n", "[org_units]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in org_units.items())
        ).replace('count = "decided"', 'count = "all"'))
    cfg.exchange.dhis2_mapping = str(mapping)
    out = {"store_stats": [], "cross_post": [], "dhis2": []}
    with Store.open(cfg) as store:
        opened = peak_rss_mb()
        for _ in range(runs):
            start = time.perf_counter()
            store.stats()
            out["store_stats"].append(time.perf_counter() - start)
            start = time.perf_counter()
            summary = stats.cross_post(store)
            out["cross_post"].append(time.perf_counter() - start)
            start = time.perf_counter()
            written = dhis2.write_data_value_set(store, cfg, Path(data_dir) / "bench-dhis2.json")
            out["dhis2"].append(time.perf_counter() - start)
    out.update(exams=summary["exams"], values=written["values"], rss_open_mb=opened, peak_rss_mb=peak_rss_mb())
    return out


# ------------------------------------------------------------------ the parts

def bench_export(work: Path, n_images: int, image_kb: int, runs: int) -> dict:
    print(f"\n== 1. export throughput: {n_images} images of about {image_kb} KB ==")
    sup_cfg, public = supervisor_config(work / "export-supervisor")
    cfg, store, image_bytes = make_post(work / "export-post", public, n_images, image_kb, 1, "Export post")
    files = sorted(str(p) for p in store.images.root.rglob("*.jpg"))
    store.close()
    print(f"built: {len(files)} files, {image_bytes / 1e6:.0f} MB of images")
    copies, exports = [], []
    dest = work / "dest"
    for run in range(runs + 1):                  # run 0 warms the page cache for both
        for kind in ("copy", "export"):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            if kind == "copy":
                result = in_child(child_copy, files, str(dest))
            else:
                result = in_child(child_export, str(cfg.data_dir), public, str(dest))
            if run:
                (copies if kind == "copy" else exports).append(result)
    shutil.rmtree(dest, ignore_errors=True)
    copy_s = [r["seconds"] for r in copies]
    export_s = [r["seconds"] for r in exports]
    ratio = statistics.median(copy_s) / statistics.median(export_s)
    print(f"plain copy + sync  : {describe(copy_s)}  {image_bytes / 1e6 / statistics.median(copy_s):7.1f} MB/s  "
          f"peak RSS {max(r['peak_rss_mb'] for r in copies):.0f} MB")
    print(f"export bundle      : {describe(export_s)}  {image_bytes / 1e6 / statistics.median(export_s):7.1f} MB/s  "
          f"peak RSS {max(r['peak_rss_mb'] for r in exports):.0f} MB  (bundle {exports[0]['size'] / 1e6:.0f} MB)")
    print(f"export / copy throughput: {ratio:.2f}x  (goal >= {GOAL_EXPORT_VS_COPY}x: "
          f"{'met' if ratio >= GOAL_EXPORT_VS_COPY else 'NOT met'})")
    return {"images": n_images, "image_mb": image_bytes / 1e6, "copy_s": copy_s, "export_s": export_s,
            "ratio": ratio, "export_peak_rss_mb": max(r["peak_rss_mb"] for r in exports),
            "copy_peak_rss_mb": max(r["peak_rss_mb"] for r in copies), "bundle_mb": exports[0]["size"] / 1e6}


def bench_import(work: Path, posts: int, exams: int) -> tuple[dict, Path, dict]:
    from appliance import signing
    from appliance.exchange import keys
    from appliance.exchange.export import export_bundle
    print(f"\n== 2. import: {posts} bundles x {exams} exams ==")
    sup_cfg, public = supervisor_config(work / "supervisor")
    stick = work / "stick"
    stick.mkdir()
    known, org_units, bundles = {}, {}, []
    start = time.perf_counter()
    for i in range(posts):
        cfg, store, _ = make_post(work / f"post-{i:03d}", public, exams, 3, 100 + i, f"Health post {i}")
        bundles.append(str(export_bundle(store, cfg, stick, full=True).path))
        known[store.post_id] = signing.public_b64(keys.post_signing_key(cfg))
        org_units[store.post_id] = f"OU_{i:03d}"
        store.close()
        shutil.rmtree(cfg.data_dir)              # the post's box is not needed any more
    total_mb = sum(Path(b).stat().st_size for b in bundles) / 1e6
    print(f"built {posts} bundles ({total_mb:.0f} MB) in {time.perf_counter() - start:.0f} s")
    load_before = os.getloadavg()[0]
    result = in_child(child_import, str(sup_cfg.data_dir), known, bundles)
    times = result["times"]
    print(f"import per bundle  : {describe(times)}  ({exams / statistics.median(times):.0f} exams/s)")
    print(f"import total       : {sum(times):.1f} s for {result['exams']} exams; "
          f"peak RSS {result['peak_rss_mb']:.0f} MB (after the first bundle {result['rss_after_each'][0]:.0f} MB)")
    first, last = times[: max(1, len(times) // 10)], times[-max(1, len(times) // 10):]
    print(f"first vs last tenth of the bundles: {statistics.median(first):.2f} s vs {statistics.median(last):.2f} s "
          f"({statistics.median(last) / statistics.median(first):.2f}x; goal <= 1.3x)")
    by_tenth = tenths(times)
    print("median per bundle, each tenth: " + "  ".join(f"{t:.2f}" for t in by_tenth) + " s")
    # CPU seconds of the importing process (all its threads): what a shared machine's load disturbs least.
    cpu = result["cpu_times"]
    cpu_tenths = tenths(cpu)
    print("  CPU per bundle, each tenth : " + "  ".join(f"{t:.2f}" for t in cpu_tenths) + " s  "
          f"(last/first {cpu_tenths[-1] / cpu_tenths[0]:.2f}x)")
    print(f"whole import       : {sum(times):.1f} s ({sum(cpu):.1f} s CPU); peak RSS {result['peak_rss_mb']:.0f} MB; "
          f"load average {load_before:.1f} before, {result['load_after']:.1f} after")
    return ({"posts": posts, "exams_per_bundle": exams, "bundle_mb": total_mb, "tenths": by_tenth,
             "cpu_tenths": cpu_tenths, "load_before": load_before, **result},
            Path(sup_cfg.data_dir), org_units)


def child_open(data_dir: str, drop_cache: bool) -> dict:
    from appliance.config import load_config
    from appliance.store import Store
    cfg = load_config(data_dir=data_dir, environ={})
    if drop_cache:
        shutil.rmtree(Path(data_dir) / "store" / "index", ignore_errors=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    store = Store.open(cfg)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    try:
        exams = store.stats(include_demo=True)["exams"]
    finally:
        store.close()
    return {"seconds": seconds, "cpu": cpu, "exams": exams, "peak_rss_mb": peak_rss_mb()}


def bench_open(data_dir: Path, runs: int) -> dict:
    print("\n== 4. opening the merged store ==")
    out = {}
    for label, drop in (("with its summary cache", False), ("without its summary cache", True)):
        results = [in_child(child_open, str(data_dir), drop) for _ in range(runs)]
        seconds, cpu = [r["seconds"] for r in results], [r["cpu"] for r in results]
        print(f"open {label:<26}: {describe(seconds)}  CPU median {statistics.median(cpu):.2f} s  "
              f"peak RSS {max(r['peak_rss_mb'] for r in results):.0f} MB  ({results[0]['exams']} exams)")
        out["without_cache" if drop else "with_cache"] = {"seconds": seconds, "cpu": cpu,
                                                          "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}
    return out


def tenths(times: list[float]) -> list[float]:
    """The median time of each tenth of the bundles, in import order."""
    n = len(times)
    parts = [times[n * i // 10: n * (i + 1) // 10] for i in range(10)]
    return [statistics.median(p) for p in parts if p]


def bench_statistics(data_dir: Path, org_units: dict, runs: int) -> dict:
    print("\n== 3. statistics over the merged store ==")
    result = in_child(child_statistics, str(data_dir), org_units, runs)
    print(f"store.stats()        : {describe(result['store_stats'])}")
    print(f"cross-post tables    : {describe(result['cross_post'])}")
    print(f"DHIS2 data value set : {describe(result['dhis2'])}  ({result['values']} values)")
    print(f"{result['exams']} exams; RSS after opening the store {result['rss_open_mb']:.0f} MB, "
          f"peak {result['peak_rss_mb']:.0f} MB")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything works")
    parser.add_argument("--images", type=int, help="images in the export test (default 10000; quick 500)")
    parser.add_argument("--image-kb", type=int, default=120, help="size of each exported image (default 120 KB)")
    parser.add_argument("--posts", type=int, help="bundles imported (default 100; quick 4)")
    parser.add_argument("--exams", type=int, help="exams per bundle (default 2000; quick 200)")
    parser.add_argument("--runs", type=int, help="measured runs of export/copy and statistics (default 3; quick 1)")
    parser.add_argument("--work", help="work folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--parts", default="export,import,statistics,open",
                        help="which parts to run (default: export,import,statistics,open; statistics and open "
                             "need import)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"export", "import", "statistics", "open"} or (parts & {"statistics", "open"} and "import" not in parts):
        parser.error("--parts: a comma-separated list of export, import, statistics, open (the last two need import)")
    images = args.images or (500 if args.quick else 10_000)
    posts = args.posts or (4 if args.quick else 100)
    exams = args.exams or (200 if args.quick else 2_000)
    runs = args.runs or (1 if args.quick else 3)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-exchange-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work} ({shutil.disk_usage(work).free / 1e9:.0f} GB free); {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    try:
        results = {}
        if "export" in parts:
            results["export"] = bench_export(work, images, args.image_kb, runs)
        if "import" in parts:
            results["import"], supervisor, org_units = bench_import(work, posts, exams)
        if "statistics" in parts:
            results["statistics"] = bench_statistics(supervisor, org_units, runs)
        if "open" in parts:
            results["open"] = bench_open(supervisor, runs)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench" / "results" / "bench_exchange.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), **results}, indent=1))
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
