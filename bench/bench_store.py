"""Record-store figures: write latency as the store grows, browse and statistics at 200k exams,
memory, start-up time; stock TinyDB measured in the same run as the baseline.

    .venv/bin/python bench/bench_store.py            # 0, 10k, 50k, 200k exams (several minutes)
    .venv/bin/python bench/bench_store.py --quick    # 0, 2k, 10k exams (under a minute)
    .venv/bin/python bench/bench_store.py --pathway  # 200k exams + 150k visits, 3 posts (issue 16)

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


# --- the screening pathway (issue 16): visits, referrals, follow-ups of three posts ----------------

PATHWAY_POSTS = ("post-b", "post-c")          # beside the store's own post


def synthetic_pathway(patients: list[dict], n_visits: int, rnd: random.Random, today) -> tuple[list, list, list]:
    """Visits (one or more per woman, over ten years), their referrals and follow-ups, as the
    store would have written them: about 8 % screen positive, most of them treated, the rest
    referred; every earlier follow-up attended, and of the last ones those overdue half open,
    half declared lost."""
    from datetime import date, timedelta
    from appliance.pathway.eligibility import ITEMS
    from appliance.pathway.rules import add_months
    from appliance.store.fields import new_uuid
    visits, referrals, followups = [], [], []
    eligible = {"items": {i: {"value": "yes", "suggested": None, "suggested_by": None, "confirmed": True}
                          for i in ITEMS}, "suggested": "eligible_ablation", "outcome": "eligible_ablation",
                "tz3_confirmed": False, "reason": ""}
    unassessed = {"items": {i: {"value": "unknown", "suggested": None, "suggested_by": None, "confirmed": False}
                            for i in ITEMS}, "suggested": "not_assessed", "outcome": "not_assessed",
                  "tz3_confirmed": False, "reason": ""}
    not_treated = {"status": "not_done", "offered": "unknown", "date": None, "method": "not_done", "method_other": "",
                   "not_treated_reason": "not_recorded", "reason_other": "", "provider": "", "note": ""}
    last_visit: dict[str, dict] = {}
    per_woman = max(1, n_visits // len(patients))
    extra = n_visits - per_woman * len(patients)
    for i, patient in enumerate(patients):
        first = date.fromisoformat(patient["created_at"][:10])
        for k in range(per_woman + (1 if i < extra else 0)):
            day = first + timedelta(days=365 * 3 * k + rnd.randrange(0, 30))
            if day > today:
                break
            positive = rnd.random() < 0.08
            hpv = rnd.choice(("not_done", "not_done", "negative", "positive" if positive else "negative"))
            via = "positive" if positive else rnd.choice(("negative", "negative", "not_done"))
            treated = positive and rnd.random() < 0.85
            when = f"{day.isoformat()}T08:{rnd.randrange(60):02d}:00.000Z"
            visit = {"uuid": new_uuid(), "post_id": patient["post_id"], "created_at": when, "updated_at": when,
                     "created_by": "nurse1", "patient_uuid": patient["uuid"], "patient_pid": patient["pid"],
                     "date": day.isoformat(), "visit_type": "first_screening" if k == 0 else "rescreening",
                     "hiv_status": rnd.choice(("unknown", "negative", "negative", "positive")),
                     "hpv": {"result": hpv, "genotype": "not_done", "sample": "clinician" if hpv != "not_done"
                             else "not_recorded"},
                     "via": {"result": via}, "cytology": {"result": "not_done", "exam_uuid": None},
                     "colposcopy": {"result": "not_done", "tz_type": "not_done", "exam_uuid": None, "model_tz": None,
                                    "clinician_tz": None},
                     "exam_uuids": [], "model_assisted": rnd.random() < 0.3,
                     "eligibility": eligible if positive else unassessed,
                     "treatment": {**not_treated, "status": "received", "offered": "yes", "date": day.isoformat(),
                                   "method": "thermal_ablation"} if treated else not_treated, "note": ""}
            visits.append(visit)
            if positive and not treated:
                referrals.append({"uuid": new_uuid(), "post_id": visit["post_id"], "created_at": when,
                                  "updated_at": when, "created_by": "nurse1", "patient_uuid": patient["uuid"],
                                  "patient_pid": patient["pid"], "programme": "cervical", "visit_uuid": visit["uuid"],
                                  "exam_uuid": None, "date": visit["date"],
                                  "facility": {"id": "other", "name": "Jimma University Medical Center",
                                               "registry_code": ""}, "reason": "excision", "urgency": "routine",
                                  "note": "", "outcome": {"status": "attended" if day < today - timedelta(days=90)
                                                          else "pending", "date": None,
                                                          "hospital_result": "not_recorded", "result_exam_uuid": None,
                                                          "treatment": "not_recorded", "note": ""},
                                  "outcome_history": []})
            months = 12 if treated else 1 if positive else 36
            due = add_months(day, months)
            follow = {"uuid": new_uuid(), "post_id": visit["post_id"], "created_at": when, "updated_at": when,
                      "created_by": "nurse1", "patient_uuid": patient["uuid"], "patient_pid": patient["pid"],
                      "programme": "cervical", "visit_uuid": visit["uuid"], "referral_uuid": None,
                      "purpose": "post_treatment_followup" if treated else "rescreen", "due_date": due.isoformat(),
                      "proposed_date": due.isoformat(), "rule": "bench", "state": "due", "lost_reason": None,
                      "events": [{"action": "created", "at": when, "by": "nurse1"}]}
            earlier = last_visit.get(patient["uuid"])
            if earlier is not None:
                earlier["state"] = "attended"
                earlier["events"].append({"action": "attended", "at": when, "by": "nurse1", "visit_uuid": visit["uuid"]})
            last_visit[patient["uuid"]] = follow
            followups.append(follow)
    for follow in last_visit.values():
        if follow["due_date"] < today.isoformat() and rnd.random() < 0.5:
            follow["state"], follow["lost_reason"] = "lost", "unreachable"
            follow["events"].append({"action": "lost", "at": follow["created_at"], "by": "nurse1",
                                     "reason": "unreachable"})
    return visits, referrals, followups


def pathway_child_figures(data_dir: str, post_id: str, today: str) -> dict:
    from datetime import date
    from appliance.config import load_config
    from appliance.store import Store
    sampler = RssSampler()
    cfg = load_config(data_dir=data_dir, environ={})
    base = rss_mb()
    t = time.perf_counter()
    store = Store.open(cfg)
    figures = {"open_ms": (time.perf_counter() - t) * 1000, "rss_before_open_mb": base}
    gc.collect()
    figures["rss_after_open_mb"] = rss_mb()
    day = date.fromisoformat(today)
    year = {"date_from": "2025-11-01", "date_to": "2026-10-31"}
    figures["indicators_first_ms"] = timed(lambda: store.care.summary(today=day, **year), 1)[0]
    figures["indicators_year_ms"] = timed(lambda: store.care.summary(today=day, **year), 5)
    figures["indicators_all_ms"] = timed(lambda: store.care.summary(today=day), 5)
    figures["indicators_by_post_ms"] = timed(lambda: store.care.summary(today=day, by_post=True, **year), 3)
    figures["followup_list_first_ms"] = timed(lambda: store.care.followup_list(today=day, post_id=post_id), 1)[0]
    figures["followup_list_ms"] = timed(lambda: store.care.followup_list(today=day, post_id=post_id), 20)
    listed = store.care.followup_list(today=day, post_id=post_id)
    figures["listed"] = {k: listed[k]["count"] for k in ("overdue", "due_this_week", "referrals_pending")}
    summary = store.care.summary(today=day, **year)["indicators"]
    figures["screened_year"] = summary["screened"]["numerator"]
    figures["treated_year"] = [summary["treated_eligible"]["numerator"], summary["treated_eligible"]["denominator"]]
    figures["visits"] = len(store.visits.index.by_uuid)
    figures["exams"] = len(store.exams.index.by_uuid)
    figures["rss_after_queries_mb"] = rss_mb()
    figures["peak_rss_mb"] = sampler.stop()
    store.close()
    return figures


def measure_visit_saves(store, n: int, rnd: random.Random) -> list[float]:
    """Real single ``care.save_visit`` calls (visit + follow-up + audit entries, fsynced), each for a
    newly registered woman: VIA positive, checklist eligible, thermal ablation the same day."""
    from datetime import date
    from appliance.pathway.eligibility import ITEMS
    women = [store.patients.register(f"BV-{i:05d}", f"Bench Woman {i}", by="nurse1", age_years=35) for i in range(n)]
    times = []
    for woman in women:
        visit = {"patient_uuid": woman["uuid"], "date": date.today().isoformat(), "visit_type": "first_screening",
                 "hiv_status": rnd.choice(("unknown", "negative", "positive")), "via": {"result": "positive"},
                 "eligibility": {"items": {i: {"value": "yes", "confirmed": True} for i in ITEMS},
                                 "outcome": "eligible_ablation"},
                 "treatment": {"status": "received", "method": "thermal_ablation"}}
        t = time.perf_counter()
        store.care.save_visit(visit, by="nurse1")
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench_pathway(args) -> int:
    """``--pathway``: 200,000 exams and 150,000 visits over ten years at three posts."""
    from datetime import date
    from appliance.config import load_config
    from appliance.store import Store
    n_exams, n_visits = (20_000, 15_000) if args.quick else (200_000, 150_000)
    rnd = random.Random(20260312)
    tmp = tempfile.TemporaryDirectory() if not args.keep else None
    data_dir = Path(args.keep or tmp.name) / "data"
    cfg = load_config(data_dir=data_dir, environ={})
    today = date(2026, 11, 1)
    print(f"# bench_store --pathway: {n_exams} exams, {n_visits} visits, 3 posts, ten years; data in {data_dir}; "
          f"python {sys.version.split()[0]}; {os.cpu_count()} cores (shared machine: figures are indicative)")
    with Store.open(cfg) as store:
        posts = (store.post_id, *PATHWAY_POSTS)
        t = time.perf_counter()
        patients, exams = synthetic_records(store, n_exams, 0, rnd)
        for i, patient in enumerate(patients):
            patient["post_id"] = posts[i % 3]
        by_uuid = {p["uuid"]: p for p in patients}
        for exam in exams:
            exam["post_id"] = by_uuid[exam["patient_uuid"]]["post_id"]
        store.bulk_insert("patients", patients)
        store.bulk_insert("exams", exams)
        del exams
        visits, referrals, followups = synthetic_pathway(patients, n_visits, rnd, today)
        from appliance.store.incoming import check_incoming
        for kind, records in (("visits", visits), ("referrals", referrals), ("followups", followups)):
            for record in records[:: max(1, len(records) // 200)]:
                check_incoming(kind, record)            # the generated records pass an import's checks
            for start in range(0, len(records), 20_000):
                store.bulk_insert(kind, records[start:start + 20_000])
        print(f"built {n_exams} exams, {len(visits)} visits, {len(referrals)} referrals, {len(followups)} follow-ups "
              f"in {time.perf_counter() - t:.1f} s (bulk path)")
        del visits, referrals, followups, patients, by_uuid
        gc.collect()
        disk = disk_baseline(data_dir.parent / "probe")
        saves = measure_visit_saves(store, args.saves or (30 if args.quick else 100), rnd)
        print(f"visit save (visit + follow-up + audit, fsynced): {summary(saves)}")
        print(f"   disk now: one durable 4 KB replace {summary(disk)}")
        local = store.post_id
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
sys.argv = ['x']
from bench.bench_store import pathway_child_figures
print(json.dumps(pathway_child_figures({str(data_dir)!r}, {local!r}, {today.isoformat()!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nat {child['exams']} exams and {child['visits']} visits, fresh process: open {child['open_ms']:.0f} ms, "
          f"RSS {child['rss_after_open_mb']:.0f} MB after open ({child['rss_before_open_mb']:.0f} MB before), "
          f"{child['rss_after_queries_mb']:.0f} MB after queries, peak {child['peak_rss_mb']:.0f} MB")
    print(f"indicators, one year:  first {child['indicators_first_ms']:.0f} ms (ages counted); "
          f"{summary(child['indicators_year_ms'])}")
    print(f"indicators, all time:  {summary(child['indicators_all_ms'])}")
    print(f"indicators, one year by post: {summary(child['indicators_by_post_ms'])}")
    print(f"   e.g. {child['screened_year']} women screened in the year, treated/eligible {child['treated_year']}")
    print(f"follow-up list (one post): first {child['followup_list_first_ms']:.1f} ms; {summary(child['followup_list_ms'])}")
    print(f"   lists {child['listed']}")
    print(f"peak RSS of the building process: {peak_rss_mb():.0f} MB")
    if tmp:
        tmp.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few saves")
    parser.add_argument("--saves", type=int, default=0, help="single saves measured at each size")
    parser.add_argument("--keep", metavar="DIR", help="build the store in DIR and keep it")
    parser.add_argument("--pathway", action="store_true",
                        help="the screening pathway's figures: 200,000 exams and 150,000 visits at three posts")
    args = parser.parse_args()
    if args.pathway:
        return bench_pathway(args)
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
