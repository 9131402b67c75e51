"""De-identified research exports: what a record may say, and images without metadata.

The rule is a whitelist: a de-identified exam carries only fields listed here, each checked
against the catalogue (so no free text can slip through: no names, phones, addresses, notes,
upload file names or user names). Dates become the month of the exam; age becomes an age
group at the exam; ids become pseudonyms, HMAC-SHA256 of the record's uuid under the post's
own secret: stable across exports of one post, unlinkable without that secret.

Images lose every metadata block (EXIF with GPS and device serials, XMP, IPTC, comments, PNG
text chunks) and anything appended after the image data (phones append videos to "motion
photos"). JPEG and PNG are stripped losslessly (a JPEG keeps a fresh EXIF block holding only its
orientation, so it still shows upright); other formats are re-encoded as PNG from their pixels.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import struct

from .. import catalogue
from ..pathway import eligibility as checklist
from ..pathway.codes import VALUE_SETS
from ..store.exams import age_group
from ..store.vocabulary import STATUSES, decision_of, research_label
from ..store.patients import age_on
from . import layout

SOURCES = ("file", "camera", "phone", "cli")
# Whose class a research record's image carries, strongest first. ``expert`` comes with expert
# reviews (a reviewer's verdict, carried back to the post: issue 17); today a record's class is
# the clinician's decided class (``final_label``) or, awaiting a decision or made with demo models,
# only the model's guess (``label``), which no training set may use.
LABEL_SOURCES = ("expert", "clinician", "model")


class Pseudonyms:
    def __init__(self, secret: bytes):
        self._secret = secret

    def of(self, kind: str, value: str) -> str:
        return hmac.new(self._secret, f"{kind}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def _label(analysis_id: str, label) -> str | None:
    return label if label in catalogue.all_label_ids().get(analysis_id, ()) else None


def _decision(analysis_id: str, label) -> str | None:
    """A clinician's decision: a class or a referral (no class)."""
    return label if label in catalogue.all_decision_ids().get(analysis_id, ()) else None


def _short(text, limit: int = 64) -> str | None:
    return str(text)[:limit] if isinstance(text, (str, int, float)) and not isinstance(text, bool) else None


def _probabilities(model_id: str, probs) -> dict[str, float]:
    classes = catalogue.MODELS[model_id].class_ids
    if not isinstance(probs, dict):
        return {}
    return {c: float(p) for c, p in probs.items() if c in classes and isinstance(p, (int, float))}


def _result(result) -> dict:
    """The model's result, whitelisted: models, versions, probabilities, flags."""
    if not isinstance(result, dict):
        return {}
    steps = []
    for step in result.get("steps") or []:
        if not isinstance(step, dict) or step.get("model") not in catalogue.MODELS:
            continue
        model_id = step["model"]
        classes = catalogue.MODELS[model_id].class_ids
        steps.append({
            "model": model_id,
            "version": _short(step.get("version")),
            "demo": bool(step.get("demo")),
            "probabilities": _probabilities(model_id, step.get("probabilities")),
            "top": step.get("top") if step.get("top") in classes else None,
            "confidence": float(step["confidence"]) if isinstance(step.get("confidence"), (int, float)) else None,
            "uncertain": bool(step.get("uncertain")),
        })
    pack = result.get("pack") if isinstance(result.get("pack"), dict) else {}
    oos = result.get("out_of_scope") if isinstance(result.get("out_of_scope"), dict) else {}
    quality = result.get("quality") if isinstance(result.get("quality"), dict) else {}
    return {
        "demo": bool(result.get("demo")),
        "pack": {"id": _short(pack.get("id")), "version": _short(pack.get("version"))},
        "runtime": _short(result.get("runtime"), 32),
        "precision": _short(result.get("precision"), 16),
        "steps": steps,
        "uncertain": bool(result.get("uncertain")),
        "out_of_scope": {"flagged": bool(oos.get("flagged"))},
        "quality": {"ok": bool(quality.get("ok", True)),
                    "warnings": sorted({w["code"] for w in quality.get("warnings") or []
                                        if isinstance(w, dict) and isinstance(w.get("code"), str)
                                        and w["code"].replace("_", "").isalnum() and len(w["code"]) <= 32})},
    }


def patient_age(patient: dict | None, when) -> int | None:
    """The patient's age on the day ``when``, as the store computes it (None: unknown)."""
    if not patient or not isinstance(when, str):
        return None
    return age_on(when, patient.get("birth_date"), patient.get("age_years"), str(patient.get("created_at") or ""))


def label_source(exam: dict) -> str | None:
    """``clinician`` when the image's class is a clinician's decided class on an exam made with
    trained models (``store.exams.research_label``); ``model`` when its only class is the model's
    (awaiting a decision, or a demo exam); None when it has no class at all (a referral)."""
    analysis_id = exam.get("analysis")
    if research_label(analysis_id, exam.get("final_label"), decision_of(exam), bool(exam.get("demo"))):
        return "clinician"
    if exam.get("decision") and not exam.get("demo"):
        return None                       # decided without a class: a referral
    return "model" if exam.get("label") in catalogue.all_label_ids().get(analysis_id, ()) else None


def exam_record(exam: dict, patient: dict | None, pseudonyms: Pseudonyms, image_member: str | None) -> dict:
    analysis_id = exam.get("analysis") if exam.get("analysis") in catalogue.ANALYSES else None
    decision = exam.get("decision") if isinstance(exam.get("decision"), dict) else None
    return {
        "id": pseudonyms.of("exam", str(exam.get("uuid"))),
        "patient": pseudonyms.of("patient", str(exam.get("patient_uuid"))),
        "post_id": exam.get("post_id"),
        "month": str(exam.get("created_at") or "")[:7] or None,
        "analysis": analysis_id,
        "source": exam.get("source") if exam.get("source") in SOURCES else None,
        "label": _label(analysis_id, exam.get("label")),
        "final_label": _decision(analysis_id, exam.get("final_label")),
        "status": exam.get("status") if exam.get("status") in STATUSES else None,
        "demo": bool(exam.get("demo")),
        "label_source": label_source(exam) if analysis_id else None,
        "decision": None if decision is None else {
            "label": _decision(analysis_id, decision.get("label")), "agrees": bool(decision.get("agrees"))},
        "age_group": age_group(patient_age(patient, exam.get("created_at"))),
        "image": image_member,
        "result": _result(exam.get("result")),
    }


# -- the screening pathway's records ---------------------------------------------------------
# The same whitelist rule: codes checked against their value sets, months instead of days, an age
# group instead of an age, pseudonyms instead of ids; no notes, reasons typed by hand, names of
# people or facilities' free text.

def _code(value_set: str, value):
    return value if value in VALUE_SETS[value_set] else None


def _month(day) -> str | None:
    return str(day)[:7] if isinstance(day, str) and len(day) >= 7 else None


def _ref(pseudonyms: Pseudonyms, kind: str, uuid) -> str | None:
    return pseudonyms.of(kind, uuid) if isinstance(uuid, str) and uuid else None


def _part(record: dict, key: str) -> dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def visit_record(visit: dict, patient: dict | None, pseudonyms: Pseudonyms) -> dict:
    hpv, colposcopy, treatment = _part(visit, "hpv"), _part(visit, "colposcopy"), _part(visit, "treatment")
    eligibility = _part(visit, "eligibility")
    items = eligibility.get("items") if isinstance(eligibility.get("items"), dict) else {}
    treated_on = treatment.get("date") if treatment.get("status") == "received" else None
    return {
        "id": pseudonyms.of("visit", str(visit.get("uuid"))),
        "patient": pseudonyms.of("patient", str(visit.get("patient_uuid"))),
        "post_id": visit.get("post_id"),
        "month": _month(visit.get("date")),
        "age_group": age_group(patient_age(patient, visit.get("date"))),
        "visit_type": _code("visit_type", visit.get("visit_type")),
        "hiv_status": _code("hiv_status", visit.get("hiv_status")),
        "hpv": {"result": _code("hpv_result", hpv.get("result")), "genotype": _code("hpv_genotype", hpv.get("genotype")),
                "sample": _code("hpv_sample", hpv.get("sample"))},
        "via": {"result": _code("via_result", _part(visit, "via").get("result"))},
        "cytology": {"result": _code("cytology_result", _part(visit, "cytology").get("result")),
                     "exam": _ref(pseudonyms, "exam", _part(visit, "cytology").get("exam_uuid"))},
        "colposcopy": {"result": _code("colposcopy_result", colposcopy.get("result")),
                       "tz_type": _code("tz_type", colposcopy.get("tz_type")),
                       "model_tz": _code("tz_type", colposcopy.get("model_tz")),
                       "clinician_tz": _code("tz_type", colposcopy.get("clinician_tz")),
                       "exam": _ref(pseudonyms, "exam", colposcopy.get("exam_uuid"))},
        "exams": [_ref(pseudonyms, "exam", e) for e in visit.get("exam_uuids") or [] if isinstance(e, str)],
        "model_assisted": bool(visit.get("model_assisted")),
        "eligibility": {"items": {item: _code("answer", (items.get(item) or {}).get("value"))
                                  for item in checklist.ITEMS if isinstance(items.get(item) or {}, dict)},
                        "outcome": _code("eligibility_outcome", eligibility.get("outcome")),
                        "tz3_confirmed": bool(eligibility.get("tz3_confirmed"))},
        "treatment": {"status": _code("treatment_status", treatment.get("status")),
                      "offered": _code("treatment_offered", treatment.get("offered")),
                      "method": _code("treatment_method", treatment.get("method")),
                      "not_treated_reason": _code("not_treated_reason", treatment.get("not_treated_reason")),
                      "month": _month(treated_on),
                      "same_day": bool(treated_on) and treated_on == visit.get("date")},
    }


def referral_record(referral: dict, patient: dict | None, pseudonyms: Pseudonyms) -> dict:
    outcome = _part(referral, "outcome")
    return {
        "id": pseudonyms.of("referral", str(referral.get("uuid"))),
        "patient": pseudonyms.of("patient", str(referral.get("patient_uuid"))),
        "visit": _ref(pseudonyms, "visit", referral.get("visit_uuid")),
        "exam": _ref(pseudonyms, "exam", referral.get("exam_uuid")),
        "post_id": referral.get("post_id"),
        "programme": _code("programme", referral.get("programme")),
        "month": _month(referral.get("date")),
        "age_group": age_group(patient_age(patient, referral.get("date"))),
        "reason": _code("referral_reason", referral.get("reason")),
        "urgency": _code("urgency", referral.get("urgency")),
        "outcome": {"status": _code("referral_outcome", outcome.get("status")), "month": _month(outcome.get("date")),
                    "hospital_result": _code("hospital_result", outcome.get("hospital_result")),
                    "treatment": _code("hospital_treatment", outcome.get("treatment")),
                    "result_exam": _ref(pseudonyms, "exam", outcome.get("result_exam_uuid"))},
    }


def followup_record(followup: dict, patient: dict | None, pseudonyms: Pseudonyms) -> dict:
    events = followup.get("events") if isinstance(followup.get("events"), list) else []
    return {
        "id": pseudonyms.of("followup", str(followup.get("uuid"))),
        "patient": pseudonyms.of("patient", str(followup.get("patient_uuid"))),
        "visit": _ref(pseudonyms, "visit", followup.get("visit_uuid")),
        "referral": _ref(pseudonyms, "referral", followup.get("referral_uuid")),
        "post_id": followup.get("post_id"),
        "programme": _code("programme", followup.get("programme")),
        "purpose": _code("followup_purpose", followup.get("purpose")),
        "due_month": _month(followup.get("due_date")),
        "state": _code("followup_state", followup.get("state")),
        "lost_reason": _code("lost_reason", followup.get("lost_reason")),
        "events": [{"action": e.get("action") if e.get("action") in ("created", "contacted", "rescheduled",
                                                                       "attended", "lost", "reopened") else None,
                    "month": _month(e.get("at")), "method": _code("contact_method", e.get("method"))}
                   for e in events if isinstance(e, dict)],
    }


PATHWAY_RECORDS = {"visits": visit_record, "referrals": referral_record, "followups": followup_record}


# -- image metadata -------------------------------------------------------------------------

_JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}     # JFIF, ICC colour profile, Adobe (colour transform)
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
             b"sBIT", b"bKGD", b"pHYs"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _NotClean(Exception):
    """The image cannot be stripped losslessly; re-encode it instead."""


def _strip_jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise _NotClean
    out = bytearray(b"\xff\xd8")
    i, n = 2, len(data)
    in_scan = False
    while i < n:
        if in_scan:
            # Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart marker.
            j = data.find(b"\xff", i)
            while j != -1 and j + 1 < n and (data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7):
                j = data.find(b"\xff", j + 2)
            if j == -1 or j + 1 >= n:
                raise _NotClean
            out += data[i:j]
            i = j
            in_scan = False
            continue
        if data[i] != 0xFF:
            raise _NotClean
        while i < n and data[i] == 0xFF:
            i += 1                                    # fill bytes before a marker
        if i >= n:
            raise _NotClean
        marker = data[i]
        i += 1
        if marker == 0xD9:                            # EOI: drop anything appended after it
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes((0xFF, marker))
            continue
        if i + 2 > n:
            raise _NotClean
        (length,) = struct.unpack(">H", data[i:i + 2])
        segment = data[i:i + length]
        if length < 2 or len(segment) != length:
            raise _NotClean
        i += length
        if (0xE0 <= marker <= 0xEF and marker not in _JPEG_KEEP_APP) or marker == 0xFE:
            continue                                  # EXIF, XMP, IPTC, maker notes, comments
        if marker == 0xE0 and not segment[2:7] == b"JFIF\x00":
            continue                                  # JFXX thumbnails
        out += bytes((0xFF, marker)) + segment
        if marker == 0xDA:
            in_scan = True
    raise _NotClean


def _strip_png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise _NotClean
    out = bytearray(_PNG_SIGNATURE)
    i = len(_PNG_SIGNATURE)
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if end > len(data):
            raise _NotClean
        if kind in _PNG_KEEP:
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)
    raise _NotClean


def _orientation(data: bytes) -> int:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        value = im.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orientation_only_exif(orientation: int) -> bytes:
    """An APP1 segment holding nothing but the orientation tag (so viewers still show it upright)."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _reencode(data: bytes, fmt: str) -> bytes:
    from PIL import Image, ImageOps
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im)
        if fmt == "JPEG" and upright.mode != "RGB":
            upright = upright.convert("RGB")
        elif upright.mode not in ("RGB", "RGBA", "L", "LA", "P", "I;16"):
            upright = upright.convert("RGB")
        buf = io.BytesIO()
        # No info dict is passed on: no EXIF, no text chunks, no comments.
        upright.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def output_ext(ext: str) -> str:
    """The extension an image has in a de-identified bundle (decided before it is read)."""
    ext = ext.lower()
    return ext if ext in ("jpg", "jpeg", "png") else "png"


def strip_metadata(data: bytes, ext: str) -> bytes:
    """The image without metadata, in the format ``output_ext(ext)`` names.

    JPEG and PNG lose their metadata blocks losslessly (a JPEG keeps only a fresh orientation
    tag when it had one); other formats, and files too odd to walk safely, are re-encoded from
    their pixels.
    """
    ext = ext.lower()
    try:
        if ext in ("jpg", "jpeg"):
            stripped = _strip_jpeg(data)
            orientation = _orientation(data)
            if orientation != 1:
                stripped = stripped[:2] + _orientation_only_exif(orientation) + stripped[2:]
            return stripped
        if ext == "png":
            return _strip_png(data)
    except _NotClean:
        pass
    return _reencode(data, "JPEG" if ext in ("jpg", "jpeg") else "PNG")


def image_member(analysis_id: str, label: str | None, image_sha256: str, pseudonyms: Pseudonyms,
                 ext: str) -> str:
    return layout.image_member(analysis_id, label, pseudonyms.of("image", image_sha256), output_ext(ext))


def unconfirmed_member(analysis_id: str, exam_uuid: str, pseudonyms: Pseudonyms, ext: str) -> str:
    """An image with no confirmed class, named by its exam's pseudonym (its record goes beside it)."""
    return layout.unconfirmed_member(analysis_id, pseudonyms.of("exam", exam_uuid), output_ext(ext))
