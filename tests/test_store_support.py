"""Helpers shared by the record-store tests (no tests here): real images, real results."""
from __future__ import annotations

import hashlib
import io

from PIL import Image

ANALYSIS_LABELS = {"pap_smear": "abnormal", "cervix_type": "type_2", "cervical_histopathology": "precancer",
                   "breast_histopathology": "ductal_carcinoma"}


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small real JPEG; different seeds give different content (and sha256)."""
    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 13 + 7) % 256)
    buf = io.BytesIO()
    im = Image.new("RGB", size, colour)
    im.putpixel((seed % size[0], (seed // size[0]) % size[1]), (255 - colour[0], 0, 0))
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def result_json(analysis: str = "pap_smear", label: str | None = None) -> dict:
    """A result shaped like the engine's ``Result.to_json()`` (docs/ARCHITECTURE.md): one step, by the
    analysis's model that has ``label`` as a class (a label of no model there gives a result the
    store refuses, as it should)."""
    from appliance import catalogue
    label = label or ANALYSIS_LABELS[analysis]
    models = catalogue.analysis(analysis).model_ids if analysis in catalogue.ANALYSES else ()
    model = next((m for m in models if label in catalogue.MODELS[m].class_ids), models[0] if models else analysis)
    other = next((c for c in catalogue.MODELS[model].class_ids if c != label), "other") if model in catalogue.MODELS else "other"
    return {"analysis": analysis, "image": "upload.jpg", "demo": True, "pack": {"id": "demo", "version": "0.1.0"},
            "runtime": "onnxruntime", "precision": "int8",
            "steps": [{"model": model, "version": "0.1.0-demo", "demo": True,
                       "probabilities": {label: 0.91, other: 0.09}, "top": label, "confidence": 0.91,
                       "uncertain": False}],
            "path": [[model, label]], "label": label, "uncertain": False,
            "out_of_scope": {"flagged": False, "score": 0.1, "reason": None},
            "quality": {"ok": True, "warnings": [], "metrics": {"sharpness": 120.5}},
            "image_info": {"width": 64, "height": 48, "format": "JPEG"},
            "timings_ms": {"decode": 1.0, "total": 30.0}}


def spoiled(result: dict, **changes) -> dict:
    """``result`` with one part changed: ``step_<key>`` sets a key of its first step, any other
    name a key of the result (the bad-result tables of the store and the exchange tests)."""
    step = result["steps"][0]
    for key, value in changes.items():
        if key.startswith("step_"):
            step[key[5:]] = value
        else:
            result[key] = value
    return result


def register(store, pid: str = "JU-000001", name: str = "Almaz Tadesse", **kw) -> dict:
    return store.patients.register(pid, name, by=kw.pop("by", "nurse1"), **kw)


def save_exam(store, patient: dict, analysis: str = "pap_smear", label: str | None = None, seed: int = 0,
              by: str = "nurse1", image_size: tuple[int, int] = (64, 48), **extra) -> dict:
    image = jpeg_bytes(seed, image_size)
    result = result_json(analysis, label)
    result["image_info"]["sha256"] = hashlib.sha256(image).hexdigest()     # the result names its image
    exam = {"patient_uuid": patient["uuid"], "analysis": analysis, "source": "file", "result": result, **extra}
    return store.exams.save(exam, image, by=by)


def snapshot(store) -> dict:
    """Everything a user could see, for 'nothing changed' checks."""
    return {"users": store.users.list(include_other_posts=True),
            "patients": sorted((store.patients.get(u) for u in store.patients.index.by_uuid), key=lambda p: p["uuid"]),
            "exams": sorted((store.exams.get(u) for u in store.exams.index.by_uuid), key=lambda e: e["uuid"]),
            "audit": store.audit.query(limit=1000)[0]}
