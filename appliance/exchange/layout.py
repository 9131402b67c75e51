"""What is inside a bundle's payload (a tar stream), shared by the writer and the reader.

Members, in the order they are written::

    records/patients.jsonl.gz     one patient record per line (identified bundles only)
    records/exams.jsonl.gz        one exam record per line, with the clinician's decision
    records/visits.jsonl.gz       screening visits (de-identified bundles: whitelisted fields only)
    records/referrals.jsonl.gz    referrals and their outcomes
    records/followups.jsonl.gz    follow-ups and what became of them
    records/audit_summary.json    counts of audit actions by day, user and action
    images/<analysis>/<label>/<name>.<ext>   the analysed images, an ImageFolder per analysis
    unconfirmed/<analysis>/<exam>.<ext>      research bundles: images with no confirmed class,
    unconfirmed/<analysis>/<exam>.json       each beside its de-identified exam record
    exams.csv                     the exams as a spreadsheet (with --csv)
    manifest.json                 last: sha256 and size of every member above, and what the
                                  bundle covers (post, kinds, change range, dates, versions)

The class folders hold only confirmed labels: the clinician's class of a decided exam made
with trained models (``store.exams.research_label``). In a de-identified research bundle every
other image (awaiting a decision, made with demo models, decided without a class) is under
``unconfirmed/`` with its record, so a dataset loader pointed at ``images/<analysis>`` never
trains on a model's own guesses. In an identified bundle the supervisor's store files images by
the records; their folder is ``unconfirmed`` for the same exams, for a person looking.

The reader accepts these names and nothing else, so a crafted member name can never
choose where a file lands.
"""
from __future__ import annotations

import re

from .. import catalogue

MANIFEST_FORMAT = "bccdms-bundle-manifest/1"
MANIFEST = "manifest.json"
PATIENTS = "records/patients.jsonl.gz"
EXAMS = "records/exams.jsonl.gz"
VISITS = "records/visits.jsonl.gz"
REFERRALS = "records/referrals.jsonl.gz"
FOLLOWUPS = "records/followups.jsonl.gz"
AUDIT_SUMMARY = "records/audit_summary.json"
EXAMS_CSV = "exams.csv"
# In merge order: a record's patient, exams and visit come before it.
RECORD_MEMBERS = {PATIENTS: "patients", EXAMS: "exams", VISITS: "visits", REFERRALS: "referrals",
                  FOLLOWUPS: "followups"}
PATHWAY_MEMBERS = {VISITS: "visits", REFERRALS: "referrals", FOLLOWUPS: "followups"}
FIXED_MEMBERS = {MANIFEST, AUDIT_SUMMARY, EXAMS_CSV, *RECORD_MEMBERS}

KIND_RECORDS = "records"
KIND_DEIDENTIFIED = "deidentified"

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")
UNLABELLED = "unlabelled"
UNCONFIRMED = "unconfirmed"
_IMAGE = re.compile(r"images/([a-z_]{1,64})/([a-z0-9_]{1,64})/([0-9a-f]{16,64})\.([a-z]{3,4})")
_UNCONFIRMED = re.compile(r"unconfirmed/([a-z_]{1,64})/([0-9a-f]{16,64})\.([a-z]{3,4})")
_LABEL = re.compile(r"[a-z0-9_]{1,64}")


def image_member(analysis: str, label: str | None, name: str, ext: str) -> str:
    return f"images/{analysis}/{folder_label(label)}/{name}.{ext}"


def unconfirmed_member(analysis: str, name: str, ext: str) -> str:
    """A research bundle's image without a confirmed class; its record is :func:`record_beside`."""
    return f"{UNCONFIRMED}/{analysis}/{name}.{ext}"


def record_beside(member: str) -> str:
    return member.rsplit(".", 1)[0] + ".json"


def is_image(name: str) -> bool:
    """An image member (in a class folder or unconfirmed), as opposed to records and sidecars."""
    m = _UNCONFIRMED.fullmatch(name)
    return parse_image_member(name) is not None or (m is not None and m.group(3) in IMAGE_EXTENSIONS)


def folder_label(label: str | None) -> str:
    return label if label and _LABEL.fullmatch(label) else UNLABELLED


def parse_image_member(name: str) -> tuple[str, str, str, str] | None:
    """(analysis, label, name, ext) for a valid image member name, else None."""
    m = _IMAGE.fullmatch(name)
    if not m or m.group(1) not in catalogue.ANALYSES or m.group(4) not in IMAGE_EXTENSIONS:
        return None
    return m.group(1), m.group(2), m.group(3), m.group(4)


def is_known_member(name: str) -> bool:
    m = _UNCONFIRMED.fullmatch(name)
    unconfirmed = m is not None and m.group(1) in catalogue.ANALYSES and m.group(3) in (*IMAGE_EXTENSIONS, "json")
    return name in FIXED_MEMBERS or parse_image_member(name) is not None or unconfirmed
