"""Record-store figures: write latency as the store grows, browse and statistics at 200k exams,
memory, start-up time; stock TinyDB measured in the same run as the baseline.

    .venv/bin/python bench/bench_store.py            # 0, 10k, 50k, 200k exams (several minutes)
    .venv/bin/python bench/bench_store.py --quick    # 0, 2k, 10k exams (under a minute)

Big stores are built with the bulk path (whole chunk files through the store's own durable
TinyDB storage); every figure below is then measured through the public API: real single
``exams.save`` calls (record + 12 KB JPEG + audit entry, each fsynced), real queries.
Exams are spread over ten years, with one patient per two exams. Goals (issue 3): save p95
≤ 20 ms and flat; browse (analysis + name prefix, 25 rows) ≤ 150 ms and stats ≤ 500 ms at 200k.

A save waits for the disk about four times (image; then record and audit entry together), so
beside each save figure the bench prints what one durable small-file replace costs right then.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIRST_NAMES = ["Almaz", "Abebech", "Hana", "Tigist", "Meseret", "Selam", "Birtukan", "Aster", "Mulu", "Genet",
               "Zewditu", "Fatuma", "Chaltu", "Lensa", "Obse", "አበበች", "ትዕግስት", "መሰረት", "ሰላም", "አስቴር"]
LAST_NAMES = ["Kebede", "Tadesse", "Bekele", "Alemu", "Girma", "Haile", "Tesfaye", "Mohammed", "Abdi", "Gemechu",
              "Wolde", "Desta", "ከበደ", "ታደሰ", "በቀለ", "አለሙ", "ግርማ"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):7.2f} ms  p90 {percentile(values, 90):7.2f}  "
            f"p95 {percentile(values, 95):7.2f}  max {max(values):7.2f}  (n={len(values)})")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def jpeg(seed: int) -> bytes:
    from PIL import Image
    rnd = random.Random(seed)
    im = Image.effect_noise((96, 96), 40 + seed % 50).convert("RGB")
    im.putpixel((rnd.randrange(96), rnd.randrange(96)), (seed % 256, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def result_for(analysis: str, label: str, rnd: random.Random) -> dict:
    """An engine result of realistic size (about 1.5 KB of JSON)."""
    from appliance import catalogue
    a = catalogue.ANALYSES[analysis]
    steps = []
    for model_id in a.model_ids[:2]:
        classes = catalogue.MODELS[model_id].class_ids
        probs = [rnd.random() for _ in classes]
        total = sum(probs)
        probabilities = {c: round(p / total, 4) for c, p in zip(classes, probs)}
        top = max(probabilities, key=probabilities.get)
        steps.append({"model": model_id, "version": "1.2.0", "demo": False, "probabilities": probabilities,
                      "top": top, "confidence": probabilities[top], "uncertain": False})
    return {"analysis": analysis, "image": "capture.jpg", "demo": False, "pack": {"id": "jimma-2026", "version": "1.2.0"},
            "runtime": "openvino", "precision": "int8", "steps": steps, "path": [[s["model"], s["top"]] for s in steps],
            "label": label, "uncertain": False, "out_of_scope": {"flagged": False, "score": round(rnd.random(), 3),
                                                                "reason": None},
            "quality": {"ok": True, "warnings": [], "metrics": {"sharpness": round(rnd.uniform(50, 400), 1),
                                                                "brightness": round(rnd.uniform(80, 180), 1),
                                                                "saturation": round(rnd.uniform(0.1, 0.6), 3)}},
            "image_info": {"sha256": "%064x" % rnd.getrandbits(256), "width": 2592, "height": 1936, "format": "JPEG"},
            "timings_ms": {"decode": 41.0, "quality": 3.0, "preprocess": 6.1, steps[0]["model"]: 30.2, "total": 120.4}}


def synthetic_records(store, n_exams: int, start_index: int, rnd: random.Random) -> tuple[list, list]:
    """Finished patient and exam records (as the store would have written them), over ten years."""
    from appliance import catalogue
    from appliance.store.fields import format_time, new_uuid
    labels = catalogue.all_label_ids()
    analyses = list(catalogue.ANALYSES)
    end = datetime(2026, 11, 1, tzinfo=timezone.utc)
    span = timedelta(days=3650).total_seconds()
    patients, exams = [], []
    for i in range(n_exams // 2):
        when = format_time(end - timedelta(seconds=span * (1 - (i + 0.5) / (n_exams / 2))))
        patients.append({"uuid": new_uuid(), "post_id": store.post_id, "created_at": when, "updated_at": when,
                         "pid": f"JU-{start_index // 2 + i:07d}",
                         "full_name": f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)} {rnd.choice(LAST_NAMES)}",
                         "address": "Jimma, kebele %02d" % rnd.randrange(1, 30), "phone": "09%08d" % rnd.randrange(10**8),
                         "birth_date": None, "age_years": rnd.randrange(18, 80), "sex": "F", "created_by": "nurse1"})
    for i in range(n_exams):
        patient = patients[i // 2]
        analysis = rnd.choice(analyses)
        label = rnd.choice(labels[analysis])
        decided = rnd.random() < 0.7
        final = label if not decided or rnd.random() < 0.85 else rnd.choice(labels[analysis])
        when = patient["created_at"]
        exams.append({"uuid": new_uuid(), "post_id": store.post_id, "created_at": when, "updated_at": when,
                      "created_by": "nurse1", "patient_uuid": patient["uuid"], "patient_pid": patient["pid"],
                      "analysis": analysis, "source": "camera",
                      "image": {"sha256": "%064x" % rnd.getrandbits(256), "ext": "jpg", "width": 2592, "height": 1936},
                      "result": result_for(analysis, label, rnd), "label": label, "demo": False,
                      "decision": {"label": final, "agrees": final == label, "note": "", "by": "doctor1", "at": when}
                      if decided else None,
                      "final_label": final, "status": "decided" if decided else "awaiting_decision"})
    return patients, exams


def disk_baseline(folder: Path, n: int = 50) -> list[float]:
    """One durable small-file replace (write, fsync, rename, folder fsync): what one save costs
    several of. Measured in the same run, so a busy or slow disk shows in both figures."""
    folder.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(n):
        t = time.perf_counter()
        tmp = folder / f".probe.tmp-{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, folder / "probe")
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        times.append((time.perf_counter() - t) * 1000)
    return times


def measure_saves(store, patient: dict, n: int, seed: int) -> list[float]:
    from appliance import catalogue
    images = [jpeg(seed + i) for i in range(n)]
    rnd = random.Random(seed)
    times = []
    for i in range(n):
        analysis = list(catalogue.ANALYSES)[i % 4]
        label = catalogue.all_label_ids()[analysis][0]
        exam = {"patient_uuid": patient["uuid"], "analysis": analysis, "source": "camera",
                "result": result_for(analysis, label, rnd)}
        exam["result"]["image_info"]["sha256"] = hashlib.sha256(images[i]).hexdigest()   # as the engine names it
        t = time.perf_counter()
        store.exams.save(exam, images[i], by="nurse1")
        times.append((time.perf_counter() - t) * 1000)
    return times


def timed(fn, repeat: int, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock times in ms; CPU times (this process) go to ``cpu`` when given."""
    out = []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1000)
    return out


def stock_tinydb(sizes: list[int], inserts: int, rnd: random.Random) -> dict[int, list[float]]:
    """Stock TinyDB (JSONStorage, one file, as documented) inserting the same exam records."""
    from tinydb import TinyDB

    class Fake:
        post_id = "post-bench"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = TinyDB(Path(tmp) / "db.json")
        table = db.table("exams")
        have = 0
        for size in sizes:
            if size > have:
                _, records = synthetic_records(Fake, size - have, have, rnd)
                table.insert_multiple(records)
                have = size
            _, records = synthetic_records(Fake, inserts, have, rnd)
            times = []
            for record in records:
                t = time.perf_counter()
                table.insert(record)
                times.append((time.perf_counter() - t) * 1000)
            have += inserts
            out[size] = times
        db.close()
    return out


def open_in_child(data_dir: Path) -> dict:
    """Open the store in a fresh process: start-up time, memory, browse and stats timings."""
    code = f"""
import json, sys, time, gc
sys.path.insert(0, {str(REPO)!r})
sys.argv = ['x']
from bench.bench_store import child_figures
print(json.dumps(child_figures({str(data_dir)!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class RssSampler:
    """Highest RSS seen, sampled every 5 ms (getrusage's peak is inherited across fork/exec)."""

    def __init__(self) -> None:
        import threading
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mb())


def child_figures(data_dir: str) -> dict:
    from appliance.config import load_config
    from appliance.store import Store
    sampler = RssSampler()
    cfg = load_config(data_dir=data_dir, environ={})
    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    store = Store.open(cfg)
    open_ms, open_cpu_ms = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
    gc.collect()
    figures = {"open_ms": open_ms, "open_cpu_ms": open_cpu_ms, "rss_after_open_mb": rss_mb(),
               "rss_before_open_mb": base}
    queries = [("breast_histopathology", "alm"), ("pap_smear", "ከበ"), ("cervix_type", "tig"), ("pap_smear", "a"),
               ("cervical_histopathology", "hana keb")]
    first = timed(lambda: store.exams.query(analysis=queries[0][0], name_prefix=queries[0][1], limit=25), 1)
    browse, browse_cpu = [], []
    for analysis, prefix in queries * 4:
        browse += timed(lambda: store.exams.query(analysis=analysis, name_prefix=prefix, limit=25), 1, browse_cpu)
    figures["browse_first_ms"] = first[0]
    figures["browse_ms"], figures["browse_cpu_ms"] = browse, browse_cpu
    figures["browse_total_example"] = store.exams.query(analysis="pap_smear", name_prefix="a", limit=25)[1]
    figures["stats_first_ms"] = timed(store.stats, 1)[0]
    stats_cpu: list[float] = []
    figures["stats_ms"], figures["stats_cpu_ms"] = timed(store.stats, 5, stats_cpu), stats_cpu
    figures["stats_year_ms"] = timed(lambda: store.stats(date_from="2025-11-01", date_to="2026-10-31"), 5)
    figures["search_ms"] = timed(lambda: store.patients.search("almaz"), 10)
    figures["rss_after_queries_mb"] = rss_mb()
    figures["peak_rss_mb"] = sampler.stop()
    figures["exams"] = len(store.exams.index.by_uuid)
    store.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few saves")
    parser.add_argument("--saves", type=int, default=0, help="single saves measured at each size")
    parser.add_argument("--keep", metavar="DIR", help="build the store in DIR and keep it")
    args = parser.parse_args()
    sizes = [0, 2_000, 10_000] if args.quick else [0, 10_000, 50_000, 200_000]
    saves = args.saves or (30 if args.quick else 100)
    stock_sizes = [0, 1_000, 5_000] if args.quick else [0, 1_000, 10_000, 50_000]
    stock_inserts = 10 if args.quick else 20
    from appliance.config import load_config
    from appliance.store import Store

    rnd = random.Random(20261126)
    tmp = tempfile.TemporaryDirectory() if not args.keep else None
    data_dir = Path(args.keep or tmp.name) / "data"
    cfg = load_config(data_dir=data_dir, environ={})
    print(f"# bench_store: sizes {sizes}, {saves} saves each; data in {data_dir}; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} cores (shared machine: figures are indicative)")
    results = {}
    with Store.open(cfg) as store:
        patient = store.patients.register("BENCH-1", "Bench Patient", by="nurse1")
        have = 0
        for size in sizes:
            if size > have:
                t = time.perf_counter()
                patients, exams = synthetic_records(store, size - have, have, rnd)
                store.bulk_insert("patients", patients)
                store.bulk_insert("exams", exams)
                print(f"built {size:>7} exams in {time.perf_counter() - t:6.1f} s (bulk path)")
                have = size
            gc.collect()
            disk = disk_baseline(data_dir.parent / "probe")
            times = measure_saves(store, patient, saves, seed=size)
            have += saves
            results[size] = times
            print(f"save at {size:>7} exams: {summary(times)}")
            print(f"   disk now: one durable 4 KB replace {summary(disk)}")
    child = open_in_child(data_dir)          # first open in a new process: the summary cache is warm
    print(f"\nat {child['exams']} exams, fresh process: open {child['open_ms']:.0f} ms "
          f"({child['open_cpu_ms']:.0f} ms CPU), "
          f"RSS {child['rss_after_open_mb']:.0f} MB after open ({child['rss_before_open_mb']:.0f} MB before), "
          f"{child['rss_after_queries_mb']:.0f} MB after queries, peak {child['peak_rss_mb']:.0f} MB")
    print(f"browse (analysis + name prefix, 25 rows): first {child['browse_first_ms']:.1f} ms; "
          f"{summary(child['browse_ms'])}")
    print(f"   CPU time: {summary(child['browse_cpu_ms'])}")
    print(f"   e.g. pap_smear + 'a' matches {child['browse_total_example']} exams")
    print(f"stats, all time:  first {child['stats_first_ms']:.0f} ms (makes the cells); {summary(child['stats_ms'])}")
    print(f"   CPU time: {summary(child['stats_cpu_ms'])}")
    print(f"stats, one year:  {summary(child['stats_year_ms'])}")
    print(f"patient search:   {summary(child['search_ms'])}")
    shutil.rmtree(data_dir / "store" / "index")
    cold = open_in_child(data_dir)
    print(f"open without the summary cache (first start after an upgrade or restore): {cold['open_ms']:.0f} ms "
          f"({cold['open_cpu_ms']:.0f} ms CPU), RSS {cold['rss_after_open_mb']:.0f} MB")

    print("\n# baseline: stock TinyDB (JSONStorage: one file rewritten in place, fsynced), same records")
    stock = stock_tinydb(stock_sizes, stock_inserts, rnd)
    for size, times in stock.items():
        print(f"stock insert at {size:>7} exams: {summary(times)}")
    print("\n# ratios (stock TinyDB median / this store's median save, at the nearest size measured)")
    for size, times in stock.items():
        ours = results[min(results, key=lambda s: abs(s - size))]
        print(f"  {size:>7} exams: stock {statistics.median(times):8.2f} ms / ours {statistics.median(ours):6.2f} ms"
              f" = {statistics.median(times) / statistics.median(ours):6.1f}x")
    flat = percentile(results[sizes[-1]], 95) / max(percentile(results[sizes[0]], 95), 1e-9)
    print(f"  save p95 at {sizes[-1]} / at 0 exams = {flat:.2f} (1.0 is flat)")
    print(f"peak RSS of the building process: {peak_rss_mb():.0f} MB")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
